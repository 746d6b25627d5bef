//! keepalived: the seed's keepalived.conf translated to mmvip (or the shell baseline),
//! rendered per node, and the process started in the node's namespace.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cleanup::{Registry, set_mode};
use crate::hooks::{GuardTracking, HookCommands, Role};
use crate::netns;
use crate::paths::NodePaths;
use crate::topology::{Instance, NodeId, PREFIX_LEN, PRIVATE_IF, PUBLIC_IF};

pub const KEEPALIVED: &str = "/usr/sbin/keepalived";
/// VRRP and check timers: the README's (the seed's) or the lab's faster ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// `fast` or `readme`: names the set in rows and reports.
    pub name: &'static str,
    pub vrrp_version: u8,
    pub advert_int_ms: u32,
    /// keepalived accepts only whole seconds here.
    pub check_interval_s: u32,
    pub mysql_timeout_s: u32,
    pub mysql_fall: u32,
    pub mysql_rise: u32,
    pub failover_timeout_s: u32,
    /// The seed's VRRP priorities (101/100) under the guard too, whose own are
    /// 251/250 (README, "Priorities"): to measure what the seed's cost.
    pub seed_priorities: bool,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers::fast()
    }
}

impl Timers {
    /// The lab's default: the seed's semantics with faster detection.
    pub fn fast() -> Timers {
        Timers {
            name: "fast",
            // VRRPv3 allows sub-second adverts: 3 missed adverts (+ skew) = ~1.6 s.
            vrrp_version: 3,
            advert_int_ms: 500,
            check_interval_s: 1,
            mysql_timeout_s: 2,
            // Two failed checks, not one, before the VIP moves: one slow check on a
            // busy 2-core machine should not flip the VIP.
            mysql_fall: 2,
            mysql_rise: 1,
            failover_timeout_s: 1,
            seed_priorities: false,
        }
    }

    /// The top-level README's keepalived.conf: VRRPv2, 1 s adverts, chk_mysql
    /// interval 1, timeout 3, fall 3, rise 1; chk_failover with keepalived's default
    /// timeout (its interval).
    pub fn readme() -> Timers {
        Timers {
            name: "readme",
            vrrp_version: 2,
            advert_int_ms: 1000,
            check_interval_s: 1,
            mysql_timeout_s: 3,
            mysql_fall: 3,
            mysql_rise: 1,
            failover_timeout_s: 1,
            seed_priorities: false,
        }
    }

    /// The same timers with the seed's priorities: `fast-seed`, `readme-seed`.
    pub fn with_seed_priorities(self) -> Timers {
        Timers {
            name: if self.name == "fast" {
                "fast-seed"
            } else {
                "readme-seed"
            },
            seed_priorities: true,
            ..self
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: VRRPv{} advert_int {} s; chk_mysql interval {} s, timeout {} s, fall {}, rise {}, weight +2; chk_failover interval {} s, timeout {} s, fall 1, rise 1, weight -4{}",
            self.name,
            self.vrrp_version,
            advert_seconds(self.advert_int_ms),
            self.check_interval_s,
            self.mysql_timeout_s,
            self.mysql_fall,
            self.mysql_rise,
            self.check_interval_s,
            self.failover_timeout_s,
            if self.seed_priorities {
                "; priorities 101/100 under the guard too"
            } else {
                ""
            },
        )
    }
}

fn advert_seconds(ms: u32) -> String {
    let text = format!("{:.2}", f64::from(ms) / 1000.0);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What the notify probe (`mmvip-lab probe-notify`) changes in a node's config: more
/// ways into FAULT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultTracking {
    /// `vrrp_track_file` with weight 0: a non-zero number in it is FAULT.
    pub fault_file: PathBuf,
}

/// Renders one node's keepalived.conf. One item per line throughout: keepalived's
/// parser silently drops `track_script { a b }` written on one line.
///
/// With `tracking`, chk_mysql has weight 0, so a failing health check is FAULT
/// rather than a lower priority, and a track file can force FAULT.
pub fn render(
    node: NodeId,
    instances: &[Instance],
    timers: &Timers,
    hooks: &HookCommands,
    tracking: Option<&FaultTracking>,
) -> String {
    let mut text = String::new();
    let w = &mut text;
    let _ = writeln!(
        w,
        "# keepalived.conf for {} of the mmvip failover lab",
        node.name()
    );
    let _ = writeln!(w, "# timers: {}", timers.describe());
    let _ = writeln!(w, "global_defs {{");
    let _ = writeln!(w, "    router_id mmvl_{}", node.name());
    let _ = writeln!(w, "    vrrp_version {}", timers.vrrp_version);
    let _ = writeln!(w, "    enable_script_security");
    let _ = writeln!(
        w,
        "    # Without an explicit script_user keepalived may silently drop every script."
    );
    let _ = writeln!(w, "    script_user root");
    if hooks.guard.is_some() {
        // A peer that claims the VIP in a heartbeat cut steps aside within a lease
        // round, but its gratuitous ARP has drawn the clients away; the writer's
        // refresh brings them back within a second.
        let _ = writeln!(w, "    vrrp_garp_master_refresh 1");
    }
    let _ = writeln!(w, "}}");
    if let Some(guard) = &hooks.guard {
        render_guard_tracking(w, guard, instances);
    } else {
        render_checks(w, timers, hooks, tracking);
    }
    for instance in instances {
        let _ = writeln!(w);
        let _ = writeln!(w, "vrrp_instance {} {{", instance.name);
        let _ = writeln!(w, "    state BACKUP");
        let _ = writeln!(w, "    interface {PRIVATE_IF}");
        let _ = writeln!(w, "    virtual_router_id {}", instance.vrid);
        let priority = match hooks.guard {
            // The README's event-driven priorities: the peer takes over after a skew
            // time of (256 - 250) / 256 x advert_int instead of (256 - 100) / 256.
            Some(_) if !timers.seed_priorities => {
                u16::from(instance.priority(node)) + GUARD_PRIORITY_RAISE
            }
            _ => u16::from(instance.priority(node)),
        };
        let _ = writeln!(w, "    priority {priority}");
        let _ = writeln!(w, "    advert_int {}", advert_seconds(timers.advert_int_ms));
        let _ = writeln!(w, "    unicast_src_ip {}", node.private_ip());
        let _ = writeln!(w, "    unicast_peer {{");
        let _ = writeln!(w, "        {}", node.peer().private_ip());
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "    virtual_ipaddress {{");
        let _ = writeln!(w, "        {}/{PREFIX_LEN} dev {PUBLIC_IF}", instance.vip);
        let _ = writeln!(w, "    }}");
        if hooks.guard.is_some() {
            let _ = writeln!(w, "    track_file {{");
            for file in ["health", "failover", instance.name.as_str()] {
                let _ = writeln!(w, "        mmvip_{file}");
            }
            let _ = writeln!(w, "    }}");
            let _ = writeln!(w, "    track_script {{");
            let _ = writeln!(w, "        mmvip_guard");
            let _ = writeln!(w, "    }}");
        } else {
            let _ = writeln!(w, "    track_script {{");
            let _ = writeln!(w, "        chk_mysql");
            let _ = writeln!(w, "        chk_failover");
            let _ = writeln!(w, "    }}");
        }
        if tracking.is_some() {
            let _ = writeln!(w, "    track_file {{");
            let _ = writeln!(w, "        probe_fault weight 0");
            let _ = writeln!(w, "    }}");
        }
        for role in Role::ALL {
            let _ = writeln!(
                w,
                "    notify_{} \"{}\"",
                role.word(),
                hooks.role(role, instance, instances)
            );
        }
        let _ = writeln!(w, "    notify \"{}\"", hooks.notify);
        let _ = writeln!(w, "}}");
    }
    text
}

/// 101/100 become 251/250 with the guard.
const GUARD_PRIORITY_RAISE: u16 = 150;

/// The guard's track files and a check of the guard process, each weight 0: a 1 in
/// a file, or no guard, is FAULT.
fn render_guard_tracking(w: &mut String, guard: &GuardTracking, instances: &[Instance]) {
    let mut files = vec!["health", "failover"];
    files.extend(instances.iter().map(|i| i.name.as_str()));
    for file in files {
        let _ = writeln!(w);
        let _ = writeln!(w, "vrrp_track_file mmvip_{file} {{");
        let _ = writeln!(w, "    file \"{}\"", guard.track_dir.join(file).display());
        let _ = writeln!(w, "    weight 0");
        let _ = writeln!(w, "}}");
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "vrrp_script mmvip_guard {{");
    let _ = writeln!(w, "    script \"{}\"", guard.guard_check);
    let _ = writeln!(w, "    interval 1");
    let _ = writeln!(w, "    fall 1");
    let _ = writeln!(w, "    rise 1");
    let _ = writeln!(w, "    weight 0");
    let _ = writeln!(w, "}}");
}

/// The seed's polled checks (and the notify probe's extra FAULT file).
fn render_checks(
    w: &mut String,
    timers: &Timers,
    hooks: &HookCommands,
    tracking: Option<&FaultTracking>,
) {
    let _ = writeln!(w);
    let _ = writeln!(w, "vrrp_script chk_mysql {{");
    let _ = writeln!(w, "    script \"{}\"", hooks.check_mysql);
    let _ = writeln!(w, "    interval {}", timers.check_interval_s);
    let _ = writeln!(w, "    timeout {}", timers.mysql_timeout_s);
    let _ = writeln!(w, "    fall {}", timers.mysql_fall);
    let _ = writeln!(w, "    rise {}", timers.mysql_rise);
    let _ = writeln!(w, "    weight {}", if tracking.is_some() { 0 } else { 2 });
    let _ = writeln!(w, "}}");
    let _ = writeln!(w);
    let _ = writeln!(w, "vrrp_script chk_failover {{");
    let _ = writeln!(w, "    script \"{}\"", hooks.check_failover);
    let _ = writeln!(w, "    interval {}", timers.check_interval_s);
    let _ = writeln!(w, "    timeout {}", timers.failover_timeout_s);
    let _ = writeln!(w, "    fall 1");
    let _ = writeln!(w, "    rise 1");
    let _ = writeln!(w, "    weight -4");
    let _ = writeln!(w, "}}");
    if let Some(tracking) = tracking {
        let _ = writeln!(w);
        let _ = writeln!(w, "vrrp_track_file probe_fault {{");
        let _ = writeln!(w, "    file \"{}\"", tracking.fault_file.display());
        let _ = writeln!(w, "}}");
    }
}

/// Writes the config, has keepalived check it, and starts keepalived (VRRP only,
/// foreground, logging to its stdout since the lab has no syslog) in the node's
/// namespace.
pub fn start(registry: &Registry, node: NodeId, paths: &NodePaths, config: &str) -> Result<u32> {
    fs::write(paths.keepalived_conf(), config)?;
    set_mode(&paths.keepalived_conf(), 0o644)?;
    check_config(node, paths)?;
    // After a kill -9 its children may linger as zombies until something reaps them,
    // and keepalived takes a pid file naming one for a running daemon and exits
    // ("daemon is already running"). An operator would remove such a file; so does
    // the lab.
    for pid_file in [paths.keepalived_pid(), paths.vrrp_pid()] {
        let stale = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .is_some_and(|pid| !crate::cleanup::is_alive(pid));
        if stale {
            fs::remove_file(&pid_file)
                .with_context(|| format!("remove the stale {}", pid_file.display()))?;
        }
    }
    let mut command = netns::command_in(&node.namespace(), KEEPALIVED);
    command.args(["-n", "-l", "-D", "-G", "-P", "-f"]);
    command.arg(paths.keepalived_conf());
    command.arg("-p").arg(paths.keepalived_pid());
    command.arg("-r").arg(paths.vrrp_pid());
    registry.spawn(
        &format!("keepalived {}", node.name()),
        &mut command,
        &paths.keepalived_log(),
    )
}

/// `keepalived -t` inside the node's namespace (where the interfaces exist): a
/// keyword it does not know or an item it drops is otherwise only a log line, and the
/// lab would silently test a different configuration.
fn check_config(node: NodeId, paths: &NodePaths) -> Result<()> {
    let output = netns::command_in(&node.namespace(), KEEPALIVED)
        .arg("-t")
        .arg("-f")
        .arg(paths.keepalived_conf())
        .output()
        .context("run keepalived -t")?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        bail!(
            "keepalived rejects {}: {}",
            paths.keepalived_conf().display(),
            crate::mariadb::last_lines(&text, 3)
        );
    }
    Ok(())
}

/// keepalived log lines worth a reader's attention: warnings, errors and refused
/// scripts, minus the state changes every scenario causes on purpose.
pub fn notable_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("warning")
                || lower.contains("error")
                || lower.contains("security")
                || lower.contains("disabling")
                || lower.contains("not executable")
                || lower.contains("timed out")
                || lower.contains("unknown keyword")
        })
        // The split-brain scenario provokes these on purpose.
        .filter(|line| !line.contains("received lower priority advert"))
        .map(|line| strip_timestamp(line).to_string())
        .collect()
}

/// keepalived's console lines start with a date and time; drop them for grouping.
fn strip_timestamp(line: &str) -> &str {
    // `Thu Nov 27 22:30:01 2026: message`
    match line.find(": ") {
        Some(at) if at < 32 => &line[at + 2..],
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Layout;
    use std::path::Path;

    fn commands() -> HookCommands {
        HookCommands::mmvip(&NodePaths::new(Path::new("/tmp/mmvip-lab"), NodeId::One))
    }

    #[test]
    fn single_layout_config_has_the_seed_semantics() {
        let text = render(
            NodeId::One,
            &Layout::Single.instances(),
            &Timers::default(),
            &commands(),
            None,
        );
        for needle in [
            "    enable_script_security\n",
            "    script_user root\n",
            "    vrrp_version 3\n",
            "vrrp_script chk_mysql {\n    script \"/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml health\"\n    interval 1\n",
            "    weight 2\n",
            "    weight -4\n",
            "vrrp_instance VI_1 {\n    state BACKUP\n    interface private\n    virtual_router_id 51\n    priority 101\n    advert_int 0.5\n",
            "    unicast_src_ip 10.77.0.1\n    unicast_peer {\n        10.77.0.2\n    }\n",
            "    virtual_ipaddress {\n        10.77.1.99/24 dev public\n    }\n",
            "    track_script {\n        chk_mysql\n        chk_failover\n    }\n",
            "    notify_master \"/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml master --instance=VI_1\"\n",
            "    notify_stop \"/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml stop --instance=VI_1\"\n",
            "    notify \"/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml notify\"\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("nopreempt"));
        assert!(!text.contains("VI_2"));
    }

    #[test]
    fn dual_layout_prefers_node2_for_vip2() {
        let text = render(
            NodeId::One,
            &Layout::Dual.instances(),
            &Timers::default(),
            &commands(),
            None,
        );
        assert!(text.contains(
            "vrrp_instance VI_2 {\n    state BACKUP\n    interface private\n    virtual_router_id 52\n    priority 100\n"
        ));
        assert!(text.contains("        10.77.1.98/24 dev public\n"));
        assert!(text.contains("master --instance=VI_2\""));
        let node2 = render(
            NodeId::Two,
            &Layout::Dual.instances(),
            &Timers::default(),
            &commands(),
            None,
        );
        assert!(node2.contains("virtual_router_id 52\n    priority 101\n"));
        assert!(node2.contains("unicast_src_ip 10.77.0.2\n"));
    }

    #[test]
    fn every_brace_is_on_its_own_item_line() {
        let text = render(
            NodeId::Two,
            &Layout::Dual.instances(),
            &Timers::default(),
            &commands(),
            None,
        );
        let opens = text.matches('{').count();
        assert_eq!(opens, text.matches('}').count());
        for line in text.lines().filter(|l| l.contains('{')) {
            assert!(line.trim_end().ends_with('{'), "{line}");
        }
    }

    #[test]
    fn probe_tracking_makes_a_failing_check_or_the_file_a_fault() {
        let tracking = FaultTracking {
            fault_file: "/tmp/mmvip-lab/node1/etc/probe-fault".into(),
        };
        let text = render(
            NodeId::One,
            &Layout::Single.instances(),
            &Timers::default(),
            &commands(),
            Some(&tracking),
        );
        assert!(text.contains("    rise 1\n    weight 0\n}\n\nvrrp_script chk_failover"));
        assert!(text.contains(
            "vrrp_track_file probe_fault {\n    file \"/tmp/mmvip-lab/node1/etc/probe-fault\"\n}\n"
        ));
        assert!(text.contains("    track_file {\n        probe_fault weight 0\n    }\n"));
    }

    #[test]
    fn guard_config_tracks_the_guard_instead_of_polling() {
        let paths = NodePaths::new(Path::new("/tmp/mmvip-lab"), NodeId::Two);
        let text = render(
            NodeId::Two,
            &Layout::Single.instances(),
            &Timers::default(),
            &HookCommands::guarded(&paths),
            None,
        );
        for needle in [
            "vrrp_track_file mmvip_health {\n    file \"/tmp/mmvip-lab/node2/run/track/health\"\n    weight 0\n}\n",
            "vrrp_track_file mmvip_failover {\n    file \"/tmp/mmvip-lab/node2/run/track/failover\"\n    weight 0\n}\n",
            "vrrp_track_file mmvip_VI_1 {\n    file \"/tmp/mmvip-lab/node2/run/track/VI_1\"\n    weight 0\n}\n",
            "vrrp_script mmvip_guard {\n    script \"/tmp/mmvip-lab/node2/etc/chk_guard.sh /tmp/mmvip-lab/node2/run/guard.pid\"\n    interval 1\n    fall 1\n    rise 1\n    weight 0\n}\n",
            "    priority 250\n",
            "    track_file {\n        mmvip_health\n        mmvip_failover\n        mmvip_VI_1\n    }\n    track_script {\n        mmvip_guard\n    }\n",
            "    notify_master \"/tmp/mmvip-lab/node2/mmvip/bin/mmvip --config /tmp/mmvip-lab/node2/mmvip/mmvip.toml master --instance=VI_1\"\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("vrrp_script chk_mysql"), "{text}");
        assert!(!text.contains("        chk_failover"), "{text}");
        let seed = render(
            NodeId::Two,
            &Layout::Single.instances(),
            &Timers::fast().with_seed_priorities(),
            &HookCommands::guarded(&paths),
            None,
        );
        assert!(seed.contains("    priority 100\n"), "{seed}");
        assert!(seed.contains("fast-seed: "), "{seed}");
    }

    #[test]
    fn advert_interval_prints_like_keepalived_wants() {
        assert_eq!(advert_seconds(500), "0.5");
        assert_eq!(advert_seconds(1000), "1");
        assert_eq!(advert_seconds(250), "0.25");
    }

    #[test]
    fn notable_lines_keep_warnings_and_drop_timestamps() {
        let log = "Thu Nov 27 22:30:01 2026: (VI_1) Entering MASTER STATE\nThu Nov 27 22:30:02 2026: WARNING - default user 'keepalived_script' for script execution does not exist\n";
        assert_eq!(
            notable_lines(log),
            vec!["WARNING - default user 'keepalived_script' for script execution does not exist"]
        );
    }
}
