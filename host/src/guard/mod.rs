//! `mmvip guard`: the resident process of a node. It holds the node's write leases
//! and fences the node when it cannot; and it sees failures as they happen and tells
//! keepalived at once through track files.
//!
//! The rule it keeps: a node may have `read_only=OFF` only while it holds the write
//! lease of an `rw` instance whose VIP it holds, with its keepalived alive. When that
//! stops being true it fences: the instance's track file goes to FAULT, the `fault`
//! plugin demotes the node through whatever blocks it, a VIP a dead keepalived left
//! behind is removed, and if `read_only` is still OFF after the margin, mariadbd is
//! killed (the last resort).
//!
//! What lives where: the lease clock, the votes and the fence trigger are here, in the
//! host, because they must hold even when a plugin traps or hangs; how the node is
//! demoted (what to kill, what to spare) is the `fault` plugin's, run as a hook.

pub mod armed_fence;
pub mod config;
pub mod control;
pub(crate) mod dump_threads;
mod lease;
mod replication;
mod systemd;
mod track;
mod turn_away;
mod watch;
mod wire;
mod witness;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::armed_fence::ArmedFence;
use self::config::{GuardConfig, LastResort, WithoutPeer};
use self::lease::{Answer, Ballots, Outcome, Rules};
use self::watch::{Database, Watched};
use self::wire::Secret;
use self::witness::WitnessClient;
use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::log::{Level, Log};
use crate::mariadb::Endpoint;

/// How long one question to the peer's guard (per address) or the witness may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// A statement on the watching connection that takes longer than its sleep plus this
/// is a hang.
const HANG_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a node that stepped aside (lost the vote while VRRP made it MASTER) keeps
/// its instance in FAULT at least; after that, until the peer no longer holds both the
/// lease and the VIP (asked each lease round).
const STEP_ASIDE: Duration = Duration::from_millis(500);
/// How many of the peer's connections are answered at once.
const PEER_CONNECTIONS: usize = 8;
/// How long the guard's own `read_only = ON` may take before the fault plugin's
/// demotion takes over.
const READ_ONLY_AT_ONCE: Duration = Duration::from_millis(100);
/// How long a standby may take to apply the writer's position before it counts as
/// behind (replication under load is a few milliseconds behind at any instant).
const CAUGHT_UP_WITHIN: Duration = Duration::from_millis(200);
/// What the last resort needs to be sure of ending mariadbd: SIGKILL, and the kernel
/// tearing it down.
const KILL_WITHIN: Duration = Duration::from_millis(50);
/// How long a promotion waits for the fence inside mariadbd to be armed.
const ARM_WITHIN: Duration = Duration::from_millis(100);
/// How soon a promotion asks again for a lease it was refused.
const ACQUIRE_RETRY: Duration = Duration::from_millis(20);

/// The instances of `since` whose entry has lasted [`STEP_ASIDE`].
fn lasted_step_aside(since: &HashMap<String, Instant>) -> Vec<String> {
    since
        .iter()
        .filter(|(_, since)| since.elapsed() >= STEP_ASIDE)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The shortest `rpl_semi_sync_master_timeout` with which a writer cut off with a
/// commit in flight is killed before the commit completes alone: the commit seen
/// waiting, a silent peer's answer, and the kill (`cut_off_with_commits_waiting`).
pub fn semi_sync_timeout_needed(ping_interval: Duration) -> Duration {
    ping_interval + Duration::from_millis(watch::STALLED_AFTER_MS) + ASK_TIMEOUT * 2 + KILL_WITHIN
}

/// The track file that says whether this node's MariaDB is healthy (all instances).
pub const HEALTH_TRACK: &str = "health";
/// The track file of the failover flag (planned switch-over; all instances).
pub const FAILOVER_TRACK: &str = "failover";

/// The lease and votes, shared by the guard's threads.
#[derive(Default)]
struct Leases {
    ballots: Ballots,
    /// Instances whose lease this node holds, and until when.
    held: HashMap<String, Instant>,
    /// Instances this node stepped aside from, and since when.
    stepped_aside: HashMap<String, Instant>,
    /// Instances whose VIP is here but whose lease was refused, since when.
    refused_since: HashMap<String, Instant>,
    /// Instances this node fenced itself out of (FAULT), and since when.
    fenced: HashMap<String, Instant>,
    /// Instances kept in FAULT while the peer writes for them and this node's
    /// replication has not caught up.
    catching_up: HashMap<String, Instant>,
    /// Fenced instances whose peer's guard has not answered since when (while the
    /// probes do).
    fenced_peer_quiet: HashMap<String, Instant>,
}

/// One instance as a rule turn finds it.
#[derive(Clone, Copy)]
struct InstanceNow {
    /// Its lease is held and usable beyond the fence's lead.
    leased: bool,
    vip_held: bool,
}

impl Leases {
    /// Whether some reason of the guard's still holds `instance` in FAULT.
    fn keeps_in_fault(&self, instance: &str) -> bool {
        self.stepped_aside.contains_key(instance)
            || self.fenced.contains_key(instance)
            || self.catching_up.contains_key(instance)
    }
}

pub struct Guard {
    config: Config,
    config_path: PathBuf,
    guard: GuardConfig,
    log: Log,
    secret: Secret,
    leases: Mutex<Leases>,
    /// One lease round at a time (the witness connection is in here).
    rounds: Mutex<Option<WitnessClient>>,
    watched: Arc<Watched>,
    /// The `rw` instances and their VIPs.
    instances: Vec<(String, IpAddr)>,
    /// The local MariaDB, and the peer's (as `[peer]` names it), for the switch-over.
    local: Endpoint,
    peer_db: Option<(Vec<Endpoint>, Duration)>,
    /// One switch-over at a time.
    switching: Mutex<()>,
    /// A switch-over gave the leases back: not to be taken again while the VIP
    /// still lingers here.
    stepping_away: AtomicBool,
    /// The peer's guard did not answer the last round (logged when it changes).
    peer_silent: AtomicBool,
    /// The last round found the peer silent while the probes answered: this node is
    /// not the one cut off, and takes the lease alone once the silence is long enough.
    waiting_out_silence: AtomicBool,
    /// When the last look at the network began, if it found the peer's guard silent
    /// and no probe answering: this node is cut off from everything
    /// (`look_for_a_cut`).
    cut_off_seen: Mutex<Option<Instant>>,
    /// systemd's notification socket and watchdog, when run by systemd.
    notifier: systemd::Notifier,
    /// When the rule loop last turned (the watchdog is fed only while it does).
    rule_turned: Mutex<Instant>,
    /// Since when this node's rounds have found the peer's guard silent (none since
    /// it was last heard: an answer, or a signed request of its own).
    peer_silent_since: Mutex<Option<Instant>>,
    /// The instances whose VIP's gate is open (`turn_away`: several `rw` instances
    /// only). Held across each nft run, so that gates change one at a time.
    serving: Mutex<HashSet<String>>,
    /// `read_only = ON` waiting inside mariadbd for the leases to run out.
    armed_fence: Arc<ArmedFence>,
}

/// Runs the guard of this node until the process ends.
pub fn run(config: &Config, config_path: &Path, log: Log) -> Result<()> {
    let guard_config = config.guard.clone().ok_or_else(|| {
        Error::usage(format!(
            "{}: no [guard] table: the guard has nothing to guard",
            config_path.display()
        ))
    })?;
    let secret = Secret::new(
        crate::trust::read_secret(&guard_config.secret_file, "[guard] secret_file")?.into_bytes(),
    )
    .map_err(Error::usage)?;
    let witness = match &guard_config.witness {
        Some(witness) => {
            let password = secret_of(
                witness.password_file.as_deref(),
                "[guard.witness] password_file",
            )?;
            Some(WitnessClient::new(witness.clone(), password, ASK_TIMEOUT))
        }
        None => None,
    };
    std::fs::create_dir_all(&guard_config.track_dir).map_err(|e| {
        Error::failed(format!(
            "[guard] track_dir {}: {e}",
            guard_config.track_dir.display()
        ))
    })?;
    let instances: Vec<(String, IpAddr)> = config
        .instances
        .iter()
        .filter(|(_, i)| i.role == Role::ReadWrite)
        .map(|(name, i)| (name.clone(), i.vip))
        .collect();
    let watched = Watched::new(
        guard_config.track_dir.join(HEALTH_TRACK),
        guard_config.track_dir.join(FAILOVER_TRACK),
        log.clone(),
    );
    let local = Endpoint::local(
        &config.mariadb,
        secret_of(
            config.mariadb.password_file.as_deref(),
            "[mariadb] password_file",
        )?,
    );
    let peer_db = match &config.peer {
        Some(peer) => {
            let password = secret_of(peer.password_file.as_deref(), "[peer] password_file")?;
            Some((Endpoint::peers(peer, password), peer.timeout))
        }
        None => None,
    };
    let armed_fence = {
        let watched = Arc::clone(&watched);
        ArmedFence::new(
            local.clone(),
            guard_config.lease,
            Duration::from_secs(1),
            Box::new(move || watched.nudge()),
            log.clone(),
        )
    };
    let guard = Arc::new(Guard {
        config: config.clone(),
        config_path: config_path.to_path_buf(),
        guard: guard_config,
        log,
        secret,
        leases: Mutex::default(),
        rounds: Mutex::new(witness),
        watched,
        instances,
        local,
        peer_db,
        switching: Mutex::new(()),
        stepping_away: AtomicBool::new(false),
        peer_silent: AtomicBool::new(false),
        waiting_out_silence: AtomicBool::new(false),
        cut_off_seen: Mutex::new(None),
        peer_silent_since: Mutex::new(None),
        serving: Mutex::default(),
        notifier: systemd::Notifier::from_env(),
        rule_turned: Mutex::new(Instant::now()),
        armed_fence,
    });
    guard.start()
}

/// The secret in an optional file.
fn secret_of(path: Option<&Path>, what: &str) -> Result<Option<String>> {
    path.map(|path| crate::trust::read_secret(path, what))
        .transpose()
}

impl Guard {
    fn start(self: Arc<Self>) -> Result<()> {
        turn_away::prepare(&self.vips(), &self.gated_vips(), &self.log).map_err(|e| {
            Error::failed(format!(
                "several rw instances need the VIP gate, which needs nftables: {e}"
            ))
        })?;
        // Every instance starts healthy-unknown: FAULT until the watchers see it.
        track::write(&self.track(HEALTH_TRACK), true, &self.log);
        // A raised flag is left to the loop, which switches over first on the writer.
        if std::fs::symlink_metadata(&self.config.failover_file).is_err() {
            track::write(&self.track(FAILOVER_TRACK), false, &self.log);
        }
        for (name, _) in &self.instances {
            track::write(&self.track(name), false, &self.log);
        }
        self.armed_fence.start();
        let endpoint = self.local.clone();
        {
            let watched = Arc::clone(&self.watched);
            let (mariadb, keepalived, flag) = (
                self.guard.mariadb_pidfile.clone(),
                self.guard.keepalived_pidfile.clone(),
                self.config.failover_file.clone(),
            );
            std::thread::spawn(move || watch::processes(watched, mariadb, keepalived, flag));
        }
        {
            let watched = Arc::clone(&self.watched);
            let interval = self.guard.ping_interval;
            let semi_sync_endpoint = endpoint.clone();
            std::thread::spawn(move || watch::database(watched, endpoint, interval, HANG_TIMEOUT));
            let watched = Arc::clone(&self.watched);
            std::thread::spawn(move || {
                watch::semi_sync(watched, semi_sync_endpoint, interval, HANG_TIMEOUT)
            });
        }
        {
            let (endpoint, log) = (self.local.clone(), self.log.clone());
            let may_restart = self.config.mariadb.may_set(dump_threads::SEMI_SYNC_MASTER);
            std::thread::spawn(move || dump_threads::watch(endpoint, may_restart, log));
        }
        {
            let guard = Arc::clone(&self);
            std::thread::spawn(move || guard.look_after_replication());
        }
        for address in self.guard.listen.clone() {
            let guard = Arc::clone(&self);
            std::thread::spawn(move || guard.serve_peer(address));
        }
        let socket = control::socket_path(&self.config.state_dir);
        let listener = control::listen(&self.config.state_dir)?;
        {
            let guard = Arc::clone(&self);
            std::thread::spawn(move || control::serve(listener, &guard));
        }
        self.log.write(
            Level::Info,
            &[(
                "msg",
                &format!(
                    "guard of {} started: lease {} ms, margin {} ms, {}; answering the peer on {:?}, hooks on {}",
                    self.guard.node,
                    self.guard.lease.as_millis(),
                    self.guard.margin.as_millis(),
                    if self.guard.witness.is_some() {
                        "with a witness"
                    } else {
                        "without a witness"
                    },
                    self.guard.listen,
                    socket.display()
                ),
            )],
        );
        {
            let guard = Arc::clone(&self);
            std::thread::spawn(move || {
                // Every L/4 from the start of the last round, so that a round slowed
                // by a silent voter does not also push the next one back.
                // While acknowledgements do not come, a look at the network at once
                // and after every round: a commit in flight when this node was cut
                // off must not outlive the cut (`cut_off_with_commits_waiting`).
                let mut stall_seen = false;
                loop {
                    let started = Instant::now();
                    guard.renew();
                    if guard.watched.seen().stalled_acks.is_some() {
                        guard.look_for_a_cut();
                        // A stall that began during the round has had its look.
                        stall_seen = true;
                    }
                    let next = started + guard.guard.lease / 4;
                    loop {
                        let seen = guard.watched.seen();
                        let stalled = seen.stalled_acks.is_some();
                        if stalled && !stall_seen {
                            guard.look_for_a_cut();
                        }
                        stall_seen = stalled;
                        let left = next.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        guard.watched.wait_change(seen.version, left);
                    }
                }
            });
        }
        // A raised failover flag is handled once: a writer switches over, and if it
        // cannot, or this node is not the writer, keepalived is told to move the VIP.
        let mut flag_raises_handled = 0;
        let turn_at_least = self
            .notifier
            .watchdog_interval()
            .map_or(self.guard.lease / 4, |every| {
                every.min(self.guard.lease / 4)
            });
        if let Some(every) = self.notifier.watchdog_interval() {
            let guard = Arc::clone(&self);
            std::thread::spawn(move || guard.feed_watchdog(every));
        }
        self.notifier.ready();
        loop {
            // Taken first: whatever changes while this round runs ends the wait.
            let seen = self.watched.seen();
            let next_expiry = self.keep_the_rule();
            *self
                .rule_turned
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
            if seen.failover_flag && seen.flag_raises != flag_raises_handled {
                flag_raises_handled = seen.flag_raises;
                self.switch_over_for_flag();
            }
            self.watched
                .wait_change(seen.version, next_expiry.min(turn_at_least));
        }
    }

    /// Tells systemd the guard is alive while its rule loop turns (or a switch-over,
    /// bounded by its own timeouts, holds the loop): a stopped or stuck guard is
    /// killed before its lease can pass to the peer.
    fn feed_watchdog(&self, every: Duration) {
        loop {
            std::thread::sleep(every);
            let turned = *self
                .rule_turned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if turned.elapsed() < 2 * every || self.switching.try_lock().is_err() {
                self.notifier.watchdog();
            }
        }
    }

    fn switch_over_for_flag(&self) {
        // A running switch-over (`mmvip switchover`) raised the flag itself.
        let Ok(_one) = self.switching.try_lock() else {
            return;
        };
        if self.read_only_now() != Some(false) {
            self.watched.step_away();
            return;
        }
        match self.run_switchover(false) {
            Ok(report) => self.log.write(
                Level::Info,
                &[("msg", &format!("switch-over (failover flag): {report}"))],
            ),
            Err(why) => {
                self.log.write(
                    Level::Error,
                    &[("msg", &format!("switch-over (failover flag) failed: {why}"))],
                );
                // The flag still means: not here. keepalived moves the VIP and the
                // hooks take the safe path.
                self.watched.step_away();
            }
        }
        self.follow_a_flag_lowered_meanwhile();
    }

    /// A flag lowered while a switch-over ran was seen, and its track file cleared,
    /// before the switch-over told keepalived to move the VIP: the track file would
    /// keep this node in FAULT for good (a lab chaos run: the flag held 0.5 s, the
    /// switch-over took 0.58 s, and when the writer later failed nobody took over).
    /// The flag on disk has the last word.
    fn follow_a_flag_lowered_meanwhile(&self) {
        if std::fs::symlink_metadata(&self.config.failover_file).is_err() {
            self.watched.step_back();
        }
    }

    /// The fence starts this much before a lease it could not renew runs out, so
    /// that it is done (well) within the margin.
    fn fence_lead(&self) -> Duration {
        self.guard.margin / 4
    }

    /// Arms the fence inside mariadbd for the earliest lease still in use: halfway
    /// from where the guard's own fence starts to the lease's end, so that it fires
    /// only when the guard did not run. A lease within the lead is the guard's own
    /// fence's (or gate's) to end.
    fn arm_fence(&self) {
        let lead = self.fence_lead();
        let now = Instant::now();
        // Set under the lease lock: threads that arm at once cannot leave an older
        // view of the leases in place of a newer one.
        let leases = self.leases();
        let due = leases
            .held
            .values()
            .filter(|until| until.saturating_duration_since(now) > lead)
            .map(|until| *until - lead / 2)
            .min();
        self.armed_fence.set(due);
    }

    fn track(&self, name: &str) -> PathBuf {
        self.guard.track_dir.join(name)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The VIPs of this node's `rw` instances.
    fn vips(&self) -> Vec<IpAddr> {
        self.instances.iter().map(|(_, vip)| *vip).collect()
    }

    /// Whether the VIPs have gates: with several `rw` instances a node may already be
    /// writable when a VIP arrives, and `read_only` keeps nobody out.
    fn gated_layout(&self) -> bool {
        self.instances.len() > 1
    }

    /// The VIPs whose gate is closed: all but the served ones, in a gated layout.
    fn gated_vips(&self) -> Vec<IpAddr> {
        let serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        self.gated_except(&serving)
    }

    fn gated_except(&self, serving: &HashSet<String>) -> Vec<IpAddr> {
        if !self.gated_layout() {
            return Vec::new();
        }
        self.instances
            .iter()
            .filter(|(name, _)| !serving.contains(name))
            .map(|(_, vip)| *vip)
            .collect()
    }

    /// Opens the gate of `instance`'s VIP, once its promotion (the `master` hook) has
    /// passed while this node holds its lease: the clients that arrive through it
    /// find every write of the previous holder here.
    pub fn serve(&self, instance: &str) -> std::result::Result<String, String> {
        let Some(vip) = self.vip_of(instance) else {
            return Err(format!("{instance} is not an rw instance of this site"));
        };
        if !self.gated_layout() {
            return Ok("no gate: read_only keeps clients from writing".into());
        }
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        if serving.contains(instance) {
            return Ok("gate open".into());
        }
        let leased = self.leases().held.get(instance).is_some_and(|until| {
            until.saturating_duration_since(Instant::now()) > self.fence_lead()
        });
        if !leased || !Self::holds_vip(vip) {
            return Err(format!(
                "{instance}: gate kept closed: this node does not hold both its lease and its VIP"
            ));
        }
        serving.insert(instance.to_string());
        if let Err(e) = turn_away::set_gate(vip, true, &self.vips(), &self.gated_except(&serving)) {
            serving.remove(instance);
            return Err(format!(
                "{instance}: the gate of {vip} could not be opened: {e}"
            ));
        }
        drop(serving);
        self.log.write(
            Level::Info,
            &[(
                "msg",
                &format!("{instance}: gate of {vip} open: this node serves it"),
            )],
        );
        Ok("gate open".into())
    }

    /// Closes the gate of `instance`'s VIP (none in a single-instance layout): every
    /// TCP packet for it is answered with a reset here from now on.
    fn close_gate(&self, instance: &str, why: &str) {
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        if !serving.remove(instance) {
            return;
        }
        let Some(vip) = self.vip_of(instance) else {
            return;
        };
        let outcome = turn_away::set_gate(vip, false, &self.vips(), &self.gated_except(&serving));
        drop(serving);
        match outcome {
            Ok(()) => self.log.write(
                Level::Warn,
                &[("msg", &format!("{instance}: gate of {vip} closed ({why})"))],
            ),
            // Its lease is gone or going: the writes through it must stop here, and
            // the gate was the only way short of read_only.
            Err(e) => self.fence(&format!(
                "{instance}: the gate of {vip} could not be closed ({e}) after {why}"
            )),
        }
    }

    /// Closes the gate of each served instance whose lease has run down to the fence's
    /// lead, whose VIP left, or whose keepalived died, and steps aside from it while
    /// its VIP is here: the node may stay writable for another instance, and this
    /// one's clients then belong to the peer. `found`: per instance, as the rule turn
    /// just found it, whether its lease is usable beyond the lead and its VIP here.
    fn review_gates(&self, seen: &watch::Seen, found: &HashMap<&str, InstanceNow>) {
        let served: Vec<String> = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for name in served {
            let Some(&InstanceNow { leased, vip_held }) = found.get(name.as_str()) else {
                continue;
            };
            let why = if !seen.keepalived_alive {
                "keepalived is not running"
            } else if !leased {
                "its write lease is running out"
            } else if !vip_held {
                "its VIP left"
            } else {
                continue;
            };
            self.close_gate(&name, why);
            if vip_held {
                self.step_aside(&name, why);
            }
        }
    }

    fn holds_vip(vip: IpAddr) -> bool {
        crate::caps::vip::backend().holds(&vip.to_string()) == Ok(true)
    }

    /// Whether this node holds the VIP of `instance`.
    fn holds_vip_of(&self, instance: &str) -> bool {
        self.vip_of(instance).is_some_and(Self::holds_vip)
    }

    /// The VIP of `rw` instance `instance`.
    fn vip_of(&self, instance: &str) -> Option<IpAddr> {
        self.instances
            .iter()
            .find(|(name, _)| name == instance)
            .map(|(_, vip)| *vip)
    }

    /// One lease round for `instance`: this node's own vote, the peer's guard and the
    /// witness. Held leases are extended; a round that loses gives back the votes it
    /// took, unless an earlier lease still stands on them.
    fn round(&self, instance: &str) -> Outcome {
        let mut witness = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        let has_witness = witness.is_some();
        let me = &self.guard.node;
        let hold = self.guard.lease + self.guard.margin;
        let sent = Instant::now();
        let own = self.leases().ballots.vote(instance, me, sent, hold);
        // The peer, the witness and (when there is no witness) the probes at once, so
        // a round takes one timeout however many of them are silent.
        let client: Option<&mut WitnessClient> = witness.as_mut();
        let (peer, witness_answer, probes) = std::thread::scope(|scope| {
            let witness = scope.spawn(|| client.map(|w| w.vote(instance, me, hold)));
            let probes = scope.spawn(|| !has_witness && self.reaches_probes());
            let peer = self.ask_peer(&format!("VOTE {instance} {me} {}", wire::nonce()));
            (
                peer,
                witness.join().expect("the witness question does not panic"),
                probes.join().expect("the probes do not panic"),
            )
        });
        let silent = matches!(peer, Answer::Silent(_));
        let quiet_for = if silent {
            self.peer_silent_for()
        } else {
            self.heard_peer();
            Duration::ZERO
        };
        let reaches_probes = silent && probes;
        self.waiting_out_silence
            .store(reaches_probes, Ordering::SeqCst);
        if self.peer_silent.swap(silent, Ordering::SeqCst) != silent {
            let message = match &peer {
                Answer::Silent(why) => format!("the peer's guard is silent ({why})"),
                _ => "the peer's guard answers again".to_string(),
            };
            self.log.write(Level::Warn, &[("msg", &message)]);
        }
        let rules = Rules {
            lease: self.guard.lease,
            has_witness: witness_answer.is_some(),
            alone_when_peer_silent: self.guard.without_peer == WithoutPeer::KeepWriting,
        };
        let keeping = self
            .leases()
            .held
            .get(instance)
            .is_some_and(|until| *until > Instant::now());
        let outcome = match &peer {
            // A peer guard that misses a round may be slow, not gone, and may hold the
            // lease: taking it alone waits until this node's own rounds have found it
            // silent for longer than any lease it could hold. Counted from this node's
            // first silent round, not from when it last heard the peer: a node that was
            // frozen itself heard nothing meanwhile.
            Answer::Silent(why)
                if rules.alone_when_peer_silent
                    && !rules.has_witness
                    && reaches_probes
                    && !keeping
                    && quiet_for < hold =>
            {
                Outcome::Lost(format!(
                    "the peer's guard is silent ({why}) for {} ms: taking the lease without it needs {} ms of silence",
                    quiet_for.as_millis(),
                    hold.as_millis()
                ))
            }
            _ => lease::count(
                &rules,
                sent,
                &own,
                &peer,
                witness_answer.as_ref(),
                reaches_probes,
            ),
        };
        let mut leases = self.leases();
        match &outcome {
            Outcome::Held(until) => {
                let until = leases
                    .held
                    .get(instance)
                    .map_or(*until, |held| (*held).max(*until));
                leases.held.insert(instance.to_string(), until);
                // Holding it, the node may be the writer again: end a step aside
                // now, track file included (forgetting only the entry left the
                // instance in FAULT for good, as `keep_the_rule` no longer saw it).
                if leases.stepped_aside.remove(instance).is_some() {
                    track::write(&self.track(instance), false, &self.log);
                }
                drop(leases);
                self.arm_fence();
            }
            Outcome::Lost(_) => {
                let still_held = leases
                    .held
                    .get(instance)
                    .is_some_and(|until| *until > Instant::now());
                if !still_held {
                    leases.held.remove(instance);
                    if own.is_ok() {
                        leases.ballots.release(instance, me);
                    }
                    drop(leases);
                    if witness_answer == Some(Answer::Granted)
                        && let Some(w) = witness.as_mut()
                    {
                        let _ = w.release(instance, me);
                    }
                    if peer == Answer::Granted {
                        self.ask_peer(&format!("RELEASE {instance} {me} {}", wire::nonce()));
                    }
                }
            }
        }
        outcome
    }

    /// Gives `instance`'s lease back: this node's vote, the peer's, the witness's.
    fn release(&self, instance: &str) {
        // Nothing may come in through the VIP once the peer can hold the lease.
        self.close_gate(instance, "the write lease is given back");
        let _round = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        let me = &self.guard.node;
        {
            let mut leases = self.leases();
            leases.held.remove(instance);
            leases.ballots.release(instance, me);
        }
        self.arm_fence();
        self.ask_peer(&format!("RELEASE {instance} {me} {}", wire::nonce()));
        drop(_round);
        let mut witness = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = witness.as_mut() {
            let _ = w.release(instance, me);
        }
        self.log.write(
            Level::Info,
            &[("msg", &format!("released the write lease of {instance}"))],
        );
    }

    /// Asks the peer's guard on all its addresses at once and takes the first valid
    /// answer: a round must not cost one timeout per dead network. (VOTE and RELEASE are idempotent, so
    /// the peer answering twice is harmless.)
    fn ask_peer(&self, request: &str) -> Answer {
        self.ask_peer_on(&self.guard.peer, request)
    }

    /// [`Guard::ask_peer`] on some of the peer's addresses only.
    fn ask_peer_on(&self, addresses: &[SocketAddr], request: &str) -> Answer {
        let (answers, received) = std::sync::mpsc::channel();
        for (order, address) in addresses.iter().copied().enumerate() {
            let (answers, secret, request) =
                (answers.clone(), self.secret.clone(), request.to_string());
            std::thread::spawn(move || {
                let answer = wire::ask(&secret, address, &request, ASK_TIMEOUT)
                    .map(|words| parse_answer(&request, &words))
                    .map_err(|why| format!("{address}: {why}"));
                let _ = answers.send((order, answer));
            });
        }
        drop(answers);
        let mut failures = Vec::new();
        let deadline = Instant::now() + ASK_TIMEOUT * 2;
        while let Ok((order, answer)) =
            received.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            match answer {
                Ok(Answer::Silent(why)) | Err(why) => failures.push((order, why)),
                Ok(answer) => return answer,
            }
        }
        failures.sort();
        Answer::Silent(
            failures
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Whether the peer's guard answered the last lease round (`lease.peer-answers`).
    pub fn peer_answers(&self) -> bool {
        !self.peer_silent.load(Ordering::SeqCst)
    }

    fn heard_peer(&self) {
        *self
            .peer_silent_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Notes a silent round; how long the peer has been silent to this node's rounds.
    fn peer_silent_for(&self) -> Duration {
        self.peer_silent_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now)
            .elapsed()
    }

    /// Whether any probe answers (this node is not cut off from everything).
    fn reaches_probes(&self) -> bool {
        self.guard
            .probes
            .iter()
            .any(|probe| probe_answers(*probe, ASK_TIMEOUT))
    }

    /// Answers the peer's guard on one address, for as long as the process runs.
    /// Each connection on its own thread, a bounded number at once: a switch-over
    /// asked for by the peer waits on the peer's votes, and a slow unsigned client
    /// must not hold up a vote.
    fn serve_peer(self: &Arc<Self>, address: SocketAddr) {
        let listener = loop {
            match TcpListener::bind(address) {
                Ok(listener) => break listener,
                Err(error) => {
                    self.log.write(
                        Level::Warn,
                        &[(
                            "msg",
                            &format!("cannot listen on {address} ({error}); retrying"),
                        )],
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        let answering = Arc::new(AtomicUsize::new(0));
        for stream in listener.incoming().flatten() {
            if answering.fetch_add(1, Ordering::SeqCst) >= PEER_CONNECTIONS {
                answering.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (guard, answering) = (Arc::clone(self), Arc::clone(&answering));
            std::thread::spawn(move || {
                guard.answer_stream(&stream, address);
                answering.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    fn answer_stream(&self, stream: &std::net::TcpStream, address: SocketAddr) {
        let _ = stream.set_read_timeout(Some(ASK_TIMEOUT));
        let _ = stream.set_write_timeout(Some(ASK_TIMEOUT));
        let Ok(line) = wire::read_line(stream) else {
            return;
        };
        let Some(words) = self.secret.verify(&line) else {
            self.log.write(
                Level::Warn,
                &[("msg", &format!("unsigned request on {address} refused"))],
            );
            return;
        };
        self.heard_peer();
        let reply = self.answer_peer(&words);
        use std::io::Write as _;
        let _ = (&*stream).write_all(self.secret.sign(&reply).as_bytes());
    }

    fn answer_peer(&self, words: &[&str]) -> String {
        let hold = self.guard.lease + self.guard.margin;
        match words {
            ["VOTE", instance, from, nonce] => {
                let now = Instant::now();
                // A node writable for this instance (or still fencing) never votes for
                // another: its own lease may have lapsed on its clock a moment before
                // it is read-only.
                let writable = matches!(
                    self.watched.seen().database,
                    Database::Up { read_only: false }
                );
                // With gates, writable for an instance means serving it: a VIP that
                // arrived on a node writable for another instance reaches nothing
                // here, and must not keep its holder's renewals away.
                // Its own statement: the lease lock is let go before the gates' lock
                // is taken (`serve` takes them the other way round).
                let held_here = self.leases().held.contains_key(*instance);
                let ours = held_here
                    || if self.gated_layout() {
                        self.serving
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .contains(*instance)
                    } else {
                        self.holds_vip_of(instance)
                    };
                if writable && ours && *from != self.guard.node {
                    return format!(
                        "DENY {instance} {nonce} {} {}",
                        self.guard.node,
                        hold.as_millis()
                    );
                }
                match self.leases().ballots.vote(instance, from, now, hold) {
                    Ok(()) => format!("GRANT {instance} {nonce} {}", self.guard.lease.as_millis()),
                    Err(refusal) => format!(
                        "DENY {instance} {nonce} {} {}",
                        refusal.holder,
                        refusal.left.as_millis()
                    ),
                }
            }
            // Whether this node holds the lease and the VIP: a peer that stepped aside
            // stays aside while it does, instead of taking the VIP back every few
            // seconds. Without the VIP here (VRRP gave it to the peer, which preempts)
            // the lease is about to be given back.
            ["HOLDS", instance, _from, nonce] => {
                let now = Instant::now();
                let vip_here = self.holds_vip_of(instance);
                match self
                    .leases()
                    .held
                    .get(*instance)
                    .filter(|until| **until > now && vip_here)
                {
                    Some(until) => format!(
                        "DENY {instance} {nonce} {} {}",
                        self.guard.node,
                        (*until - now).as_millis()
                    ),
                    None => format!("OK {nonce}"),
                }
            }
            ["RELEASE", instance, from, nonce] => {
                self.leases().ballots.release(instance, from);
                format!("OK {nonce}")
            }
            ["SWITCHOVER", _from, nonce] => match self.switchover(true) {
                Ok(report) => format!("DONE {nonce} {}", one_word_safe(&report)),
                Err(why) => format!("REFUSED {nonce} {}", one_word_safe(&why)),
            },
            _ => "ERROR unknown".to_string(),
        }
    }

    /// Acquires `instance`'s lease for a promotion, trying until `timeout`.
    pub fn acquire(
        &self,
        instance: &str,
        timeout: Duration,
    ) -> std::result::Result<Duration, String> {
        if !self.instances.iter().any(|(name, _)| name == instance) {
            return Err(format!("{instance} is not an rw instance of this site"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.round(instance) {
                Outcome::Held(until) => {
                    self.log.write(
                        Level::Info,
                        &[("msg", &format!("holds the write lease of {instance}"))],
                    );
                    // The hook goes writable after this answer: the fence inside
                    // mariadbd is armed first, so that a node frozen right after
                    // its promotion is read-only as it resumes too.
                    if !self.armed_fence.wait_armed(ARM_WITHIN) {
                        self.log.write(
                            Level::Warn,
                            &[(
                                "msg",
                                &format!(
                                    "the fence in mariadbd is not armed within {} ms; the promotion goes on",
                                    ARM_WITHIN.as_millis()
                                ),
                            )],
                        );
                    }
                    return Ok(until.saturating_duration_since(Instant::now()));
                }
                Outcome::Lost(why) if Instant::now() + ACQUIRE_RETRY >= deadline => {
                    return Err(why);
                }
                // Soon: the vote that was refused is usually a lease given back a
                // moment ago (a switch-over) or running out.
                Outcome::Lost(_) => std::thread::sleep(ACQUIRE_RETRY),
            }
        }
    }

    /// Renews the leases this node wants (keepalived MASTER for the instance: its VIP
    /// is here, keepalived alive, the node healthy), takes one VRRP gave it, and steps
    /// aside when another node holds the lease. Runs on its own thread: a round can
    /// wait on a silent peer, and the rule must not.
    fn renew(&self) {
        self.review_steps_aside();
        let seen = self.watched.seen();
        self.review_fences(&seen);
        for (name, vip) in &self.instances {
            let wants = Self::holds_vip(*vip)
                && seen.keepalived_alive
                && seen.healthy()
                && !self.stepping_away.load(Ordering::SeqCst);
            if !wants {
                self.leases().refused_since.remove(name);
                continue;
            }
            let held = self
                .leases()
                .held
                .get(name)
                .is_some_and(|until| *until > Instant::now());
            // A renewal that loses leaves the earlier lease standing until it ends.
            match self.round(name) {
                // Silent everywhere while the probes answer: the writer is gone or
                // cut off, and the lease comes once the silence is long enough.
                // Stepping aside meanwhile only threw the VIP away and cost a whole
                // VRRP election more (lab, writer cut off: 8.8 s instead of 5).
                Outcome::Lost(_) if !held && self.waiting_out_silence.load(Ordering::SeqCst) => {
                    self.leases().refused_since.remove(name);
                }
                Outcome::Lost(why) if !held => {
                    // A peer this node preempts gives the VIP and the lease back as
                    // soon as it hears this node's adverts: only a refusal that lasts
                    // (both nodes MASTER: a heartbeat cut) makes this node step aside.
                    let since = *self
                        .leases()
                        .refused_since
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() >= self.guard.lease {
                        self.leases().refused_since.remove(name);
                        self.step_aside(name, &why);
                    }
                }
                Outcome::Lost(_) => {}
                Outcome::Held(_) => {
                    self.leases().refused_since.remove(name);
                }
            }
        }
        self.review_catch_ups();
    }

    /// For each instance held back after a fence, asks the peer's guard, and keeps
    /// holding while this node has not caught up with the peer. Only such a node is
    /// asked about: a steady standby was never writable, has no transactions to
    /// lose, and asking its replication every round is load on both servers.
    /// Silence starts no clock here: the silence that lets a node take a lease alone
    /// is counted by its own lease rounds only.
    fn review_catch_ups(&self) {
        let held: Vec<String> = self.leases().catching_up.keys().cloned().collect();
        for name in held {
            let asked = self.holds_question(&name);
            let peer_answers = !matches!(self.ask_peer(&asked), Answer::Silent(_));
            if peer_answers {
                self.heard_peer();
            }
            self.hold_back_until_caught_up(&name, peer_answers);
        }
    }

    /// While the peer's guard answers and this node's replication from the peer is
    /// not running and caught up, keeps the instance in FAULT: a preferred node
    /// coming back from a cut or a restart must not preempt the writer before it has
    /// the writer's transactions. The writer ran without a semi-sync acknowledgement
    /// meanwhile, so they are nowhere else; a failback that stalled or lost the
    /// writer then promoted on a stale relay log and lost every one of them (lab,
    /// writer cut off from every network, then healed). Held too when the peer no
    /// longer holds the lease because its own guard just killed its mariadbd: that
    /// server comes back (systemd restarts it) with those transactions, and this
    /// node catches up then; promoting without them lost 1709 in a lab run. Let go
    /// when the peer's guard is silent: the whole peer is gone.
    fn hold_back_until_caught_up(&self, instance: &str, peer_answers: bool) {
        let behind = if peer_answers {
            self.replication_behind()
        } else {
            None
        };
        // Still behind: held (review_fences put it here and said why).
        if behind.is_some() {
            return;
        }
        let mut leases = self.leases();
        let Some(since) = leases.catching_up.remove(instance) else {
            return;
        };
        let still = leases.keeps_in_fault(instance);
        drop(leases);
        if !still {
            track::write(&self.track(instance), false, &self.log);
        }
        self.log.write(
            Level::Info,
            &[(
                "msg",
                &format!(
                    "{instance}: caught up with the writer after {} ms; no longer held in FAULT",
                    since.elapsed().as_millis()
                ),
            )],
        );
    }

    /// Why this node's replication is not caught up, or None when every replication
    /// connection runs and this node has applied the writer's binlog (its domains
    /// other than this node's own), asked of the writer's MariaDB where `[peer]`
    /// names it. `Seconds_Behind_Master` alone is 0 as soon as an IO thread
    /// reconnects, before it has fetched anything: the lab saw a node "caught up"
    /// without one of the thousand transactions it had missed. A server that does
    /// not answer is left to the health check.
    fn replication_behind(&self) -> Option<String> {
        use crate::caps::sql::{IoState, SqlState};
        let mut local = crate::mariadb::Session::new(
            self.local.clone(),
            ASK_TIMEOUT,
            Instant::now() + ASK_TIMEOUT * 2,
            self.log.clone(),
        );
        // What cannot be read counts as behind: `SHOW ALL SLAVES STATUS` blocks while
        // an IO thread reconnects after a cut, just when a failback is decided.
        let Ok(replicas) = local.replicas() else {
            return Some("its replication cannot be read".into());
        };
        if replicas.is_empty() {
            return Some("it replicates from nobody".into());
        }
        for replica in &replicas {
            let name = replication::connection_shown(&replica.connection_name);
            if replica.io_state != IoState::Running || replica.sql_state != SqlState::Running {
                return Some(format!(
                    "replication `{name}` is not running: {}",
                    if replica.last_io_error.is_empty() {
                        "IO thread connecting"
                    } else {
                        &replica.last_io_error
                    }
                ));
            }
            if replica.seconds_behind_master != Some(0) {
                return Some(format!(
                    "replication `{name}` is {} s behind",
                    replica
                        .seconds_behind_master
                        .map_or("?".to_string(), |s| s.to_string())
                ));
            }
        }
        self.peer_db.as_ref()?;
        // From here on, what cannot be checked counts as behind: the writer answers,
        // so it will answer again, and failing back unchecked is what loses writes.
        let unverified = |why: &str| Some(format!("cannot compare with the writer ({why})"));
        let Some(mut peer) = self.answering_peer_server() else {
            return unverified("its MariaDB does not answer");
        };
        let Ok(writer) = binlog_position(&mut peer) else {
            return unverified("its binlog position");
        };
        let own_domain = local
            .value(Level::Debug, "SELECT @@GLOBAL.gtid_domain_id")
            .ok()
            .flatten()
            .and_then(|domain| domain.parse::<u32>().ok());
        let (Some(own_domain), Ok(position)) = (own_domain, crate::gtid::parse(&writer)) else {
            return unverified("the GTID positions");
        };
        let target: Vec<crate::gtid::Gtid> = position
            .into_iter()
            .filter(|g| g.domain != own_domain)
            .collect();
        let target = crate::gtid::render(&target);
        match peer_reaches(&mut local, &target, CAUGHT_UP_WITHIN) {
            Ok(true) => None,
            Ok(false) => Some(format!("this node has not applied the writer's {target}")),
            Err(why) => unverified(&why),
        }
    }

    /// A session with the first of the peer's MariaDB addresses (`[peer]`) that
    /// answers; none without `[peer]`.
    fn answering_peer_server(&self) -> Option<crate::mariadb::Session> {
        let (peers, timeout) = self.peer_db.as_ref()?;
        peers.iter().find_map(|endpoint| {
            let mut session = crate::mariadb::Session::new(
                endpoint.clone(),
                (*timeout).min(ASK_TIMEOUT),
                Instant::now() + ASK_TIMEOUT,
                self.log.clone(),
            );
            session
                .value(Level::Debug, "SELECT 1")
                .ok()
                .map(|_| session)
        })
    }

    /// Keeps the rule: writable only while holding the lease of an instance whose VIP
    /// is here, with keepalived alive; fences otherwise. Gives back leases no longer
    /// wanted once read-only, and ends a step aside. Returns how long until the
    /// earliest lease needs looking at again.
    fn keep_the_rule(&self) -> Duration {
        let seen = self.watched.seen();
        let now = Instant::now();
        let lead = self.fence_lead();
        let mut allowed = false;
        let mut next = self.guard.lease;
        let mut found = HashMap::new();
        for (name, vip) in &self.instances {
            let vip_held = Self::holds_vip(*vip);
            let leases = self.leases();
            let mut leased = false;
            if let Some(until) = leases.held.get(name) {
                let usable = until.saturating_duration_since(now);
                // Looked at again before any running lease ends, allowed or not: a
                // fence waiting for its lease to run out takes its last resort in time.
                if usable > lead {
                    next = next.min(usable - lead);
                } else if !usable.is_zero() {
                    next = next.min(usable);
                }
                leased = usable > lead;
                if leased && vip_held && seen.keepalived_alive {
                    allowed = true;
                }
            }
            found.insert(name.as_str(), InstanceNow { leased, vip_held });
        }
        self.review_gates(&seen, &found);
        self.arm_fence();
        if let Some(fired) = self.armed_fence.take_fired()
            && self.after_the_armed_fence(fired, allowed)
        {
            return next;
        }
        let writer = self.holds_a_lease() || seen.database == (Database::Up { read_only: false });
        if writer && self.cut_off_with_commits_waiting(&seen) {
            self.fence(
                "cut off from the peer and every probe, with commits waiting for the peer's acknowledgement",
            );
            return next;
        }
        match &seen.database {
            // The watcher's view may predate a demotion that just made the node
            // read-only and gave the lease back: asked again before fencing.
            Database::Up { read_only: false } if !allowed && self.read_only_now() != Some(true) => {
                let why = self.why_not_allowed(&seen);
                self.fence(&why);
            }
            // A hung writer may resume and commit after the peer took over: it must
            // not be able to before its lease is given back.
            Database::Hung(why) if seen.mariadbd_alive && self.holds_a_lease() => {
                self.fence(&format!(
                    "MariaDB hangs ({why}) while this node holds a write lease"
                ));
            }
            Database::Up { read_only: true } | Database::Down(_) | Database::Hung(_) => {
                // Read-only (or down): a lease no longer wanted is given back.
                let unwanted: Vec<String> = {
                    let leases = self.leases();
                    self.instances
                        .iter()
                        .filter(|(name, vip)| {
                            leases.held.contains_key(name)
                                && !(Self::holds_vip(*vip)
                                    && seen.keepalived_alive
                                    && seen.healthy())
                        })
                        .map(|(name, _)| name.clone())
                        .collect()
                };
                for name in unwanted {
                    self.release(&name);
                }
            }
            Database::Up { read_only: false } => {}
        }
        next
    }

    /// Ends the FAULT of a fence once the node is safe again (read-only, healthy,
    /// keepalived running), the fence has lasted [`STEP_ASIDE`] (keepalived has given
    /// the VIP up), and the node is not cut off from everything: back in BACKUP, VRRP
    /// decides as usual, and a preferred node preempts and promotes through the lease.
    /// Without this a fenced node stayed in FAULT for good, and a pair whose other
    /// node had also fenced itself served nobody. A node cut off stays in FAULT: alone
    /// it would make itself MASTER and, as the network heals, preempt the writer
    /// before it has the writer's transactions. One whose peer is the writer is held
    /// until it has caught up. On the renew thread: it asks the peer.
    fn review_fences(&self, seen: &watch::Seen) {
        if !(matches!(seen.database, Database::Up { read_only: true })
            && seen.keepalived_alive
            && seen.healthy())
        {
            return;
        }
        let due = lasted_step_aside(&self.leases().fenced);
        for name in due {
            let asked = self.holds_question(&name);
            let answer = self.ask_peer(&asked);
            let mut lifted_because =
                "the peer's guard answers and this node has caught up with the peer";
            if matches!(answer, Answer::Silent(_)) {
                if !self.reaches_probes() {
                    continue;
                }
                lifted_because = "the peer's guard has been silent for the lease and the margin while a probe answers";
                // The probes answer first as a cut heals, the peer's guard a moment
                // later: only a peer silent for a whole lease and margin is taken
                // for gone (this clock is the fence's own, not the lease rule's).
                let quiet = *self
                    .leases()
                    .fenced_peer_quiet
                    .entry(name.clone())
                    .or_insert_with(Instant::now);
                if quiet.elapsed() < self.guard.lease + self.guard.margin {
                    continue;
                }
            }
            self.leases().fenced_peer_quiet.remove(&name);
            // A peer that answers may hold transactions this node lacks, writer or
            // not (its own guard may have just killed its server).
            let behind = match answer {
                Answer::Silent(_) => None,
                _ => self.replication_behind(),
            };
            let mut leases = self.leases();
            leases.fenced.remove(&name);
            if let Some(why) = behind {
                leases.catching_up.insert(name.clone(), Instant::now());
                drop(leases);
                self.log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!(
                            "{name}: fence over; held in FAULT until this node has caught up with the peer ({why})"
                        ),
                    )],
                );
                continue;
            }
            // Another reason (a step aside, a catch-up) keeps it in FAULT until it ends.
            if leases.keeps_in_fault(&name) {
                continue;
            }
            drop(leases);
            track::write(&self.track(&name), false, &self.log);
            self.log.write(
                Level::Info,
                &[(
                    "msg",
                    &format!(
                        "{name}: fence lifted: read-only, healthy and keepalived running; {lifted_because}"
                    ),
                )],
            );
        }
    }

    fn why_not_allowed(&self, seen: &watch::Seen) -> String {
        if !seen.keepalived_alive {
            return "keepalived is not running".into();
        }
        let leases = self.leases();
        let now = Instant::now();
        let held: Vec<&String> = leases
            .held
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(name, _)| name)
            .collect();
        if held.is_empty() {
            "writable without holding a write lease".into()
        } else {
            "writable, holding a lease but not the VIP of its instance".into()
        }
    }

    /// Ends a step aside once it has lasted [`STEP_ASIDE`], unless the peer still
    /// holds the instance's lease and answers over the public network only (the
    /// heartbeat is cut): then VRRP would only make this node MASTER again, take the
    /// VIP (and the clients, by gratuitous ARP) and step aside once more.
    fn review_steps_aside(&self) {
        let due = lasted_step_aside(&self.leases().stepped_aside);
        for name in due {
            let asked = self.holds_question(&name);
            // An answer over the heartbeat network means VRRP's adverts get through
            // again, and keepalived settles who is MASTER without ping-pong: a
            // preferred node preempts and the peer demotes and gives the lease back.
            // Staying aside then kept a healed pair from ever failing back.
            // With one network configured, nothing tells a cut heartbeat apart.
            let heartbeat_answers = self.guard.peer.len() >= 2
                && !matches!(
                    self.ask_peer_on(&self.guard.peer[..1], &asked),
                    Answer::Silent(_)
                );
            // Aside also while cut off from everything (no peer, no probe): alone, VRRP
            // would only make this node MASTER on its island, to preempt the writer
            // the moment the network heals.
            let stays_aside = !heartbeat_answers
                && match self.ask_peer(&asked) {
                    Answer::Refused(_) => true,
                    Answer::Silent(_) => !self.reaches_probes(),
                    _ => false,
                };
            if stays_aside {
                self.leases()
                    .stepped_aside
                    .insert(name.clone(), Instant::now());
                continue;
            }
            if !self.holds_vip_of(&name) {
                let mut leases = self.leases();
                leases.stepped_aside.remove(&name);
                if leases.keeps_in_fault(&name) {
                    continue;
                }
                drop(leases);
                self.log.write(
                    Level::Info,
                    &[(
                        "msg",
                        &format!(
                            "{name}: the peer holds no lease for it: no longer stepping aside"
                        ),
                    )],
                );
                track::write(&self.track(&name), false, &self.log);
            }
        }
    }

    fn step_aside(&self, instance: &str, why: &str) {
        let mut leases = self.leases();
        if leases.stepped_aside.contains_key(instance) {
            return;
        }
        leases
            .stepped_aside
            .insert(instance.to_string(), Instant::now());
        drop(leases);
        track::write(&self.track(instance), true, &self.log);
        self.log.write(
            Level::Warn,
            &[(
                "msg",
                &format!("{instance}: stepping aside (FAULT) so the writer keeps the VIP: {why}"),
            )],
        );
    }

    /// Makes the node read-only within the margin, whatever it takes.
    fn fence(&self, why: &str) {
        let started = Instant::now();
        self.log
            .write(Level::Error, &[("msg", &format!("fencing: {why}"))]);
        let seen = self.watched.seen();
        let hung = matches!(seen.database, Database::Hung(_));
        // A hung server that semi-sync covered when last checked (`lossless_if_killed`)
        // has nothing of its own to lose: it goes at once, and the peer takes
        // over without waiting out the lease. Killed before keepalived hears of it, so
        // its clients' connections end while the VIP is still here: they see it at
        // once instead of waiting out their read timeouts on a silent address.
        let killed_at_once = if hung {
            seen.lossless_if_killed()
                && self.last_resort(
                    "MariaDB does not answer; semi-sync covered every acknowledged commit when last checked",
                )
        } else {
            self.cut_off_with_commits_waiting(&seen)
                && self.last_resort(
                    "commits wait for a peer this node cannot reach; none was acknowledged without it",
                )
        };
        for (name, vip) in &self.instances {
            if Self::holds_vip(*vip) {
                track::write(&self.track(name), true, &self.log);
                self.leases().fenced.insert(name.clone(), Instant::now());
                if !seen.keepalived_alive {
                    remove_address(*vip, &self.log);
                }
            }
        }
        if !killed_at_once {
            // A hung server answers neither the demotion nor the question after it.
            let demoted = if hung {
                "MariaDB does not answer".to_string()
            } else {
                self.read_only_at_once();
                self.run_fault_plugin(self.guard.margin)
            };
            let fenced = !hung
                && match self.read_only_now() {
                    Some(read_only) => read_only,
                    // No answer: fenced only if mariadbd is gone, not if it may resume.
                    None => !self.watched.seen().mariadbd_alive,
                };
            if fenced {
                self.log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!(
                            "fenced in {} ms ({})",
                            started.elapsed().as_millis(),
                            demoted
                        ),
                    )],
                );
            } else if self.lease_left() > self.fence_lead() {
                // The lease keeps the peer out until it ends: a server that is only
                // slow (seen in the lab: about 2 s without an answer as a cut heals)
                // gets until then, for its last writes may be on it alone (semi-sync
                // fell back to asynchronous, and even its status cannot tell since
                // when). Tried again each turn; the last turn comes before the lease
                // ends.
                self.log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!(
                            "not read-only yet ({demoted}); the last resort waits until the lease is about to run out ({} ms)",
                            self.lease_left().as_millis()
                        ),
                    )],
                );
                return;
            } else if !self.last_resort(&demoted) {
                // It may still write: the leases run out on their own instead, and
                // the peer waits them out.
                return;
            }
        }
        let held: Vec<String> = self.leases().held.keys().cloned().collect();
        for name in held {
            self.release(&name);
        }
    }

    /// What follows a fence that fired inside mariadbd; whether this turn is over.
    /// Its lease gone, the node is fenced the rest of the way: FAULT, so that VRRP
    /// moves the VIP to the writer; the sessions killed; the leases given back. Its
    /// lease still valid, the fence fired only because the server did not take a
    /// renewal's replacement in time (stalled past the fence's slack) or its wall
    /// clock stepped forward: the node may write, and is made writable again
    /// rather than failed over. On a node that was read-only it changed nothing.
    fn after_the_armed_fence(&self, fired: armed_fence::Fired, allowed: bool) -> bool {
        let ago = fired.at.elapsed().as_millis();
        if !fired.was_writable {
            self.log.write(
                Level::Info,
                &[(
                    "msg",
                    &format!("the fence armed in mariadbd fired {ago} ms ago on a read-only node"),
                )],
            );
            return false;
        }
        if !allowed {
            self.fence(&format!(
                "the fence armed in mariadbd made the node read-only {ago} ms ago, as the write lease ran out before the guard could act (frozen or stalled?)"
            ));
            return true;
        }
        match self.set_read_only("OFF", Duration::from_secs(1)) {
            Ok(()) => {
                self.log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!(
                            "the fence armed in mariadbd fired {ago} ms ago while the write lease still runs (the server stalled past the fence's slack, or its clock stepped forward): writable again"
                        ),
                    )],
                );
                false
            }
            Err(why) => {
                self.fence(&format!(
                    "the fence armed in mariadbd fired while the write lease still runs, and the node cannot be made writable again ({why})"
                ));
                true
            }
        }
    }

    /// Cut off from everything while commits wait for the peer's acknowledgement. A
    /// writer must not let them complete: `rpl_semi_sync_master_timeout` after they
    /// began, semi-sync would give up on the peer and commit them here alone, and the
    /// peer, once it has taken over, writes its own transactions in their place;
    /// after the heal, replication brings them to it, where they conflict (the same
    /// sequence number taken twice) and replication stops. Killed while no commit can
    /// have been acknowledged without the peer (`lossless_if_killed`), mariadbd
    /// restarts as a replica (`init_rpl_role = SLAVE`) and rolls them back: with
    /// `rpl_semi_sync_master_wait_point = AFTER_SYNC` they were only prepared.
    /// Only a look that began after the stall was seen counts (an older one may
    /// predate a heal), and only before the oldest commit gives up, with time to
    /// spare for the kill.
    fn cut_off_with_commits_waiting(&self, seen: &watch::Seen) -> bool {
        let Some(stalled) = seen.stalled_acks else {
            return false;
        };
        seen.mariadbd_alive
            && stalled.gives_up_at > Instant::now() + KILL_WITHIN
            && self
                .cut_off_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|look| look >= stalled.seen_at)
    }

    /// Asks the peer's guard and the probes at once whether this node is cut off
    /// from everything; the rule loop decides what to do about it. Not part of a lease
    /// round: a node whose keepalived has already dropped the VIP runs none. Without
    /// probes, a dead peer and a cut look alike: never cut off.
    fn look_for_a_cut(&self) {
        let began = Instant::now();
        let Some((instance, _)) = self.instances.first() else {
            return;
        };
        if self.guard.probes.is_empty() {
            return;
        }
        let question = self.holds_question(instance);
        let (peer, probes) = std::thread::scope(|scope| {
            let probes = scope.spawn(|| self.reaches_probes());
            let peer = self.ask_peer(&question);
            (peer, probes.join().expect("the probes do not panic"))
        });
        let peer_silent = matches!(peer, Answer::Silent(_));
        if !peer_silent {
            self.heard_peer();
        }
        let cut_off = peer_silent && !probes;
        let was_cut_off = std::mem::replace(
            &mut *self
                .cut_off_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            cut_off.then_some(began),
        )
        .is_some();
        if cut_off {
            self.watched.nudge();
        }
        if cut_off && !was_cut_off {
            self.log.write(
                Level::Warn,
                &[(
                    "msg",
                    "commits wait for the peer's acknowledgement, and neither the peer's guard nor any probe answers: cut off",
                )],
            );
        }
    }

    /// How long the longest lease this node holds still runs.
    fn lease_left(&self) -> Duration {
        let now = Instant::now();
        self.leases()
            .held
            .values()
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    fn holds_a_lease(&self) -> bool {
        !self.lease_left().is_zero()
    }

    /// `HOLDS`: whether the peer holds `instance`'s lease and its VIP.
    fn holds_question(&self, instance: &str) -> String {
        format!("HOLDS {instance} {} {}", self.guard.node, wire::nonce())
    }

    /// Runs `mmvip fault --fence` (the demotion, unconditionally) and returns what it
    /// said.
    fn run_fault_plugin(&self, within: Duration) -> String {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let child = std::process::Command::new(exe)
            .arg("--config")
            .arg(&self.config_path)
            .arg(format!("--timeout-ms={}", within.as_millis().max(1)))
            .args(["fault", "--fence"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => return format!("cannot run the fault plugin: {error}"),
        };
        if exits_within(&mut child, within) {
            let output = child.wait_with_output().ok();
            return output
                .map(|o| {
                    let text = [o.stdout, o.stderr].concat();
                    String::from_utf8_lossy(&text).trim().to_string()
                })
                .unwrap_or_default();
        }
        let _ = child.kill();
        let _ = child.wait();
        format!(
            "the fault plugin did not finish within {} ms",
            within.as_millis()
        )
    }

    /// `read_only` as the server says it now, on a fresh connection (the watching
    /// connection reports only once its sleep ends), if it answers within a second.
    fn read_only_now(&self) -> Option<bool> {
        match self
            .bounded_local_session(Duration::from_secs(1))
            .value(Level::Debug, "SELECT @@GLOBAL.read_only")
        {
            Ok(Some(value)) => Some(value != "0"),
            _ => None,
        }
    }

    /// `read_only = ON` straight from the guard, before the fault plugin starts (a
    /// process and a component, tens of milliseconds): a node that resumes from a
    /// freeze stays writable only for this one statement. Bounded tightly: an open
    /// transaction can hold the statement up, and then the plugin's demotion, which
    /// gets through blockers, does the work.
    fn read_only_at_once(&self) {
        let _ = self.set_read_only("ON", READ_ONLY_AT_ONCE);
    }

    /// `SET GLOBAL read_only` on a fresh connection, bounded by `within`.
    fn set_read_only(
        &self,
        value: &str,
        within: Duration,
    ) -> std::result::Result<(), crate::caps::sql::SqlError> {
        let statement = format!("SET GLOBAL read_only = {value}");
        self.bounded_local_session(within)
            .run(Level::Info, &statement, |conn, sql| {
                mysql::prelude::Queryable::query_drop(conn, sql)
            })
    }

    /// A fresh session to the local MariaDB whose statements, and all of it, end
    /// within `within`.
    fn bounded_local_session(&self, within: Duration) -> crate::mariadb::Session {
        crate::mariadb::Session::new(
            self.local.clone(),
            within,
            Instant::now() + within,
            self.log.clone(),
        )
    }

    /// Returns whether mariadbd is gone, so that the node can no longer write.
    fn last_resort(&self, demoted: &str) -> bool {
        match self.guard.last_resort {
            LastResort::StopMariadb => {
                let pid = std::fs::read_to_string(&self.guard.mariadb_pidfile)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                    .and_then(rustix::process::Pid::from_raw);
                let killed = pid.is_some_and(|pid| {
                    rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
                });
                // The leases are given back once it is gone (a SIGKILL ends even a
                // stopped process, but not at once).
                let deadline = Instant::now() + self.guard.margin;
                while killed && self.watched.seen().mariadbd_alive && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!(
                            "not read-only ({demoted}); last resort: {}",
                            if killed {
                                "mariadbd killed"
                            } else {
                                "could not kill mariadbd"
                            }
                        ),
                    )],
                );
                !self.watched.seen().mariadbd_alive
            }
            LastResort::None => {
                self.log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!("not read-only ({demoted}); last_resort = none"),
                    )],
                );
                false
            }
        }
    }

    /// What the guard holds, for `mmvip status` and the lease capability.
    fn status(&self) -> String {
        let now = Instant::now();
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let leases = self.leases();
        let mut parts = Vec::new();
        for (name, _) in &self.instances {
            let held = leases
                .held
                .get(name)
                .filter(|until| **until > now)
                .map(|until| format!("held:{}", (*until - now).as_millis()));
            let vote = leases
                .ballots
                .holder(name, now)
                .map(|(holder, left)| format!("vote:{holder}:{}", left.as_millis()));
            let gate = self.gated_layout().then(|| {
                if serving.contains(name) {
                    "gate:open".to_string()
                } else {
                    "gate:closed".to_string()
                }
            });
            parts.push(format!(
                "{name}={}",
                [held, vote, gate]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        drop(leases);
        parts.push(format!(
            "armed={}",
            self.armed_fence
                .fires_in()
                .map_or("off".to_string(), |left| left.as_millis().to_string())
        ));
        let seen = self.watched.seen();
        parts.push(format!("healthy={}", seen.healthy()));
        parts.join(" ")
    }
}

fn parse_answer(request: &str, words: &[String]) -> Answer {
    let nonce = request.rsplit(' ').next().unwrap_or_default();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["GRANT", _, n, _] | ["OK", n] if *n == nonce => Answer::Granted,
        ["DENY", _, n, holder, left] if *n == nonce => Answer::Refused(lease::Refusal {
            holder: holder.to_string(),
            left: Duration::from_millis(left.parse().unwrap_or(0)),
        }),
        _ => Answer::Silent("an answer to another question".into()),
    }
}

/// Whether `address` answers an ICMP echo within `timeout` (a raw socket: the guard
/// runs as root).
fn probe_answers(address: IpAddr, timeout: Duration) -> bool {
    let IpAddr::V4(v4) = address else {
        return false;
    };
    let Ok(socket) = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::RAW,
        Some(rustix::net::ipproto::ICMP),
    ) else {
        return false;
    };
    let id = (std::process::id() & 0xffff) as u16;
    let mut request = [8u8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
    let checksum = internet_checksum(&request);
    request[2..4].copy_from_slice(&checksum.to_be_bytes());
    let destination = std::net::SocketAddrV4::new(v4, 0);
    if rustix::net::sendto(
        &socket,
        &request,
        rustix::net::SendFlags::empty(),
        &destination,
    )
    .is_err()
    {
        return false;
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let left = deadline - Instant::now();
        let mut fds = [rustix::event::PollFd::new(
            &socket,
            rustix::event::PollFlags::IN,
        )];
        let wait = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        if !rustix::event::poll(&mut fds, Some(&wait)).is_ok_and(|n| n > 0) {
            continue;
        }
        let mut packet = [0u8; 128];
        let Ok((read, _)) =
            rustix::net::recv(&socket, &mut packet, rustix::net::RecvFlags::empty())
        else {
            continue;
        };
        // A raw socket sees every ICMP packet, with its IP header: an echo reply
        // (type 0) from the probe, carrying this process's identifier.
        let header = usize::from(packet[0] & 0x0f) * 4;
        let from = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        if read >= header + 8
            && from == v4
            && packet[header] == 0
            && u16::from_be_bytes([packet[header + 4], packet[header + 5]]) == id
        {
            return true;
        }
    }
    false
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `child` exits within `within`: seen through a pidfd the moment it does (a
/// demotion is inside a switch-over's client gap), polled each millisecond where no
/// pidfd can be had.
fn exits_within(child: &mut std::process::Child, within: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let deadline = Instant::now() + within;
    let pidfd = pidfd_open(Pid::from_child(child), PidfdFlags::empty()).ok();
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let wait = left.min(Duration::from_millis(100));
        match &pidfd {
            Some(fd) => {
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                };
                let _ = poll(&mut [PollFd::new(fd, PollFlags::IN)], Some(&timeout));
            }
            None => std::thread::sleep(wait.min(Duration::from_millis(1))),
        }
    }
}

/// Removes an address a dead keepalived left on an interface.
fn remove_address(address: IpAddr, log: &Log) {
    let listing = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output();
    let Ok(listing) = listing else {
        return;
    };
    let text = String::from_utf8_lossy(&listing.stdout);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(position) = words.iter().position(|w| *w == "inet" || *w == "inet6") else {
            continue;
        };
        let Some(with_prefix) = words.get(position + 1) else {
            continue;
        };
        if with_prefix.split('/').next() == Some(&address.to_string()) {
            let device = words.get(1).copied().unwrap_or_default();
            let removed = std::process::Command::new("ip")
                .args(["addr", "del", with_prefix, "dev", device])
                .status()
                .is_ok_and(|s| s.success());
            log.write(
                Level::Warn,
                &[(
                    "msg",
                    &format!(
                        "keepalived is dead: {} VIP {with_prefix} on {device}",
                        if removed {
                            "removed"
                        } else {
                            "could not remove"
                        }
                    ),
                )],
            );
        }
    }
}

/// The steps of a switch-over and how long each took.
struct Steps {
    started: Instant,
    last: Instant,
    done: Vec<String>,
}

impl Steps {
    fn new() -> Steps {
        let now = Instant::now();
        Steps {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    fn step(&mut self, what: &str) {
        let now = Instant::now();
        self.done.push(format!(
            "{what} {:.1} ms",
            (now - self.last).as_secs_f64() * 1000.0
        ));
        self.last = now;
    }

    fn report(&self) -> String {
        format!(
            "{}; {:.1} ms in all",
            self.done.join(", "),
            self.started.elapsed().as_secs_f64() * 1000.0
        )
    }
}

/// How long the peer may take to reach the writer's position before the switch-over
/// (the lag check) and after the writer went read-only.
const CATCH_UP_BEFORE: Duration = Duration::from_secs(1);
const CATCH_UP_AFTER: Duration = Duration::from_secs(5);
const TAKE_OVER: Duration = Duration::from_secs(10);

impl Guard {
    /// A planned switch-over from this node, the writer: checks, then read-only
    /// through blockers, the peer applies this node's last position, the lease is
    /// given back, and only then does keepalived move the VIP (the failover track
    /// file). `raise_flag`: also raise the failover flag, which keeps this node out
    /// until an operator lowers it (the seed's semantics).
    fn switchover(&self, raise_flag: bool) -> std::result::Result<String, String> {
        let Ok(_one) = self.switching.try_lock() else {
            return Err("a switch-over is already running".into());
        };
        let outcome = self.run_switchover(raise_flag);
        self.follow_a_flag_lowered_meanwhile();
        outcome
    }

    /// The switch-over itself; the caller holds `switching`.
    fn run_switchover(&self, raise_flag: bool) -> std::result::Result<String, String> {
        let mut steps = Steps::new();
        if self.read_only_now() != Some(false) {
            return Err("this node is not the writer".into());
        }
        let (peers, peer_timeout) = self
            .peer_db
            .clone()
            .ok_or("no [peer] in the config: the peer's position cannot be checked")?;
        let mut local = self.session(self.local.clone(), Duration::from_secs(1), TAKE_OVER)?;
        let mut peer = self.peer_session(&peers, peer_timeout)?;
        // Checks: replication both ways, the peer read-only and close behind. The peer
        // account has no privileges, so the peer's side is seen from here: a binlog
        // dump to it (which lingers after its replica stopped until the next event,
        // so the position check below is what proves it applies).
        let dumps = local
            .value(
                Level::Debug,
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .map_err(|e| format!("cannot ask this node: {}", crate::caps::sql::describe(&e)))?;
        if dumps.as_deref() == Some("0") {
            return Err("the peer does not replicate from this node (no binlog dump)".into());
        }
        replication_runs(&mut local)?;
        let peer_read_only = peer
            .value(Level::Debug, "SELECT @@GLOBAL.read_only")
            .map_err(|e| {
                format!(
                    "the peer does not answer: {}",
                    crate::caps::sql::describe(&e)
                )
            })?;
        // With gates the peer is writable for its own instance by design: its gate
        // keeps the moving instances' clients off it until its `master` has caught up.
        if peer_read_only.as_deref() != Some("1") && !self.gated_layout() {
            return Err("the peer is writable too: refusing to switch over".into());
        }
        let position = binlog_position(&mut local)?;
        if !peer_reaches(&mut peer, &position, CATCH_UP_BEFORE)? {
            return Err(format!(
                "the peer lags: it did not reach {position} within {} ms",
                CATCH_UP_BEFORE.as_millis()
            ));
        }
        steps.step("checks");
        if raise_flag {
            std::fs::write(&self.config.failover_file, "")
                .map_err(|e| format!("cannot raise the failover flag: {e}"))?;
        }
        // Refused from before the demotion kills the sessions until the peer serves
        // (turn_away.rs says why); lifted when this function returns, however.
        let _turned_away = self.turn_away_clients(&mut local);
        steps.step("new connections refused");
        let demoted = self.run_fault_plugin(Duration::from_secs(2));
        if !matches!(self.read_only_now(), Some(true)) {
            return Err(format!("this node did not become read-only: {demoted}"));
        }
        steps.step("read-only");
        // The demotion killed every client connection, this session's too.
        let mut local = self.session(self.local.clone(), Duration::from_secs(1), TAKE_OVER)?;
        let position = binlog_position(&mut local)?;
        if !peer_reaches(&mut peer, &position, CATCH_UP_AFTER)? {
            return Err(format!(
                "the peer did not apply {position} within {} ms; this node stays read-only with the VIP",
                CATCH_UP_AFTER.as_millis()
            ));
        }
        steps.step(&format!("peer applied {position}"));
        self.stepping_away.store(true, Ordering::SeqCst);
        let _over = StoreOnDrop(&self.stepping_away, false);
        let held: Vec<String> = self.leases().held.keys().cloned().collect();
        for name in &held {
            self.release(name);
        }
        steps.step("lease released");
        self.watched.step_away();
        let deadline = Instant::now() + TAKE_OVER;
        while self.instances.iter().any(|(_, vip)| Self::holds_vip(*vip)) {
            if Instant::now() > deadline {
                return Err("keepalived did not take the VIP away".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        steps.step("VIP gone");
        loop {
            // With gates the peer may have been writable all along: it has taken over
            // once its guard holds each lease given back, with the VIP.
            let taken_over = if self.gated_layout() {
                held.iter().all(|name| {
                    matches!(
                        self.ask_peer(&self.holds_question(name)),
                        Answer::Refused(_)
                    )
                })
            } else {
                let read_only = peer.value(Level::Debug, "SELECT @@GLOBAL.read_only");
                matches!(read_only.as_ref().map(Option::as_deref), Ok(Some("0")))
            };
            if taken_over {
                break;
            }
            if Instant::now() > deadline {
                // The peer cannot take over (its keepalived or guard is down): give
                // the instance back to this node rather than leave nobody writing.
                // Out of FAULT, keepalived makes it MASTER again and `master`
                // promotes it through the lease as after any failover.
                if raise_flag {
                    let _ = std::fs::remove_file(&self.config.failover_file);
                }
                self.watched.step_back();
                return Err(format!(
                    "the peer did not become writable within {} ms: switch-over undone{}, this node takes the VIP back",
                    TAKE_OVER.as_millis(),
                    if raise_flag {
                        " (failover flag lowered)"
                    } else {
                        ""
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        steps.step(if self.gated_layout() {
            "peer holds the leases"
        } else {
            "peer writable"
        });
        Ok(steps.report())
    }

    /// Refuses new connections to the VIPs on this node's MariaDB port. Without nft
    /// the switch-over goes on, and a client may wait out its read timeout.
    fn turn_away_clients(
        &self,
        local: &mut crate::mariadb::Session,
    ) -> Option<turn_away::TurnedAway> {
        let port = local
            .value(Level::Debug, "SELECT @@GLOBAL.port")
            .map_err(|e| crate::caps::sql::describe(&e))
            .and_then(|port| {
                port.and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| "no port".to_string())
            });
        match port.and_then(|port| {
            turn_away::turn_away(&self.vips(), &self.gated_vips(), port, &self.log)
        }) {
            Ok(turned_away) => Some(turned_away),
            Err(why) => {
                self.log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!("switch-over: new connections to the VIPs not refused: {why}"),
                    )],
                );
                None
            }
        }
    }

    fn session(
        &self,
        endpoint: Endpoint,
        timeout: Duration,
        within: Duration,
    ) -> std::result::Result<crate::mariadb::Session, String> {
        Ok(crate::mariadb::Session::new(
            endpoint,
            timeout,
            Instant::now() + within,
            self.log.clone(),
        ))
    }

    /// A session with the first of the peer's addresses that answers.
    fn peer_session(
        &self,
        peers: &[Endpoint],
        timeout: Duration,
    ) -> std::result::Result<crate::mariadb::Session, String> {
        let mut failures = Vec::new();
        for endpoint in peers {
            let mut session = self.session(
                endpoint.clone(),
                timeout.max(CATCH_UP_AFTER + Duration::from_secs(1)),
                TAKE_OVER * 2,
            )?;
            match session.value(Level::Debug, "SELECT 1") {
                Ok(_) => return Ok(session),
                Err(e) => failures.push(format!(
                    "{}: {}",
                    endpoint.target,
                    crate::caps::sql::describe(&e)
                )),
            }
        }
        Err(format!(
            "the peer does not answer ({})",
            failures.join("; ")
        ))
    }

    /// `mmvip switchover`, on either node: the writer switches over; a node that is
    /// not the writer asks its peer's guard to.
    pub fn switchover_command(&self) -> std::result::Result<String, String> {
        if self.read_only_now() == Some(false) {
            return self.switchover(true);
        }
        let request = format!("SWITCHOVER {} {}", self.guard.node, wire::nonce());
        let mut failures = Vec::new();
        for address in &self.guard.peer {
            match wire::ask(&self.secret, *address, &request, TAKE_OVER * 2) {
                Ok(words) => {
                    return match words.first().map(String::as_str) {
                        Some("DONE") => Ok(format!("on the peer: {}", words[2..].join(" "))),
                        _ => Err(format!(
                            "the peer: {}",
                            words.get(2..).unwrap_or_default().join(" ")
                        )),
                    };
                }
                Err(why) => failures.push(format!("{address}: {why}")),
            }
        }
        Err(format!(
            "this node is not the writer and its peer's guard does not answer ({})",
            failures.join("; ")
        ))
    }
}

/// Both threads of every replication connection of this node run: a switch-over
/// into a broken ring would leave the new writer's writes on one node.
fn replication_runs(session: &mut crate::mariadb::Session) -> std::result::Result<(), String> {
    use crate::caps::sql::{IoState, SqlState};
    let replicas = session.replicas().map_err(|e| {
        format!(
            "cannot read this node's replication: {}",
            crate::caps::sql::describe(&e)
        )
    })?;
    if replicas.is_empty() {
        return Err("this node does not replicate from the peer".into());
    }
    for replica in replicas {
        if replica.io_state != IoState::Running || replica.sql_state != SqlState::Running {
            return Err(format!(
                "this node's replication connection '{}' is not running (IO {:?}, SQL {:?})",
                replica.connection_name, replica.io_state, replica.sql_state
            ));
        }
    }
    Ok(())
}

/// Sets a flag when dropped, whichever way the scope ends.
struct StoreOnDrop<'a>(&'a AtomicBool, bool);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(self.1, Ordering::SeqCst);
    }
}

fn binlog_position(session: &mut crate::mariadb::Session) -> std::result::Result<String, String> {
    session
        .value(Level::Debug, "SELECT @@GLOBAL.gtid_binlog_pos")
        .map_err(|e| {
            format!(
                "cannot read this node's binlog position: {}",
                crate::caps::sql::describe(&e)
            )
        })
        .map(Option::unwrap_or_default)
}

/// Whether the peer has applied `position` within `within`.
fn peer_reaches(
    peer: &mut crate::mariadb::Session,
    position: &str,
    within: Duration,
) -> std::result::Result<bool, String> {
    if position.is_empty() {
        return Ok(true);
    }
    if !position
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
    {
        return Err(format!("`{position}` is not a GTID position"));
    }
    let statement = format!(
        "SELECT MASTER_GTID_WAIT('{position}', {:.3})",
        within.as_secs_f64()
    );
    match peer.value(Level::Debug, &statement) {
        Ok(Some(answer)) => Ok(answer == "0"),
        Ok(None) => Err("the peer did not understand the position".into()),
        Err(e) => Err(format!("the peer: {}", crate::caps::sql::describe(&e))),
    }
}

/// A text on one line (for a protocol line).
fn one_word_safe(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("GRANT".to_string()),
            Just("DENY".to_string()),
            Just("OK".to_string()),
            Just("n1".to_string()),
            "[0-9]{0,25}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]

        #[test]
        fn only_an_answer_with_the_requests_nonce_counts(
            words in prop::collection::vec(word(), 0..6),
        ) {
            match parse_answer("VOTE VI_1 node1 n1", &words) {
                Answer::Granted => {
                    let words: Vec<&str> = words.iter().map(String::as_str).collect();
                    prop_assert!(matches!(words.as_slice(), ["GRANT", _, "n1", _] | ["OK", "n1"]));
                }
                Answer::Refused(refusal) => {
                    prop_assert_eq!(words.len(), 5);
                    prop_assert_eq!(&words[0], "DENY");
                    prop_assert_eq!(&words[2], "n1");
                    prop_assert_eq!(&refusal.holder, &words[3]);
                }
                Answer::Silent(_) => {}
            }
        }
    }
}
