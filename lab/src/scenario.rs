//! The scenarios the original setup was tested with, each run on a fresh, healthy,
//! converged lab under a steady insert load, and measured into a report row.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cleanup::Registry;
use crate::hooks::HookSet;
use crate::keepalived;
use crate::mariadb;
use crate::report::Row;
use crate::sampler::{self, Sampler, Samples};
use crate::testbed::{Lab, LabConfig, save_logs};
use crate::topology::Layout;
use crate::topology::{self, NodeId};
use crate::wait;
use crate::writer::{Writer, WriterLog, WriterSpec};

/// One insert every 5 ms per VIP: ~200 rows/s, enough to time a failover to a few ms
/// and light enough for two servers on two cores.
const INSERT_INTERVAL: Duration = Duration::from_millis(5);
const WARMUP_ACKS: usize = 20;
const WARMUP_TIMEOUT: Duration = Duration::from_secs(15);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// Load on the new holder before healing; the split brain is held a bit longer so
/// its two-writer window is plainly visible.
const HOLD_AFTER_TAKEOVER: Duration = Duration::from_secs(2);
const HOLD_SPLIT_BRAIN: Duration = Duration::from_secs(3);
const FAILBACK_TIMEOUT: Duration = Duration::from_secs(30);
const HOLD_AFTER_FAILBACK: Duration = Duration::from_millis(1500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A writer with no acknowledgement for this long at the end is stuck, not slow.
const STUCK_AFTER: Duration = Duration::from_secs(1);

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
    /// A crash of the whole node: every process of it SIGKILLed (frozen first, so
    /// none reacts to another's death), links down, VIPs gone. The page cache
    /// survives, unlike a power cut: what the servers wrote but did not fsync is not
    /// lost here. Heal: links up, MariaDB (crash recovery), keepalived.
    Crash,
    /// Detach the node's heartbeat port from the private bridge; heal: re-attach.
    SplitBrain,
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
fn server_id(node: NodeId) -> u32 {
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
    let failed = outcome.as_ref().map_or(true, Row::failed);
    if (failed || config.keep_logs) && !wait::interrupted() {
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
    // The sampler first: its VIP watchers report the current state before it returns.
    let sampler = Sampler::start(lab.sockets())?;
    let writers = lab
        .instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            Writer::start(WriterSpec {
                name: format!("vip{}", i + 1),
                vip: instance.vip,
                uid_base: (i as u64 + 1) * 1_000_000_000,
                interval: INSERT_INTERVAL,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let load_start = Instant::now();
    wait::until(
        WARMUP_TIMEOUT,
        Duration::from_millis(20),
        "inserts to flow through every VIP",
        || {
            Ok(writers
                .iter()
                .all(|w| w.log().acks.len() >= WARMUP_ACKS)
                .then_some(()))
        },
    )?;

    let fault_at = Instant::now();
    inflict(lab, scenario.fault, faulted)
        .with_context(|| format!("inflict {:?}", scenario.fault))?;
    let took_over = wait::until_or_timeout(TAKEOVER_TIMEOUT, Duration::from_millis(10), || {
        if let Some(at) = writers[0].log().first_ack_by(server_id(takeover), fault_at) {
            return Ok(Some(at));
        }
        // In a split brain the client may stay with the old holder: the peer
        // claiming the VIP is the takeover.
        let claimed = scenario.fault == Fault::SplitBrain
            && sampler
                .latest_vips()
                .is_some_and(|s| s.at > fault_at && s.held[takeover.index()].contains(&vip));
        Ok(claimed.then(Instant::now))
    })?;
    progress(&match took_over {
        Some(at) => format!("takeover after {} ms", (at - fault_at).as_millis()),
        None => format!("no takeover within {} s", TAKEOVER_TIMEOUT.as_secs()),
    });
    wait::sleep(if scenario.fault == Fault::SplitBrain {
        HOLD_SPLIT_BRAIN
    } else {
        HOLD_AFTER_TAKEOVER
    })?;

    let heal_at = Instant::now();
    heal(lab, scenario.fault, faulted).with_context(|| format!("heal {:?}", scenario.fault))?;
    let failed_back = wait::until_or_timeout(FAILBACK_TIMEOUT, Duration::from_millis(10), || {
        Ok(writers[0].log().first_ack_by(server_id(faulted), heal_at))
    })?;
    progress(&match failed_back {
        Some(at) => format!("failback after {} ms", (at - heal_at).as_millis()),
        None => format!("no failback within {} s", FAILBACK_TIMEOUT.as_secs()),
    });
    wait::sleep(HOLD_AFTER_FAILBACK)?;

    let load_end = Instant::now();
    let logs: Vec<WriterLog> = writers.into_iter().map(Writer::stop).collect();
    let samples = sampler.stop();
    let converged = wait::until_or_timeout(CONVERGE_TIMEOUT, Duration::from_millis(100), || {
        Ok(lab.converged_now()?.then_some(()))
    })?
    .is_some();

    let window = Window {
        load_start,
        fault_at,
        heal_at,
        load_end,
    };
    measure(
        lab, scenario, hooks, timers, &logs, &samples, &window, converged, started,
    )
}

fn inflict(lab: &mut Lab, fault: Fault, node: NodeId) -> Result<()> {
    match fault {
        Fault::FailoverFile => {
            let path = lab.failover_file(node);
            fs::write(&path, b"planned switch-over by mmvip-lab\n")
                .with_context(|| format!("create {}", path.display()))
        }
        Fault::KeepalivedStop => lab.stop_keepalived(node),
        Fault::MariadbStop => lab.stop_mariadb(node),
        Fault::MariadbKill => lab.kill_mariadb(node),
        Fault::Crash => lab.crash_node(node),
        Fault::SplitBrain => topology::detach_private(node),
    }
}

fn heal(lab: &mut Lab, fault: Fault, node: NodeId) -> Result<()> {
    match fault {
        Fault::FailoverFile => {
            let path = lab.failover_file(node);
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
        }
        Fault::KeepalivedStop => lab.start_keepalived(node),
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
    logs: &[WriterLog],
    samples: &Samples,
    window: &Window,
    converged: bool,
    started: Instant,
) -> Result<Row> {
    let faulted = NodeId::One;
    let takeover = faulted.peer();
    let vip = lab.instances[0].vip;
    let mut notes = Vec::new();

    let rto = logs[0].first_ack_by(server_id(takeover), window.fault_at);
    let vip_moved = rto.is_some()
        || sampler::vip_seen_on(&samples.vips, vip, takeover, window.fault_at).is_some();
    if rto.is_none() {
        notes.push(format!(
            "no insert through {vip} was acknowledged by {} after the fault",
            takeover.name()
        ));
    }
    let failback = logs[0].first_ack_by(server_id(faulted), window.heal_at);
    if failback.is_none() {
        notes.push(format!(
            "no insert through {vip} was acknowledged by {} after the heal",
            faulted.name()
        ));
    }

    // Rows: what each node stores against what the writers were told was committed.
    let acked: Vec<u64> = logs
        .iter()
        .flat_map(|l| l.acks.iter().map(|a| a.uid))
        .collect();
    let mut stored = Vec::new();
    for node in NodeId::BOTH {
        // A late backup hook may kill this session: one retry.
        let read = || {
            lab.connect(node)
                .and_then(|mut c| mariadb::uid_counts(&mut c))
        };
        match read().or_else(|_| read()) {
            Ok(counts) => stored.push(counts),
            Err(error) => notes.push(format!("cannot read rows on {}: {error}", node.name())),
        }
    }
    let rows = RowCheck::new(&acked, &stored);
    if stored.len() < 2 {
        notes.push("rows checked on fewer than two nodes".into());
    }
    if rows.unacked_committed > 0 {
        notes.push(format!(
            "{} inserts committed without reaching the client (connection lost before the OK)",
            rows.unacked_committed
        ));
    }

    let by_node = NodeId::BOTH.map(|node| {
        logs.iter()
            .flat_map(|l| &l.acks)
            .filter(|a| a.server_id == server_id(node))
            .count()
    });
    notes.push(format!(
        "acks by node1/node2: {}/{}",
        by_node[0], by_node[1]
    ));

    let write_errors: u64 = logs.iter().map(|l| l.errors).sum();
    for (log, instance) in logs.iter().zip(&lab.instances) {
        if let Some(first) = log.distinct_errors.first() {
            notes.push(format!(
                "{} write errors through {} ({}), e.g. {first}",
                log.errors, instance.vip, instance.name
            ));
        }
    }
    for (log, instance) in logs.iter().zip(&lab.instances) {
        let last = log.acks.last().map(|a| a.at).unwrap_or(window.load_start);
        let silent = window.load_end.saturating_duration_since(last);
        if silent > STUCK_AFTER {
            notes.push(format!(
                "writes through {} ({}) failing at the end: no ack for the last {} ms",
                instance.vip,
                instance.name,
                ms(silent)
            ));
        }
    }

    let vip_both = sampler::vip_on_both(&samples.vips, vip, window.load_start, window.load_end);
    if !vip_both.is_zero() {
        notes.push(format!("{vip} held by both nodes for {} ms", ms(vip_both)));
    }
    let stray = sampler::writable_without_vip(
        &samples.read_only,
        &samples.vips,
        window.load_start,
        window.load_end,
    );
    if !stray.is_zero() {
        notes.push(format!(
            "a node was writable while holding no VIP for {} ms",
            ms(stray)
        ));
    }
    if scenario.layout == Layout::Dual {
        notes.push("two-VIP layout: both nodes are writable by design while each holds a VIP, so two_writer_ms counts that too".into());
    }
    let period = sampler::sample_period(&samples.read_only, window.load_start, window.load_end);
    notes.push(format!(
        "read_only sampled every {:.1} ms (median), worst gap {:.1} ms",
        period.median.as_secs_f64() * 1000.0,
        period.worst.as_secs_f64() * 1000.0
    ));

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

    Ok(Row {
        name: scenario.name.to_string(),
        hooks: hooks.name().to_string(),
        timers: timers.to_string(),
        layout: scenario.layout.name().to_string(),
        rto_ms: rto.map(|at| ms(at - window.fault_at)),
        acked: acked.len() as u64,
        lost: rows.lost,
        duplicates: rows.duplicates,
        two_writer_ms: ms(sampler::both_writable(
            &samples.read_only,
            window.load_start,
            window.load_end,
        )),
        converged,
        notes,
        vip_moved,
        failback_ms: failback.map(|at| ms(at - window.heal_at)),
        max_write_gap_ms: ms(logs[0].longest_gap(window.load_start, window.load_end)),
        write_errors,
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

/// Acknowledged writes against the rows each node stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCheck {
    /// Acknowledged uids missing on at least one node.
    pub lost: u64,
    /// uids stored more than once on at least one node.
    pub duplicates: u64,
    /// uids stored somewhere that the client never saw acknowledged.
    pub unacked_committed: u64,
}

impl RowCheck {
    pub fn new(acked: &[u64], stored: &[HashMap<u64, u32>]) -> RowCheck {
        let acked: BTreeSet<u64> = acked.iter().copied().collect();
        let lost = acked
            .iter()
            .filter(|uid| stored.iter().any(|counts| !counts.contains_key(uid)))
            .count();
        let duplicated: BTreeSet<u64> = stored
            .iter()
            .flat_map(|counts| counts.iter().filter(|(_, n)| **n > 1).map(|(uid, _)| *uid))
            .collect();
        let unacked: BTreeSet<u64> = stored
            .iter()
            .flat_map(|counts| counts.keys().filter(|uid| !acked.contains(uid)).copied())
            .collect();
        RowCheck {
            lost: lost as u64,
            duplicates: duplicated.len() as u64,
            unacked_committed: unacked.len() as u64,
        }
    }
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
                    "{} replication IO={} SQL={} {}",
                    node.name(),
                    status.io_running,
                    status.sql_running,
                    status.last_io_error
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
        assert_eq!(numbers, (1..=7).collect());
        let dual: Vec<&str> = catalog()
            .iter()
            .filter(|s| s.layout == Layout::Dual)
            .map(|s| s.name)
            .collect();
        assert_eq!(dual, ["7a-dual-switchover", "7b-dual-kill9"]);
    }

    #[test]
    fn select_keeps_catalog_order() {
        let picked: Vec<&str> = select(&[7, 1].into_iter().collect())
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            picked,
            ["1-switchover", "7a-dual-switchover", "7b-dual-kill9"]
        );
    }

    #[test]
    fn row_check_counts_lost_duplicate_and_unacknowledged() {
        let node1: HashMap<u64, u32> = [(1, 1), (2, 1), (3, 2), (9, 1)].into_iter().collect();
        let node2: HashMap<u64, u32> = [(1, 1), (3, 1), (9, 1)].into_iter().collect();
        let check = RowCheck::new(&[1, 2, 3, 4], &[node1, node2]);
        // 2 is missing on node 2, 4 everywhere; 3 is stored twice on node 1;
        // 9 was committed but never acknowledged.
        assert_eq!(
            check,
            RowCheck {
                lost: 2,
                duplicates: 1,
                unacked_committed: 1
            }
        );
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
