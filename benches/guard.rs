//! The resident guard on its own, on a real pair (two node namespaces, a guard and a
//! MariaDB each, node 1 the writer renewing its lease): how soon it tells keepalived
//! (the track file written) after the local MariaDB dies, stops or freezes, or the
//! failover flag appears; and what it costs to keep running (RSS, CPU). Run with
//! `cargo xtask bench`; figures in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::exit_code;
use common::guard::{Node, Timing};
use common::mariadb::{Pair, Server};
use common::topology::Topology;
use rustix::process::{Signal, kill_process};

const DEATHS: usize = 20;
const FREEZES: usize = 10;
const FLAGS: usize = 50;
const PROMOTIONS: usize = 30;
const IDLE: Duration = Duration::from_secs(30);

/// Waits for a track file to say `want`, reading it every 100 µs; returns when it did.
fn track_says(path: &Path, want: &str, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if std::fs::read_to_string(path).unwrap_or_default().trim() == want {
            return Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "{} did not say {want} within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
}

/// Signals the server, times the health track file turning to FAULT, then brings the
/// server back and waits for the track file to clear.
fn detection(node: &Node, server: &mut Server, signal: Signal, rounds: usize) -> Vec<Duration> {
    let health = node.site.path("track/health");
    let mut samples = Vec::new();
    for _ in 0..rounds {
        track_says(&health, "0", Duration::from_secs(30));
        let sent = Instant::now();
        kill_process(server.pid(), signal).expect("signal mariadbd");
        samples.push(track_says(&health, "1", Duration::from_secs(30)) - sent);
        if signal == Signal::STOP {
            server.thaw();
        } else {
            server.restart();
        }
    }
    samples
}

fn flag_detection(node: &Node) -> Vec<Duration> {
    let (flag, track) = (node.site.flag_path(), node.site.path("track/failover"));
    let mut samples = Vec::new();
    for _ in 0..FLAGS {
        track_says(&track, "0", Duration::from_secs(10));
        let raised = Instant::now();
        std::fs::write(&flag, "").unwrap();
        samples.push(track_says(&track, "1", Duration::from_secs(10)) - raised);
        std::fs::remove_file(&flag).unwrap();
    }
    samples
}

/// The `duration_ms` of the last verdict line of `plugin` in the log.
fn last_duration(log: &str, plugin: &str) -> Duration {
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains(plugin) && line.contains("verdict="))
        .expect("a verdict line");
    let ms: f64 = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("duration_ms="))
        .and_then(|value| value.parse().ok())
        .expect("duration_ms");
    Duration::from_secs_f64(ms / 1000.0)
}

/// Resident memory (VmRSS, VmHWM in KiB) and CPU ticks used so far.
fn resident(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the 12th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (kib("VmRSS:"), kib("VmHWM:"), ticks)
}

fn main() {
    let mut pair = Pair::start();
    let topology = Topology::new();
    // The timing a site gets by default.
    let timing = Timing::DEFAULTS;
    let node1 = Node::timed(&topology, 0, &pair.node1, None, Some(&pair.node2), timing);
    let node2 = Node::timed(&topology, 1, &pair.node2, None, Some(&pair.node1), timing);
    node1.hold_vip(true);
    let output = node1.hook(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", common::stderr(&output));
    println!(
        "guard: lease {} ms, margin {} ms, ping_interval {} ms (the defaults); node 1 the \
         writer holding the lease, node 2 read-only (its server is the one signalled)",
        timing.lease_ms, timing.margin_ms, timing.ping_interval_ms
    );

    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "\n| guard at rest for {} s | RSS | peak RSS | CPU |",
        IDLE.as_secs()
    );
    println!("|---|---|---|---|");
    let guards = [
        ("node 1 (writer, renewing)", node1.guard_pid()),
        ("node 2 (granting)", node2.guard_pid()),
    ];
    let before: Vec<_> = guards.iter().map(|(_, pid)| resident(*pid)).collect();
    std::thread::sleep(IDLE);
    for ((name, pid), (_, _, ticks_before)) in guards.iter().zip(before) {
        let (rss, peak, ticks) = resident(*pid);
        let cpu = (ticks - ticks_before) as f64 / ticks_per_second / IDLE.as_secs_f64();
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.2}% of a core |",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            cpu * 100.0
        );
    }
    // The writer must still be the writer: the rest was a rest, not a fence.
    assert!(!pair.node1.read_only());

    // Promotion with the gate: node 1 demoted (lease given back), then `master`
    // asks the peer over TCP, finds nothing to catch up and takes the lease.
    let (mut promotions, mut own) = (Vec::new(), Vec::new());
    for _ in 0..PROMOTIONS {
        node1.hold_vip(false);
        let output = node1.hook(&["backup", "--instance=VI_1"]);
        assert_eq!(exit_code(&output), 0, "{}", common::stderr(&output));
        node1.hold_vip(true);
        let gated = || node1.site.log_text().matches("write lease held").count();
        let before = gated();
        let started = Instant::now();
        let output = node1.hook(&["master", "--instance=VI_1"]);
        promotions.push(started.elapsed());
        assert_eq!(exit_code(&output), 0, "{}", common::stderr(&output));
        assert_eq!(gated(), before + 1, "the promotion did not take the lease");
        own.push(last_duration(&node1.site.log_text(), "plugin=master"));
    }
    println!("\n| hook on node 1 | runs | best | median | worst |");
    println!("|---|---|---|---|---|");
    summary(
        "master, caught up, asking the peer and taking the lease: `ip netns exec mmvip master` wall time",
        promotions,
    );
    summary("the same: mmvip's own `duration_ms` in the log", own);

    println!("\n| event on node 2 → its track file written | runs | best | median | worst |");
    println!("|---|---|---|---|---|");
    summary(
        "mariadbd killed (SIGKILL) → health",
        detection(&node2, &mut pair.node2, Signal::KILL, DEATHS),
    );
    summary(
        "MariaDB stopped (SIGTERM) → health",
        detection(&node2, &mut pair.node2, Signal::TERM, DEATHS),
    );
    summary(
        "mariadbd frozen (SIGSTOP) → health",
        detection(&node2, &mut pair.node2, Signal::STOP, FREEZES),
    );
    summary("failover flag created → failover", flag_detection(&node2));
}
