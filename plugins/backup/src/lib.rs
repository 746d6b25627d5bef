//! `mmvip backup` (notify_backup): make the node read-only, verify it, then kill client
//! connections.

use mmvip_sdk::{Call, Notify, Outcome, Transition};

struct Backup;

impl Notify for Backup {
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome {
        mmvip_role::demote(event, call, "BACKUP")
    }
}

mmvip_sdk::export_notify!(Backup);
