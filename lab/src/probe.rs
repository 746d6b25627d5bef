//! `mmvip-lab probe-notify`: is a MASTER's VIP already gone from the interface when
//! keepalived starts `notify_backup`, `notify_fault` and `notify_stop`? mmvip's
//! demotion hooks take a VIP still present for a stale notification and leave the
//! node writable, so the answer matters.
//!
//! Two independent observations per transition:
//! - a wrapper in front of every role hook records, as its first act, the time and
//!   the addresses on the node's public interface, then execs the real hook;
//! - `strace` on keepalived's VRRP process (when installed) records the order of its
//!   netlink address requests (RTM_DELADDR / RTM_NEWADDR) and the execve of each hook.
//!
//! The probe lab differs from the scenario lab in two ways, both to reach FAULT: the
//! health check has weight 0 (a failing check is FAULT, not a lower priority), and a
//! track file with weight 0 can force FAULT.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustix::process::Signal;

use crate::cleanup::{Registry, set_mode};
use crate::hooks::{Artifacts, HookSet};
use crate::keepalived::{FaultTracking, Timers};
use crate::netns;
use crate::paths::NodePaths;
use crate::testbed::{Lab, LabConfig};
use crate::topology::{self, Layout, NodeId, PRIVATE_IF};
use crate::wait;

const WRAPPER: &str = "\
#!/bin/sh
# mmvip-lab notify probe: first note when keepalived started this role hook and which
# IPv4 addresses the public interface has at that moment, then run the hook itself.
# Usage: notify-probe.sh LOG STATE INSTANCE COMMAND [ARGS...]
PATH=/usr/sbin:/usr/bin:/sbin:/bin
started=$(date +%s.%N)
addresses=$(ip -4 -o addr show dev public | awk '{ print $4 }' | tr '\\n' ' ')
log=$1 state=$2 instance=$3
shift 3
echo \"$started $state $instance pid=$$ public: $addresses\" >>\"$log\"
exec \"$@\"
";

const STRACE: &str = "/usr/bin/strace";
/// After the VIP moved: time for the hooks of the transition to start.
const SETTLE: Duration = Duration::from_millis(1500);
const TRANSITION_TIMEOUT: Duration = Duration::from_secs(20);

/// Installs the wrapper on one node; returns the wrapper's command prefix for the
/// role hooks and the fault tracking for keepalived.conf.
pub fn install(paths: &NodePaths) -> Result<(String, FaultTracking)> {
    let dir = paths.probe_dir();
    fs::create_dir_all(&dir)?;
    set_mode(&dir, 0o755)?;
    let script = dir.join("notify-probe.sh");
    fs::write(&script, WRAPPER)?;
    set_mode(&script, 0o755)?;
    let fault_file = paths.probe_fault_file();
    fs::write(&fault_file, "0\n")?;
    set_mode(&fault_file, 0o644)?;
    let wrapper = format!("{} {}", script.display(), paths.probe_log().display());
    Ok((wrapper, FaultTracking { fault_file }))
}

/// One transition provoked on node 1, and how it is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Failover file: node 1 MASTER -> BACKUP; removing it makes node 2 BACKUP.
    Switchover,
    /// SIGTERM to keepalived: node 1 STOP.
    KeepalivedStop,
    /// MariaDB stopped, health check (weight 0) fails: node 1 FAULT.
    MariadbStop,
    /// 1 written into the track file: node 1 FAULT.
    TrackFile,
    /// The VRRP interface (private) down: node 1 FAULT.
    LinkDown,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::Switchover,
        Step::KeepalivedStop,
        Step::MariadbStop,
        Step::TrackFile,
        Step::LinkDown,
    ];

    fn describe(self) -> &'static str {
        match self {
            Step::Switchover => "planned switch-over (failover file), then its removal",
            Step::KeepalivedStop => "keepalived stop (SIGTERM)",
            Step::MariadbStop => "MariaDB stop (health check with weight 0 fails)",
            Step::TrackFile => "track file set to 1 (weight 0)",
            Step::LinkDown => "VRRP interface `private` down",
        }
    }

    fn inflict(self, lab: &mut Lab) -> Result<()> {
        let node = NodeId::One;
        match self {
            Step::Switchover => fs::write(lab.failover_file(node), b"probe\n").map_err(Into::into),
            Step::KeepalivedStop => lab.stop_keepalived(node),
            Step::MariadbStop => lab.stop_mariadb(node),
            Step::TrackFile => {
                fs::write(lab.paths(node).probe_fault_file(), b"1\n").map_err(Into::into)
            }
            Step::LinkDown => set_link(node, PRIVATE_IF, false),
        }
    }

    fn heal(self, lab: &mut Lab) -> Result<()> {
        let node = NodeId::One;
        match self {
            Step::Switchover => fs::remove_file(lab.failover_file(node)).map_err(Into::into),
            Step::KeepalivedStop => lab.start_keepalived(node),
            Step::MariadbStop => lab.start_mariadb(node),
            Step::TrackFile => {
                fs::write(lab.paths(node).probe_fault_file(), b"0\n").map_err(Into::into)
            }
            Step::LinkDown => set_link(node, PRIVATE_IF, true),
        }
    }
}

fn set_link(node: NodeId, interface: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    netns::ip(&["-n", &node.namespace(), "link", "set", interface, state]).map(drop)
}

/// One role hook start, as the wrapper recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookStart {
    pub node: NodeId,
    /// Seconds since the epoch.
    pub at: f64,
    pub state: String,
    pub instance: String,
    pub public: Vec<Ipv4Addr>,
}

/// Parses the wrapper's lines: `EPOCH STATE INSTANCE pid=N public: ADDR/LEN ...`.
pub fn parse_starts(node: NodeId, text: &str) -> Vec<HookStart> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let at = words.next()?.parse().ok()?;
            let state = words.next()?.to_string();
            let instance = words.next()?.to_string();
            let public = line
                .split_once("public:")?
                .1
                .split_whitespace()
                .filter_map(|a| a.split('/').next()?.parse().ok())
                .collect();
            Some(HookStart {
                node,
                at,
                state,
                instance,
                public,
            })
        })
        .collect()
}

/// What strace saw keepalived's VRRP process do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Traced {
    /// A netlink address request for `addr` (RTM_NEWADDR when `add`).
    Address { at: f64, add: bool, addr: Ipv4Addr },
    /// The execve of a role hook through the wrapper.
    Hook { at: f64, state: String },
}

/// Parses `strace -f -ttt` lines. keepalived's netlink requests are shown raw
/// (`nlmsg_type=0x14|0x15`, then the ifaddrmsg and its attributes as `\xNN` bytes):
/// the address is the IFA_LOCAL attribute (`\x08\x00\x02\x00` + 4 bytes).
pub fn parse_strace(text: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(_pid), Some(at)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(at) = at.parse::<f64>() else { continue };
        if line.contains("sendmsg(") && line.contains("AF_NETLINK") {
            let add = if line.contains("nlmsg_type=0x14") || line.contains("RTM_NEWADDR") {
                true
            } else if line.contains("nlmsg_type=0x15") || line.contains("RTM_DELADDR") {
                false
            } else {
                continue;
            };
            if let Some(addr) = ifa_local(line) {
                out.push(Traced::Address { at, add, addr });
            }
        } else if line.contains("execve(\"") && line.contains("notify-probe.sh") {
            // execve("/.../notify-probe.sh", ["/.../notify-probe.sh", "LOG", "STATE", ...
            let state = line
                .split("\", \"")
                .nth(2)
                .map(|s| s.trim_matches('"').to_string());
            if let Some(state) = state {
                out.push(Traced::Hook { at, state });
            }
        }
    }
    out
}

fn ifa_local(line: &str) -> Option<Ipv4Addr> {
    let marker = "\\x08\\x00\\x02\\x00";
    let rest = &line[line.find(marker)? + marker.len()..];
    let mut bytes = [0u8; 4];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let hex = rest.get(i * 4 + 2..i * 4 + 4)?;
        *byte = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(Ipv4Addr::from(bytes))
}

/// The probe's findings, with the raw evidence they come from.
pub struct ProbeReport {
    pub text: String,
    /// Demotion hooks that started while their VIP was still on the interface.
    pub vip_present_at_demotion: usize,
}

/// Brings a probe lab up (single layout, mmvip hooks), provokes each transition on
/// node 1, and reports what each demotion hook found when it started.
pub fn run(
    root: &Path,
    artifacts: &Artifacts,
    timers: &Timers,
    progress: &mut dyn FnMut(&str),
) -> Result<ProbeReport> {
    crate::preflight(root, artifacts, &[HookSet::Mmvip])?;
    let registry = Registry::create(root)?;
    let guard = crate::RunGuard(Arc::clone(&registry));
    let template = crate::mariadb::make_template(root)?;
    let config = LabConfig {
        artifacts: artifacts.clone(),
        timers: timers.clone(),
        template,
        logs_dir: std::env::current_dir()?.join("lab-logs"),
        keep_logs: false,
        probe: true,
    };
    let mut lab = Lab::up(&registry, &config, Layout::Single, HookSet::Mmvip)?;
    let vip = lab.instances[0].vip;
    let strace = Path::new(STRACE).is_file();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "keepalived notify probe: {} timers, VIP {vip}; strace {} (its ptrace stops add a few ms to the delays it shows)",
        timers.name,
        if strace {
            "attached to each node's VRRP process"
        } else {
            "not installed: wrapper records only"
        }
    );
    let mut present = 0;
    for step in Step::ALL {
        progress(&format!("probe: {}", step.describe()));
        let marks = NodeId::BOTH.map(|node| log_length(&lab.paths(node).probe_log()));
        let tracers = if strace {
            NodeId::BOTH
                .map(|node| start_strace(&registry, &lab, node, step))
                .into_iter()
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        step.inflict(&mut lab)
            .with_context(|| format!("probe step {step:?}"))?;
        wait_vip_on(NodeId::Two, vip)?;
        wait::sleep(SETTLE)?;
        step.heal(&mut lab)
            .with_context(|| format!("undo probe step {step:?}"))?;
        wait_vip_on(NodeId::One, vip)?;
        wait::sleep(SETTLE)?;
        for (node, pid, _) in &tracers {
            registry.signal(*pid, Signal::TERM)?;
            if !registry.wait_exit(*pid, Duration::from_secs(5))? {
                bail!("strace on {} (pid {pid}) did not stop", node.name());
            }
        }
        let _ = writeln!(text, "\n== {}", step.describe());
        for node in NodeId::BOTH {
            let log = fs::read_to_string(lab.paths(node).probe_log()).unwrap_or_default();
            let fresh = log.get(marks[node.index()]..).unwrap_or_default();
            let traced = tracers
                .iter()
                .find(|(n, _, _)| *n == node)
                .map(|(_, _, file)| parse_strace(&fs::read_to_string(file).unwrap_or_default()))
                .unwrap_or_default();
            present += describe_node(&mut text, node, vip, &parse_starts(node, fresh), &traced);
            let _ = writeln!(text, "  raw wrapper lines ({}):", node.name());
            for line in fresh.lines() {
                let _ = writeln!(text, "    {line}");
            }
            if let Some((_, _, file)) = tracers.iter().find(|(n, _, _)| *n == node) {
                let _ = writeln!(text, "  raw strace lines ({}):", node.name());
                for line in raw_evidence(&fs::read_to_string(file).unwrap_or_default()) {
                    let _ = writeln!(text, "    {line}");
                }
            }
        }
        lab.wait_healthy()
            .with_context(|| format!("lab healthy again after {step:?}"))?;
    }
    let _ = writeln!(
        text,
        "\nsummary: {present} demotion hook(s) (notify_backup/fault/stop) started with {vip} still on the interface"
    );
    drop(lab);
    drop(guard);
    Ok(ProbeReport {
        text,
        vip_present_at_demotion: present,
    })
}

/// One line per role hook start on `node`: was the VIP on the interface, and where
/// keepalived's own removal request was relative to the execve. Returns how many
/// demotion hooks started with the VIP still present.
fn describe_node(
    text: &mut String,
    node: NodeId,
    vip: Ipv4Addr,
    starts: &[HookStart],
    traced: &[Traced],
) -> usize {
    let mut present = 0;
    if starts.is_empty() {
        let _ = writeln!(text, "  {}: no role hook ran", node.name());
    }
    for start in starts {
        let held = start.public.contains(&vip);
        let demotion = start.state != "MASTER";
        if demotion && held {
            present += 1;
        }
        let _ = write!(
            text,
            "  {} notify_{} ({}): VIP {} at the hook's start",
            node.name(),
            start.state.to_lowercase(),
            start.instance,
            if held { "PRESENT" } else { "gone" }
        );
        // The execve of this hook in the strace, and the last address request for
        // the VIP before it.
        let exec = traced.iter().find_map(|t| match t {
            Traced::Hook { at, state } if *state == start.state && (*at - start.at).abs() < 1.0 => {
                Some(*at)
            }
            _ => None,
        });
        if let Some(exec_at) = exec {
            let before = traced.iter().rev().find_map(|t| match t {
                Traced::Address { at, add, addr } if *addr == vip && *at <= exec_at => {
                    Some((*at, *add))
                }
                _ => None,
            });
            match before {
                Some((at, add)) => {
                    let _ = write!(
                        text,
                        "; strace: {} {vip} {:.2} ms before the execve",
                        if add { "RTM_NEWADDR" } else { "RTM_DELADDR" },
                        (exec_at - at) * 1000.0
                    );
                }
                None => {
                    let _ = write!(
                        text,
                        "; strace: no address request for {vip} before the execve"
                    );
                }
            }
        }
        let _ = writeln!(text);
    }
    present
}

/// The strace lines worth showing: keepalived's address requests (RTM_NEWADDR 0x14,
/// RTM_DELADDR 0x15) and role hook execs.
fn raw_evidence(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let address = line.contains("sendmsg(")
                && line.contains("AF_NETLINK")
                && (line.contains("nlmsg_type=0x14") || line.contains("nlmsg_type=0x15"));
            address || (line.contains("execve(\"") && line.contains("notify-probe.sh"))
        })
        .map(|line| line.chars().take(420).collect())
        .collect()
}

fn log_length(path: &Path) -> usize {
    fs::metadata(path).map_or(0, |m| m.len() as usize)
}

/// strace on `node`'s keepalived VRRP process (forks followed, so each hook's execve
/// shows), writing to a file of its own; tracked by PID like every lab process.
fn start_strace(
    registry: &Registry,
    lab: &Lab,
    node: NodeId,
    step: Step,
) -> Result<(NodeId, u32, PathBuf)> {
    let paths = lab.paths(node);
    let vrrp = fs::read_to_string(paths.vrrp_pid())
        .with_context(|| format!("read {}", paths.vrrp_pid().display()))?;
    let vrrp: u32 = vrrp.trim().parse().context("VRRP pid")?;
    let output = paths.probe_dir().join(format!("strace-{step:?}.txt"));
    let mut command = Command::new(STRACE);
    command
        .args([
            "-f",
            "-ttt",
            "-s",
            "256",
            "-e",
            "trace=sendmsg,execve",
            "-o",
        ])
        .arg(&output)
        .args(["-p", &vrrp.to_string()]);
    let messages = paths.probe_dir().join(format!("strace-{step:?}.err"));
    let pid = registry.spawn(&format!("strace {}", node.name()), &mut command, &messages)?;
    // Nothing may happen before strace is attached.
    let attached =
        wait::until_or_timeout(Duration::from_secs(5), Duration::from_millis(20), || {
            let attached = fs::read_to_string(&messages)
                .unwrap_or_default()
                .contains(&format!("Process {vrrp} attached"));
            Ok(attached.then_some(()))
        })?;
    if attached.is_none() {
        bail!(
            "strace did not attach to {}'s VRRP process {vrrp}: {}",
            node.name(),
            fs::read_to_string(&messages).unwrap_or_default().trim()
        );
    }
    Ok((node, pid, output))
}

fn wait_vip_on(node: NodeId, vip: Ipv4Addr) -> Result<()> {
    let found = wait::until_or_timeout(TRANSITION_TIMEOUT, Duration::from_millis(20), || {
        Ok(topology::public_addresses(node)?
            .contains(&vip)
            .then_some(()))
    })?;
    if found.is_none() {
        bail!(
            "{vip} did not reach {} within {} s",
            node.name(),
            TRANSITION_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_lines_parse() {
        let text = "1764430785.123456789 BACKUP VI_1 pid=42 public: 10.77.1.1/24 \n\
                    1764430790.5 MASTER VI_1 pid=43 public: 10.77.1.1/24 10.77.1.99/24 \n";
        let starts = parse_starts(NodeId::One, text);
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0].state, "BACKUP");
        assert_eq!(starts[0].public, vec![Ipv4Addr::new(10, 77, 1, 1)]);
        assert!(starts[1].public.contains(&Ipv4Addr::new(10, 77, 1, 99)));
        assert!((starts[1].at - 1764430790.5).abs() < 1e-6);
    }

    #[test]
    fn strace_lines_give_address_requests_and_hook_execs() {
        let text = r#"4289  1764430785.449566 sendmsg(11, {msg_name={sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, msg_namelen=12, msg_iov=[{iov_base=[{nlmsg_len=40, nlmsg_type=0x15 /* NLMSG_??? */, nlmsg_flags=NLM_F_REQUEST|NLM_F_ACK, nlmsg_seq=1795966784, nlmsg_pid=0}, "\x02\x18\x00\x00\x03\x00\x00\x00\x08\x00\x02\x00\x0a\x4d\x01\x63\x08\x00\x01\x00\x0a\x4d\x01\x63"], iov_len=40}], msg_iovlen=1, msg_controllen=0, msg_flags=0}, 0) = 40
4543  1764430785.454454 execve("/tmp/mmvip-lab/node1/probe/notify-probe.sh", ["/tmp/mmvip-lab/node1/probe/notify-probe.sh", "/tmp/mmvip-lab/node1/probe/notify-probe.log", "BACKUP", "VI_1", "/tmp/x/mmvip"], 0x7fffd2915790 /* 35 vars */) = 0
4289  1764430785.147066 sendmsg(14, {msg_name={sa_family=AF_INET, sin_port=htons(0)}}, 0) = 32
"#;
        assert_eq!(
            parse_strace(text),
            vec![
                Traced::Address {
                    at: 1764430785.449566,
                    add: false,
                    addr: Ipv4Addr::new(10, 77, 1, 99)
                },
                Traced::Hook {
                    at: 1764430785.454454,
                    state: "BACKUP".into()
                },
            ]
        );
    }
}
