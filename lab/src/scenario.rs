//! The scenarios the original setup was tested with, each run on a fresh, healthy,
//! converged lab under a steady write load, measured into a report row and judged.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cleanup::Registry;
use crate::hooks::HookSet;
use crate::keepalived;
use crate::mariadb;
use crate::report::{Row, Verdict};
use crate::sampler::{self, Sampler, Samples};
use crate::testbed::{Lab, LabConfig, save_logs};
use crate::topology::Layout;
use crate::topology::{self, NodeId};
use crate::wait;
use crate::writer::{Workload, Writer, WriterLog, WriterSpec};

/// One insert every 5 ms per VIP: ~200 rows/s, enough to time a failover to a few ms
/// and light enough for two servers on two cores.
const INSERT_INTERVAL: Duration = Duration::from_millis(5);
/// One sequence transaction (four round trips) every 10 ms per VIP.
const SEQUENCE_INTERVAL: Duration = Duration::from_millis(10);
const WARMUP_ACKS: usize = 20;
const WARMUP_TIMEOUT: Duration = Duration::from_secs(15);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
const SPLIT_BRAIN_CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// Load on the new holder before healing; the split brain is held a bit longer so
/// its two-writer window is plainly visible.
const HOLD_AFTER_TAKEOVER: Duration = Duration::from_secs(2);
const HOLD_SPLIT_BRAIN: Duration = Duration::from_secs(3);
const FAILBACK_TIMEOUT: Duration = Duration::from_secs(30);
const HOLD_AFTER_FAILBACK: Duration = Duration::from_millis(1500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A writer with no acknowledgement for this long at the end is stuck, not slow.
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// How long a whole node stays frozen (issue 11, row 11).
pub const NODE_FREEZE: Duration = Duration::from_secs(5);

/// What is done to the VIP holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Create the failover file; heal: remove it.
    FailoverFile,
    /// Stop keepalived; heal: start it.
    KeepalivedStop,
    /// Stop MariaDB cleanly; heal: start it.
    MariadbStop,
    /// kill -9 mariadbd; heal: start it (crash recovery).
    MariadbKill,
    /// A crash of the whole node: every process of it frozen, links down, then all
    /// SIGKILLed (frozen first, so none reacts to another's death), VIPs gone. The page cache
    /// survives, unlike a power cut: what the servers wrote but did not fsync is not
    /// lost here. Heal: links up, MariaDB (crash recovery), keepalived.
    Crash,
    /// Detach the node's heartbeat port from the private bridge; heal: re-attach.
    SplitBrain,
    /// SIGSTOP mariadbd (a hung server); heal: SIGCONT, or start it again if the
    /// guard's last resort killed it meanwhile.
    MariadbFreeze,
    /// kill -9 the guard (hook set `guard` only); heal: start it.
    GuardKill,
    /// `mmvip switchover` on the writer (hook set `guard` only); heal: remove the
    /// failover flag it raised.
    Switchover,
    /// The witness host's link down (hook set `guard-witness`); heal: up.
    WitnessDown,
    /// The witness down and the heartbeat link cut; heal: both back.
    WitnessDownSplit,
    /// kill -9 keepalived, children and all: its VIPs stay behind and no priority-0
    /// advert goes out; heal: start it.
    KeepalivedKill,
    /// The node cut off from every network at the switch (carrier stays up); heal:
    /// cables back.
    Isolate,
    /// Every process of the node frozen (SIGSTOP) for [`NODE_FREEZE`]; heal: SIGCONT.
    NodeFreeze,
    /// This share (percent) of packets dropped both ways on the node's heartbeat link;
    /// heal: no loss.
    HeartbeatLoss(u8),
}

impl Fault {
    /// Faults that need the guard: without it there is nothing to kill or ask, or
    /// the row's promise (no two writers while a writer is cut off, frozen or left
    /// behind by keepalived) is one only the write lease makes.
    pub fn needs_guard(self) -> bool {
        matches!(
            self,
            Fault::GuardKill
                | Fault::Switchover
                | Fault::KeepalivedKill
                | Fault::Isolate
                | Fault::NodeFreeze
                | Fault::HeartbeatLoss(_)
        ) || self.needs_witness()
    }

    pub fn needs_witness(self) -> bool {
        matches!(self, Fault::WitnessDown | Fault::WitnessDownSplit)
    }

    /// Faults after which the writer lives on and nobody should take over: a
    /// takeover is not required there (and a second writer is the failure).
    pub fn writer_survives(self) -> bool {
        matches!(
            self,
            Fault::SplitBrain
                | Fault::WitnessDown
                | Fault::WitnessDownSplit
                | Fault::HeartbeatLoss(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The issue's scenario number (both two-VIP runs are 7).
    pub number: u8,
    pub name: &'static str,
    pub layout: Layout,
    pub fault: Fault,
}

pub fn catalog() -> Vec<Scenario> {
    let s = |number, name, layout, fault| Scenario {
        number,
        name,
        layout,
        fault,
    };
    vec![
        s(1, "1-switchover", Layout::Single, Fault::FailoverFile),
        s(
            2,
            "2-keepalived-stop",
            Layout::Single,
            Fault::KeepalivedStop,
        ),
        s(3, "3-mariadb-stop", Layout::Single, Fault::MariadbStop),
        s(4, "4-mariadb-kill9", Layout::Single, Fault::MariadbKill),
        s(5, "5-crash", Layout::Single, Fault::Crash),
        s(6, "6-split-brain", Layout::Single, Fault::SplitBrain),
        s(7, "7a-dual-switchover", Layout::Dual, Fault::FailoverFile),
        s(7, "7b-dual-kill9", Layout::Dual, Fault::MariadbKill),
        s(7, "7c-dual-split-brain", Layout::Dual, Fault::SplitBrain),
        s(8, "8-mariadb-freeze", Layout::Single, Fault::MariadbFreeze),
        s(9, "9-guard-kill9", Layout::Single, Fault::GuardKill),
        s(10, "10-mmvip-switchover", Layout::Single, Fault::Switchover),
        s(11, "11-witness-down", Layout::Single, Fault::WitnessDown),
        s(
            12,
            "12-witness-down-split-brain",
            Layout::Single,
            Fault::WitnessDownSplit,
        ),
        s(13, "13-writer-isolated", Layout::Single, Fault::Isolate),
        s(
            14,
            "14-keepalived-kill9",
            Layout::Single,
            Fault::KeepalivedKill,
        ),
        s(15, "15-node-freeze", Layout::Single, Fault::NodeFreeze),
    ]
}

/// Scenarios with the given issue numbers, in catalog order.
pub fn select(numbers: &BTreeSet<u8>) -> Vec<Scenario> {
    catalog()
        .into_iter()
        .filter(|s| numbers.contains(&s.number))
        .collect()
}

/// Server ids are the node numbers (see my.cnf).
pub(crate) fn server_id(node: NodeId) -> u32 {
    u32::from(node.number())
}

/// Runs one scenario with one hook set on a fresh lab, measures it, and tears the lab
/// down. A failed scenario's logs are kept in `config.logs_dir`.
pub fn run(
    registry: &Arc<Registry>,
    config: &LabConfig,
    scenario: &Scenario,
    hooks: HookSet,
    progress: &mut dyn FnMut(&str),
) -> Result<Row> {
    let started = Instant::now();
    let mut lab = Lab::up(registry, config, scenario.layout, hooks)?;
    progress(&format!(
        "lab up in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let outcome = drive(
        &mut lab,
        scenario,
        hooks,
        config.timers.name,
        started,
        progress,
    );
    // Kept for any row that broke a rule, judged or not.
    let troubled = outcome
        .as_ref()
        .map_or(true, |row| !row.problems.is_empty());
    if (troubled || config.keep_logs) && !wait::interrupted() {
        let dest = config.logs_dir.join(format!(
            "{}-{}-{}",
            scenario.name,
            hooks.name(),
            config.timers.name
        ));
        match save_logs(&lab, &dest) {
            Ok(()) => progress(&format!("logs saved in {}", dest.display())),
            Err(error) => progress(&format!("could not save logs: {error}")),
        }
    }
    outcome
}

fn drive(
    lab: &mut Lab,
    scenario: &Scenario,
    hooks: HookSet,
    timers: &str,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<Row> {
    let faulted = NodeId::One;
    let takeover = faulted.peer();
    let vip = lab.instances[0].vip;
    // writers[0] (inserts through VIP1) times the failover; all are checked.
    let Load {
        sampler,
        writers,
        started: load_start,
    } = Load::start(lab)?;

    let fault_at = Instant::now();
    let fault_report = inflict(lab, scenario.fault, faulted)
        .with_context(|| format!("inflict {:?}", scenario.fault))?;
    // Under the guard the peer of a split brain should never claim the VIP: wait for
    // that no longer than a few VRRP master-down intervals.
    let takeover_timeout = if scenario.fault.writer_survives() && hooks.guarded() {
        SPLIT_BRAIN_CLAIM_TIMEOUT
    } else {
        TAKEOVER_TIMEOUT
    };
    let took_over = wait::until_or_timeout(takeover_timeout, Duration::from_millis(10), || {
        if let Some(at) = writers[0].log().first_ack_by(server_id(takeover), fault_at) {
            return Ok(Some(at));
        }
        // In a split brain the client may stay with the old holder: the peer
        // claiming the VIP is the takeover.
        let claimed = scenario.fault.writer_survives()
            && sampler
                .latest_vips()
                .is_some_and(|s| s.at > fault_at && s.held[takeover.index()].contains(&vip));
        Ok(claimed.then(Instant::now))
    })?;
    progress(&match took_over {
        Some(at) => format!("takeover after {} ms", (at - fault_at).as_millis()),
        None => format!("no takeover within {} s", TAKEOVER_TIMEOUT.as_secs()),
    });
    let hold = if scenario.fault.writer_survives() {
        HOLD_SPLIT_BRAIN
    } else {
        HOLD_AFTER_TAKEOVER
    };
    let hold = match scenario.fault {
        // Frozen for a fixed time from the fault, however soon the takeover came.
        Fault::NodeFreeze => NODE_FREEZE.saturating_sub(fault_at.elapsed()),
        _ => hold,
    };
    wait::sleep(hold)?;

    let heal_at = Instant::now();
    heal(lab, scenario.fault, faulted).with_context(|| format!("heal {:?}", scenario.fault))?;
    let mut restarted_mariadbd = BTreeSet::new();
    let failed_back = wait::until_or_timeout(FAILBACK_TIMEOUT, Duration::from_millis(10), || {
        restarted_mariadbd.extend(lab.restart_mariadbd_as_systemd_would()?);
        Ok(writers[0].log().first_ack_by(server_id(faulted), heal_at))
    })?;
    progress(&match failed_back {
        Some(at) => format!("failback after {} ms", (at - heal_at).as_millis()),
        None => format!("no failback within {} s", FAILBACK_TIMEOUT.as_secs()),
    });
    wait::sleep(HOLD_AFTER_FAILBACK)?;

    let load_end = Instant::now();
    let logs: Vec<(WriterSpec, WriterLog)> = writers
        .into_iter()
        .map(|w| (w.spec.clone(), w.stop()))
        .collect();
    let samples = sampler.stop();
    let mut restarted_io = BTreeSet::new();
    let converged = wait::until_or_timeout(CONVERGE_TIMEOUT, Duration::from_millis(100), || {
        restarted_mariadbd.extend(lab.restart_mariadbd_as_systemd_would()?);
        restarted_io.extend(lab.restart_io_stopped_on_1236()?);
        Ok(lab.converged_now()?.then_some(()))
    })?
    .is_some();

    let window = Window {
        load_start,
        fault_at,
        heal_at,
        load_end,
    };
    let mut row = measure(
        lab, scenario, hooks, timers, &logs, &samples, &window, converged, started,
    )?;
    for node in restarted_mariadbd {
        row.notes.push(format!(
            "{}: mariadbd died without the lab stopping it (the guard's last resort); started again 5 s later, as Debian's mariadb.service would",
            node.name()
        ));
    }
    for node in restarted_io {
        row.notes.push(format!(
            "{}: IO thread stopped on error 1236 after the restarted peer dropped a transaction it never acknowledged (semi-sync crash recovery); restarted by the lab, as an operator would",
            node.name()
        ));
    }
    if let Some(report) = fault_report {
        row.notes.insert(0, format!("node1 mmvip {report}"));
    }
    Ok(row)
}

/// How many lost writes a report names.
const LOST_UIDS_NAMED: usize = 5;

/// The steady write load and the sampler watching the pair under it.
pub(crate) struct Load {
    pub sampler: Sampler,
    pub writers: Vec<Writer>,
    /// When the writers started.
    pub started: Instant,
}

impl Load {
    /// The sampler first (its VIP watchers report the current state before it
    /// returns), then every writer; returns once writes flow through every VIP.
    pub(crate) fn start(lab: &Lab) -> Result<Load> {
        let sampler = Sampler::start(lab.sockets(), lab.hooks.guarded())?;
        let writers = writer_specs(lab)
            .into_iter()
            .map(Writer::start)
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        wait::until(
            WARMUP_TIMEOUT,
            Duration::from_millis(20),
            "writes to flow through every VIP",
            || {
                Ok(writers
                    .iter()
                    .all(|w| w.log().acks.len() >= WARMUP_ACKS)
                    .then_some(()))
            },
        )?;
        Ok(Load {
            sampler,
            writers,
            started,
        })
    }
}

/// What both nodes store against what the writers were told.
pub(crate) struct Stored {
    pub rows: RowCheck,
    pub acked: Vec<u64>,
    pub ambiguous: Vec<u64>,
    /// Both nodes' rows were read.
    pub read_back: bool,
    /// Why a node's rows could not be read.
    pub unread: Vec<String>,
    /// The first acknowledged uids missing on a node, to find them in the logs.
    pub lost_uids: Vec<u64>,
}

impl Stored {
    pub(crate) fn check(lab: &Lab, logs: &[(WriterSpec, WriterLog)]) -> Stored {
        let mut stored = Vec::new();
        let mut unread = Vec::new();
        for node in NodeId::BOTH {
            match lab.read_from(node, mariadb::stored_uids) {
                Ok(uids) => stored.push(uids),
                Err(error) => {
                    unread.push(format!("cannot read rows on {}: {error:#}", node.name()))
                }
            }
        }
        let all = |pick: fn(&WriterLog) -> Vec<u64>| -> Vec<u64> {
            logs.iter().flat_map(|(_, log)| pick(log)).collect()
        };
        let acked = all(|l| l.acks.iter().map(|a| a.uid).collect());
        let ambiguous = all(|l| l.ambiguous.iter().map(|a| a.uid).collect());
        let refused = all(|l| l.refused.clone());
        let lost_uids = acked
            .iter()
            .filter(|uid| !stored.iter().all(|node| node.contains(uid)))
            .take(LOST_UIDS_NAMED)
            .copied()
            .collect();
        Stored {
            rows: RowCheck::new(&acked, &ambiguous, &refused, &stored),
            lost_uids,
            acked,
            ambiguous,
            read_back: stored.len() == 2,
            unread,
        }
    }
}

/// Per VIP: inserts, and a sequence stream of its own (in the two-VIP layout each
/// VIP's stream is written only through that VIP, as a partitioned application would).
pub(crate) fn writer_specs(lab: &Lab) -> Vec<WriterSpec> {
    let mut specs = Vec::new();
    for (i, instance) in lab.instances.iter().enumerate() {
        let number = i as u64 + 1;
        specs.push(WriterSpec {
            name: format!("vip{number}"),
            vip: instance.vip,
            uid_base: number * 1_000_000_000,
            interval: INSERT_INTERVAL,
            workload: Workload::Insert,
        });
        specs.push(WriterSpec {
            name: format!("vip{number}-seq"),
            vip: instance.vip,
            uid_base: number * 1_000_000_000 + 500_000_000,
            interval: SEQUENCE_INTERVAL,
            workload: Workload::Sequence {
                stream: number as u8,
            },
        });
    }
    specs
}

/// Inflicts the fault; what it reported, if anything (`mmvip switchover`'s steps).
pub(crate) fn inflict(lab: &mut Lab, fault: Fault, node: NodeId) -> Result<Option<String>> {
    match fault {
        Fault::FailoverFile => {
            let path = lab.failover_file(node);
            fs::write(&path, b"planned switch-over by mmvip-lab\n")
                .with_context(|| format!("create {}", path.display()))?;
        }
        Fault::KeepalivedStop => lab.stop_keepalived(node)?,
        Fault::MariadbStop => lab.stop_mariadb(node)?,
        Fault::MariadbKill => lab.kill_mariadb(node)?,
        Fault::Crash => lab.crash_node(node)?,
        Fault::SplitBrain => topology::detach_private(node)?,
        Fault::MariadbFreeze => lab.freeze_mariadb(node, true)?,
        Fault::GuardKill => lab.kill_guard(node)?,
        Fault::Switchover => return lab.switchover(node).map(Some),
        Fault::WitnessDown => topology::set_witness_link(false)?,
        Fault::WitnessDownSplit => {
            topology::set_witness_link(false)?;
            topology::detach_private(node)?;
        }
        Fault::KeepalivedKill => lab.kill_keepalived(node)?,
        Fault::Isolate => topology::set_isolated(node, true)?,
        Fault::NodeFreeze => lab.freeze_node(node, true)?,
        Fault::HeartbeatLoss(percent) => topology::set_heartbeat_loss(node, percent)?,
    }
    Ok(None)
}

pub(crate) fn heal(lab: &mut Lab, fault: Fault, node: NodeId) -> Result<()> {
    match fault {
        Fault::FailoverFile => {
            let path = lab.failover_file(node);
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
        }
        // A switch-over that could not complete lowers its flag itself.
        Fault::Switchover => match fs::remove_file(lab.failover_file(node)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).context("remove the failover flag")
            }
            _ => Ok(()),
        },
        Fault::MariadbFreeze => {
            if lab.mariadb_running(node) {
                lab.freeze_mariadb(node, false)
            } else {
                lab.start_mariadb(node)
            }
        }
        Fault::GuardKill => lab.start_guard(node),
        Fault::WitnessDown => topology::set_witness_link(true),
        Fault::WitnessDownSplit => {
            topology::attach_private(node)?;
            topology::set_witness_link(true)
        }
        Fault::KeepalivedStop | Fault::KeepalivedKill => lab.start_keepalived(node),
        Fault::Isolate => topology::set_isolated(node, false),
        Fault::NodeFreeze => lab.freeze_node(node, false),
        Fault::HeartbeatLoss(_) => topology::set_heartbeat_loss(node, 0),
        Fault::MariadbStop | Fault::MariadbKill => lab.start_mariadb(node),
        Fault::Crash => lab.boot_node(node),
        Fault::SplitBrain => topology::attach_private(node),
    }
}

struct Window {
    load_start: Instant,
    fault_at: Instant,
    heal_at: Instant,
    load_end: Instant,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    lab: &Lab,
    scenario: &Scenario,
    hooks: HookSet,
    timers: &str,
    logs: &[(WriterSpec, WriterLog)],
    samples: &Samples,
    window: &Window,
    converged: bool,
    started: Instant,
) -> Result<Row> {
    let faulted = NodeId::One;
    let takeover = faulted.peer();
    let vip = lab.instances[0].vip;
    let timing = &logs[0].1;
    let mut notes = Vec::new();

    let rto = timing.first_ack_by(server_id(takeover), window.fault_at);
    let vip_moved = rto.is_some()
        || sampler::vip_seen_on(&samples.vips, vip, takeover, window.fault_at).is_some();
    let failback = timing.first_ack_by(server_id(faulted), window.heal_at);

    // Rows: what each node stores against what the writers were told.
    let Stored {
        rows,
        acked,
        ambiguous,
        read_back,
        unread,
        ..
    } = Stored::check(lab, logs);
    notes.extend(unread);
    notes.extend(rows.notes());
    notes.extend(sequence_notes(lab));

    let by_node = NodeId::BOTH.map(|node| {
        logs.iter()
            .flat_map(|(_, l)| &l.acks)
            .filter(|a| a.server_id == server_id(node))
            .count()
    });
    notes.push(format!(
        "acks by node1/node2: {}/{}",
        by_node[0], by_node[1]
    ));

    let write_errors: u64 = logs.iter().map(|(_, l)| l.errors).sum();
    for (spec, log) in logs {
        if let Some(first) = log.distinct_errors.first() {
            notes.push(format!(
                "{} write errors of {} through {}, e.g. {first}",
                log.errors, spec.name, spec.vip
            ));
        }
        let last = log.acks.last().map(|a| a.at).unwrap_or(window.load_start);
        let silent = window.load_end.saturating_duration_since(last);
        if silent > STUCK_AFTER {
            notes.push(format!(
                "{} through {} failing at the end: no ack for the last {} ms",
                spec.name,
                spec.vip,
                ms(silent)
            ));
        }
    }

    let vip_both = sampler::vip_on_both(&samples.vips, vip, window.load_start, window.load_end);
    if !vip_both.is_zero() {
        notes.push(format!(
            "{vip} on both nodes for {:.1} ms",
            vip_both.as_secs_f64() * 1000.0
        ));
    }
    let stray = sampler::writable_without_vip(
        &samples.read_only,
        &samples.vips,
        window.load_start,
        window.load_end,
    );
    if !stray.is_zero() {
        notes.push(format!(
            "a node was writable while holding no VIP for {:.1} ms",
            stray.as_secs_f64() * 1000.0
        ));
    }
    if scenario.fault == Fault::NodeFreeze {
        let after = sampler::writable_after(&samples.read_only, faulted, window.heal_at);
        notes.push(format!(
            "{} writable for {} ms after it resumed",
            faulted.name(),
            ms(after)
        ));
    }
    let period = sampler::sample_period(&samples.read_only, window.load_start, window.load_end);

    notes.extend(replication_notes(lab, converged));
    for node in NodeId::BOTH {
        let paths = lab.paths(node);
        let keepalived_log = fs::read_to_string(paths.keepalived_log()).unwrap_or_default();
        for line in distinct(keepalived::notable_lines(&keepalived_log), 3) {
            notes.push(format!("{} keepalived: {line}", node.name()));
        }
        for line in distinct(mariadb::notable_errors(&paths.mariadb_log()), 2) {
            notes.push(format!("{} mariadbd: {line}", node.name()));
        }
        if hooks != HookSet::Shell {
            let mmvip_log = fs::read_to_string(paths.mmvip_log()).unwrap_or_default();
            for line in distinct(role_hook_problems(&mmvip_log), 3) {
                notes.push(format!("{} mmvip: {line}", node.name()));
            }
        }
    }

    let (longest_gap, gap_began) = timing.longest_gap(window.load_start, window.load_end);
    notes.push(format!(
        "longest gap {} ms, from {}",
        ms(longest_gap),
        if gap_began >= window.heal_at {
            format!("{} ms after the heal", ms(gap_began - window.heal_at))
        } else if gap_began >= window.fault_at {
            format!("{} ms after the fault", ms(gap_began - window.fault_at))
        } else {
            format!("{} ms before the fault", ms(window.fault_at - gap_began))
        }
    ));
    let mut row = Row {
        name: scenario.name.to_string(),
        hooks: hooks.name().to_string(),
        timers: timers.to_string(),
        layout: scenario.layout.name().to_string(),
        verdict: Verdict::Pass,
        problems: Vec::new(),
        rto_ms: rto.map(|at| ms(at - window.fault_at)),
        max_write_gap_ms: ms(longest_gap),
        failback_ms: failback.map(|at| ms(at - window.heal_at)),
        acked: acked.len() as u64,
        lost: rows.lost,
        ambiguous: ambiguous.len() as u64,
        ambiguous_committed: rows.ambiguous_committed,
        two_writer_ms: ms(sampler::two_writers(
            samples,
            window.load_start,
            window.load_end,
            scenario.layout,
        )),
        sample_median_ms: millis_f64(period.median),
        sample_worst_ms: millis_f64(period.worst),
        converged,
        read_back,
        vip_moved,
        write_errors,
        notes,
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    let (verdict, problems) = judge(&row, scenario, hooks, &rows);
    row.verdict = verdict;
    row.problems = problems;
    Ok(row)
}

fn millis_f64(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The row's verdict and the rules it broke.
///
/// Rules: after the fault the node taking over acknowledges a write (`rto_ms`),
/// except in the split brain, where the old writer is alive and writable and a
/// second writer is the failure, not the goal; the preferred node serves writes again
/// after the heal; the rows are read back on both nodes; no acknowledged write is
/// missing; no refused write was stored; the pair converges; the VIP moved; and in the
/// single-VIP layout both nodes are never writable at once.
///
/// The shell baseline is the comparison: its broken rules are listed but it is not
/// judged. mmvip in the split brain with two writers is a known failure (the write
/// lease, next issue, is what closes it): listed, not failing the run.
pub fn judge(
    row: &Row,
    scenario: &Scenario,
    hooks: HookSet,
    rows: &RowCheck,
) -> (Verdict, Vec<String>) {
    let mut problems = Vec::new();
    let split_brain = scenario.fault.writer_survives();
    if row.rto_ms.is_none() && !split_brain {
        problems.push("no write acknowledged by the node taking over (rto_ms missing)".into());
    }
    // With only its witness gone the writer loses nothing: the VIP must stay. Where
    // the writer lives on under the guard, the peer may claim the VIP for a moment
    // before it steps aside, or (held in FAULT while its replication is cut) never.
    let vip_should_move = match scenario.fault {
        Fault::WitnessDown => Some(false),
        fault if fault.writer_survives() && hooks.guarded() => None,
        _ => Some(true),
    };
    match vip_should_move {
        Some(true) if !row.vip_moved => problems.push("the VIP never moved".into()),
        Some(false) if row.vip_moved => {
            problems.push("the VIP moved although only the witness was gone".into())
        }
        _ => {}
    }
    if row.failback_ms.is_none() {
        problems.push("no failback: the preferred node never served writes again".into());
    }
    if !row.read_back {
        problems.push("the rows could not be read back on both nodes".into());
    }
    if row.lost > 0 {
        problems.push(format!("{} acknowledged writes lost", row.lost));
    }
    if rows.refused_but_stored > 0 {
        problems.push(format!(
            "{} writes the server refused are stored",
            rows.refused_but_stored
        ));
    }
    if !row.converged {
        problems.push("the pair did not converge".into());
    }
    let two_writers = row.two_writer_ms > 0;
    if two_writers {
        problems.push(format!("two writers for {} ms", row.two_writer_ms));
    }
    let verdict = if hooks == HookSet::Shell {
        Verdict::Baseline
    } else if problems.is_empty() {
        Verdict::Pass
    } else if split_brain && two_writers && !hooks.guarded() {
        Verdict::KnownFailure
    } else {
        Verdict::Fail
    };
    (verdict, problems)
}

/// Acknowledged, ambiguous and refused writes against the uids each node stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCheck {
    /// Acknowledged uids missing on at least one node (of the nodes read).
    pub lost: u64,
    /// Ambiguous writes found on every node read: committed.
    pub ambiguous_committed: u64,
    /// Ambiguous writes found on no node: not committed.
    pub ambiguous_not_committed: u64,
    /// Ambiguous writes on one node only: committed there, never replicated.
    pub ambiguous_on_one_node: u64,
    /// Writes refused with a "not committed" error that are stored anyway.
    pub refused_but_stored: u64,
    /// Stored uids no writer attempted (should never happen).
    pub unaccounted: u64,
}

impl RowCheck {
    pub fn new(
        acked: &[u64],
        ambiguous: &[u64],
        refused: &[u64],
        stored: &[HashSet<u64>],
    ) -> RowCheck {
        let everywhere = |uid: &u64| stored.iter().all(|s| s.contains(uid));
        let anywhere = |uid: &u64| stored.iter().any(|s| s.contains(uid));
        let count = |uids: &[u64], test: &dyn Fn(&u64) -> bool| {
            uids.iter().filter(|u| test(u)).count() as u64
        };
        let attempted: HashSet<u64> = acked
            .iter()
            .chain(ambiguous)
            .chain(refused)
            .copied()
            .collect();
        let unaccounted: HashSet<u64> = stored
            .iter()
            .flat_map(|s| s.iter().filter(|uid| !attempted.contains(uid)).copied())
            .collect();
        RowCheck {
            lost: count(acked, &|u| !everywhere(u)),
            ambiguous_committed: count(ambiguous, &|u| everywhere(u)),
            ambiguous_not_committed: count(ambiguous, &|u| !anywhere(u)),
            ambiguous_on_one_node: count(ambiguous, &|u| anywhere(u) && !everywhere(u)),
            refused_but_stored: count(refused, &|u| anywhere(u)),
            unaccounted: unaccounted.len() as u64,
        }
    }

    fn notes(&self) -> Vec<String> {
        let total =
            self.ambiguous_committed + self.ambiguous_not_committed + self.ambiguous_on_one_node;
        let mut notes = Vec::new();
        if total > 0 {
            notes.push(format!(
                "{total} ambiguous writes (connection lost after sending, before the answer): {} committed, {} not committed, {} on one node only",
                self.ambiguous_committed, self.ambiguous_not_committed, self.ambiguous_on_one_node
            ));
        }
        if self.unaccounted > 0 {
            notes.push(format!(
                "{} stored uids no writer attempted",
                self.unaccounted
            ));
        }
        notes
    }
}

/// Each sequence stream's highest number and row count per node, when the nodes
/// disagree or a stream has a gap (a number taken twice stops replication instead).
pub(crate) fn sequence_notes(lab: &Lab) -> Vec<String> {
    let mut heads = Vec::new();
    for node in NodeId::BOTH {
        match lab.read_from(node, mariadb::sequence_heads) {
            Ok(streams) => heads.push((node, streams)),
            Err(_) => return Vec::new(),
        }
    }
    let agree = heads[0].1 == heads[1].1;
    let gapless = heads
        .iter()
        .all(|(_, streams)| streams.iter().all(|(_, max, count)| max == count));
    if agree && gapless {
        return Vec::new();
    }
    heads
        .iter()
        .map(|(node, streams)| {
            let streams: Vec<String> = streams
                .iter()
                .map(|(stream, max, count)| format!("stream {stream}: n up to {max}, {count} rows"))
                .collect();
            format!("{} sequence {}", node.name(), streams.join(", "))
        })
        .collect()
}

/// Replication errors and, when the pair did not converge, where each node stands.
fn replication_notes(lab: &Lab, converged: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let mut positions = Vec::new();
    for node in NodeId::BOTH {
        let Ok(mut conn) = lab.connect(node) else {
            notes.push(format!("{} does not answer at the end", node.name()));
            continue;
        };
        if let Ok(Some(status)) = mariadb::replica_status(&mut conn) {
            if !status.last_sql_error.is_empty() {
                notes.push(format!(
                    "{} SQL thread error: {}",
                    node.name(),
                    status.last_sql_error
                ));
            }
            if !converged {
                notes.push(format!(
                    "{} replication IO={} SQL={} ({}) {}",
                    node.name(),
                    status.io_running,
                    status.sql_running,
                    status.sql_state,
                    status.last_io_error
                ));
            }
        }
        if !converged && let Ok(open) = mariadb::old_transactions(&mut conn, 5) {
            for trx in open {
                notes.push(format!(
                    "{}: session {} ({}@{}) has a transaction open for {} s holding {} row locks",
                    node.name(),
                    trx.session,
                    trx.user,
                    trx.host,
                    trx.seconds,
                    trx.rows_locked
                ));
            }
        }
        if let Ok(pos) = mariadb::gtid_binlog_pos(&mut conn) {
            positions.push(format!("{} gtid_binlog_pos {pos}", node.name()));
        }
    }
    if !converged {
        notes.extend(positions);
    }
    notes
}

/// Warnings and errors of mmvip's role-change hooks (`plugin=master` etc.), as
/// `plugin: msg`. Failing checks are the expected signal of a fault, so health and
/// failover verdicts are left out.
fn role_hook_problems(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("level=error") || line.contains("level=warn"))
        .filter_map(|line| {
            let plugin = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("plugin="))?;
            if matches!(plugin, "health" | "failover") {
                return None;
            }
            let message = line.split_once("msg=").map_or(line, |(_, m)| m);
            Some(format!("{plugin}: {}", message.trim_matches('"')))
        })
        .collect()
}

/// Up to `limit` distinct lines, each with its count when repeated.
fn distinct(lines: Vec<String>, limit: usize) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for line in lines {
        match seen.iter_mut().find(|(l, _)| *l == line) {
            Some((_, count)) => *count += 1,
            None => seen.push((line, 1)),
        }
    }
    seen.into_iter()
        .take(limit)
        .map(|(line, count)| {
            if count > 1 {
                format!("{line} (x{count})")
            } else {
                line
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_covers_the_issue() {
        let numbers: BTreeSet<u8> = catalog().iter().map(|s| s.number).collect();
        assert_eq!(numbers, (1..=15).collect());
        let dual: Vec<&str> = catalog()
            .iter()
            .filter(|s| s.layout == Layout::Dual)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            dual,
            ["7a-dual-switchover", "7b-dual-kill9", "7c-dual-split-brain"]
        );
    }

    #[test]
    fn select_keeps_catalog_order() {
        let picked: Vec<&str> = select(&[7, 1].into_iter().collect())
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            picked,
            [
                "1-switchover",
                "7a-dual-switchover",
                "7b-dual-kill9",
                "7c-dual-split-brain"
            ]
        );
    }

    #[test]
    fn row_check_resolves_ambiguous_writes_by_the_data() {
        let node1: HashSet<u64> = [1, 2, 3, 10, 11, 20, 99].into_iter().collect();
        let node2: HashSet<u64> = [1, 3, 10, 20].into_iter().collect();
        let check = RowCheck::new(&[1, 2, 3, 4], &[10, 11, 12], &[20, 21], &[node1, node2]);
        // 2 is missing on node 2 and 4 everywhere; of the ambiguous, 10 committed, 11
        // only on node 1, 12 nowhere; refused 20 is stored; nobody wrote 99.
        assert_eq!(
            check,
            RowCheck {
                lost: 2,
                ambiguous_committed: 1,
                ambiguous_not_committed: 1,
                ambiguous_on_one_node: 1,
                refused_but_stored: 1,
                unaccounted: 1,
            }
        );
    }

    fn good_row(scenario: &Scenario) -> Row {
        let mut row = Row::aborted(scenario.name, "mmvip", "fast", scenario.layout.name(), "");
        row.problems.clear();
        row.rto_ms = Some(1500);
        row.failback_ms = Some(1200);
        row.converged = true;
        row.read_back = true;
        row.vip_moved = true;
        row
    }

    fn scenario(name: &str) -> Scenario {
        catalog().into_iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn guard_rows_fail_on_two_writers_and_a_lost_witness_moves_nothing() {
        let clean = RowCheck::default();
        let split = scenario("6-split-brain");
        let mut two = good_row(&split);
        two.rto_ms = None;
        two.two_writer_ms = 4;
        assert_eq!(judge(&two, &split, HookSet::Guard, &clean).0, Verdict::Fail);
        let witness = scenario("11-witness-down");
        let mut stayed = good_row(&witness);
        stayed.rto_ms = None;
        stayed.vip_moved = false;
        assert_eq!(
            judge(&stayed, &witness, HookSet::GuardWitness, &clean).0,
            Verdict::Pass
        );
        stayed.vip_moved = true;
        let (verdict, problems) = judge(&stayed, &witness, HookSet::GuardWitness, &clean);
        assert_eq!(verdict, Verdict::Fail);
        assert!(problems[0].contains("only the witness"), "{problems:?}");
    }

    #[test]
    fn every_rule_fails_an_mmvip_row() {
        let kill = scenario("4-mariadb-kill9");
        let clean = RowCheck::default();
        assert_eq!(
            judge(&good_row(&kill), &kill, HookSet::Mmvip, &clean).0,
            Verdict::Pass
        );
        type Break = fn(&mut Row);
        let breaks: [(&str, Break); 7] = [
            ("rto_ms missing", |r| r.rto_ms = None),
            ("no failback", |r| r.failback_ms = None),
            ("read back", |r| r.read_back = false),
            ("lost", |r| r.lost = 1),
            ("converge", |r| r.converged = false),
            ("never moved", |r| r.vip_moved = false),
            ("two writers for 3 ms", |r| r.two_writer_ms = 3),
        ];
        for (expected, break_it) in breaks {
            let mut row = good_row(&kill);
            break_it(&mut row);
            let (verdict, problems) = judge(&row, &kill, HookSet::Mmvip, &clean);
            assert_eq!(verdict, Verdict::Fail, "{expected}");
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{problems:?}"
            );
        }
        let stored_refusal = RowCheck {
            refused_but_stored: 2,
            ..RowCheck::default()
        };
        let (verdict, _) = judge(&good_row(&kill), &kill, HookSet::Mmvip, &stored_refusal);
        assert_eq!(verdict, Verdict::Fail);
    }

    /// In the two-VIP layout `two_writer_ms` counts a VIP on two writable nodes (the
    /// sampler's rule), not both nodes writable: judged there too.
    #[test]
    fn two_writers_are_judged_in_the_two_vip_layout_too() {
        let dual = scenario("7b-dual-kill9");
        let mut row = good_row(&dual);
        row.two_writer_ms = 5000;
        let (verdict, problems) = judge(&row, &dual, HookSet::Guard, &RowCheck::default());
        assert_eq!(verdict, Verdict::Fail);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("two writers for 5000 ms")),
            "{problems:?}"
        );
    }

    #[test]
    fn split_brain_needs_no_takeover_and_two_writers_there_are_a_known_failure() {
        let split = scenario("6-split-brain");
        let clean = RowCheck::default();
        let mut refused_promotion = good_row(&split);
        refused_promotion.rto_ms = None;
        assert_eq!(
            judge(&refused_promotion, &split, HookSet::Mmvip, &clean).0,
            Verdict::Pass
        );
        let mut two = good_row(&split);
        two.two_writer_ms = 2900;
        two.converged = false;
        let (verdict, problems) = judge(&two, &split, HookSet::Mmvip, &clean);
        assert_eq!(verdict, Verdict::KnownFailure);
        assert_eq!(problems.len(), 2, "{problems:?}");
        // The same in another scenario is a plain failure.
        let switch = scenario("1-switchover");
        let mut row = good_row(&switch);
        row.two_writer_ms = 1;
        assert_eq!(
            judge(&row, &switch, HookSet::Mmvip, &clean).0,
            Verdict::Fail
        );
    }

    #[test]
    fn the_baseline_is_reported_not_judged() {
        let split = scenario("6-split-brain");
        let mut row = good_row(&split);
        row.two_writer_ms = 3000;
        row.lost = 4;
        let (verdict, problems) = judge(&row, &split, HookSet::Shell, &RowCheck::default());
        assert_eq!(verdict, Verdict::Baseline);
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn role_hook_problems_skip_expected_check_failures() {
        let log = "\
t pid=1 plugin=failover level=error verdict=fail duration_ms=1.2 msg=\"failover flag present\"
t pid=2 plugin=backup level=error verdict=fail duration_ms=10.4 msg=\"SET GLOBAL read_only = ON failed\"
t pid=3 plugin=master level=info verdict=pass msg=\"writable for VI_1\"
t pid=4 plugin=master level=warn msg=\"replication `default`: IO thread No\"
";
        assert_eq!(
            role_hook_problems(log),
            vec![
                "backup: SET GLOBAL read_only = ON failed".to_string(),
                "master: replication `default`: IO thread No".to_string(),
            ]
        );
    }

    #[test]
    fn distinct_counts_repeats() {
        let lines = vec!["a".to_string(), "b".into(), "a".into(), "c".into()];
        assert_eq!(distinct(lines, 2), vec!["a (x2)".to_string(), "b".into()]);
    }
}
