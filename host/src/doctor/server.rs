//! A live server's settings that a failover depends on: this node's, and with
//! `--peer` the peer's (all are global variables its unprivileged account can read).

use super::{Check, DETECTION_LIMIT_S, Facts, on_off};

/// Whose server the checks are about.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Local,
    Peer,
}

impl Side {
    /// The check's name: `sync_binlog`, `peer.sync_binlog`.
    fn name(self, variable: &str) -> String {
        match self {
            Side::Local => variable.to_string(),
            Side::Peer => format!("peer.{variable}"),
        }
    }

    /// The start of a detail: `sync_binlog is 0`, `the peer's sync_binlog is 0`.
    fn variable(self, variable: &str) -> String {
        match self {
            Side::Local => variable.to_string(),
            Side::Peer => format!("the peer's {variable}"),
        }
    }

    fn pass(self, variable: &str, value: impl std::fmt::Display) -> Check {
        Check::pass(
            self.name(variable),
            format!("{} is {value}", self.variable(variable)),
        )
    }

    fn fail(self, variable: &str, value: impl std::fmt::Display, fix: impl Into<String>) -> Check {
        Check::fail(
            self.name(variable),
            format!("{} is {value}", self.variable(variable)),
            fix,
        )
    }
}

pub(super) fn check(facts: &Facts, side: Side, checks: &mut Vec<Check>) {
    checks.push(switch(
        facts,
        side,
        "log_bin",
        "set log_bin (e.g. log_bin = mariadb-bin under [mariadbd]) and restart — the peer replicates from this node's binary log: without it nothing written here ever reaches the peer, and a failover loses it",
    ));
    checks.push(switch(
        facts,
        side,
        "log_slave_updates",
        "set log_slave_updates = ON under [mariadbd] and restart — without it the transactions applied from the peer are missing from this node's binary log and gtid_binlog_state, which master's errant-GTID check and any replica or backup taken from this node rely on",
    ));
    checks.push(switch(
        facts,
        side,
        "gtid_strict_mode",
        "SET GLOBAL gtid_strict_mode = ON and set it under [mariadbd] — without it a node applies or writes GTIDs out of order and the two nodes diverge silently, instead of replication stopping at the first conflict",
    ));
    checks.push(match facts.number("sync_binlog") {
        Some(1) => side.pass("sync_binlog", 1),
        _ => side.fail(
            "sync_binlog",
            facts.text("sync_binlog"),
            "SET GLOBAL sync_binlog = 1 and set it under [mariadbd] — otherwise a host crash can take transactions already acknowledged to clients (and perhaps sent to the peer) out of this node's binary log: they are lost, or after the restart this node writes different transactions under the same GTIDs and replication stops on the conflict",
        ),
    });
    checks.push(match facts.number("innodb_flush_log_at_trx_commit") {
        Some(1) => side.pass("innodb_flush_log_at_trx_commit", 1),
        _ => side.fail(
            "innodb_flush_log_at_trx_commit",
            facts.text("innodb_flush_log_at_trx_commit"),
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1 and set it under [mariadbd] — with 0 or 2 a host crash loses up to a second of acknowledged commits from InnoDB that the binary log (and so the peer) may already have: after the restart this node's data lacks transactions its GTID position claims, and the nodes differ without an error",
        ),
    });
    checks.push(match facts.number("slave_net_timeout") {
        Some(seconds) if seconds <= DETECTION_LIMIT_S => {
            side.pass("slave_net_timeout", format!("{seconds} s"))
        }
        _ => side.fail(
            "slave_net_timeout",
            format!("{} s", facts.text("slave_net_timeout")),
            format!(
                "SET GLOBAL slave_net_timeout = {DETECTION_LIMIT_S} (or less) and set it under [mariadbd] — a replica notices a dead or restarted master only after this many seconds without data, and until it reconnects the new writer's writes exist on one node only"
            ),
        ),
    });
}

/// A boolean variable that must be ON.
fn switch(facts: &Facts, side: Side, name: &str, fix: &str) -> Check {
    let on = facts.on(name);
    if on {
        side.pass(name, on_off(on))
    } else {
        side.fail(name, on_off(on), fix)
    }
}
