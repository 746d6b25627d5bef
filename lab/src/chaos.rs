//! Chaos runs: one lab under the steady write load, and a random schedule of faults
//! drawn from a seed, each applied, held for a random time and healed, while the
//! pair's invariants are checked throughout. The first violation stops the run and
//! keeps the seed, the schedule so far and every log, so `--seed N` replays it.
//!
//! One fault at a time: the next one comes only once the pair has recovered (one
//! writer serving, replication running both ways and the writer's semi-sync
//! acknowledged by its peer again). Two overlapping failures of a two-node pair can
//! lose an acknowledged write whatever the tool does; the schedule tests the claim
//! mmvip makes, which is about single failures at random moments.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql::prelude::Queryable;
use serde::Serialize;

use crate::cleanup::Registry;
use crate::hooks::HookSet;
use crate::mariadb;
use crate::sampler::{self, Sampler};
use crate::scenario::{self, Fault, Load, Stored};
use crate::testbed::{Lab, LabConfig, save_logs};
use crate::topology::{Layout, NodeId};
use crate::wait;
use crate::writer::{Writer, WriterLog, WriterSpec};

/// How soon after a heal some node must acknowledge a write through the first VIP.
pub const SERVING_BOUND: Duration = Duration::from_secs(30);
/// How soon after a heal the pair must be back to one fault-free writer with its
/// peer replicating and acknowledging.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long a fault is held, and the quiet time after a recovery, drawn uniformly.
const HOLD: (u64, u64) = (300, 6_000);
const PAUSE: (u64, u64) = (500, 4_000);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// A stretch without acknowledgements longer than this counts as unavailable: the
/// inserts come every 5 ms, so 100 ms is a client that notices.
const UNAVAILABLE_AFTER: Duration = Duration::from_millis(100);
/// How often service (a cheap look at the writer's log) and recovery (SQL on both
/// nodes) are asked about after a heal.
const SERVING_POLL: Duration = Duration::from_millis(5);
const RECOVERY_POLL: Duration = Duration::from_millis(100);
/// How often the two-writer invariant is checked while faults run.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// Samples are read back from this much before the last check, so each check knows
/// both nodes' state at its start.
const STATE_OVERLAP: Duration = Duration::from_millis(500);

/// SplitMix64: a small, well-mixed generator whose whole state is the seed, so a
/// schedule is a pure function of it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high` (the modulo bias is far below what a schedule notices).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// Which node a fault strikes, resolved when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The node holding the first VIP then.
    Writer,
    /// The other node.
    Standby,
}

/// One planned fault: a pure function of the seed and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub target: Target,
    pub hold: Duration,
    pub pause: Duration,
}

/// The faults a chaos run draws from with this hook set and layout.
pub fn catalogue(hooks: HookSet, layout: Layout) -> Vec<Fault> {
    let mut faults = vec![
        Fault::MariadbKill,
        Fault::MariadbStop,
        Fault::MariadbFreeze,
        Fault::KeepalivedStop,
        Fault::KeepalivedKill,
        Fault::GuardKill,
        Fault::SplitBrain,
        Fault::Isolate,
        Fault::HeartbeatLoss(0),
        Fault::FailoverFile,
        Fault::Crash,
        Fault::NodeFreeze,
    ];
    // `mmvip switchover` moves the single VIP; the two-VIP layout has no one writer.
    if layout == Layout::Single {
        faults.push(Fault::Switchover);
    }
    if hooks == HookSet::GuardWitness {
        faults.push(Fault::WitnessDown);
    }
    faults
}

/// Faults that only make sense on the writer: a planned switch-over leaves it.
fn writer_only(fault: Fault) -> bool {
    matches!(
        fault,
        Fault::FailoverFile | Fault::Switchover | Fault::WitnessDown
    )
}

/// The schedule's next step. Every field is drawn every time, so the sequence of
/// steps never depends on what happened in the lab.
pub fn draw(rng: &mut Rng, catalogue: &[Fault]) -> Planned {
    let mut fault = catalogue[rng.between(0, catalogue.len() as u64 - 1) as usize];
    let loss = rng.between(10, 60) as u8;
    if let Fault::HeartbeatLoss(_) = fault {
        fault = Fault::HeartbeatLoss(loss);
    }
    let standby = rng.between(0, 3) == 0;
    let target = if standby && !writer_only(fault) {
        Target::Standby
    } else {
        Target::Writer
    };
    Planned {
        fault,
        target,
        hold: Duration::from_millis(rng.between(HOLD.0, HOLD.1)),
        pause: Duration::from_millis(rng.between(PAUSE.0, PAUSE.1)),
    }
}

/// The first `count` steps of the schedule a seed draws.
pub fn schedule(seed: u64, catalogue: &[Fault], count: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| draw(&mut rng, catalogue)).collect()
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    pub duration: Duration,
    pub layout: Layout,
    pub hooks: HookSet,
    /// Fault kinds left out of the catalogue (see [`kind`]).
    pub exclude: Vec<String>,
}

/// One applied step, as the report and the replay record it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub index: usize,
    /// Seconds since the load started.
    pub at_s: f64,
    pub fault: String,
    pub target: Target,
    pub node: String,
    pub hold_ms: u64,
    /// From the heal to the first acknowledged write through the first VIP.
    pub serving_ms: Option<u64>,
    /// From the heal until the pair had recovered (see the module comment).
    pub recovered_ms: Option<u64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub hooks: String,
    pub layout: String,
    pub excluded: Vec<String>,
    pub timers: String,
    pub duration_s: f64,
    pub faults_injected: usize,
    pub violations: Vec<String>,
    pub acked: u64,
    pub lost: u64,
    pub ambiguous: u64,
    pub ambiguous_committed: u64,
    pub two_writer_ms: u64,
    /// Share of the load time in which the first VIP's inserts were acknowledged
    /// with no gap longer than 100 ms.
    pub availability: f64,
    pub longest_gap_ms: u64,
    pub converged: bool,
    pub sample_median_ms: f64,
    pub sample_worst_ms: f64,
    pub steps: Vec<Step>,
    /// Where the logs were kept (always on a violation).
    pub logs: Option<PathBuf>,
}

impl ChaosReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes") + "\n"
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "chaos seed {} ({} hooks, {} layout, {} timers): {} faults in {:.0} s, {} violations\n\
             acked {}, lost {}, ambiguous {}/{} committed, two writers {} ms, availability {:.2}%, longest gap {} ms, converged {}, samples every {:.1} ms (worst {:.0})\n",
            self.seed,
            self.hooks,
            self.layout,
            self.timers,
            self.faults_injected,
            self.duration_s,
            self.violations.len(),
            self.acked,
            self.lost,
            self.ambiguous_committed,
            self.ambiguous,
            self.two_writer_ms,
            self.availability * 100.0,
            self.longest_gap_ms,
            if self.converged { "yes" } else { "NO" },
            self.sample_median_ms,
            self.sample_worst_ms,
        );
        if !self.excluded.is_empty() {
            text.push_str(&format!("excluded: {}\n", self.excluded.join(", ")));
        }
        for step in &self.steps {
            let optional = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
            text.push_str(&format!(
                "  #{:<3} {:>7.1} s  {:<22} {:<6} held {:>5} ms, serving after {}, recovered after {}{}\n",
                step.index,
                step.at_s,
                step.fault,
                step.node,
                step.hold_ms,
                optional(step.serving_ms),
                optional(step.recovered_ms),
                if step.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", step.notes.join("; "))
                }
            ));
        }
        for violation in &self.violations {
            text.push_str(&format!("VIOLATION: {violation}\n"));
        }
        if let Some(logs) = &self.logs {
            text.push_str(&format!("logs: {}\n", logs.display()));
        }
        text
    }
}

/// A fault's kind, as `--exclude` takes it.
pub fn kind(fault: Fault) -> &'static str {
    match fault {
        Fault::FailoverFile => "failover-file",
        Fault::KeepalivedStop => "keepalived-stop",
        Fault::KeepalivedKill => "keepalived-kill9",
        Fault::MariadbStop => "mariadb-stop",
        Fault::MariadbKill => "mariadb-kill9",
        Fault::MariadbFreeze => "mariadb-freeze",
        Fault::Crash => "reboot",
        Fault::SplitBrain => "heartbeat-cut",
        Fault::Isolate => "isolated",
        Fault::NodeFreeze => "node-freeze",
        Fault::GuardKill => "guard-kill9",
        Fault::Switchover => "mmvip-switchover",
        Fault::WitnessDown => "witness-down",
        Fault::WitnessDownSplit => "witness-down-heartbeat-cut",
        Fault::HeartbeatLoss(_) => "heartbeat-loss",
    }
}

/// A fault's name in reports: its kind, and the loss of a lossy link.
pub fn fault_name(fault: Fault) -> String {
    match fault {
        Fault::HeartbeatLoss(percent) => format!("{}-{percent}%", kind(fault)),
        _ => kind(fault).to_string(),
    }
}

/// The catalogue without the kinds named in `exclude`; an unknown name is an error.
pub fn catalogue_without(hooks: HookSet, layout: Layout, exclude: &[String]) -> Result<Vec<Fault>> {
    let all = catalogue(hooks, layout);
    for name in exclude {
        if !all.iter().any(|f| kind(*f) == name) {
            let known: Vec<&str> = all.iter().map(|f| kind(*f)).collect();
            bail!(
                "--exclude {name}: not a fault of this catalogue ({})",
                known.join(", ")
            );
        }
    }
    let left: Vec<Fault> = all
        .into_iter()
        .filter(|f| !exclude.iter().any(|name| name == kind(*f)))
        .collect();
    if left.is_empty() {
        bail!("--exclude leaves no fault to draw");
    }
    Ok(left)
}

/// Runs a chaos schedule on a fresh lab; the report says whether an invariant broke.
pub fn run(
    registry: &Arc<Registry>,
    config: &LabConfig,
    options: &ChaosOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ChaosReport> {
    if !options.hooks.guarded() {
        bail!(
            "chaos runs need the guard (hooks guard or guard-witness): without the write lease a heartbeat cut makes two writers by design"
        );
    }
    let mut lab = Lab::up(registry, config, options.layout, options.hooks)?;
    let mut run = Run::start(&lab)?;
    let outcome = run.drive(&mut lab, options, progress);
    let mut report = run.finish(&lab, config, options, outcome)?;
    if !report.violations.is_empty() || config.keep_logs {
        let dest = config.logs_dir.join(format!(
            "chaos-seed-{}-{}-{}",
            options.seed,
            options.hooks.name(),
            options.layout.name()
        ));
        save_logs(&lab, &dest)?;
        fs::write(dest.join("chaos-report.json"), report.to_json())
            .with_context(|| format!("write the report into {}", dest.display()))?;
        report.logs = Some(dest);
    }
    Ok(report)
}

/// The load, the sampler and what has been checked so far.
struct Run {
    layout: Layout,
    sampler: Sampler,
    writers: Vec<Writer>,
    load_start: Instant,
    /// The two-writer invariant holds up to here.
    checked_until: Instant,
    two_writer: Duration,
    violations: Vec<String>,
    steps: Vec<Step>,
    restarted_io: usize,
}

impl Run {
    fn start(lab: &Lab) -> Result<Run> {
        let Load {
            sampler,
            writers,
            started: load_start,
        } = Load::start(lab)?;
        Ok(Run {
            layout: lab.layout,
            sampler,
            writers,
            load_start,
            checked_until: load_start,
            two_writer: Duration::ZERO,
            violations: Vec::new(),
            steps: Vec::new(),
            restarted_io: 0,
        })
    }

    /// Applies the schedule until the duration is up or an invariant breaks.
    fn drive(
        &mut self,
        lab: &mut Lab,
        options: &ChaosOptions,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let catalogue = catalogue_without(options.hooks, options.layout, &options.exclude)?;
        let mut rng = Rng::new(options.seed);
        let end = self.load_start + options.duration;
        while Instant::now() < end && self.violations.is_empty() {
            let planned = draw(&mut rng, &catalogue);
            let step = self.apply(lab, planned)?;
            progress(&format!(
                "#{} {} on {}: held {} ms, serving after {}, recovered after {}",
                step.index,
                step.fault,
                step.node,
                step.hold_ms,
                step.serving_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                step.recovered_ms
                    .map_or("-".into(), |ms| format!("{ms} ms")),
            ));
            self.steps.push(step);
            if self.violations.is_empty() {
                self.watch(planned.pause)?;
            }
        }
        Ok(())
    }

    /// One fault: resolve its node, inflict, hold, heal, then wait for service and
    /// recovery within their bounds.
    fn apply(&mut self, lab: &mut Lab, planned: Planned) -> Result<Step> {
        let writer = self.writer_node(lab);
        let node = match planned.target {
            Target::Writer => writer,
            Target::Standby => writer.peer(),
        };
        let name = fault_name(planned.fault);
        let mut step = Step {
            index: self.steps.len() + 1,
            at_s: (self.load_start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            fault: name.clone(),
            target: planned.target,
            node: node.name(),
            hold_ms: ms(planned.hold),
            serving_ms: None,
            recovered_ms: None,
            notes: Vec::new(),
        };
        match scenario::inflict(lab, planned.fault, node) {
            Ok(Some(report)) => step.notes.push(report),
            Ok(None) => {}
            Err(error) => {
                // A refused switch-over is an answer, not a broken lab: mmvip refuses
                // when the pair is not ready, and says why. Its flag is lowered below
                // like any heal; a writer left flagged would stay in FAULT.
                if planned.fault != Fault::Switchover {
                    return Err(error.context(format!("inflict {name} on {}", node.name())));
                }
                step.notes.push(format!("refused: {error:#}"));
            }
        }
        self.watch(planned.hold)?;
        let healed_at = Instant::now();
        scenario::heal(lab, planned.fault, node)
            .with_context(|| format!("heal {name} on {}", node.name()))?;
        let serving = self.watch_until(SERVING_BOUND, SERVING_POLL, |run| {
            Ok(run.writers[0].log().acks_since(healed_at) > 0)
        })?;
        step.serving_ms = serving.then(|| ms(healed_at.elapsed()));
        if !serving {
            self.violations.push(format!(
                "step {}: no write acknowledged within {} s of healing {name} on {}",
                step.index,
                SERVING_BOUND.as_secs(),
                node.name()
            ));
            return Ok(step);
        }
        let mut restarted = 0;
        let mut restarted_mariadbd = 0;
        let recovered = self.watch_until(RECOVERY_BOUND, RECOVERY_POLL, |_| {
            restarted_mariadbd += lab.restart_mariadbd_as_systemd_would()?.len();
            restarted += lab.restart_io_stopped_on_1236()?.len();
            Ok(recovery_problem(lab).is_none())
        })?;
        if restarted_mariadbd > 0 {
            step.notes.push(format!(
                "mariadbd died without the lab stopping it (the guard's last resort) and was started again 5 s later, as Debian's mariadb.service would ({restarted_mariadbd}x)"
            ));
        }
        if restarted > 0 {
            self.restarted_io += restarted;
            step.notes.push(format!(
                "IO thread restarted {restarted}x after error 1236 (semi-sync crash recovery), as an operator would"
            ));
        }
        step.recovered_ms = recovered.then(|| ms(healed_at.elapsed()));
        if !recovered {
            let why = recovery_problem(lab).unwrap_or_else(|| "unknown".into());
            self.violations.push(format!(
                "step {}: not recovered within {} s of healing {name} on {}: {why}",
                step.index,
                RECOVERY_BOUND.as_secs(),
                node.name()
            ));
        }
        Ok(step)
    }

    /// The node holding the first VIP now, else node 1.
    fn writer_node(&self, lab: &Lab) -> NodeId {
        let vip = lab.instances[0].vip;
        self.sampler
            .latest_vips()
            .and_then(|s| {
                NodeId::BOTH
                    .into_iter()
                    .find(|n| s.held[n.index()].contains(&vip))
            })
            .unwrap_or(NodeId::One)
    }

    /// Waits `duration`, checking the invariants as it goes.
    fn watch(&mut self, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        while self.violations.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wait::sleep(left.min(CHECK_EVERY))?;
            self.check(Instant::now());
        }
        Ok(())
    }

    /// Asks `done` every `poll` until it is or `bound` passes, checking the
    /// invariants every [`CHECK_EVERY`]; whether it was done.
    fn watch_until(
        &mut self,
        bound: Duration,
        poll: Duration,
        mut done: impl FnMut(&Run) -> Result<bool>,
    ) -> Result<bool> {
        let end = Instant::now() + bound;
        loop {
            if done(self)? {
                return Ok(true);
            }
            if Instant::now() >= end || !self.violations.is_empty() {
                return Ok(false);
            }
            wait::sleep(poll)?;
            let now = Instant::now();
            if now - self.checked_until >= CHECK_EVERY {
                self.check(now);
            }
        }
    }

    /// The two-writer invariant from the last check up to `now`.
    fn check(&mut self, now: Instant) {
        let samples = self.sampler.samples_since(
            self.checked_until
                .checked_sub(STATE_OVERLAP)
                .unwrap_or(self.checked_until),
        );
        let overlap = sampler::two_writers(&samples, self.checked_until, now, self.layout);
        if !overlap.is_zero() {
            self.two_writer += overlap;
            self.violations.push(format!(
                "two writers for {:.1} ms between {:.1} s and {:.1} s",
                overlap.as_secs_f64() * 1000.0,
                (self.checked_until - self.load_start).as_secs_f64(),
                (now - self.load_start).as_secs_f64()
            ));
        }
        self.checked_until = now;
    }

    /// Stops the load, lets replication settle and checks the data.
    fn finish(
        mut self,
        lab: &Lab,
        config: &LabConfig,
        options: &ChaosOptions,
        outcome: Result<()>,
    ) -> Result<ChaosReport> {
        if let Err(error) = outcome {
            if wait::interrupted() {
                return Err(error);
            }
            self.violations.push(format!("the lab broke: {error:#}"));
        }
        self.check(Instant::now());
        let load_end = Instant::now();
        let logs: Vec<(WriterSpec, WriterLog)> = self
            .writers
            .into_iter()
            .map(|w| (w.spec.clone(), w.stop()))
            .collect();
        let samples = self.sampler.stop();
        let mut violations = self.violations;
        let converged =
            wait::until_or_timeout(CONVERGE_TIMEOUT, Duration::from_millis(100), || {
                lab.restart_io_stopped_on_1236()?;
                Ok(lab.converged_now()?.then_some(()))
            })?
            .is_some();
        if !converged {
            violations.push("replication did not converge after the last heal".into());
        }
        let Stored {
            rows,
            acked,
            ambiguous,
            unread,
            lost_uids,
            ..
        } = Stored::check(lab, &logs);
        violations.extend(unread);
        if rows.lost > 0 {
            // Which writes, by whom and when, so the step that lost them can be found.
            let named: Vec<String> = lost_uids
                .iter()
                .filter_map(|uid| {
                    logs.iter().find_map(|(spec, log)| {
                        log.acks.iter().find(|ack| ack.uid == *uid).map(|ack| {
                            format!(
                                "uid {uid} ({}, acknowledged by node{} at {:.2} s)",
                                spec.name,
                                ack.server_id,
                                (ack.at - self.load_start).as_secs_f64()
                            )
                        })
                    })
                })
                .collect();
            violations.push(format!(
                "{} acknowledged writes lost: {}",
                rows.lost,
                named.join(", ")
            ));
        }
        if rows.ambiguous_on_one_node > 0 {
            violations.push(format!(
                "{} ambiguous writes committed on one node only (never replicated)",
                rows.ambiguous_on_one_node
            ));
        }
        if rows.refused_but_stored > 0 {
            violations.push(format!(
                "{} writes the server refused are stored",
                rows.refused_but_stored
            ));
        }
        if rows.unaccounted > 0 {
            violations.push(format!(
                "{} stored uids no writer attempted",
                rows.unaccounted
            ));
        }
        for note in scenario::sequence_notes(lab) {
            violations.push(format!("non-commutative writes: {note}"));
        }
        let timing = &logs[0].1;
        let (availability, longest_gap) = availability(timing, self.load_start, load_end);
        let period = sampler::sample_period(&samples.read_only, self.load_start, load_end);
        let mut steps = self.steps;
        if self.restarted_io > 0
            && let Some(last) = steps.last_mut()
        {
            last.notes.push(format!(
                "{} IO thread restarts in the run",
                self.restarted_io
            ));
        }
        Ok(ChaosReport {
            seed: options.seed,
            hooks: options.hooks.name().into(),
            layout: options.layout.name().into(),
            excluded: options.exclude.clone(),
            timers: config.timers.name.into(),
            duration_s: (load_end - self.load_start).as_secs_f64().round(),
            faults_injected: steps.len(),
            violations,
            acked: acked.len() as u64,
            lost: rows.lost,
            ambiguous: ambiguous.len() as u64,
            ambiguous_committed: rows.ambiguous_committed,
            two_writer_ms: ms(self.two_writer),
            availability,
            longest_gap_ms: ms(longest_gap),
            converged,
            sample_median_ms: millis(period.median),
            sample_worst_ms: millis(period.worst),
            steps,
            logs: None,
        })
    }
}

/// Why the pair has not recovered, or None.
fn recovery_problem(lab: &Lab) -> Option<String> {
    if let Some(missing) = lab.daemon_missing() {
        return Some(missing);
    }
    let mut holders = Vec::new();
    for instance in &lab.instances {
        let held: Vec<NodeId> = NodeId::BOTH
            .into_iter()
            .filter(|n| {
                crate::topology::public_addresses(*n).is_ok_and(|a| a.contains(&instance.vip))
            })
            .collect();
        if held.len() != 1 {
            return Some(format!("{} held by {} nodes", instance.vip, held.len()));
        }
        holders.push(held[0]);
    }
    for node in NodeId::BOTH {
        let mut conn = match lab.connect(node) {
            Ok(conn) => conn,
            Err(error) => return Some(format!("{error:#}")),
        };
        match mariadb::replica_status(&mut conn) {
            Ok(Some(status)) if status.running() => {}
            Ok(Some(status)) => {
                return Some(format!(
                    "{} replication IO {} SQL {} {}",
                    node.name(),
                    status.io_running,
                    status.sql_running,
                    status.last_io_error
                ));
            }
            Ok(None) => return Some(format!("{} has no replication", node.name())),
            Err(error) => return Some(format!("{}: {error:#}", node.name())),
        }
        if holders.contains(&node) {
            let status: Option<(String, String)> = conn
                .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
                .ok()
                .flatten();
            if status.as_ref().map(|(_, v)| v.as_str()) != Some("ON") {
                return Some(format!(
                    "{} holds a VIP but its semi-sync is not acknowledged by the peer",
                    node.name()
                ));
            }
        }
    }
    None
}

/// Share of [from, to] not inside a gap between acknowledgements longer than
/// [`UNAVAILABLE_AFTER`], and the longest gap.
fn availability(log: &WriterLog, from: Instant, to: Instant) -> (f64, Duration) {
    let down: Duration = log
        .gaps(from, to)
        .map(|(_, gap)| gap)
        .filter(|gap| *gap > UNAVAILABLE_AFTER)
        .sum();
    let (longest, _) = log.longest_gap(from, to);
    let total = (to - from).as_secs_f64();
    let share = if total > 0.0 {
        1.0 - down.as_secs_f64() / total
    } else {
        0.0
    };
    ((share * 10_000.0).round() / 10_000.0, longest)
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Parses `90s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .with_context(|| format!("duration `{text}`: expected e.g. 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        other => bail!("duration `{text}`: unit `{other}` is not s, m or h"),
    };
    if seconds == 0 {
        bail!("duration `{text}`: must be longer than zero");
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Ack;

    #[test]
    fn a_seed_draws_the_same_schedule_every_time_and_another_seed_another() {
        let faults = catalogue(HookSet::Guard, Layout::Single);
        assert_eq!(schedule(42, &faults, 50), schedule(42, &faults, 50));
        assert_ne!(schedule(42, &faults, 50), schedule(43, &faults, 50));
        // A longer run replays the shorter one's steps first.
        assert_eq!(
            schedule(42, &faults, 80)[..50],
            schedule(42, &faults, 50)[..]
        );
    }

    #[test]
    fn a_long_schedule_covers_the_whole_catalogue_within_bounds() {
        let faults = catalogue(HookSet::GuardWitness, Layout::Single);
        let steps = schedule(1, &faults, 400);
        for fault in &faults {
            assert!(
                steps
                    .iter()
                    .any(|s| std::mem::discriminant(&s.fault) == std::mem::discriminant(fault)),
                "{fault:?} never drawn"
            );
        }
        for step in &steps {
            assert!((HOLD.0..=HOLD.1).contains(&(step.hold.as_millis() as u64)));
            assert!((PAUSE.0..=PAUSE.1).contains(&(step.pause.as_millis() as u64)));
            if let Fault::HeartbeatLoss(percent) = step.fault {
                assert!((10..=60).contains(&percent));
            }
            if writer_only(step.fault) {
                assert_eq!(step.target, Target::Writer, "{:?}", step.fault);
            }
        }
        assert!(steps.iter().any(|s| s.target == Target::Standby));
    }

    #[test]
    fn the_catalogue_follows_hooks_and_layout() {
        let single = catalogue(HookSet::Guard, Layout::Single);
        assert!(single.contains(&Fault::Switchover));
        assert!(!single.contains(&Fault::WitnessDown));
        assert!(!catalogue(HookSet::Guard, Layout::Dual).contains(&Fault::Switchover));
        assert!(catalogue(HookSet::GuardWitness, Layout::Dual).contains(&Fault::WitnessDown));
    }

    #[test]
    fn excluded_kinds_are_never_drawn_and_unknown_ones_are_refused() {
        let exclude = vec!["isolated".to_string(), "heartbeat-loss".to_string()];
        let faults = catalogue_without(HookSet::Guard, Layout::Single, &exclude).unwrap();
        assert_eq!(
            faults.len(),
            catalogue(HookSet::Guard, Layout::Single).len() - 2
        );
        assert!(
            schedule(3, &faults, 300)
                .iter()
                .all(|s| s.fault != Fault::Isolate && !matches!(s.fault, Fault::HeartbeatLoss(_)))
        );
        let unknown = catalogue_without(HookSet::Guard, Layout::Single, &["witness-down".into()]);
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("not a fault of this catalogue")
        );
        let all: Vec<String> = catalogue(HookSet::Guard, Layout::Single)
            .into_iter()
            .map(|f| kind(f).to_string())
            .collect();
        assert!(catalogue_without(HookSet::Guard, Layout::Single, &all).is_err());
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "0s", "5x", "m", "-3s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn availability_counts_only_gaps_a_client_notices() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let log = WriterLog {
            acks: [5, 10, 15, 515, 520, 1000]
                .into_iter()
                .map(|ms| Ack {
                    uid: ms,
                    server_id: 1,
                    at: at(ms),
                })
                .collect(),
            ..WriterLog::default()
        };
        let (share, longest) = availability(&log, t, at(1000));
        // 500 ms (15 -> 515) and 480 ms (520 -> 1000) are outages; 5 ms gaps are not.
        assert_eq!(longest, Duration::from_millis(500));
        assert!((share - 0.02).abs() < 1e-9, "{share}");
        let (share, _) = availability(&WriterLog::default(), t, at(1000));
        assert_eq!(share, 0.0);
    }
}
