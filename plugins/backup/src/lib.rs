//! `mmvip backup` (notify_backup): make the node read-only, verify it, then kill client
//! connections.

use mmvip_sdk::{Call, Outcome, Plugin, VrrpState};

struct Backup;

impl Plugin for Backup {
    fn run(call: &Call) -> Outcome {
        mmvip_role::demote(call, VrrpState::Backup)
    }
}

mmvip_sdk::export!(Backup {
    kind: notify,
    about: "notify_backup: read_only=ON through blockers, verified, then client connections killed",
    grants: ["log", "sql-read", "sql-admin", "vip", "state", "lease"],
    timeout_ms: 15000,
});
