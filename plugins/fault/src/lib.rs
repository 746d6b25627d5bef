//! `mmvip fault` (notify_fault): make the node read-only, verify it, then kill client
//! connections. Exactly like `backup`: the original scripts left the node
//! writable here, which was a bug.

use mmvip_sdk::{Call, Outcome, Plugin, VrrpState};

struct Fault;

impl Plugin for Fault {
    fn run(call: &Call) -> Outcome {
        mmvip_role::demote(call, VrrpState::Fault)
    }
}

mmvip_sdk::export!(Fault {
    kind: notify,
    about: "notify_fault: read_only=ON through blockers, verified, then client connections killed",
    grants: ["log", "sql-read", "sql-admin", "vip", "state", "lease"],
    timeout_ms: 15000,
});
