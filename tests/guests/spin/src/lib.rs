//! A check that never returns: the host must interrupt it at the deadline.

use mmvip_sdk::{Call, Outcome, Plugin};

struct Spin;

impl Plugin for Spin {
    fn run(_call: &Call) -> Outcome {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

mmvip_sdk::export!(Spin {
    kind: check,
    about: "never returns: the deadline must interrupt it",
    grants: ["log"],
    timeout_ms: 1000,
});
