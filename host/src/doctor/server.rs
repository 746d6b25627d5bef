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
        value => {
            let loss = match value {
                Some(0) => "the OS decides when the binary log reaches disk, so a host crash can cut off any amount of its end".to_string(),
                Some(n) => format!("the binary log is synced every {n} commit groups, so a host crash can cut off up to {} of them", n - 1),
                None => "a host crash can cut off the end of the binary log".to_string(),
            };
            side.fail(
                "sync_binlog",
                facts.text("sync_binlog"),
                format!(
                    "SET GLOBAL sync_binlog = 1 and set it under [mariadbd] — {loss}: transactions already acknowledged to clients, perhaps already on the peer, vanish from this node, and after the restart it writes other transactions under the same GTIDs, so replication stops on the conflict"
                ),
            )
        }
    });
    checks.push(match facts.number("innodb_flush_log_at_trx_commit") {
        Some(1) => side.pass("innodb_flush_log_at_trx_commit", 1),
        value => {
            let loss = match value {
                Some(0) => "with 0 even a crash of mariadbd alone loses up to about a second of commits",
                Some(2) => "with 2 a host crash or power loss (not a crash of mariadbd alone) loses up to about a second of commits",
                _ => "a crash can lose acknowledged commits",
            };
            side.fail(
                "innodb_flush_log_at_trx_commit",
                facts.text("innodb_flush_log_at_trx_commit"),
                format!(
                    "SET GLOBAL innodb_flush_log_at_trx_commit = 1 and set it under [mariadbd] — {loss} from InnoDB that the binary log (and so the peer) may already have: after the restart this node's data lacks transactions its GTID position claims, and the nodes differ without an error"
                ),
            )
        }
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
