//! Replication from the peer that `master` paused. It promoted this node while the
//! peer was silent, and closed the IO thread's connection first, so that what the
//! old connection still delivered (a commit the old writer never completed) could
//! not be applied after this node's own writes (plugins/role, catch-up). The guard
//! starts it again once the peer's MariaDB answers: a fresh connection fetches from
//! what this node received, out of the binlog the peer's recovery left.

use std::time::{Duration, Instant};

use super::Guard;
use crate::caps::sql::SqlError;
use crate::caps::state::StateStore;
use crate::log::{Level, Log};
use crate::mariadb::{Session, replica_io_statement};

/// The role plugin's state key (`catchup::PAUSED_KEY`): one connection name per
/// line, the default connection being the empty name.
const PAUSED_KEY: &str = "replication-paused";
/// How often the state is looked at (a file read) while nothing is paused, and the
/// peer asked while something is.
const EVERY: Duration = Duration::from_millis(500);
/// A hook holds the node lock for up to its catch-up: the next look tries again.
const LOCK_WAIT: Duration = Duration::from_millis(100);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

impl Guard {
    /// Resumes paused replication whenever there is some, forever.
    pub(super) fn resume_paused_replication(&self) {
        loop {
            std::thread::sleep(EVERY);
            if StateStore::peek(&self.config.state_dir, PAUSED_KEY).is_some()
                && self.peer_server_answers()
            {
                self.resume_paused_now();
            }
        }
    }

    /// Whether the peer's MariaDB answers (`[peer]`); without `[peer]`, whether its
    /// guard answered the last lease round.
    fn peer_server_answers(&self) -> bool {
        match self.peer_db {
            Some(_) => self.answering_peer_server().is_some(),
            None => !self.peer_silent.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Under the node lock, so no hook changes the state meanwhile: starts each
    /// paused IO thread and forgets the pause.
    fn resume_paused_now(&self) {
        let Ok(dir) = crate::trust::open_dir(&self.config.state_dir, "state_dir", false) else {
            return;
        };
        let Ok(_lock) = crate::lock::acquire(&dir, Instant::now() + LOCK_WAIT) else {
            return;
        };
        let mut state = StateStore::load(Some(dir), &self.log);
        let Some(paused) = state.get(PAUSED_KEY) else {
            return;
        };
        let mut local = Session::new(
            self.local.clone(),
            STATEMENT_TIMEOUT,
            Instant::now() + STATEMENT_TIMEOUT * 2,
            self.log.clone(),
        );
        let mut resumed = Vec::new();
        for name in paused.split('\n') {
            let shown = if name.is_empty() { "default" } else { name };
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

fn warn(log: &Log, message: &str) {
    log.write(Level::Warn, &[("msg", message)]);
}
