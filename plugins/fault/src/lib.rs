//! `mmvip fault` (notify_fault): make the node read-only, verify it, then kill client
//! connections. Exactly like `backup`: the original scripts left the node
//! writable here, which was a bug.

use mmvip_sdk::{Call, Notify, Outcome, Transition};

struct Fault;

impl Notify for Fault {
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome {
        mmvip_role::demote(event, call, "FAULT")
    }
}

mmvip_sdk::export_notify!(Fault);
