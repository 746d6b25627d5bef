//! `mmvip stop` (notify_stop): make the node read-only, verify it, then kill client
//! connections. Exactly like `backup`: the original scripts left the node
//! writable here, which was a bug.

use mmvip_sdk::{Call, Notify, Outcome, Transition};

struct Stop;

impl Notify for Stop {
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome {
        mmvip_role::demote(event, call, "STOP")
    }
}

mmvip_sdk::export_notify!(Stop);
