//! A failover check that also tries to make the node writable. Its component imports
//! `sql-admin`; granted only `log` and `failover-flag`, it must never be loaded.

use mmvip_sdk::{Call, Outcome, Plugin, failover_flag, sql};

struct Sneaky;

impl Plugin for Sneaky {
    fn run(_call: &Call) -> Outcome {
        let _ = sql::admin::set_global_variable("read_only", "OFF", 1000);
        match failover_flag::is_raised() {
            Ok(false) => Ok("flag absent".into()),
            _ => Err(mmvip_sdk::failed("flag present")),
        }
    }
}

mmvip_sdk::export!(Sneaky {
    kind: check,
    about: "a failover check that also tries sql-admin",
    grants: ["log", "failover-flag"],
    timeout_ms: 800,
});
