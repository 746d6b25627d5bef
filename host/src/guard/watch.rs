//! What the guard watches, as events rather than polls: the local mariadbd and
//! keepalived processes (a pidfd each: their death is seen at once), the failover
//! file (inotify), and the local MariaDB itself on a connection that always has a
//! statement in flight (`SELECT @@read_only, SLEEP(…)`), so a shutdown that kills
//! connections is seen at once and a hang within the sleep plus a timeout. Beside it,
//! whether semi-sync covers every commit the server acknowledged, and whether commits
//! wait for acknowledgements that no longer come (`semi_sync`).
//!
//! The node's health (mariadbd running and answering) is written to the health track
//! file as soon as it changes, and the failover flag to the failover track file;
//! keepalived re-reads a track file at once. A raised flag is left to the guard's
//! loop: on the writer it switches over first (demote, let the peer catch up, give
//! the lease back) and writes the failover track file when the peer can take over.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Target};

/// What is known of the local MariaDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// Answering; `read_only` as last seen.
    Up { read_only: bool },
    /// Not answering, with the reason: gone, going away, or not reachable.
    Down(String),
    /// No answer within the bound while the session stands: the server may resume
    /// and take writes at any moment.
    Hung(String),
}

/// Everything the guard watches, as last seen.
#[derive(Debug, Clone)]
pub struct Seen {
    pub database: Database,
    pub mariadbd_alive: bool,
    pub keepalived_alive: bool,
    pub failover_flag: bool,
    /// How many times the flag was raised: each raise is handled once, however
    /// soon it is lowered and raised again.
    pub flag_raises: u64,
    /// Counts changes and nudges, so that a wait cannot miss one made just before it.
    pub version: u64,
    /// When it last changed.
    pub changed: Instant,
    /// When a check began that found semi-sync covering every commit this server had
    /// acknowledged, and `rpl_semi_sync_master_timeout` then (see `semi_sync`).
    semi_sync_covered: Option<(Instant, Duration)>,
    /// A commit waits for the peer's acknowledgement far longer than a present peer
    /// takes (see `semi_sync`).
    pub stalled_acks: Option<StalledAcks>,
    /// What the health track file says now: unhealthy.
    health_file_unhealthy: bool,
}

/// Commits waiting for the peer's acknowledgement, with semi-sync still on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalledAcks {
    /// When the check that first found them began.
    pub seen_at: Instant,
    /// When the oldest of them gives up on the peer and commits here alone: it
    /// began waiting `rpl_semi_sync_master_timeout` before. Until then, none was
    /// acknowledged without the peer: semi-sync, still on, had not fallen back.
    pub gives_up_at: Instant,
}

/// How long a commit may wait for an acknowledgement before the peer counts as not
/// answering (a present one answers within a millisecond or so).
pub(crate) const STALLED_AFTER_MS: u64 = 100;

impl Seen {
    /// Healthy: MariaDB runs and answers, so this node may be (or stay) the writer.
    pub fn healthy(&self) -> bool {
        self.mariadbd_alive && matches!(self.database, Database::Up { .. })
    }

    /// Whether killing the server now loses no acknowledged write: a check that began
    /// less than `rpl_semi_sync_master_timeout` ago found semi-sync covering every
    /// commit. A commit is acknowledged without the replica only after waiting that
    /// long (or with semi-sync switched off), so none waiting then means none since.
    /// Kept through a hang: a frozen server acknowledges nothing.
    pub fn lossless_if_killed(&self) -> bool {
        self.semi_sync_covered
            .is_some_and(|(at, timeout)| at.elapsed() < timeout)
    }

    /// Why not healthy, for the log.
    pub fn unhealthy_because(&self) -> String {
        let mut why = Vec::new();
        if !self.mariadbd_alive {
            why.push("mariadbd is not running".to_string());
        }
        if let Database::Down(reason) | Database::Hung(reason) = &self.database {
            why.push(format!("MariaDB does not answer ({reason})"));
        }
        why.join("; ")
    }
}

/// The watched state, shared by the watching threads and the guard's loop.
pub struct Watched {
    seen: Mutex<Seen>,
    changed: Condvar,
    health_file: PathBuf,
    failover_file: PathBuf,
    log: Log,
}

impl Watched {
    pub fn new(health_file: PathBuf, failover_file: PathBuf, log: Log) -> Arc<Watched> {
        Arc::new(Watched {
            seen: Mutex::new(Seen {
                database: Database::Down("not yet asked".into()),
                mariadbd_alive: false,
                keepalived_alive: false,
                failover_flag: false,
                flag_raises: 0,
                version: 0,
                changed: Instant::now(),
                semi_sync_covered: None,
                stalled_acks: None,
                // The guard writes it unhealthy as it starts.
                health_file_unhealthy: true,
            }),
            changed: Condvar::new(),
            health_file,
            failover_file,
            log,
        })
    }

    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies a change; writes the health track file at once when health changed.
    fn update(&self, change: impl FnOnce(&mut Seen)) {
        self.apply(change, HealthFile::Now);
    }

    /// Writes the health track file if it no longer says what is seen.
    fn sync_health_file(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_health_file(&mut seen);
    }

    fn write_health_file(&self, seen: &mut Seen) {
        let unhealthy = !seen.healthy();
        if seen.health_file_unhealthy != unhealthy {
            super::track::write(&self.health_file, unhealthy, &self.log);
            seen.health_file_unhealthy = unhealthy;
        }
    }

    fn apply(&self, change: impl FnOnce(&mut Seen), health_file: HealthFile) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let before = seen.clone();
        change(&mut seen);
        let (was, is) = (before.healthy(), seen.healthy());
        let differs = before.database != seen.database
            || before.mariadbd_alive != seen.mariadbd_alive
            || before.keepalived_alive != seen.keepalived_alive
            || before.failover_flag != seen.failover_flag
            || before.stalled_acks.is_some() != seen.stalled_acks.is_some();
        if !differs {
            return;
        }
        seen.changed = Instant::now();
        seen.version += 1;
        if health_file == HealthFile::Now {
            self.write_health_file(&mut seen);
        }
        if was != is {
            let message = if is {
                "healthy: this node may be the writer".to_string()
            } else {
                format!("unhealthy: {}", seen.unhealthy_because())
            };
            self.log.write(Level::Warn, &[("msg", &message)]);
        }
        if before.failover_flag != seen.failover_flag {
            // Lowered: at once. Raised: the guard's loop asks the server whether this
            // node is the writer (what is seen here may be a sleep old) and switches
            // over first if it is.
            if seen.failover_flag {
                seen.flag_raises += 1;
            } else {
                super::track::write(&self.failover_file, false, &self.log);
            }
            self.log.write(
                Level::Warn,
                &[(
                    "msg",
                    if seen.failover_flag {
                        "failover flag raised"
                    } else {
                        "failover flag lowered"
                    },
                )],
            );
        }
        drop(seen);
        self.changed.notify_all();
    }

    /// Writes the failover track file (the guard's switch-over, once it is done).
    pub fn step_away(&self) {
        super::track::write(&self.failover_file, true, &self.log);
    }

    /// Clears the failover track file: a switch-over that could not complete.
    pub fn step_back(&self) {
        super::track::write(&self.failover_file, false, &self.log);
    }

    /// Waits until something changed after `version` was seen, or `timeout` passes.
    pub fn wait_change(&self, version: u64, timeout: Duration) {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .changed
            .wait_timeout_while(seen, timeout, |seen| seen.version == version);
    }

    /// Wakes the guard's loop (a request came in).
    pub fn nudge(&self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .version += 1;
        self.changed.notify_all();
    }
}

/// A process found through its pid file, watched through a pidfd.
struct Process {
    pidfile: PathBuf,
    fd: Option<OwnedFd>,
}

impl Process {
    fn new(pidfile: &Path) -> Process {
        Process {
            pidfile: pidfile.to_path_buf(),
            fd: None,
        }
    }

    /// Opens a pidfd for the pid in the pid file, if there is a live one.
    fn refresh(&mut self) -> bool {
        if self.fd.is_some() {
            return true;
        }
        let Ok(text) = std::fs::read_to_string(&self.pidfile) else {
            return false;
        };
        let Some(pid) = text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            // A killed process its parent has not reaped yet still has a pid (and a
            // pid file): it has exited all the same.
            Ok(fd) if has_exited(&fd) => false,
            Ok(fd) => {
                self.fd = Some(fd);
                true
            }
            Err(_) => false,
        }
    }
}

/// Whether the process behind a pidfd has exited (the pidfd reads ready).
fn has_exited(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut one = [PollFd::new(fd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut one, Some(&now)).is_ok_and(|ready| ready > 0)
}

/// Watches the processes and the failover flag until the process ends.
pub fn processes(
    watched: Arc<Watched>,
    mariadb_pidfile: PathBuf,
    keepalived_pidfile: PathBuf,
    failover_file: PathBuf,
) {
    use rustix::event::{PollFd, PollFlags, poll};
    use rustix::fs::inotify;

    let mut mariadbd = Process::new(&mariadb_pidfile);
    let mut keepalived = Process::new(&keepalived_pidfile);
    let flag_dir = failover_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let notify = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).ok();
    let mut watching_dir = false;
    loop {
        let (mariadbd_alive, keepalived_alive) = (mariadbd.refresh(), keepalived.refresh());
        if let Some(notify) = &notify
            && !watching_dir
        {
            watching_dir = inotify::add_watch(
                notify,
                &flag_dir,
                inotify::WatchFlags::CREATE
                    | inotify::WatchFlags::DELETE
                    | inotify::WatchFlags::MOVED_TO
                    | inotify::WatchFlags::MOVED_FROM,
            )
            .is_ok();
        }
        let flag = std::fs::symlink_metadata(&failover_file).is_ok();
        watched.update(|seen| {
            seen.mariadbd_alive = mariadbd_alive;
            seen.keepalived_alive = keepalived_alive;
            seen.failover_flag = flag;
        });
        let mut fds = Vec::new();
        if let Some(fd) = &mariadbd.fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let Some(fd) = &keepalived.fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let Some(notify) = &notify {
            fds.push(PollFd::new(notify, PollFlags::IN));
        }
        // A process not running yet, or a directory not there yet, is looked for
        // again after this long.
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        if poll(&mut fds, Some(&timeout)).is_err() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let exited = |process: &Process| process.fd.as_ref().is_some_and(has_exited);
        if exited(&mariadbd) {
            mariadbd.fd = None;
        }
        if exited(&keepalived) {
            keepalived.fd = None;
        }
        if let Some(notify) = &notify {
            let mut buffer = [std::mem::MaybeUninit::uninit(); 1024];
            let mut reader = inotify::Reader::new(notify.as_fd(), &mut buffer);
            while reader.next().is_ok() {}
        }
    }
}

/// Whether a change writes the health track file at once.
#[derive(PartialEq, Eq)]
enum HealthFile {
    Now,
    /// After `HANG_HANDOFF`: see `database`.
    Later,
}

/// How long the guard's loop gets to act on a hang before keepalived hears of it.
const HANG_HANDOFF: Duration = Duration::from_millis(30);

/// Keeps a statement in flight on the local MariaDB, forever: `SELECT @@read_only,
/// SLEEP(interval)`. A shutdown kills it at once; a hang shows as no answer within
/// the interval plus `timeout`. After a failure the first statement does not sleep:
/// a server that resumes from a hang writable must be fenced at once, not a sleep
/// later (the lab's frozen-mariadbd scenario measured 211 ms of two writers so).
pub fn database(watched: Arc<Watched>, endpoint: Endpoint, interval: Duration, timeout: Duration) {
    let sleeping = format!(
        "SELECT @@GLOBAL.read_only, SLEEP({:.3})",
        interval.as_secs_f64()
    );
    let quick = "SELECT @@GLOBAL.read_only, 0";
    let mut conn: Option<mysql::Conn> = None;
    let mut was_up = false;
    loop {
        let statement = if was_up { sleeping.as_str() } else { quick };
        if conn.is_none() {
            match open(&endpoint, interval + timeout) {
                Ok(opened) => conn = Some(opened),
                Err(lost) => {
                    was_up = false;
                    let database = match lost {
                        Lost::Hung(why) => Database::Hung(why),
                        Lost::Connection(why) => Database::Down(why),
                    };
                    watched.update(|seen| seen.database = database);
                    std::thread::sleep(interval.min(Duration::from_millis(100)));
                    continue;
                }
            }
        }
        let limit = interval + timeout;
        let mut answer = ask(conn.as_mut().expect("opened above"), statement, limit);
        if let Err(Lost::Connection(why)) = &answer {
            // A demotion kills every session of an account that writes through
            // read_only, this one included. Taken for a dead server, that made the
            // node unhealthy, keepalived put it in FAULT, the fault hook killed the
            // next session, and so on forever. So a lost session is only a failure
            // when a new one cannot ask either; a shutdown refuses the new one.
            answer = match open(&endpoint, limit) {
                Ok(mut fresh) => {
                    let again = ask(&mut fresh, quick, limit);
                    conn = Some(fresh);
                    again
                }
                Err(Lost::Hung(reopen)) => {
                    Err(Lost::Hung(format!("{why}; reconnecting: {reopen}")))
                }
                Err(Lost::Connection(reopen)) => {
                    Err(Lost::Connection(format!("{why}; reconnecting: {reopen}")))
                }
            };
        }
        was_up = answer.is_ok();
        match answer {
            Ok(read_only) => watched.update(|seen| seen.database = Database::Up { read_only }),
            Err(Lost::Connection(why)) => {
                conn = None;
                watched.update(|seen| seen.database = Database::Down(why));
            }
            Err(Lost::Hung(why)) => {
                conn = None;
                if watched.seen().lossless_if_killed() {
                    // The writer's guard kills a server that can go losing nothing,
                    // and its clients' connections end with it, but only while the
                    // VIP is still here to send their FIN from: keepalived hears of
                    // the hang a moment later.
                    watched.apply(
                        |seen| seen.database = Database::Hung(why),
                        HealthFile::Later,
                    );
                    std::thread::sleep(HANG_HANDOFF);
                    watched.sync_health_file();
                } else {
                    watched.update(|seen| seen.database = Database::Hung(why));
                }
            }
        }
    }
}

/// Asks, every `interval`, whether semi-sync covers every commit the local server has
/// acknowledged: its status ON and no commit waiting for an acknowledgement. Its own
/// thread and connection, apart from the statement that watches for hangs: reading
/// `information_schema.GLOBAL_STATUS` can stall behind the server's own locks where
/// `SELECT @@read_only` does not (the lab saw it as a network cut healed), and a
/// stall must not pass for a hang. A check that does not answer leaves the last
/// finding to age out.
pub fn semi_sync(watched: Arc<Watched>, endpoint: Endpoint, interval: Duration, timeout: Duration) {
    const FACTS: &str = "SELECT \
        (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'), \
        (SELECT CAST(VARIABLE_VALUE AS UNSIGNED) FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS'), \
        (SELECT CAST(VARIABLE_VALUE AS UNSIGNED) FROM information_schema.GLOBAL_VARIABLES \
         WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_TIMEOUT'), \
        (SELECT CAST(MAX(TIME_MS) AS UNSIGNED) FROM information_schema.PROCESSLIST \
         WHERE STATE = 'Waiting for semi-sync ACK from slave')";
    type Facts = (Option<String>, Option<u64>, Option<u64>, Option<u64>);
    let mut conn: Option<mysql::Conn> = None;
    loop {
        std::thread::sleep(interval);
        if conn.is_none() {
            conn = open(&endpoint, interval + timeout).ok();
        }
        // No answer: what was covered stays so (a frozen server acknowledges
        // nothing), but no commit is known to wait (a killed server has none).
        let no_answer = || watched.update(|seen| seen.stalled_acks = None);
        let Some(open_conn) = conn.as_mut() else {
            no_answer();
            continue;
        };
        let began = Instant::now();
        let answer: Result<Option<Facts>, mysql::Error> = open_conn.query_first(FACTS);
        let (status, waiting, timeout_ms, oldest_wait_ms) = match answer {
            Ok(Some(facts)) => facts,
            Ok(None) => (None, None, None, None),
            Err(_) => {
                conn = None;
                no_answer();
                continue;
            }
        };
        let on = status.as_deref() == Some("ON");
        let covered = match timeout_ms {
            Some(timeout_ms) if on && waiting == Some(0) => {
                Some((began, Duration::from_millis(timeout_ms)))
            }
            _ => None,
        };
        let stalled = match (timeout_ms, oldest_wait_ms) {
            (Some(timeout_ms), Some(waited_ms)) if on && waited_ms >= STALLED_AFTER_MS => {
                Some(began + Duration::from_millis(timeout_ms.saturating_sub(waited_ms)))
            }
            _ => None,
        };
        if stalled.is_some() != watched.seen().stalled_acks.is_some() {
            let message = match oldest_wait_ms {
                Some(waited) if stalled.is_some() => format!(
                    "a commit has waited {waited} ms for the peer's acknowledgement (semi-sync gives up after {} ms)",
                    timeout_ms.unwrap_or_default()
                ),
                _ => "commits are acknowledged again, or no longer wait".to_string(),
            };
            watched.log.write(Level::Warn, &[("msg", &message)]);
        }
        watched.update(|seen| {
            seen.semi_sync_covered = covered;
            seen.stalled_acks = stalled.map(|gives_up_at| StalledAcks {
                seen_at: seen.stalled_acks.map_or(began, |s| s.seen_at),
                gives_up_at,
            });
        });
    }
}

/// Why the local MariaDB did not answer the guard's statement.
enum Lost {
    /// The session ended (killed, or the server is going away).
    Connection(String),
    /// No answer in time: a hang. Asking again would only wait again.
    Hung(String),
}

/// Runs the guard's statement: `read_only`, or why there was no answer.
fn ask(conn: &mut mysql::Conn, statement: &str, limit: Duration) -> Result<bool, Lost> {
    let answer: Result<Option<(i64, i64)>, mysql::Error> = conn.query_first(statement);
    match answer {
        Ok(Some((read_only, 0))) => Ok(read_only != 0),
        Ok(_) => Err(Lost::Connection(
            "its statement was killed (shutting down?)".into(),
        )),
        Err(error) if timed_out(&error) => Err(Lost::Hung(describe(&error, limit))),
        Err(error) => Err(Lost::Connection(describe(&error, limit))),
    }
}

/// A read or write timeout, however the driver wraps it (a read timeout mid-packet
/// comes back as a codec error).
fn timed_out(error: &mysql::Error) -> bool {
    use mysql_common::proto::codec::error::PacketCodecError;
    let io = match error {
        mysql::Error::IoError(e) | mysql::Error::CodecError(PacketCodecError::Io(e)) => e,
        _ => return false,
    };
    matches!(
        io.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A connection to the local MariaDB over its socket, for the guard's other
/// long-lived statements; the error says why not.
pub(super) fn open_socket(endpoint: &Endpoint, timeout: Duration) -> Result<mysql::Conn, String> {
    open(endpoint, timeout).map_err(|lost| match lost {
        Lost::Connection(why) | Lost::Hung(why) => why,
    })
}

fn open(endpoint: &Endpoint, timeout: Duration) -> Result<mysql::Conn, Lost> {
    let Target::Socket(socket) = &endpoint.target else {
        return Err(Lost::Connection(
            "the guard watches the local MariaDB over its socket".into(),
        ));
    };
    let opts = mysql::OptsBuilder::new()
        .socket(Some(socket.to_string_lossy()))
        .prefer_socket(false)
        .user(Some(endpoint.user.as_str()))
        .pass(endpoint.password.as_deref())
        .stmt_cache_size(0)
        .read_timeout(Some(timeout))
        .write_timeout(Some(timeout));
    // A server that accepts the connection but never greets it hangs as much as one
    // that takes a statement and never answers: both may resume and write.
    mysql::Conn::new(opts).map_err(|e| {
        if timed_out(&e) {
            Lost::Hung(describe(&e, timeout))
        } else {
            Lost::Connection(describe(&e, timeout))
        }
    })
}

fn describe(error: &mysql::Error, timeout: Duration) -> String {
    if timed_out(error) {
        format!("no answer within {} ms (hung?)", timeout.as_millis())
    } else {
        crate::log::cut(&error.to_string(), 200).into_owned()
    }
}
