//! A check that allocates without bound: the host's memory limit must stop it.

use mmvip_sdk::{Call, Outcome, Plugin};

struct MemHog;

impl Plugin for MemHog {
    fn run(_call: &Call) -> Outcome {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

mmvip_sdk::export!(MemHog {
    kind: check,
    about: "never stops allocating: the memory limit must stop it",
    grants: ["log"],
    timeout_ms: 1000,
});
