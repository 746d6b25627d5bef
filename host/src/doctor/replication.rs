//! Replication both ways: this node's replica threads, their lag and settings, and
//! the peer replicating from this node.

use std::time::{Duration, Instant};

use super::peer::Peer;
use super::{Check, DETECTION_LIMIT_S, Facts};
use crate::caps::sql::describe;
use crate::gtid;
use crate::log::Level;
use crate::mariadb::{Record, Session};

/// Lag beyond which a failover would wait noticeably, or lose transactions.
const LAG_LIMIT_S: u64 = 10;
/// How long the peer may take to show this node's last transaction.
const PEER_CATCH_UP: Duration = Duration::from_secs(2);

pub(super) fn check(
    session: &mut Session,
    facts: &Facts,
    peer: Option<&mut Peer>,
    checks: &mut Vec<Check>,
) {
    match session.records(Level::Debug, "SHOW ALL SLAVES STATUS") {
        Ok(records) if records.is_empty() => checks.push(Check::fail(
            "replication",
            "this node replicates from nobody (SHOW ALL SLAVES STATUS is empty)",
            "CHANGE MASTER TO master_host = '<the peer>', master_user = '<replication account>', master_password = '…', master_use_gtid = slave_pos, master_connect_retry = 10; START SLAVE — otherwise the peer's writes never reach this node, and promoting it loses them",
        )),
        Ok(records) => {
            for record in &records {
                connection(record, checks);
            }
        }
        Err(error) => checks.push(Check::fail(
            "replication",
            format!("cannot read replication status ({})", describe(&error)),
            "grant mmvip's account what it needs (see accounts.mmvip) — the role hooks read the same status",
        )),
    }
    checks.push(replicated_by_peer(session, facts, peer));
    checks.push(dump_threads(session));
}

/// A binlog dump thread semi-sync left stuck stops replication to the peer for good;
/// the guard frees one, a polled site must do it by hand.
fn dump_threads(session: &mut Session) -> Check {
    const NAME: &str = "dump_threads";
    match crate::guard::dump_threads::count_stuck(session) {
        Ok(0) => Check::pass(
            NAME,
            "no binlog dump thread is stuck in `Waiting to finalize termination`",
        ),
        Ok(stuck) => Check::fail(
            NAME,
            format!(
                "{stuck} binlog dump thread(s) stuck in `Waiting to finalize termination`: the peer's replica receives nothing from this node"
            ),
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF, then ON — it frees them at once (the guard does so itself where settable_variables lists the variable)",
        ),
        Err(error) => Check::fail(
            NAME,
            format!("cannot read the process list ({})", describe(&error)),
            "grant mmvip's account PROCESS (see accounts.mmvip)",
        ),
    }
}

/// One replication connection: threads, lag, `master_use_gtid`, `Connect_Retry`.
fn connection(record: &Record, checks: &mut Vec<Check>) {
    let name = record.get("Connection_name").unwrap_or_default();
    let suffix = if name.is_empty() {
        String::new()
    } else {
        format!(".{name}")
    };
    // `STOP SLAVE 'name'`, `CHANGE MASTER 'name' TO` for a named connection.
    let named = if name.is_empty() {
        String::new()
    } else {
        format!(" '{name}'")
    };
    let source = format!(
        "replication from {}:{}{}",
        record.get("Master_Host").unwrap_or("?"),
        record.get("Master_Port").unwrap_or("?"),
        if name.is_empty() {
            String::new()
        } else {
            format!(" ('{name}')")
        }
    );
    let status = crate::mariadb::replica_status(record);
    let io = record.get("Slave_IO_Running").unwrap_or("?");
    let sql = record.get("Slave_SQL_Running").unwrap_or("?");
    let running = io == "Yes" && sql == "Yes";
    checks.push(if running {
        Check::pass(
            format!("replication{suffix}"),
            format!("{source}: IO and SQL threads running"),
        )
    } else {
        let errors: String = [&status.last_io_error, &status.last_sql_error]
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| format!("; {e}"))
            .collect();
        Check::fail(
            format!("replication{suffix}"),
            format!("{source}: IO thread {io}, SQL thread {sql}{errors}"),
            format!(
                "remove the cause, then START SLAVE{named} — this node does not receive or apply the writer's transactions: promoting it would leave them behind, so master waits up to catchup_timeout and then follows on_catchup_timeout"
            ),
        )
    });
    if running {
        checks.push(match status.seconds_behind_master {
            Some(lag) if lag <= LAG_LIMIT_S => {
                Check::pass(format!("lag{suffix}"), format!("{source}: {lag} s behind"))
            }
            lag => Check::fail(
                format!("lag{suffix}"),
                format!(
                    "{source}: {} s behind",
                    lag.map_or("?".to_string(), |s| s.to_string())
                ),
                "find what holds the SQL thread back (SHOW PROCESSLIST: a long transaction, a lock) — a failover now makes master wait that long for the catch-up (at most catchup_timeout) or go on without those transactions",
            ),
        });
    }
    let using_gtid = record.get("Using_Gtid").unwrap_or("No");
    checks.push(if using_gtid == "Slave_Pos" {
        Check::pass(
            format!("master_use_gtid{suffix}"),
            format!("{source} uses master_use_gtid=slave_pos"),
        )
    } else {
        Check::fail(
            format!("master_use_gtid{suffix}"),
            format!(
                "{source} uses master_use_gtid={}",
                using_gtid.to_ascii_lowercase()
            ),
            format!(
                "STOP SLAVE{named}; CHANGE MASTER{named} TO master_use_gtid = slave_pos; START SLAVE{named} — with current_pos the position a replica asks for includes its own binary log: a master killed right after binlogging a write its peer had not fetched asks the peer, once restarted, for that GTID, which the peer does not have (error 1236), and the ring stops; without GTIDs (no) a replica cannot find its position after a failover"
            ),
        )
    });
    let retry: Option<u64> = record.get("Connect_Retry").and_then(|r| r.parse().ok());
    checks.push(match retry {
        Some(seconds) if seconds <= DETECTION_LIMIT_S => Check::pass(
            format!("connect_retry{suffix}"),
            format!("{source} retries connecting every {seconds} s"),
        ),
        _ => Check::fail(
            format!("connect_retry{suffix}"),
            format!(
                "{source} retries connecting every {} s",
                record.get("Connect_Retry").unwrap_or("?")
            ),
            format!(
                "STOP SLAVE{named}; CHANGE MASTER{named} TO master_connect_retry = {DETECTION_LIMIT_S} (or less); START SLAVE{named} — the IO thread waits this long between attempts to reach a restarted master, and until it is back the new writer's writes exist on one node only"
            ),
        ),
    });
}

/// The peer replicates from this node: a Binlog Dump thread here, and the peer has
/// this node's last transaction in its domain.
fn replicated_by_peer(session: &mut Session, facts: &Facts, peer: Option<&mut Peer>) -> Check {
    const NAME: &str = "replicated_by_peer";
    if !facts.on("log_bin") {
        return Check::fail(
            NAME,
            "nothing can replicate from this node: log_bin is OFF",
            "set log_bin (see log_bin) — the peer cannot receive anything written here",
        );
    }
    let dumps = match session.rows(
        Level::Debug,
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
    ) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect::<Vec<_>>(),
        Err(error) => {
            return Check::fail(
                NAME,
                format!("cannot list this node's sessions ({})", describe(&error)),
                "grant mmvip's account PROCESS (see accounts.mmvip)",
            );
        }
    };
    if dumps.is_empty() {
        return Check::fail(
            NAME,
            "no Binlog Dump thread: the peer does not replicate from this node",
            "on the peer: START SLAVE (its `mmvip doctor` says what is wrong there) — what is written here reaches nobody, and a failover loses it",
        );
    }
    let dumping = format!("Binlog Dump to {}", dumps.join(", "));
    let domain = facts.number("gtid_domain_id").unwrap_or(0) as u32;
    let Some(ours) = gtid::in_domain(&facts.gtids("gtid_binlog_pos"), domain) else {
        return Check::pass(
            NAME,
            format!(
                "the peer replicates from this node ({dumping}); nothing written in its domain {domain} yet"
            ),
        );
    };
    let Some(peer) = peer else {
        return Check::pass(
            NAME,
            format!(
                "something replicates from this node ({dumping}); without [peer] its position is not known"
            ),
        );
    };
    // The peer may be a moment behind: wait briefly for it to show `ours`.
    let started = Instant::now();
    loop {
        let theirs = match peer
            .session
            .value(Level::Debug, "SELECT @@GLOBAL.gtid_current_pos")
        {
            Ok(position) => gtid::in_domain(
                &gtid::parse(&position.unwrap_or_default()).unwrap_or_default(),
                domain,
            ),
            Err(error) => {
                return Check::fail(
                    NAME,
                    format!("the peer stopped answering ({})", describe(&error)),
                    "see the peer check",
                );
            }
        };
        if theirs.is_some_and(|t| t.seq >= ours.seq) {
            return Check::pass(
                NAME,
                format!(
                    "the peer replicates from this node ({dumping}) and has its domain {domain} up to {ours}"
                ),
            );
        }
        if started.elapsed() >= PEER_CATCH_UP {
            return Check::fail(
                NAME,
                format!(
                    "the peer has this node's domain {domain} only up to {}, this node is at {ours}",
                    theirs.map_or("nothing".to_string(), |t| t.to_string())
                ),
                "see the peer's replication (its `mmvip doctor`) — transactions written here are missing there, and a failover to the peer loses them",
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
