//! A fence armed inside mariadbd. While this node holds a write lease, a statement
//! of the guard's waits in the server until shortly before the lease ends, and then
//! sets `read_only = ON`. It waits for a user lock ([`LOCK`]) that the guard's
//! control connection holds, with the time left as its timeout: it fires when the
//! time runs out, or at once when that connection ends (the guard died, or a
//! demotion killed its sessions). Every renewal replaces it with one that waits
//! longer: the new one is armed on a second connection first, and only once the
//! server runs it is the old one cancelled (`KILL QUERY ID` on the control
//! connection), so that one is armed at every instant, whenever the guard dies.
//!
//! Why inside the server: a whole node frozen and resumed (a VM paused, a stuck
//! hypervisor) wakes every process at once with its timers long expired. The guard
//! is a process switch and a connection away from `read_only`, and meanwhile the
//! server answers what queued up during the freeze (the lab measured 0-24 ms of a
//! writable node after resuming). The server's own timed wait wakes with it and sets
//! `read_only` first thing. It also fences a node whose guard stalled (the wait runs
//! out) or died (its lock connection ends).
//!
//! The guard's own fence comes first whenever the guard runs (at the fence's lead;
//! this one fires halfway from there to the lease's end), so this one changes nothing
//! in a pair that works. The wait runs on the server's wall clock: a step forward
//! (or a server stalled past the slack) fires it early, and the guard, its lease
//! still valid, makes the node writable again; a step back delays it, and the
//! guard's fence still comes in time.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use super::watch;
use crate::log::{Level, Log};
use crate::mariadb::Endpoint;

/// The marker that names an armed statement in the process list, followed by its
/// serial.
const MARKER: &str = "/* mmvip armed fence";
/// MariaDB's "query execution was interrupted": the statement was cancelled.
const INTERRUPTED: u16 = 1317;
/// MariaDB's "unknown query id": a statement cancelled after it ended.
const NO_SUCH_QUERY: u16 = 1957;
/// The user lock the control connection holds and each armed statement waits for
/// (in its `IF`: a statement inside the block would show its own text in the
/// process list, without the marker, while it waits).
/// Not `SLEEP`: a `KILL` that meets a thread entering or leaving `SLEEP` holds every
/// `SLEEP` in the server up for 2 s (the kill retries its lock 40 times, 50 ms
/// apart, and all `SLEEP`s share one mutex), and the guard's watch took that for a
/// hang. Not `MASTER_GTID_WAIT` either: `SET GLOBAL gtid_slave_pos` waits for every
/// such waiter to end.
const LOCK: &str = "mmvip_armed_fence";
/// How long a failed connection waits before the next try.
const RETRY: Duration = Duration::from_millis(100);
/// How long a cancelled statement may go on waiting before it is cancelled again.
const CANCEL_AGAIN: Duration = Duration::from_millis(20);
/// How often the process list is read for a statement not yet seen running.
const LOOK_AGAIN: Duration = Duration::from_millis(1);
/// Connections that arm: one waits while the next replaces it.
const ARMING: usize = 2;

pub struct ArmedFence {
    endpoint: Endpoint,
    /// The longest a statement can wait (a lease), plus the time to answer.
    longest_wait: Duration,
    /// How long a statement on the control connection may take.
    timeout: Duration,
    log: Log,
    /// Called when a statement fired, so that the guard looks at once.
    on_fire: Box<dyn Fn() + Send + Sync>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// When the fence is to fire; `None`: disarmed.
    due: Option<Instant>,
    /// The statements waiting in the server (one per arming connection at most).
    waiting: Vec<Waiting>,
    /// Counts statements, so that a cancel never hits a newer one by mistake.
    serial: u64,
    /// When a statement fired, until the guard takes note.
    fired: Option<Fired>,
    /// Arming failed, and no statement has waited since.
    failing: bool,
    /// The control connection holds [`LOCK`]: statements may be armed.
    holding: bool,
}

/// A statement that fired.
#[derive(Clone, Copy, Debug)]
pub struct Fired {
    pub at: Instant,
    /// The node was writable until it fired (else it changed nothing).
    pub was_writable: bool,
}

#[derive(Clone, Copy)]
struct Waiting {
    serial: u64,
    connection: u64,
    due: Instant,
    /// Its query id, once seen waiting in the server's process list: it then no
    /// longer depends on the guard, and can be cancelled alone (a `KILL QUERY` by
    /// connection that reaches it before the statement begins is dropped, and one
    /// that comes late hits the next statement). Read while it waits: the block's
    /// query id changes as it steps from statement to statement.
    query_id: Option<u64>,
    /// When it was last cancelled: no longer a cover for a newer one.
    cancelled_at: Option<Instant>,
}

/// Work for the cancelling thread.
enum Step {
    /// (Re)open the control connection and take [`LOCK`].
    Hold,
    Cancel(Waiting),
    /// Look for this statement in the process list.
    Confirm(Waiting),
}

impl State {
    /// Whether a statement waits for the wanted time.
    fn armed_as_wanted(&self) -> bool {
        self.waiting.iter().any(|w| Some(w.due) == self.due)
    }

    /// Others are cancelled only once the server runs a statement for the wanted
    /// time (or nothing is wanted); with every connection taken by older
    /// statements, the one that fires last makes room while another stays armed
    /// as cover. A statement is looked up before it is cancelled, and cancelled
    /// again if it goes on waiting.
    fn next_step(&self) -> Option<Step> {
        if !self.holding {
            return Some(Step::Hold);
        }
        if let Some(w) = self.waiting.iter().find(|w| {
            w.cancelled_at
                .is_some_and(|at| at.elapsed() >= CANCEL_AGAIN)
        }) {
            return Some(Step::Cancel(*w));
        }
        let live: Vec<&Waiting> = self
            .waiting
            .iter()
            .filter(|w| w.cancelled_at.is_none())
            .collect();
        let wanted = live.iter().find(|w| Some(w.due) == self.due);
        let mut stale = live.iter().filter(|w| Some(w.due) != self.due);
        let victim = match (self.due, wanted) {
            (Some(_), Some(w)) if w.query_id.is_none() => return Some(Step::Confirm(**w)),
            (None, _) | (Some(_), Some(_)) => stale.next(),
            (Some(_), None) if self.waiting.len() >= ARMING && live.len() >= 2 => {
                stale.max_by_key(|w| w.due)
            }
            (Some(_), None) => None,
        }?;
        Some(match victim.query_id {
            Some(_) => Step::Cancel(**victim),
            None => Step::Confirm(**victim),
        })
    }

    /// How long until a cancelled statement that still waits is cancelled again.
    fn cancel_again_in(&self) -> Option<Duration> {
        self.waiting
            .iter()
            .filter_map(|w| w.cancelled_at)
            .map(|at| CANCEL_AGAIN.saturating_sub(at.elapsed()))
            .min()
    }
}

impl ArmedFence {
    pub fn new(
        endpoint: Endpoint,
        lease: Duration,
        timeout: Duration,
        on_fire: Box<dyn Fn() + Send + Sync>,
        log: Log,
    ) -> Arc<ArmedFence> {
        Arc::new(ArmedFence {
            endpoint,
            longest_wait: lease + timeout,
            timeout,
            log,
            on_fire,
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    /// Starts the threads that arm and cancel.
    pub fn start(self: &Arc<Self>) {
        for _ in 0..ARMING {
            let fence = Arc::clone(self);
            std::thread::spawn(move || fence.arm_forever());
        }
        let fence = Arc::clone(self);
        std::thread::spawn(move || fence.cancel_forever());
    }

    /// Arms the fence to fire at `due`, or disarms it.
    pub fn set(&self, due: Option<Instant>) {
        let mut state = self.state();
        if state.due.is_none() && due.is_some() {
            // Armed after a pause, during which a demotion may have killed the
            // connection that holds the lock, unnoticed: a statement armed now
            // would take the free lock and fire. Looked at again first.
            state.holding = false;
        }
        if state.due != due {
            state.due = due;
            self.changed.notify_all();
        }
    }

    /// Waits until a statement for the wanted time has been sent (the server runs
    /// it even if the guard stops now), at most `limit`; whether one has.
    pub fn wait_armed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.state();
        loop {
            if state.due.is_some() && state.armed_as_wanted() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The statement that fired since last asked, if one did.
    pub fn take_fired(&self) -> Option<Fired> {
        self.state().fired.take()
    }

    /// How long until the fence fires, if it is armed (or being re-armed) and
    /// arming has not failed since the last statement began waiting.
    pub fn fires_in(&self) -> Option<Duration> {
        let state = self.state();
        let earliest = state.waiting.iter().map(|w| w.due).min();
        let due = match (earliest, state.due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        due.filter(|_| !state.failing && state.holding)
            .map(|due| due.saturating_duration_since(Instant::now()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One arming connection: whenever no statement waits for the wanted time, and
    /// this connection is free, it sends one.
    fn arm_forever(&self) {
        let mut conn: Option<(mysql::Conn, u64)> = None;
        let mut complaint = None;
        loop {
            {
                let mut state = self.state();
                while state.due.is_none() || state.armed_as_wanted() || !state.holding {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            if conn.is_none() {
                match self.open_armed() {
                    Ok(opened) => conn = Some(opened),
                    Err(why) => {
                        self.cannot_arm(&mut complaint, &why, RETRY);
                        continue;
                    }
                }
            }
            let (session, connection) = conn.as_mut().expect("opened above");
            let (serial, due) = {
                let mut state = self.state();
                // The other connection may have armed it meanwhile.
                let Some(due) = state
                    .due
                    .filter(|_| !state.armed_as_wanted() && state.holding)
                else {
                    continue;
                };
                state.serial += 1;
                let serial = state.serial;
                state.waiting.push(Waiting {
                    serial,
                    connection: *connection,
                    due,
                    query_id: None,
                    cancelled_at: None,
                });
                state.failing = false;
                self.changed.notify_all();
                (serial, due)
            };
            let wait = due.saturating_duration_since(Instant::now());
            let statement = format!(
                "BEGIN NOT ATOMIC {MARKER} {serial} */ \
                 IF GET_LOCK('{LOCK}', {:.3}) IS NOT NULL THEN \
                 SET @was_writable = @@GLOBAL.read_only = 0, \
                 @got = IS_USED_LOCK('{LOCK}') = CONNECTION_ID(); \
                 SET GLOBAL read_only = ON; DO RELEASE_LOCK('{LOCK}'); \
                 SELECT @was_writable, @got; END IF; END",
                wait.as_secs_f64()
            );
            let answer: mysql::Result<Vec<(i64, i64)>> = session.query(&statement);
            let (fired, holder_gone) = match &answer {
                Ok(rows) => match rows.first() {
                    Some((was_writable, got)) => (
                        Some(Fired {
                            at: Instant::now(),
                            was_writable: *was_writable != 0,
                        }),
                        *got == 1,
                    ),
                    None => (None, false),
                },
                Err(_) => (None, false),
            };
            {
                let mut state = self.state();
                state.waiting.retain(|w| w.serial != serial);
                if holder_gone {
                    // The lock was free: the control connection is gone, and no
                    // statement may wait until it holds the lock again.
                    state.holding = false;
                }
                if fired.is_some() {
                    state.fired = fired;
                    // Fired once: armed again only for a new due time.
                    if state.due == Some(due) {
                        state.due = None;
                    }
                }
                self.changed.notify_all();
            }
            match answer {
                Ok(_) if fired.is_some() => {
                    complaint = None;
                    let why = if holder_gone {
                        "the guard's lock connection ended"
                    } else {
                        "its wait ran out"
                    };
                    self.log.write(
                        Level::Warn,
                        &[(
                            "msg",
                            &format!("the fence armed in mariadbd fired ({why}): read_only = ON"),
                        )],
                    );
                    (self.on_fire)();
                }
                Ok(_) => {}
                Err(mysql::Error::MySqlError(e)) if e.code == INTERRUPTED => complaint = None,
                // Not for want of a connection (privileges, a server without
                // compound statements): tried again, and said once.
                Err(mysql::Error::MySqlError(e)) => {
                    self.cannot_arm(&mut complaint, &e.message, RETRY * 10)
                }
                // Killed with its session (a demotion kills the guard's too), or the
                // server went: a new connection for the next one.
                Err(_) => conn = None,
            }
        }
    }

    /// Cancels waiting statements no longer wanted, each again every
    /// [`CANCEL_AGAIN`] until it ends.
    fn cancel_forever(&self) {
        let mut conn: Option<mysql::Conn> = None;
        let mut complaint = None;
        loop {
            let step = {
                let mut state = self.state();
                loop {
                    match state.next_step() {
                        Some(Step::Cancel(w)) => {
                            if let Some(entry) =
                                state.waiting.iter_mut().find(|e| e.serial == w.serial)
                            {
                                entry.cancelled_at = Some(Instant::now());
                            }
                            break Step::Cancel(w);
                        }
                        Some(confirm) => break confirm,
                        None => {}
                    }
                    state = match state.cancel_again_in() {
                        None => self
                            .changed
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner),
                        Some(left) => {
                            self.changed
                                .wait_timeout(state, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                    };
                }
            };
            let statement = match step {
                Step::Hold => {
                    match self.hold(conn.take()) {
                        Ok(held) => {
                            conn = Some(held);
                            complaint = None;
                            self.state().holding = true;
                            self.changed.notify_all();
                        }
                        Err(why) => self.cannot_arm(&mut complaint, &why, RETRY),
                    }
                    continue;
                }
                Step::Cancel(stale) => {
                    let query = stale.query_id.expect("only statements seen running");
                    format!("KILL QUERY ID {query}")
                }
                Step::Confirm(new) => format!(
                    "SELECT QUERY_ID FROM information_schema.PROCESSLIST \
                     WHERE ID = {} AND INFO LIKE '%{MARKER} {} */%' AND STATE = 'User lock'",
                    new.connection, new.serial
                ),
            };
            let answer = match conn.as_mut() {
                Some(c) => match c.query_first::<u64, _>(&statement) {
                    Ok(query) => Ok(query),
                    Err(mysql::Error::MySqlError(e)) if e.code == NO_SUCH_QUERY => Ok(None),
                    Err(e) => Err(e.to_string()),
                },
                None => Err("no connection".to_string()),
            };
            match answer {
                Ok(query) => {
                    complaint = None;
                    if let Step::Confirm(new) = step {
                        match query {
                            Some(query) => {
                                let mut state = self.state();
                                if let Some(w) =
                                    state.waiting.iter_mut().find(|w| w.serial == new.serial)
                                {
                                    w.query_id = Some(query);
                                }
                            }
                            None => std::thread::sleep(LOOK_AGAIN),
                        }
                    }
                }
                // The connection holding the lock is gone (a demotion kills the
                // guard's sessions), and the statements waiting on it fire.
                Err(why) => {
                    complain(
                        &self.log,
                        &mut complaint,
                        format!("cannot re-arm the fence in mariadbd: {why}"),
                    );
                    conn = None;
                    self.state().holding = false;
                    self.changed.notify_all();
                }
            }
        }
    }

    /// A control connection that holds [`LOCK`]: `current` if it still does, else a
    /// new one (a connection that ended has let the lock go).
    fn hold(&self, current: Option<mysql::Conn>) -> Result<mysql::Conn, String> {
        if let Some(mut conn) = current {
            let still: mysql::Result<Option<i64>> =
                conn.query_first(format!("SELECT IS_USED_LOCK('{LOCK}') = CONNECTION_ID()"));
            if let Ok(Some(1)) = still {
                return Ok(conn);
            }
        }
        let mut conn = self.open_control()?;
        let got: Option<i64> = conn
            .query_first(format!("SELECT GET_LOCK('{LOCK}', 0)"))
            .map_err(|e| e.to_string())?;
        match got {
            Some(1) => Ok(conn),
            _ => Err(format!("the user lock {LOCK} is held elsewhere")),
        }
    }

    /// Arming failed: said once while it keeps failing the same way, shown by
    /// `fires_in`, and tried again after `pause`.
    fn cannot_arm(&self, complaint: &mut Option<String>, why: &str, pause: Duration) {
        self.state().failing = true;
        complain(
            &self.log,
            complaint,
            format!("cannot arm the fence in mariadbd: {why}"),
        );
        std::thread::sleep(pause);
    }

    /// A connection for armed statements, and its id.
    fn open_armed(&self) -> Result<(mysql::Conn, u64), String> {
        let mut conn = watch::open_socket(&self.endpoint, self.longest_wait)?;
        // A site's statement time limit would cut the wait short, and with it the
        // fence, every time.
        conn.query_drop("SET SESSION max_statement_time = 0")
            .map_err(|e| e.to_string())?;
        let id: Option<u64> = conn
            .query_first("SELECT CONNECTION_ID()")
            .map_err(|e| e.to_string())?;
        let id = id.ok_or("no connection id")?;
        Ok((conn, id))
    }

    fn open_control(&self) -> Result<mysql::Conn, String> {
        watch::open_socket(&self.endpoint, self.timeout)
    }
}

/// Logs a failure once for as long as it stays the same.
fn complain(log: &Log, last: &mut Option<String>, why: String) {
    if last.as_ref() != Some(&why) {
        log.write(Level::Warn, &[("msg", &why)]);
        *last = Some(why);
    }
}
