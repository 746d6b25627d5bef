//! `mmvip health`: the `vrrp_script` liveness check that replaces `pidof mysqld`.
//!
//! Passes only when MariaDB answers a trivial query over its unix socket within the
//! configured timeout, so a down, refusing or hung server all fail the check.

use mmvip_sdk::{Call, Outcome, Plugin, failed, sql};

struct Health;

impl Plugin for Health {
    fn run(call: &Call) -> Outcome {
        call.expect_no_args()?;
        match sql::read::ping() {
            Ok(()) => Ok("mariadb answered".to_string()),
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

// The bound stays under keepalived's default script timeout (the 1 s interval).
mmvip_sdk::export!(Health {
    kind: check,
    about: "passes while MariaDB answers SELECT 1 over its unix socket",
    grants: ["log", "sql-read"],
    timeout_ms: 800,
});
