//! `mmvip master` (notify_master): wait until this node has applied everything it
//! received from its peer, then make it writable, if it still holds the VIP.

use mmvip_sdk::{Call, Outcome, Plugin};

struct Master;

impl Plugin for Master {
    fn run(call: &Call) -> Outcome {
        mmvip_role::promote(call)
    }
}

mmvip_sdk::export!(Master {
    kind: notify,
    about: "notify_master: catch up to what the peer acknowledged, then read_only=OFF while the VIP is held",
    grants: [
        "log",
        "sql-read",
        "sql-admin",
        "vip",
        "state",
        "peer",
        "lease"
    ],
    timeout_ms: 40000,
});
