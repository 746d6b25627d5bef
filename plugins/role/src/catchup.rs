//! Catch-up before promotion, judged by GTIDs: the relay log is drained when
//! `gtid_slave_pos` covers `Gtid_IO_Pos` for the peer's domains. Waits use
//! `MASTER_GTID_WAIT` and are bounded by `catchup_timeout`.

use std::time::{Duration, Instant};

use mmvip_sdk::sql::{IoState, SqlState};

use crate::node::Node;

/// Why the node is not known to be caught up.
#[derive(Debug)]
pub struct Failure {
    pub why: String,
    /// The wait ran out of time (rather than finding replication broken).
    pub timed_out: bool,
}

fn fail(why: impl Into<String>) -> Failure {
    Failure {
        why: why.into(),
        timed_out: false,
    }
}

/// Waits until every received transaction of the peer's domains is applied, for at
/// most `limit`. While the peer is still alive new transactions may arrive during
/// the wait, so the received position is read again until it stands still.
pub fn wait(node: &mut impl Node, limit: Duration) -> Result<String, Failure> {
    let started = Instant::now();
    let own_domain = node
        .global_variable("gtid_domain_id")
        .map_err(|e| fail(format!("cannot read gtid_domain_id: {e}")))?
        .unwrap_or_default();
    let mut waited_for = String::new();
    loop {
        let target = received_position(node, &own_domain)?;
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
        let left = limit.saturating_sub(started.elapsed());
        let not_applied = || Failure {
            why: format!(
                "relay log not applied up to {target} within {} s",
                limit.as_secs_f32()
            ),
            timed_out: true,
        };
        if left.is_zero() {
            return Err(not_applied());
        }
        match node.wait_for_gtid(&target, left) {
            Ok(true) => waited_for = target,
            Ok(false) => return Err(not_applied()),
            Err(e) => return Err(fail(format!("MASTER_GTID_WAIT failed: {e}"))),
        }
    }
}

/// The union of `Gtid_IO_Pos` over replication connections, without this node's own
/// domain (its transactions come back through the ring but are never re-applied).
fn received_position(node: &mut impl Node, own_domain: &str) -> Result<String, Failure> {
    let replicas = node
        .replicas()
        .map_err(|e| fail(format!("cannot read replication status: {e}")))?;
    let mut parts: Vec<String> = Vec::new();
    for replica in &replicas {
        let name = if replica.connection_name.is_empty() {
            "default"
        } else {
            replica.connection_name.as_str()
        };
        if replica.sql_state != SqlState::Running {
            let error = if replica.last_sql_error.is_empty() {
                "stopped".to_string()
            } else {
                replica.last_sql_error.clone()
            };
            return Err(fail(format!(
                "replication `{name}` is broken: SQL thread {} ({error})",
                replica.sql_state
            )));
        }
        // An IO thread that stopped on an error (e.g. 1236, the peer lacks a GTID we
        // ask for) will not recover by itself: the ring is broken. One that is
        // reconnecting (the peer is down) leaves a relay log worth applying.
        if replica.io_state == IoState::Stopped && !replica.last_io_error.is_empty() {
            return Err(fail(format!(
                "replication `{name}` is broken: IO thread stopped ({})",
                replica.last_io_error
            )));
        }
        if replica.io_state != IoState::Running {
            node.warn(&format!(
                "replication `{name}`: IO thread {} ({}); applying what was received",
                replica.io_state,
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
