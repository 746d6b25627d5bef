//! Watches the pair while a scenario runs: each node's `@@read_only` every 2 ms over
//! its unix socket (unix sockets work across namespaces), one thread per node so a
//! slow node cannot delay the other's samples; and which node holds which VIP, from
//! the kernel's address notifications inside each node's namespace (event-driven, so
//! a VIP's arrival and departure are timed to the moment). From the samples come
//! `two_writer_ms`, the VIP history, and the sampling period actually achieved.

use std::net::Ipv4Addr;
use std::path::PathBuf;
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
use crate::topology::{NodeId, PUBLIC_IF};

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

/// Which VIPs each node holds from this moment on (one entry per change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSample {
    pub at: Instant,
    pub held: [Vec<Ipv4Addr>; 2],
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
}

pub struct Sampler {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sampler {
    /// Starts the samplers and returns once both nodes' current VIPs are known.
    pub fn start(sockets: [PathBuf; 2]) -> anyhow::Result<Sampler> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut sampler = Sampler {
            shared,
            stop,
            threads: Vec::new(),
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
            let held = shared.held.clone();
            shared.samples.vips.push(VipSample { at, held });
        }
        if applied.dump_done && !reported_ready {
            reported_ready = true;
            let _ = ready.send(Ok(()));
        }
    }
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

/// Time within [from, to] during which some VIP was on both nodes while both were
/// writable: two writers for one instance of the two-VIP layout.
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
            Event::Vips(s) => shared = s.held[0].iter().any(|vip| s.held[1].contains(vip)),
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
            },
            VipSample {
                at: at(100),
                held: [vec![], vec![vip]],
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
            },
            VipSample {
                at: t + Duration::from_millis(100),
                held: [vec![vip], vec![vip]],
            },
            VipSample {
                at: t + Duration::from_millis(200),
                held: [vec![], vec![vip]],
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
