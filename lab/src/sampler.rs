//! Watches the pair while a scenario runs: each node's `@@read_only` every 20 ms over
//! its unix socket (unix sockets work across namespaces), one thread per node so a
//! slow node cannot delay the other's samples, and which node holds which VIP every
//! 100 ms. From the samples come `two_writer_ms` and the VIP history.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::{Conn, OptsBuilder};

use crate::mariadb;
use crate::topology::{self, NodeId};

pub const READ_ONLY_PERIOD: Duration = Duration::from_millis(20);
pub const VIP_PERIOD: Duration = Duration::from_millis(100);
/// A sample must not wait on a hung server longer than this.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(200);

/// One node's read_only at one moment; `None` when the node did not answer (a down
/// server accepts no writes, so it counts as not writable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOnlySample {
    pub at: Instant,
    pub node: NodeId,
    pub read_only: Option<bool>,
}

/// Which VIPs each node holds at one moment.
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

pub struct Sampler {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(sockets: [PathBuf; 2]) -> anyhow::Result<Sampler> {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (node, socket) in NodeId::BOTH.into_iter().zip(sockets) {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sampler-{}", node.name()))
                    .spawn(move || sample_read_only(node, &socket, &samples, &stop))?,
            );
        }
        {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name("sampler-vip".into())
                    .spawn(move || sample_vips(&samples, &stop))?,
            );
        }
        Ok(Sampler {
            samples,
            stop,
            threads,
        })
    }

    /// The newest VIP sample, for waits during a scenario.
    pub fn latest_vips(&self) -> Option<VipSample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .vips
            .last()
            .cloned()
    }

    pub fn stop(mut self) -> Samples {
        self.halt();
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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
    samples: &Mutex<Samples>,
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
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

fn sample_vips(samples: &Mutex<Samples>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let held = NodeId::BOTH.map(|node| {
            topology::public_addresses(node)
                .unwrap_or_default()
                .into_iter()
                // A node's own public address is not a VIP.
                .filter(|addr| *addr != node.public_ip())
                .collect::<Vec<_>>()
        });
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .vips
            .push(VipSample {
                at: Instant::now(),
                held,
            });
        std::thread::sleep(VIP_PERIOD);
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

/// Time within [from, to] during which some node was writable while holding no VIP:
/// a writer no client should reach, the hazard behind split brains and stale pools.
pub fn writable_without_vip(
    read_only: &[ReadOnlySample],
    vips: &[VipSample],
    from: Instant,
    to: Instant,
) -> Duration {
    enum Event<'a> {
        ReadOnly(&'a ReadOnlySample),
        Vips(&'a VipSample),
    }
    let mut events: Vec<(Instant, Event)> = read_only
        .iter()
        .map(|s| (s.at, Event::ReadOnly(s)))
        .chain(vips.iter().map(|s| (s.at, Event::Vips(s))))
        .collect();
    events.sort_by_key(|(at, _)| *at);
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

/// The longest interval between one node's consecutive read_only samples.
pub fn longest_sample_gap(samples: &[ReadOnlySample]) -> Duration {
    NodeId::BOTH
        .iter()
        .flat_map(|node| {
            let times: Vec<Instant> = samples
                .iter()
                .filter(|s| s.node == *node)
                .map(|s| s.at)
                .collect();
            times
                .windows(2)
                .map(|pair| pair[1] - pair[0])
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or_default()
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
    fn sample_gap_is_per_node() {
        let t = Instant::now();
        let samples = vec![
            sample(t, 0, NodeId::One, Some(true)),
            sample(t, 10, NodeId::Two, Some(true)),
            sample(t, 20, NodeId::One, Some(true)),
            sample(t, 90, NodeId::Two, Some(true)),
        ];
        assert_eq!(longest_sample_gap(&samples), Duration::from_millis(80));
    }
}
