//! A check that panics: the host must log the panic message and fail the hook.

use mmvip_sdk::{Call, Check, Outcome};

struct Panics;

impl Check for Panics {
    fn check(call: &Call) -> Outcome {
        panic!("guest gave up: {} arguments were too many", call.args.len());
    }
}

mmvip_sdk::export_check!(Panics);
