//! Catch-up before promotion, judged by GTIDs: the relay log is drained when
//! `gtid_slave_pos` covers `Gtid_IO_Pos` for the peer's domains. Waits use
//! `MASTER_GTID_WAIT` and are bounded by `catchup_timeout`.

use std::time::Instant;

use mmvip_sdk::{describe, sql_admin, sql_read};

use crate::Options;

/// Why the node is not known to be caught up.
pub struct Failure {
    pub why: String,
}

fn fail(why: impl Into<String>) -> Failure {
    Failure { why: why.into() }
}

/// Waits until every received transaction of the peer's domains is applied. While
/// the peer is still alive new transactions may arrive during the wait, so the
/// received position is read again until it stands still.
pub fn wait(options: &Options) -> Result<String, Failure> {
    let started = Instant::now();
    let own_domain = sql_read::global_variable("gtid_domain_id")
        .map_err(|e| fail(format!("cannot read gtid_domain_id: {}", describe(&e))))?
        .unwrap_or_default();
    let mut waited_for = String::new();
    loop {
        let target = received_position(&own_domain)?;
        if target.is_empty() || target == waited_for {
            let what = if target.is_empty() {
                "nothing received from the peer".to_string()
            } else {
                format!("applied up to {target}")
            };
            return Ok(format!(
                "caught up ({what}) in {} ms",
                started.elapsed().as_millis()
            ));
        }
        let left = options.catchup_timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(fail(format!(
                "relay log not applied up to {target} within {} s",
                options.catchup_timeout.as_secs_f32()
            )));
        }
        let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
        match sql_admin::wait_for_gtid(&target, left_ms) {
            Ok(true) => waited_for = target,
            Ok(false) => {
                return Err(fail(format!(
                    "relay log not applied up to {target} within {} s",
                    options.catchup_timeout.as_secs_f32()
                )));
            }
            Err(e) => return Err(fail(format!("MASTER_GTID_WAIT failed: {}", describe(&e)))),
        }
    }
}

/// The union of `Gtid_IO_Pos` over replication connections, without this node's own
/// domain (its transactions come back through the ring but are never re-applied).
fn received_position(own_domain: &str) -> Result<String, Failure> {
    let replicas = sql_read::replicas()
        .map_err(|e| fail(format!("cannot read replication status: {}", describe(&e))))?;
    let mut parts: Vec<String> = Vec::new();
    for replica in &replicas {
        let name = if replica.connection_name.is_empty() {
            "default"
        } else {
            replica.connection_name.as_str()
        };
        if replica.sql_running != "Yes" {
            let error = if replica.last_sql_error.is_empty() {
                "stopped".to_string()
            } else {
                replica.last_sql_error.clone()
            };
            return Err(fail(format!(
                "replication `{name}` is broken: SQL thread {} ({error})",
                replica.sql_running
            )));
        }
        // An IO thread that stopped on an error (e.g. 1236, the peer lacks a GTID we
        // ask for) will not recover by itself: the ring is broken. One that is
        // reconnecting (the peer is down) leaves a relay log worth applying.
        if replica.io_running == "No" && !replica.last_io_error.is_empty() {
            return Err(fail(format!(
                "replication `{name}` is broken: IO thread stopped ({})",
                replica.last_io_error
            )));
        }
        if replica.io_running != "Yes" {
            mmvip_sdk::warn(&format!(
                "replication `{name}`: IO thread {} ({}); applying what was received",
                replica.io_running,
                if replica.last_io_error.is_empty() {
                    "no error"
                } else {
                    &replica.last_io_error
                }
            ));
        }
        for gtid in replica
            .gtid_io_pos
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let domain = gtid.split('-').next().unwrap_or_default();
            if domain != own_domain && !parts.iter().any(|p| p == gtid) {
                parts.push(gtid.to_string());
            }
        }
    }
    parts.sort();
    Ok(parts.join(","))
}
