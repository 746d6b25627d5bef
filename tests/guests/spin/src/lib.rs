//! A check that never returns: the host must interrupt it at the deadline.

use mmvip_sdk::{Call, Check, Outcome};

struct Spin;

impl Check for Spin {
    fn check(_call: &Call) -> Outcome {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

mmvip_sdk::export_check!(Spin);
