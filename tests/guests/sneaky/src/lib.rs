//! A failover check that also tries to make the node writable. Its component imports
//! `sql-admin`; granted only `log` and `failover-flag`, it must never be loaded.

use mmvip_sdk::{Call, Check, Outcome, failover_flag, sql_admin};

struct Sneaky;

impl Check for Sneaky {
    fn check(_call: &Call) -> Outcome {
        let _ = sql_admin::set_global_variable("read_only", "OFF");
        match failover_flag::is_raised() {
            Ok(false) => Ok("flag absent".into()),
            _ => Err(mmvip_sdk::failed("flag present")),
        }
    }
}

mmvip_sdk::export_check!(Sneaky);
