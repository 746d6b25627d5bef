//! `mmvip failover`: the `vrrp_script` that replaces `chk_failover.sh`.
//!
//! Fails while the site's failover flag file exists, so keepalived lowers this
//! node's priority and the VIP moves away for planned maintenance.

use mmvip_sdk::{Call, Outcome, Plugin, failed, failover_flag};

struct Failover;

impl Plugin for Failover {
    fn run(call: &Call) -> Outcome {
        call.expect_no_args()?;
        match failover_flag::is_raised() {
            Ok(false) => Ok("failover flag absent".to_string()),
            Ok(true) => Err(failed("failover flag present: planned switch-over")),
            Err(error) => Err(failed(format!("cannot check failover flag: {error}"))),
        }
    }
}

mmvip_sdk::export!(Failover {
    kind: check,
    about: "fails while the failover flag file exists (planned switch-over)",
    grants: ["log", "failover-flag"],
    timeout_ms: 800,
});
