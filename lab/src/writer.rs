//! The client load: threads in the client namespace writing through one VIP as the
//! ordinary application user, recording every write MariaDB acknowledged and every
//! write whose fate the client cannot know (the connection was lost after the
//! statement or COMMIT was sent, before the answer), and on any error dropping the
//! connection and reconnecting, as an application pool would.
//!
//! Two workloads: plain inserts (commutative: any order of the same rows gives the
//! same table) and a sequence, where each write takes the next number of its stream
//! from the value it read in the same transaction, so a write served by a node that
//! had not applied the previous one takes a number twice.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

use crate::mariadb::{APP_PASSWORD, APP_USER, DATABASE, PORT, SEQUENCE_TABLE, TABLE};
use crate::netns;
use crate::topology::CLIENT_NS;

/// Pause after a failed connect, so a VIP with no holder is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// A SYN sent to the VIP just before the new holder's gratuitous ARP goes to the old
/// MAC and is lost; the kernel would resend it only after a second. Giving up after
/// 25 ms and connecting again measures the failover, not that retransmission (at 500
/// ms the lab's takeover times had a 500 ms floor, at 100 ms most of a 130 ms stop
/// was the client's wait); the handshake inside the lab takes well under a
/// millisecond, even on a busy 2-core machine.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(25);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct error messages kept for the report.
const KEPT_ERRORS: usize = 4;

/// Server errors that mean the write was refused and not committed: read-only,
/// duplicate key, deadlock, lock wait timeout, access denied. Any other failure after
/// the statement (or COMMIT) was sent leaves its fate unknown to the client.
const REFUSED_CODES: [u16; 7] = [1290, 1836, 1792, 1062, 1213, 1205, 1142];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One autocommit INSERT of a new uid per write.
    Insert,
    /// BEGIN; read the stream's highest n; insert n + 1; COMMIT.
    Sequence { stream: u8 },
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Insert => "insert",
            Workload::Sequence { .. } => "sequence",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriterSpec {
    /// Names the writer in rows and notes, e.g. `vip1`.
    pub name: String,
    pub vip: Ipv4Addr,
    /// uids are `uid_base + n`: distinct across writers, independent of auto_increment.
    pub uid_base: u64,
    /// One write per interval: a steady load rather than as fast as possible.
    pub interval: Duration,
    pub workload: Workload,
}

/// One acknowledged write, or one whose outcome the client does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub uid: u64,
    /// `@@server_id` of the node that served the connection.
    pub server_id: u32,
    pub at: Instant,
}

#[derive(Debug, Default, Clone)]
pub struct WriterLog {
    pub acks: Vec<Ack>,
    /// The connection broke (or an unexpected error came back) after the write's
    /// statement or COMMIT was sent: committed or not, only the data can tell.
    pub ambiguous: Vec<Ack>,
    /// Writes the server refused with an error that means "not committed".
    pub refused: Vec<u64>,
    pub attempted: u64,
    pub errors: u64,
    pub distinct_errors: Vec<String>,
}

impl WriterLog {
    fn record_error(&mut self, error: &str) {
        self.errors += 1;
        let short: String = error.chars().take(90).collect();
        if self.distinct_errors.len() < KEPT_ERRORS && !self.distinct_errors.contains(&short) {
            self.distinct_errors.push(short);
        }
    }

    /// The first acknowledgement after `since` served by `server_id`.
    pub fn first_ack_by(&self, server_id: u32, since: Instant) -> Option<Instant> {
        self.acks
            .iter()
            .find(|ack| ack.at > since && ack.server_id == server_id)
            .map(|ack| ack.at)
    }

    pub fn acks_since(&self, since: Instant) -> usize {
        self.acks.iter().filter(|ack| ack.at > since).count()
    }

    /// Each stretch without an acknowledgement between `from` and `to`: when it
    /// began and how long it lasted (the last one ends at `to`).
    pub fn gaps(&self, from: Instant, to: Instant) -> impl Iterator<Item = (Instant, Duration)> {
        let mut previous = from;
        self.acks
            .iter()
            .map(|a| a.at)
            .filter(move |at| *at > from && *at <= to)
            .chain([to])
            .map(move |at| {
                let gap = (previous, at.saturating_duration_since(previous));
                previous = previous.max(at);
                gap
            })
    }

    /// The longest stretch without an acknowledgement between `from` and `to`, and
    /// when it began.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> (Duration, Instant) {
        self.gaps(from, to)
            .fold((Duration::ZERO, from), |longest, (began, gap)| {
                if gap > longest.0 {
                    (gap, began)
                } else {
                    longest
                }
            })
    }
}

pub struct Writer {
    pub spec: WriterSpec,
    log: Arc<Mutex<WriterLog>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread and returns once it is inside the client namespace.
    pub fn start(spec: WriterSpec) -> Result<Writer> {
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (entered_tx, entered_rx) = mpsc::channel();
        let thread_spec = spec.clone();
        let thread_log = Arc::clone(&log);
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("writer-{}", spec.name))
            .spawn(move || {
                // Never connect from the root namespace: no namespace, no load.
                let entered = netns::enter(CLIENT_NS);
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                if ok {
                    write_loop(&thread_spec, &thread_log, &thread_stop);
                }
            })
            .context("spawn writer thread")?;
        let entered = entered_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("writer {} did not start", spec.name))?;
        let writer = Writer {
            spec,
            log,
            stop,
            handle: Some(handle),
        };
        entered.with_context(|| format!("writer {}", writer.spec.name))?;
        Ok(writer)
    }

    /// A view of the log while the writer runs.
    pub fn log(&self) -> MutexGuard<'_, WriterLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the writer (bounded by its I/O timeouts) and returns its log.
    pub fn stop(mut self) -> WriterLog {
        self.halt();
        self.log().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How a write that did not get its OK ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failed {
    /// Certainly not committed: refused by the server, or the connection broke
    /// before COMMIT was sent (the server rolls an open transaction back).
    NotCommitted(String),
    /// Sent, and no answer that settles it.
    Ambiguous(String),
}

fn after_sending(error: mysql::Error) -> Failed {
    match &error {
        mysql::Error::MySqlError(e) if REFUSED_CODES.contains(&e.code) => {
            Failed::NotCommitted(error.to_string())
        }
        _ => Failed::Ambiguous(error.to_string()),
    }
}

fn before_commit(error: mysql::Error) -> Failed {
    Failed::NotCommitted(error.to_string())
}

fn write_once(
    conn: &mut Conn,
    spec: &WriterSpec,
    uid: u64,
    server_id: u32,
) -> std::result::Result<(), Failed> {
    match spec.workload {
        Workload::Insert => conn
            .query_drop(format!(
                "INSERT INTO {TABLE} (uid, writer) VALUES ({uid}, '{}')",
                spec.name
            ))
            .map_err(after_sending),
        Workload::Sequence { stream } => {
            conn.query_drop("BEGIN").map_err(before_commit)?;
            let head: Option<u64> = conn
                .query_first(format!(
                    "SELECT COALESCE(MAX(n), 0) FROM {SEQUENCE_TABLE} WHERE stream = {stream}"
                ))
                .map_err(before_commit)?;
            let next = head.unwrap_or(0) + 1;
            // Literal values: a replica must store what this node computed, never
            // recompute it (the binlog may carry the statement).
            conn.query_drop(format!(
                "INSERT INTO {SEQUENCE_TABLE} (stream, n, uid, server_id) VALUES ({stream}, {next}, {uid}, {server_id})"
            ))
            .map_err(before_commit)?;
            conn.query_drop("COMMIT").map_err(after_sending)
        }
    }
}

fn write_loop(spec: &WriterSpec, log: &Mutex<WriterLog>, stop: &AtomicBool) {
    let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
    let mut connection: Option<(Conn, u32)> = None;
    let mut next = Instant::now();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let (conn, server_id) = match connection.as_mut() {
            Some((conn, id)) => (conn, *id),
            None => match connect(spec.vip) {
                Ok(made) => {
                    connection = Some(made);
                    let (conn, id) = connection.as_mut().expect("just set");
                    (conn, *id)
                }
                Err(error) => {
                    lock().record_error(&format!("connect: {error}"));
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            },
        };
        sequence += 1;
        let uid = spec.uid_base + sequence;
        lock().attempted += 1;
        let outcome = write_once(conn, spec, uid, server_id);
        let at = Instant::now();
        match outcome {
            Ok(()) => lock().acks.push(Ack { uid, server_id, at }),
            Err(failed) => {
                let mut log = lock();
                match failed {
                    Failed::NotCommitted(error) => {
                        log.refused.push(uid);
                        log.record_error(&error);
                    }
                    Failed::Ambiguous(error) => {
                        log.ambiguous.push(Ack { uid, server_id, at });
                        log.record_error(&error);
                    }
                }
                drop(log);
                connection = None;
            }
        }
        next += spec.interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind schedule (an outage): resume the steady pace, no burst.
            next = now;
        }
    }
}

fn connect(vip: Ipv4Addr) -> Result<(Conn, u32)> {
    let opts = OptsBuilder::new()
        .ip_or_hostname(Some(vip.to_string()))
        .tcp_port(PORT)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some(DATABASE))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .read_timeout(Some(IO_TIMEOUT))
        .write_timeout(Some(IO_TIMEOUT))
        .stmt_cache_size(0);
    let mut conn = Conn::new(opts)?;
    let server_id: Option<u32> = conn.query_first("SELECT @@server_id")?;
    Ok((conn, server_id.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(offsets_ms: &[(u64, u32)], start: Instant) -> WriterLog {
        WriterLog {
            acks: offsets_ms
                .iter()
                .enumerate()
                .map(|(i, (ms, server))| Ack {
                    uid: i as u64,
                    server_id: *server,
                    at: start + Duration::from_millis(*ms),
                })
                .collect(),
            ..WriterLog::default()
        }
    }

    #[test]
    fn first_ack_by_a_node_after_a_moment() {
        let start = Instant::now();
        let log = log_with(&[(10, 1), (20, 1), (900, 2), (950, 2)], start);
        let fault = start + Duration::from_millis(15);
        assert_eq!(
            log.first_ack_by(2, fault),
            Some(start + Duration::from_millis(900))
        );
        assert_eq!(log.first_ack_by(3, fault), None);
        assert_eq!(log.acks_since(fault), 3);
    }

    #[test]
    fn longest_gap_counts_the_edges() {
        let start = Instant::now();
        let log = log_with(&[(100, 1), (150, 1), (700, 2)], start);
        let gap = log.longest_gap(start, start + Duration::from_millis(1000));
        assert_eq!(
            gap,
            (
                Duration::from_millis(550),
                start + Duration::from_millis(150)
            )
        );
        let tail = log.longest_gap(start, start + Duration::from_millis(2000));
        assert_eq!(
            tail,
            (
                Duration::from_millis(1300),
                start + Duration::from_millis(700)
            )
        );
    }

    #[test]
    fn only_refusals_settle_a_failed_write() {
        let refused = mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: "read-only".into(),
            code: 1290,
        });
        assert!(matches!(after_sending(refused), Failed::NotCommitted(_)));
        // Killed by a demotion hook after the statement was sent: unknown.
        let killed = mysql::Error::MySqlError(mysql::MySqlError {
            state: "70100".into(),
            message: "Connection was killed".into(),
            code: 1927,
        });
        assert!(matches!(after_sending(killed), Failed::Ambiguous(_)));
        let io = mysql::Error::IoError(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(after_sending(io), Failed::Ambiguous(_)));
    }

    #[test]
    fn errors_are_counted_and_kept_once() {
        let mut log = WriterLog::default();
        for _ in 0..3 {
            log.record_error("ERROR 1290: read-only");
        }
        log.record_error("connect: refused");
        assert_eq!(log.errors, 4);
        assert_eq!(log.distinct_errors.len(), 2);
    }
}
