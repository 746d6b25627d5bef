//! A check that panics: the host must log the panic message and fail the hook.

use mmvip_sdk::{Call, Outcome, Plugin};

struct Panics;

impl Plugin for Panics {
    fn run(call: &Call) -> Outcome {
        panic!(
            "guest gave up: {} arguments were too many",
            call.args().len()
        );
    }
}

mmvip_sdk::export!(Panics {
    kind: check,
    about: "panics: the message must reach the log",
    grants: ["log"],
    timeout_ms: 1000,
});
