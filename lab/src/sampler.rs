//! Watches the pair while a scenario runs: each node's `@@read_only` every 2 ms over
//! its unix socket (unix sockets work across namespaces), one thread per node so a
//! slow node cannot delay the other's samples; and which node holds which VIP, from
//! the kernel's address notifications inside each node's namespace (event-driven, so
//! a VIP's arrival and departure are timed to the moment). Under the guard, also
//! which VIPs each node's gate closes (the guard's nftables set, followed with `nft
//! monitor` in the node's namespace: event-driven too). From the samples come
//! `two_writer_ms`, the VIP history, and the sampling period actually achieved.

use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use mysql::{Conn, OptsBuilder};

use crate::addrwatch::AddressEvents;
use crate::mariadb;
use crate::netns;
use crate::topology::{Layout, NodeId, PUBLIC_IF};

/// Short enough that `two_writer_ms = 0` means no overlap longer than a few ms; one
/// cheap query per node per period is light even on 2 cores.
pub const READ_ONLY_PERIOD: Duration = Duration::from_millis(2);
/// A sample must not wait on a hung server longer than this.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the address watchers may take to report the current addresses.
const WATCH_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's read_only at one moment; `None` when the node did not answer (a down
/// server accepts no writes, so it counts as not writable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOnlySample {
    pub at: Instant,
    pub node: NodeId,
    pub read_only: Option<bool>,
}

/// Which VIPs each node holds, and which of them its gate closes, from this moment
/// on (one entry per change). A gated VIP resets every TCP packet for it on that
/// node: it serves no client there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSample {
    pub at: Instant,
    pub held: [Vec<Ipv4Addr>; 2],
    pub gated: [Vec<Ipv4Addr>; 2],
}

#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Both nodes' samples, each node's in time order.
    pub read_only: Vec<ReadOnlySample>,
    pub vips: Vec<VipSample>,
}

/// Shared between the sampling threads: the samples, and each node's VIPs now.
#[derive(Default)]
struct Shared {
    samples: Samples,
    held: [Vec<Ipv4Addr>; 2],
    gated: [Vec<Ipv4Addr>; 2],
}

impl Shared {
    /// Records the nodes' VIP state as it is now.
    fn push_vips(&mut self, at: Instant) {
        let (held, gated) = (self.held.clone(), self.gated.clone());
        self.samples.vips.push(VipSample { at, held, gated });
    }
}

pub struct Sampler {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The `nft monitor` processes following the gates, killed (by pid) to stop.
    monitors: Vec<Child>,
}

impl Sampler {
    /// Starts the samplers and returns once both nodes' current VIPs are known (and
    /// their gates, with `gates`: the guard's hooks).
    pub fn start(sockets: [PathBuf; 2], gates: bool) -> anyhow::Result<Sampler> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut sampler = Sampler {
            shared,
            stop,
            threads: Vec::new(),
            monitors: Vec::new(),
        };
        for (node, socket) in NodeId::BOTH.into_iter().zip(sockets) {
            let shared = Arc::clone(&sampler.shared);
            let stop = Arc::clone(&sampler.stop);
            sampler.threads.push(
                std::thread::Builder::new()
                    .name(format!("sampler-{}", node.name()))
                    .spawn(move || sample_read_only(node, &socket, &shared, &stop))?,
            );
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        for node in NodeId::BOTH {
            let shared = Arc::clone(&sampler.shared);
            let stop = Arc::clone(&sampler.stop);
            let ready = ready_tx.clone();
            sampler.threads.push(
                std::thread::Builder::new()
                    .name(format!("vips-{}", node.name()))
                    .spawn(move || watch_vips(node, &shared, &stop, &ready))?,
            );
        }
        for _ in NodeId::BOTH {
            ready_rx
                .recv_timeout(WATCH_READY_TIMEOUT)
                .map_err(|_| anyhow!("the VIP watchers did not report the current addresses"))?
                .context("watch VIPs")?;
        }
        if gates {
            for node in NodeId::BOTH {
                let (monitor, thread) = watch_gates(node, &sampler.shared)?;
                sampler.monitors.push(monitor);
                sampler.threads.push(thread);
            }
        }
        Ok(sampler)
    }

    /// The newest VIP state, for waits during a scenario.
    pub fn latest_vips(&self) -> Option<VipSample> {
        self.lock().samples.vips.last().cloned()
    }

    /// The samples taken since `from` (read_only sorted by time), for checks while
    /// the sampler runs on. Callers wanting the state at `from` ask from earlier.
    pub fn samples_since(&self, from: Instant) -> Samples {
        let shared = self.lock();
        let mut read_only: Vec<ReadOnlySample> = shared
            .samples
            .read_only
            .iter()
            .filter(|s| s.at >= from)
            .copied()
            .collect();
        let vips = shared
            .samples
            .vips
            .iter()
            .filter(|s| s.at >= from)
            .cloned()
            .collect();
        drop(shared);
        read_only.sort_by_key(|s| s.at);
        Samples { read_only, vips }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop(mut self) -> Samples {
        self.halt();
        let mut samples = self.lock().samples.clone();
        samples.read_only.sort_by_key(|s| s.at);
        samples
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Their readers end at the end of the output.
        for mut monitor in self.monitors.drain(..) {
            let _ = monitor.kill();
            let _ = monitor.wait();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

fn sample_read_only(
    node: NodeId,
    socket: &std::path::Path,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let mut conn: Option<Conn> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let mut read_only = None;
        // A backup hook kills every client connection, the sampler's too: one fresh
        // connection per sample is allowed before calling the node down.
        for _ in 0..2 {
            if conn.is_none() {
                conn = connect(socket);
            }
            let Some(session) = conn.as_mut() else { break };
            match mariadb::read_only(session) {
                Ok(value) => {
                    read_only = Some(value);
                    break;
                }
                Err(_) => conn = None,
            }
        }
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .read_only
            .push(ReadOnlySample {
                at: Instant::now(),
                node,
                read_only,
            });
        next += READ_ONLY_PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn connect(socket: &std::path::Path) -> Option<Conn> {
    let opts = OptsBuilder::new()
        .socket(Some(socket.to_string_lossy()))
        .user(Some("root"))
        .read_timeout(Some(SAMPLE_TIMEOUT))
        .write_timeout(Some(SAMPLE_TIMEOUT))
        .stmt_cache_size(0);
    Conn::new(opts).ok()
}

/// Follows `node`'s public addresses from inside its namespace and records every
/// change of the pair's VIP state. Sends one message on `ready` (the current
/// addresses are known, or why watching failed).
fn watch_vips(
    node: NodeId,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    ready: &mpsc::Sender<anyhow::Result<()>>,
) {
    let opened = netns::enter(&node.namespace()).and_then(|()| {
        AddressEvents::open(PUBLIC_IF)
            .with_context(|| format!("netlink address events in {}", node.namespace()))
    });
    let mut events = match opened {
        Ok(events) => events,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let mut reported_ready = false;
    while !stop.load(Ordering::SeqCst) {
        let applied = match events.receive() {
            Ok(Some(applied)) => applied,
            Ok(None) => continue,
            Err(error) => {
                if !reported_ready {
                    let _ = ready.send(Err(error.into()));
                }
                return;
            }
        };
        let at = Instant::now();
        if applied.changed || (applied.dump_done && !reported_ready) {
            // A node's own public address is not a VIP.
            let vips: Vec<Ipv4Addr> = events
                .addresses()
                .into_iter()
                .filter(|addr| *addr != node.public_ip())
                .collect();
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.held[node.index()] = vips;
            shared.push_vips(at);
        }
        if applied.dump_done && !reported_ready {
            reported_ready = true;
            let _ = ready.send(Ok(()));
        }
    }
}

/// The guard's gate set for IPv4 VIPs (host/src/guard/turn_away.rs).
const GATE_SET: &str = "gated4";

/// Follows `node`'s gates: `nft monitor` in its namespace from now on, then the set
/// as it is (listed after the monitor started, so that no change is missed; a
/// change in between is applied twice, which ends in the same set). A transaction
/// (the guard's table defined anew) counts once it is complete: at its generation
/// line.
fn watch_gates(
    node: NodeId,
    shared: &Arc<Mutex<Shared>>,
) -> anyhow::Result<(Child, JoinHandle<()>)> {
    let namespace = node.namespace();
    let mut monitor = Command::new("ip")
        .args(["netns", "exec", &namespace, "nft", "monitor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run nft monitor (apt-get install nftables)")?;
    let stdout = monitor.stdout.take().context("nft monitor's output")?;
    let listed = Command::new("ip")
        .args([
            "netns", "exec", &namespace, "nft", "list", "set", "inet", "mmvip", GATE_SET,
        ])
        .output()
        .context("nft list set")?;
    // No table yet: no gate is closed.
    let mut gated: Vec<Ipv4Addr> = if listed.status.success() {
        addresses_in(&String::from_utf8_lossy(&listed.stdout))
    } else {
        Vec::new()
    };
    {
        let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.gated[node.index()] = gated.clone();
        shared.push_vips(Instant::now());
    }
    let shared = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name(format!("gates-{}", node.name()))
        .spawn(move || {
            let mut pending = gated.clone();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(change) = gate_change(&line) {
                    change.apply(&mut pending);
                } else if line.starts_with("# new generation") && pending != gated {
                    gated = pending.clone();
                    let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                    shared.gated[node.index()] = gated.clone();
                    shared.push_vips(Instant::now());
                }
            }
        })?;
    Ok((monitor, thread))
}

/// One line of `nft monitor` that changes the gate set.
#[derive(Debug, PartialEq, Eq)]
enum GateChange {
    Close(Vec<Ipv4Addr>),
    Open(Vec<Ipv4Addr>),
    /// The guard's table removed (it is defined anew: its elements follow).
    Cleared,
}

impl GateChange {
    fn apply(self, gated: &mut Vec<Ipv4Addr>) {
        match self {
            GateChange::Close(vips) => {
                for vip in vips {
                    if !gated.contains(&vip) {
                        gated.push(vip);
                    }
                }
                gated.sort_unstable();
            }
            GateChange::Open(vips) => gated.retain(|vip| !vips.contains(vip)),
            GateChange::Cleared => gated.clear(),
        }
    }
}

fn gate_change(line: &str) -> Option<GateChange> {
    let element = |verb: &str| format!("{verb} element inet mmvip {GATE_SET} ");
    if line.starts_with(&element("add")) {
        Some(GateChange::Close(addresses_in(line)))
    } else if line.starts_with(&element("delete")) {
        Some(GateChange::Open(addresses_in(line)))
    } else if line.starts_with("delete table inet mmvip") {
        Some(GateChange::Cleared)
    } else {
        None
    }
}

/// The IPv4 addresses between the braces of `elements = { … }` or `{ … }`.
fn addresses_in(text: &str) -> Vec<Ipv4Addr> {
    let inside = text
        .split_once("elements = {")
        .map(|(_, rest)| rest)
        .or_else(|| text.split_once('{').map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once('}'))
        .map_or("", |(inside, _)| inside);
    let mut addresses: Vec<Ipv4Addr> = inside
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|word| word.parse().ok())
        .collect();
    addresses.sort_unstable();
    addresses
}

/// How often read_only was actually sampled: the gaps between one node's
/// consecutive samples within a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SamplePeriod {
    pub median: Duration,
    pub worst: Duration,
}

pub fn sample_period(samples: &[ReadOnlySample], from: Instant, to: Instant) -> SamplePeriod {
    let mut gaps: Vec<Duration> = NodeId::BOTH
        .iter()
        .flat_map(|node| {
            let times: Vec<Instant> = samples
                .iter()
                .filter(|s| s.node == *node && s.at >= from && s.at <= to)
                .map(|s| s.at)
                .collect();
            times
                .windows(2)
                .map(|pair| pair[1] - pair[0])
                .collect::<Vec<_>>()
        })
        .collect();
    if gaps.is_empty() {
        return SamplePeriod {
            median: Duration::ZERO,
            worst: to.saturating_duration_since(from),
        };
    }
    gaps.sort_unstable();
    SamplePeriod {
        median: gaps[gaps.len() / 2],
        worst: gaps[gaps.len() - 1],
    }
}

/// Time within [from, to] during which both nodes were writable. A node's sample
/// holds until its next one.
pub fn both_writable(samples: &[ReadOnlySample], from: Instant, to: Instant) -> Duration {
    let mut state = [None, None];
    let timeline = samples.iter().map(|s| {
        state[s.node.index()] = s.read_only;
        (s.at, state == [Some(false), Some(false)])
    });
    held_between(timeline, from, to)
}

/// How long `node` went on answering writable after `from` before it first
/// answered read-only: the old writer's window after it resumes from a freeze.
pub fn writable_after(samples: &[ReadOnlySample], node: NodeId, from: Instant) -> Duration {
    samples
        .iter()
        .filter(|s| s.node == node && s.at >= from)
        .take_while(|s| s.read_only != Some(true))
        .filter(|s| s.read_only == Some(false))
        .last()
        .map_or(Duration::ZERO, |s| s.at - from)
}

/// A read_only sample or a VIP change, for timelines that need both.
enum Event<'a> {
    ReadOnly(&'a ReadOnlySample),
    Vips(&'a VipSample),
}

/// Both kinds of samples in time order.
fn merged<'a>(read_only: &'a [ReadOnlySample], vips: &'a [VipSample]) -> Vec<(Instant, Event<'a>)> {
    let mut events: Vec<(Instant, Event)> = read_only
        .iter()
        .map(|s| (s.at, Event::ReadOnly(s)))
        .chain(vips.iter().map(|s| (s.at, Event::Vips(s))))
        .collect();
    events.sort_by_key(|(at, _)| *at);
    events
}

/// Time within [from, to] during which some node was writable while holding no VIP:
/// a writer no client should reach, the hazard behind split brains and stale pools.
pub fn writable_without_vip(
    read_only: &[ReadOnlySample],
    vips: &[VipSample],
    from: Instant,
    to: Instant,
) -> Duration {
    let events = merged(read_only, vips);
    let mut writable = [false, false];
    // Unknown until the first VIP sample: assume held, so nothing is counted early.
    let mut holds = [true, true];
    let timeline = events.iter().map(|(at, event)| {
        match event {
            Event::ReadOnly(s) => writable[s.node.index()] = s.read_only == Some(false),
            Event::Vips(s) => holds = [!s.held[0].is_empty(), !s.held[1].is_empty()],
        }
        (
            *at,
            (writable[0] && !holds[0]) || (writable[1] && !holds[1]),
        )
    });
    held_between(timeline, from, to)
}

/// Two writers in [from, to]: both nodes writable in the single-VIP layout; in the
/// two-VIP layout, where both are writable by design, some VIP on both nodes, open
/// on both, while both are writable.
pub fn two_writers(samples: &Samples, from: Instant, to: Instant, layout: Layout) -> Duration {
    match layout {
        Layout::Single => both_writable(&samples.read_only, from, to),
        Layout::Dual => shared_vip_both_writable(&samples.read_only, &samples.vips, from, to),
    }
}

/// Time within [from, to] during which some VIP was on both nodes, its gate open on
/// both, while both were writable: two writers for one instance of the two-VIP
/// layout.
pub fn shared_vip_both_writable(
    read_only: &[ReadOnlySample],
    vips: &[VipSample],
    from: Instant,
    to: Instant,
) -> Duration {
    let events = merged(read_only, vips);
    let mut writable = [false, false];
    let mut shared = false;
    let timeline = events.iter().map(|(at, event)| {
        match event {
            Event::ReadOnly(s) => writable[s.node.index()] = s.read_only == Some(false),
            Event::Vips(s) => {
                shared = s.held[0].iter().any(|vip| {
                    s.held[1].contains(vip)
                        && !s.gated[0].contains(vip)
                        && !s.gated[1].contains(vip)
                })
            }
        }
        (*at, shared && writable[0] && writable[1])
    });
    held_between(timeline, from, to)
}

/// Time within [from, to] during which `vip` was on both nodes at once.
pub fn vip_on_both(samples: &[VipSample], vip: Ipv4Addr, from: Instant, to: Instant) -> Duration {
    held_between(
        samples
            .iter()
            .map(|s| (s.at, s.held[0].contains(&vip) && s.held[1].contains(&vip))),
        from,
        to,
    )
}

/// First sample after `since` in which `node` holds `vip`.
pub fn vip_seen_on(
    samples: &[VipSample],
    vip: Ipv4Addr,
    node: NodeId,
    since: Instant,
) -> Option<Instant> {
    samples
        .iter()
        .find(|s| s.at > since && s.held[node.index()].contains(&vip))
        .map(|s| s.at)
}

/// Total time within [from, to] a step function is true; each point holds until the
/// next, the last until `to`.
fn held_between(
    states: impl Iterator<Item = (Instant, bool)>,
    from: Instant,
    to: Instant,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, bool)> = None;
    let mut add = |since: Instant, until: Instant| {
        let start = since.max(from);
        let end = until.min(to);
        if end > start {
            total += end - start;
        }
    };
    for (at, state) in states {
        if let Some((since, true)) = current {
            add(since, at);
        }
        current = Some((at, state));
    }
    if let Some((since, true)) = current {
        add(since, to);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start: Instant, ms: u64, node: NodeId, read_only: Option<bool>) -> ReadOnlySample {
        ReadOnlySample {
            at: start + Duration::from_millis(ms),
            node,
            read_only,
        }
    }

    fn pair(start: Instant, ms: u64, states: [Option<bool>; 2]) -> [ReadOnlySample; 2] {
        [
            sample(start, ms, NodeId::One, states[0]),
            sample(start, ms + 1, NodeId::Two, states[1]),
        ]
    }

    #[test]
    fn a_shared_vip_counts_only_while_both_nodes_write() {
        let t = Instant::now();
        let (w, r) = (Some(false), Some(true));
        let vip1 = Ipv4Addr::new(10, 0, 0, 1);
        let vip2 = Ipv4Addr::new(10, 0, 0, 2);
        let vips = |ms, held: [Vec<Ipv4Addr>; 2]| VipSample {
            at: t + Duration::from_millis(ms),
            held,
            gated: Default::default(),
        };
        let vip_samples = [
            vips(0, [vec![vip1], vec![vip2]]),
            vips(10, [vec![vip1], vec![vip1, vip2]]),
            vips(40, [vec![], vec![vip1, vip2]]),
        ];
        let read_only: Vec<ReadOnlySample> = [pair(t, 0, [w, w]), pair(t, 20, [r, w])]
            .into_iter()
            .flatten()
            .collect();
        // Both write throughout 0-20; VIP1 is on both from 10: 10 ms of two writers.
        let shared =
            shared_vip_both_writable(&read_only, &vip_samples, t, t + Duration::from_millis(60));
        assert_eq!(shared, Duration::from_millis(10));

        // Node 2's gate closes VIP1 from 15: it serves nobody there.
        let mut gated = vip_samples.to_vec();
        gated.insert(
            2,
            VipSample {
                at: t + Duration::from_millis(15),
                held: [vec![vip1], vec![vip1, vip2]],
                gated: [vec![], vec![vip1]],
            },
        );
        let shared = shared_vip_both_writable(&read_only, &gated, t, t + Duration::from_millis(60));
        assert_eq!(shared, Duration::from_millis(5));
    }

    #[test]
    fn the_gate_set_follows_nft_monitor_and_nft_list() {
        let vip1: Ipv4Addr = "10.77.1.99".parse().unwrap();
        let vip2: Ipv4Addr = "10.77.1.98".parse().unwrap();
        let listed = "table inet mmvip {\n\tset gated4 {\n\t\ttype ipv4_addr\n\t\telements = { 10.77.1.98, 10.77.1.99 }\n\t}\n}\n";
        let mut gated = addresses_in(listed);
        assert_eq!(gated, [vip2, vip1]);
        for (line, after) in [
            (
                "delete element inet mmvip gated4 { 10.77.1.99 }",
                vec![vip2],
            ),
            (
                "add element inet mmvip refused4 { 10.77.1.99 . 3306 }",
                vec![vip2],
            ),
            ("delete table inet mmvip", vec![]),
            ("add element inet mmvip gated4 { 10.77.1.99 }", vec![vip1]),
            (
                "add element inet mmvip gated4 { 10.77.1.98 }",
                vec![vip2, vip1],
            ),
        ] {
            if let Some(change) = gate_change(line) {
                change.apply(&mut gated);
            }
            assert_eq!(gated, after, "{line}");
        }
    }

    #[test]
    fn writable_after_ends_at_the_first_read_only_answer() {
        let t = Instant::now();
        let (w, r) = (Some(false), Some(true));
        let samples = [
            sample(t, 0, NodeId::One, w),
            sample(t, 10, NodeId::One, None),
            sample(t, 20, NodeId::One, w),
            sample(t, 30, NodeId::One, w),
            sample(t, 35, NodeId::Two, w),
            sample(t, 40, NodeId::One, r),
            sample(t, 50, NodeId::One, w),
        ];
        let after = |ms| writable_after(&samples, NodeId::One, t + Duration::from_millis(ms));
        assert_eq!(after(5), Duration::from_millis(25));
        assert_eq!(after(35), Duration::ZERO);
        assert_eq!(
            writable_after(&samples, NodeId::Two, t),
            Duration::from_millis(35)
        );
    }

    #[test]
    fn two_writers_time_sums_both_writable_stretches() {
        let t = Instant::now();
        let (w, r) = (Some(false), Some(true));
        let samples: Vec<ReadOnlySample> = [
            pair(t, 0, [w, r]),
            pair(t, 25, [w, w]),
            pair(t, 50, [w, w]),
            pair(t, 75, [None, w]),
            pair(t, 100, [w, w]),
            pair(t, 125, [r, w]),
        ]
        .into_iter()
        .flatten()
        .collect();
        let total = both_writable(&samples, t, t + Duration::from_millis(200));
        // 26..75 (node 1 goes down at 75) and 100..125 (node 2 writable since 76).
        assert_eq!(total, Duration::from_millis(49 + 25));
        let clipped = both_writable(
            &samples,
            t + Duration::from_millis(40),
            t + Duration::from_millis(60),
        );
        assert_eq!(clipped, Duration::from_millis(20));
    }

    #[test]
    fn last_state_holds_to_the_window_end() {
        let t = Instant::now();
        let samples = pair(t, 0, [Some(false), Some(false)]);
        assert_eq!(
            both_writable(&samples, t, t + Duration::from_millis(31)),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn writable_without_vip_needs_both_facts() {
        let t = Instant::now();
        let vip = Ipv4Addr::new(10, 77, 1, 99);
        let at = |ms| t + Duration::from_millis(ms);
        let vips = vec![
            VipSample {
                at: at(0),
                held: [vec![vip], vec![]],
                gated: Default::default(),
            },
            VipSample {
                at: at(100),
                held: [vec![], vec![vip]],
                gated: Default::default(),
            },
        ];
        let read_only = vec![
            sample(t, 0, NodeId::One, Some(false)),
            sample(t, 0, NodeId::Two, Some(true)),
            sample(t, 120, NodeId::Two, Some(false)),
            sample(t, 150, NodeId::One, Some(true)),
        ];
        // Node 1 lost the VIP at 100 and stayed writable until 150.
        assert_eq!(
            writable_without_vip(&read_only, &vips, t, at(300)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn vip_history_queries() {
        let t = Instant::now();
        let vip = Ipv4Addr::new(10, 77, 1, 99);
        let samples = vec![
            VipSample {
                at: t,
                held: [vec![vip], vec![]],
                gated: Default::default(),
            },
            VipSample {
                at: t + Duration::from_millis(100),
                held: [vec![vip], vec![vip]],
                gated: Default::default(),
            },
            VipSample {
                at: t + Duration::from_millis(200),
                held: [vec![], vec![vip]],
                gated: Default::default(),
            },
        ];
        assert_eq!(
            vip_on_both(&samples, vip, t, t + Duration::from_millis(300)),
            Duration::from_millis(100)
        );
        assert_eq!(
            vip_seen_on(&samples, vip, NodeId::Two, t),
            Some(t + Duration::from_millis(100))
        );
        assert_eq!(
            vip_seen_on(&samples, vip, NodeId::One, t + Duration::from_millis(150)),
            None
        );
    }

    #[test]
    fn sample_period_is_per_node_and_windowed() {
        let t = Instant::now();
        let samples = vec![
            sample(t, 0, NodeId::One, Some(true)),
            sample(t, 1, NodeId::Two, Some(true)),
            sample(t, 2, NodeId::One, Some(true)),
            sample(t, 4, NodeId::One, Some(true)),
            sample(t, 5, NodeId::Two, None),
            sample(t, 6, NodeId::One, Some(true)),
            sample(t, 85, NodeId::Two, Some(true)),
            sample(t, 500, NodeId::One, Some(true)),
        ];
        let end = t + Duration::from_millis(100);
        let period = sample_period(&samples, t, end);
        // Gaps: node 1 2, 2, 2; node 2 4, 80.
        assert_eq!(period.median, Duration::from_millis(2));
        assert_eq!(period.worst, Duration::from_millis(80));
        let none = sample_period(&[], t, end);
        assert_eq!(none.worst, Duration::from_millis(100));
    }
}
