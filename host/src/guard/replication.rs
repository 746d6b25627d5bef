//! The guard's care of this node's replication from its peer, where a hook cannot
//! give it because it must wait for something to happen later:
//!
//! - Replication `master` paused. It promoted this node while the peer was silent,
//!   and closed the IO thread's connection first, so that what the old connection
//!   still delivered (a commit the old writer never completed) could not be applied
//!   after this node's own writes (plugins/role, catch-up). Started again once the
//!   peer's MariaDB answers: a fresh connection fetches from what this node
//!   received, out of the binlog the peer's recovery left.
//! - This node's own transactions its crash recovery dropped after they had come
//!   back around the ring (`gtid::rewound_slave_pos`): after each start of the local
//!   server, its replica position is rewound to its binlog, so that the peer sends
//!   them again.
//! - An IO thread stopped on error 1236 (the peer lacks the GTID asked for): after
//!   the peer's crash recovery dropped a transaction this node had already applied,
//!   this node asks for it before the peer has fetched it back, and MariaDB gives up
//!   for good (MDEV-33465; 18 times in a 20-minute lab chaos run). Started again as
//!   an operator would: once the peer has it back, replication resumes; with a real
//!   divergence it stops on 1236 again, and is retried only every
//!   `RESTART_1236_AT_MOST_EVERY`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Guard;
use crate::caps::sql::SqlError;
use crate::caps::state::StateStore;
use crate::gtid;
use crate::log::{Level, Log};
use crate::mariadb::{Session, replica_io_statement, replica_statement};

/// The role plugin's state key (`catchup::PAUSED_KEY`): one connection name per
/// line, the default connection being the empty name.
const PAUSED_KEY: &str = "replication-paused";
/// How often the state and the server's pid file are looked at (file reads), and
/// the peer asked while replication is paused.
const EVERY: Duration = Duration::from_millis(500);
/// A hook holds the node lock for up to its catch-up: the next look tries again.
const LOCK_WAIT: Duration = Duration::from_millis(100);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often this node's replication is read for IO threads stopped on 1236.
const LOOK_FOR_1236_EVERY: Duration = Duration::from_secs(1);
/// After a restart that did not hold, the next waits this long (one log line each).
const RESTART_1236_AT_MOST_EVERY: Duration = Duration::from_secs(10);
const ERROR_GTID_NOT_IN_BINLOG: &str = "1236";

impl Guard {
    /// Looks after replication forever.
    pub(super) fn look_after_replication(&self) {
        // The server whose replica position was last checked (none yet: the first
        // look checks the server running at the guard's start, a reboot's).
        let mut checked_server: Option<String> = None;
        let mut looked_for_1236 = Instant::now();
        let mut restarted_1236: HashMap<String, Instant> = HashMap::new();
        loop {
            std::thread::sleep(EVERY);
            if looked_for_1236.elapsed() >= LOOK_FOR_1236_EVERY {
                looked_for_1236 = Instant::now();
                self.restart_io_stopped_on_1236(&mut restarted_1236);
            }
            let server = std::fs::read_to_string(&self.guard.mariadb_pidfile).ok();
            if server.is_some() && server != checked_server && self.rewind_after_recovery() {
                checked_server = server;
            }
            if StateStore::peek(&self.config.state_dir, PAUSED_KEY).is_some()
                && self.peer_server_answers()
            {
                self.resume_paused_now();
            }
        }
    }

    fn local_session(&self) -> Session {
        Session::new(
            self.local.clone(),
            STATEMENT_TIMEOUT,
            Instant::now() + STATEMENT_TIMEOUT * 4,
            self.log.clone(),
        )
    }

    /// Starts again each IO thread stopped on 1236, unless restarted less than
    /// `RESTART_1236_AT_MOST_EVERY` ago (`restarted`: when, per connection).
    fn restart_io_stopped_on_1236(&self, restarted: &mut HashMap<String, Instant>) {
        let mut local = self.local_session();
        let Ok(records) = local.records(Level::Debug, "SHOW ALL SLAVES STATUS") else {
            return;
        };
        for record in records {
            let stopped_on_1236 = record.get("Slave_IO_Running") == Some("No")
                && record.get("Last_IO_Errno") == Some(ERROR_GTID_NOT_IN_BINLOG);
            let name = record
                .get("Connection_name")
                .unwrap_or_default()
                .to_string();
            if !stopped_on_1236
                || restarted
                    .get(&name)
                    .is_some_and(|at| at.elapsed() < RESTART_1236_AT_MOST_EVERY)
            {
                continue;
            }
            let error = record.get("Last_IO_Error").unwrap_or_default().to_string();
            let shown = connection_shown(&name);
            match replica_io_statement("START", &name)
                .and_then(|statement| local.rows(Level::Info, &statement))
            {
                Ok(_) => warn(
                    &self.log,
                    &format!(
                        "replication `{shown}`: IO thread stopped on error 1236 ({error}); started again, as the peer fetches back what its recovery dropped"
                    ),
                ),
                Err(failure) => warn(
                    &self.log,
                    &format!(
                        "replication `{shown}`: IO thread stopped on error 1236 ({error}) and could not be started again ({})",
                        crate::caps::sql::describe(&failure)
                    ),
                ),
            }
            restarted.insert(name, Instant::now());
        }
    }

    /// Rewinds the replica position where recovery dropped transactions it counts as
    /// seen. False when the server could not be asked (tried again next look).
    fn rewind_after_recovery(&self) -> bool {
        let mut local = self.local_session();
        let Ok(rows) = local.rows(
            Level::Debug,
            "SELECT @@GLOBAL.gtid_domain_id, @@GLOBAL.server_id, @@GLOBAL.gtid_slave_pos, @@GLOBAL.gtid_binlog_state, @@GLOBAL.read_only",
        ) else {
            return false;
        };
        let Some([domain, server, slave_pos, binlog_state, read_only]) =
            rows.into_iter().next().and_then(|row| {
                <[Option<String>; 5]>::try_from(row)
                    .ok()
                    .map(|row| row.map(Option::unwrap_or_default))
            })
        else {
            return true;
        };
        let (Ok(domain), Ok(server), Ok(slave_pos), Ok(binlog_state)) = (
            domain.parse::<u32>(),
            server.parse::<u32>(),
            gtid::parse(&slave_pos),
            gtid::parse(&binlog_state),
        ) else {
            return true;
        };
        let Some(rewound) = gtid::rewound_slave_pos(&slave_pos, &binlog_state, domain, server)
        else {
            return true;
        };
        // A writer's own transactions are its binlog's; only a replica is rewound.
        if read_only != "1" {
            return true;
        }
        let (from, to) = (gtid::render(&slave_pos), gtid::render(&rewound));
        match rewind(&mut local, &to) {
            Ok(restarted) => self.log.write(
                Level::Warn,
                &[(
                    "msg",
                    &format!(
                        "crash recovery dropped this node's own transactions after the peer had sent them back: replica position rewound from {from} to {to} (restarted: {}), so the peer sends them again",
                        restarted.join(", ")
                    ),
                )],
            ),
            Err(error) => warn(
                &self.log,
                &format!(
                    "this node's replica position {from} counts own transactions its binlog lost ({to}), and could not be rewound ({}): they will not come back from the peer; run STOP ALL SLAVES; SET GLOBAL gtid_slave_pos = '{to}'; START ALL SLAVES",
                    crate::caps::sql::describe(&error)
                ),
            ),
        }
        true
    }

    /// Whether the peer's MariaDB answers (`[peer]`); without `[peer]`, whether its
    /// guard answered the last lease round.
    fn peer_server_answers(&self) -> bool {
        match self.peer_db {
            Some(_) => self.answering_peer_server().is_some(),
            None => self.peer_answers(),
        }
    }

    /// Under the node lock, so no hook changes the state meanwhile: starts each
    /// paused IO thread and forgets the pause.
    fn resume_paused_now(&self) {
        let Some((_lock, mut state)) = locked_state(&self.config.state_dir, &self.log) else {
            return;
        };
        let Some(paused) = state.get(PAUSED_KEY) else {
            return;
        };
        let mut local = self.local_session();
        let mut resumed = Vec::new();
        for name in paused.split('\n') {
            let shown = connection_shown(name);
            let started = replica_io_statement("START", name)
                .and_then(|statement| local.rows(Level::Info, &statement));
            match started {
                Ok(_) => resumed.push(shown),
                // The server refused (an operator removed the connection, say):
                // asking again would not help.
                Err(error @ (SqlError::Server(_) | SqlError::Refused(_))) => warn(
                    &self.log,
                    &format!(
                        "replication `{shown}` from the peer could not be resumed ({}); start it by hand",
                        crate::caps::sql::describe(&error)
                    ),
                ),
                // The local server did not answer: the next look tries again.
                Err(_) => return,
            }
        }
        state.set(PAUSED_KEY.into(), None).ok();
        state.commit(&self.log);
        self.log.write(
            Level::Info,
            &[(
                "msg",
                &format!(
                    "replication from the peer resumed ({}): its MariaDB answers again; paused when this node promoted without the peer's final position",
                    resumed.join(", ")
                ),
            )],
        );
    }
}

/// The node lock and the state read under it; none while a hook holds the lock.
fn locked_state(state_dir: &Path, log: &Log) -> Option<(crate::lock::HookLock, StateStore)> {
    let dir = crate::trust::open_dir(state_dir, "state_dir", false).ok()?;
    let lock = crate::lock::acquire(&dir, Instant::now() + LOCK_WAIT).ok()?;
    Some((lock, StateStore::load(Some(dir), log)))
}

/// Stops every replication connection, sets `gtid_slave_pos`, and starts again those
/// that ran; returns their names.
fn rewind(local: &mut Session, position: &str) -> Result<Vec<String>, SqlError> {
    use crate::caps::sql::{IoState, SqlState};
    let running: Vec<String> = local
        .replicas()?
        .into_iter()
        .filter(|r| r.io_state != IoState::Stopped || r.sql_state != SqlState::Stopped)
        .map(|r| r.connection_name)
        .collect();
    local.rows(Level::Info, "STOP ALL SLAVES")?;
    let set = local.rows(
        Level::Info,
        &format!("SET GLOBAL gtid_slave_pos = '{position}'"),
    );
    // Started again whether or not the position took: stopped, nothing arrives.
    for name in &running {
        local.rows(Level::Info, &replica_statement("START", name, "")?)?;
    }
    set?;
    Ok(running
        .iter()
        .map(|name| connection_shown(name).to_string())
        .collect())
}

/// A replication connection's name as the logs show it: the default one is unnamed.
pub(super) fn connection_shown(name: &str) -> &str {
    if name.is_empty() { "default" } else { name }
}

fn warn(log: &Log, message: &str) {
    log.write(Level::Warn, &[("msg", message)]);
}
