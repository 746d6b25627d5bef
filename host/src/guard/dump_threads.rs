//! Frees binlog dump threads that MariaDB's semi-sync master leaves stuck.
//!
//! When a replica vanishes without closing its connection (a cut network, a frozen
//! or rebooted node), its dump thread is killed once the replica reconnects, and
//! then waits for the semi-sync ack receiver to let it go, in state `Waiting to
//! finalize termination`. In the lab (MariaDB 10.11) it waited for good: every new
//! dump for that replica queued behind it in `starting`, so replication in that
//! direction stayed stopped after the network healed, while both IO threads said
//! `Yes`. Restarting the semi-sync master (`rpl_semi_sync_master_enabled` OFF, then
//! ON) frees it at once. It costs no guarantee: while the thread is stuck the replica
//! receives nothing, so it acknowledges nothing either.

use std::time::{Duration, Instant};

use crate::caps::sql::SqlError;
use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Session};

/// How often the local MariaDB is asked.
const EVERY: Duration = Duration::from_secs(1);
/// A dump thread ends within milliseconds of its kill; a second is stuck (the
/// process list counts whole seconds). Soon, because while one is stuck the lab also
/// saw the server's other statements stall, a demotion's among them.
const STUCK_AFTER_SECONDS: u32 = 1;
/// Left alone after a restart, so that one that did not help is not repeated in a loop.
const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// Each statement's bound.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

const STUCK_STATE: &str = "Waiting to finalize termination";
/// The variable whose restart frees them (`master` restarts it too, for a silent peer).
pub(crate) const SEMI_SYNC_MASTER: &str = "rpl_semi_sync_master_enabled";

/// Watches forever. `may_restart`: the site lets mmvip set `rpl_semi_sync_master_enabled`
/// (`[mariadb] settable_variables`); otherwise the guard only says what it found.
pub fn watch(endpoint: Endpoint, may_restart: bool, log: Log) {
    let mut last_restart: Option<Instant> = None;
    let mut reported = false;
    loop {
        std::thread::sleep(EVERY);
        let Some(stuck) = stuck_threads(&endpoint, &log) else {
            continue;
        };
        if stuck == 0 {
            reported = false;
            continue;
        }
        if !may_restart {
            if !reported {
                reported = true;
                log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!(
                            "{stuck} binlog dump thread(s) stuck in `{STUCK_STATE}`: replication to the peer is stopped; add {SEMI_SYNC_MASTER} to [mariadb] settable_variables to let the guard restart semi-sync, or run SET GLOBAL {SEMI_SYNC_MASTER} = OFF, then ON"
                        ),
                    )],
                );
            }
            continue;
        }
        if last_restart.is_some_and(|at| at.elapsed() < RESTART_AT_MOST_EVERY) {
            continue;
        }
        last_restart = Some(Instant::now());
        let outcome = restart_semi_sync(&endpoint, &log);
        log.write(
            if outcome.is_ok() {
                Level::Warn
            } else {
                Level::Error
            },
            &[(
                "msg",
                &match outcome {
                    Ok(()) => format!(
                        "{stuck} binlog dump thread(s) stuck in `{STUCK_STATE}` held replication to the peer back: semi-sync master restarted to free them"
                    ),
                    Err(why) => format!(
                        "{stuck} binlog dump thread(s) stuck in `{STUCK_STATE}`; restarting semi-sync failed: {why}"
                    ),
                },
            )],
        );
    }
}

fn session(endpoint: &Endpoint, log: &Log) -> Session {
    Session::new(
        endpoint.clone(),
        STATEMENT_TIMEOUT,
        Instant::now() + 2 * STATEMENT_TIMEOUT,
        log.clone(),
    )
}

/// How many dump threads are stuck; `None` when MariaDB does not answer (the other
/// watchers report that).
fn stuck_threads(endpoint: &Endpoint, log: &Log) -> Option<u32> {
    count_stuck(&mut session(endpoint, log)).ok()
}

/// How many binlog dump threads semi-sync has left stuck (0 where semi-sync master
/// is off: only it strands them). The guard and `mmvip doctor` ask the same.
pub(crate) fn count_stuck(session: &mut Session) -> Result<u32, SqlError> {
    let enabled = session.value(Level::Debug, &format!("SELECT @@GLOBAL.{SEMI_SYNC_MASTER}"))?;
    if enabled.as_deref() != Some("1") {
        return Ok(0);
    }
    let count = session.value(
        Level::Debug,
        &format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = '{STUCK_STATE}' AND TIME >= {STUCK_AFTER_SECONDS}"
        ),
    )?;
    Ok(count.and_then(|count| count.parse().ok()).unwrap_or(0))
}

fn restart_semi_sync(endpoint: &Endpoint, log: &Log) -> Result<(), String> {
    let mut session = session(endpoint, log);
    for value in ["OFF", "ON"] {
        session
            .run(
                Level::Info,
                &format!("SET GLOBAL {SEMI_SYNC_MASTER} = {value}"),
                |conn, sql| mysql::prelude::Queryable::query_drop(conn, sql),
            )
            .map_err(|error| format!("{SEMI_SYNC_MASTER} = {value}: {error}"))?;
    }
    Ok(())
}
