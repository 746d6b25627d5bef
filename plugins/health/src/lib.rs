//! `mmvip health`: the `vrrp_script` liveness check that replaces `pidof mysqld`.
//!
//! Passes only when MariaDB answers a trivial query over its unix socket within the
//! configured timeout, so a down, refusing or hung server all fail the check.

use mmvip_sdk::{Call, Check, Outcome, describe, failed, sql_read};

struct Health;

impl Check for Health {
    fn check(call: &Call) -> Outcome {
        call.expect_no_args()?;
        match sql_read::ping() {
            Ok(()) => Ok("mariadb answered".to_string()),
            Err(error) => Err(failed(describe(&error))),
        }
    }
}

mmvip_sdk::export_check!(Health);
