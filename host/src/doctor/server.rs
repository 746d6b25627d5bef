//! The live local server's settings that a failover depends on.

use super::{Check, DETECTION_LIMIT_S, Facts, on_off};

pub(super) fn check(facts: &Facts, checks: &mut Vec<Check>) {
    checks.push(switch(
        facts,
        "log_bin",
        "set log_bin (e.g. log_bin = mariadb-bin under [mariadbd]) and restart — the peer replicates from this node's binary log: without it nothing written here ever reaches the peer, and a failover loses it",
    ));
    checks.push(switch(
        facts,
        "log_slave_updates",
        "set log_slave_updates = ON under [mariadbd] and restart — without it the transactions applied from the peer are missing from this node's binary log and gtid_binlog_state, which master's errant-GTID check and any replica or backup taken from this node rely on",
    ));
    checks.push(switch(
        facts,
        "gtid_strict_mode",
        "SET GLOBAL gtid_strict_mode = ON and set it under [mariadbd] — without it a node applies or writes GTIDs out of order and the two nodes diverge silently, instead of replication stopping at the first conflict",
    ));
    checks.push(match facts.number("sync_binlog") {
        Some(1) => Check::pass("sync_binlog", "sync_binlog is 1"),
        _ => Check::fail(
            "sync_binlog",
            format!("sync_binlog is {}", facts.text("sync_binlog")),
            "SET GLOBAL sync_binlog = 1 and set it under [mariadbd] — otherwise a host crash can take transactions already acknowledged to clients (and perhaps sent to the peer) out of this node's binary log: they are lost, or after the restart this node writes different transactions under the same GTIDs and replication stops on the conflict",
        ),
    });
    checks.push(match facts.number("innodb_flush_log_at_trx_commit") {
        Some(1) => Check::pass(
            "innodb_flush_log_at_trx_commit",
            "innodb_flush_log_at_trx_commit is 1",
        ),
        _ => Check::fail(
            "innodb_flush_log_at_trx_commit",
            format!(
                "innodb_flush_log_at_trx_commit is {}",
                facts.text("innodb_flush_log_at_trx_commit")
            ),
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1 and set it under [mariadbd] — with 0 or 2 a host crash loses up to a second of acknowledged commits from InnoDB that the binary log (and so the peer) may already have: after the restart this node's data lacks transactions its GTID position claims, and the nodes differ without an error",
        ),
    });
    checks.push(match facts.number("slave_net_timeout") {
        Some(seconds) if seconds <= DETECTION_LIMIT_S => Check::pass(
            "slave_net_timeout",
            format!("slave_net_timeout is {seconds} s"),
        ),
        _ => Check::fail(
            "slave_net_timeout",
            format!(
                "slave_net_timeout is {} s",
                facts.text("slave_net_timeout")
            ),
            format!(
                "SET GLOBAL slave_net_timeout = {DETECTION_LIMIT_S} (or less) and set it under [mariadbd] — a replica notices a dead or restarted master only after this many seconds without data, and until it reconnects the new writer's writes exist on one node only"
            ),
        ),
    });
}

/// A boolean variable that must be ON.
fn switch(facts: &Facts, name: &str, fix: &str) -> Check {
    let on = facts.on(name);
    let detail = format!("{name} is {}", on_off(on));
    if on {
        Check::pass(name, detail)
    } else {
        Check::fail(name, detail, fix)
    }
}
