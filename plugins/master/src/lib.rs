//! `mmvip master` (notify_master): wait until this node has applied everything it
//! received from its peer, then make it writable, if it still holds the VIP.

use mmvip_sdk::{Call, Notify, Outcome, Transition};

struct Master;

impl Notify for Master {
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome {
        mmvip_role::promote(event, call)
    }
}

mmvip_sdk::export_notify!(Master);
