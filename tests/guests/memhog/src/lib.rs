//! A check that allocates without bound: the host's memory limit must stop it.

use mmvip_sdk::{Call, Check, Outcome};

struct MemHog;

impl Check for MemHog {
    fn check(_call: &Call) -> Outcome {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

mmvip_sdk::export_check!(MemHog);
