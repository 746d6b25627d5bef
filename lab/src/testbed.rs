//! One lab instance: the network, two MariaDB nodes in a GTID ring, hooks and
//! keepalived on both, brought to a healthy, converged state; plus the actions the
//! scenarios inflict on a node. Dropping a `Lab` tears its processes and namespaces
//! down, so an error or panic anywhere still cleans up.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql::Conn;
use mysql::prelude::Queryable;
use rustix::process::Signal;

use crate::cleanup::Registry;
use crate::hooks::{self, Artifacts, HookSet};
use crate::keepalived::{self, Timers};
use crate::mariadb;
use crate::netns;
use crate::paths::NodePaths;
use crate::probe;
use crate::topology::{self, NodeId};
use crate::topology::{Instance, Layout};
use crate::wait;

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(40);
const CLEAN_STOP_TIMEOUT: Duration = Duration::from_secs(60);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian's mariadb.service: `Restart=on-abnormal`, `RestartSec=5s`.
const MARIADBD_RESTART_SEC: Duration = Duration::from_secs(5);

/// What every lab instance of one run shares.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub artifacts: Artifacts,
    pub timers: Timers,
    /// The installed-once data directory each node starts from.
    pub template: PathBuf,
    /// Where the logs of a failed lab or scenario are copied for a post-mortem.
    pub logs_dir: PathBuf,
    /// Copy every scenario's logs, not only a failed one's.
    pub keep_logs: bool,
    /// The notify probe's lab: role hooks behind the probe's wrapper, more ways into
    /// FAULT (see `probe`).
    pub probe: bool,
}

struct Node {
    paths: NodePaths,
    keepalived_config: String,
    mariadbd: Option<u32>,
    /// When the lab first found its mariadbd dead without having stopped it.
    mariadbd_died: Option<Instant>,
    keepalived: Option<u32>,
    /// `mmvip guard` (hook set `guard`).
    guard: Option<u32>,
}

pub struct Lab {
    pub registry: Arc<Registry>,
    pub layout: Layout,
    pub hooks: HookSet,
    pub instances: Vec<Instance>,
    nodes: [Node; 2],
    /// Set by `keep_running`: the lab outlives this process (`mmvip-lab up`).
    detached: bool,
}

impl Lab {
    /// Builds a lab in `registry`'s root and waits until it is healthy.
    pub fn up(
        registry: &Arc<Registry>,
        config: &LabConfig,
        layout: Layout,
        hooks: HookSet,
    ) -> Result<Lab> {
        let instances = layout.instances();
        let nodes = NodeId::BOTH.map(|id| Node {
            paths: NodePaths::new(registry.root(), id).using(&config.artifacts),
            keepalived_config: String::new(),
            mariadbd: None,
            mariadbd_died: None,
            keepalived: None,
            guard: None,
        });
        // From here on, Drop cleans up whatever got started.
        let mut lab = Lab {
            registry: Arc::clone(registry),
            layout,
            hooks,
            instances,
            nodes,
            detached: false,
        };
        match lab.bring_up(config) {
            Ok(()) => Ok(lab),
            Err(error) => {
                let dest = config
                    .logs_dir
                    .join(format!("up-{}-{}", layout.name(), hooks.name()));
                if save_logs(&lab, &dest).is_ok() {
                    return Err(error.context(format!("logs saved in {}", dest.display())));
                }
                Err(error)
            }
        }
    }

    fn bring_up(&mut self, config: &LabConfig) -> Result<()> {
        topology::build(&self.registry)?;
        let vips: Vec<Ipv4Addr> = self.instances.iter().map(|i| i.vip).collect();
        for node in NodeId::BOTH {
            let paths = self.paths(node).clone();
            if paths.dir.exists() {
                fs::remove_dir_all(&paths.dir)?;
            }
            mariadb::prepare(node, &paths, &config.template, &vips)?;
            self.start_mariadb(node)?;
        }
        self.close_ring()?;
        for node in NodeId::BOTH {
            let paths = self.paths(node).clone();
            let mut commands =
                hooks::install(self.hooks, node, &paths, &config.artifacts, &self.instances)
                    .with_context(|| {
                        format!("install {} hooks on {}", self.hooks.name(), node.name())
                    })?;
            let tracking = if config.probe {
                let (wrapper, tracking) = probe::install(&paths)?;
                commands.role_wrapper = Some(wrapper);
                Some(tracking)
            } else {
                None
            };
            self.nodes[node.index()].keepalived_config = keepalived::render(
                node,
                &self.instances,
                &config.timers,
                &commands,
                tracking.as_ref(),
            );
        }
        if self.hooks == HookSet::GuardWitness {
            let paths = self.witness_paths();
            if paths.dir.exists() {
                fs::remove_dir_all(&paths.dir)?;
            }
            mariadb::start_witness(&self.registry, &paths, &config.template)
                .context("start the witness")?;
        }
        if self.hooks.guarded() {
            // Before keepalived, as the unit orders it: keepalived tracks the guard
            // process and its files from the start.
            for node in NodeId::BOTH {
                self.start_guard(node)?;
            }
        }
        // Started together, both nodes' first master-down timers expire in the same
        // instant: both claim the VIP, then one yields, and the notify hooks of those
        // two transitions run concurrently in either order (the shell baseline was
        // seen to leave the backup writable). A real pair rarely boots in lockstep,
        // so node 1 starts first and node 2 once node 1 holds VIP1.
        self.start_keepalived(NodeId::One)?;
        let first_vip = self.instances[0].vip;
        wait::until(
            Duration::from_secs(15),
            Duration::from_millis(20),
            "node1 to take VIP1",
            || {
                Ok(topology::public_addresses(NodeId::One)?
                    .contains(&first_vip)
                    .then_some(()))
            },
        )?;
        self.start_keepalived(NodeId::Two)?;
        self.wait_healthy()
    }

    /// The witness server's files (hook set `guard-witness`).
    pub fn witness_paths(&self) -> NodePaths {
        NodePaths {
            dir: self.registry.root().join("witness"),
            installed_mmvip: None,
        }
    }

    pub fn paths(&self, node: NodeId) -> &NodePaths {
        &self.nodes[node.index()].paths
    }

    pub fn sockets(&self) -> [PathBuf; 2] {
        NodeId::BOTH.map(|node| self.paths(node).socket())
    }

    pub fn keepalived_config(&self, node: NodeId) -> &str {
        &self.nodes[node.index()].keepalived_config
    }

    pub fn connect(&self, node: NodeId) -> Result<Conn> {
        mariadb::connect(&self.paths(node).socket())
            .with_context(|| format!("connect to mariadbd on {}", node.name()))
    }

    /// Reads from `node` on a fresh connection, once more if that fails: a late
    /// backup hook may kill the session.
    pub fn read_from<T>(&self, node: NodeId, read: fn(&mut Conn) -> Result<T>) -> Result<T> {
        let once = || self.connect(node).and_then(|mut conn| read(&mut conn));
        once().or_else(|_| once())
    }

    /// Replication both ways over the private network, then the writer's schema and
    /// user, created once on node 1 and replicated to node 2.
    fn close_ring(&self) -> Result<()> {
        // Users first on both, so neither IO thread meets a peer without its user.
        for node in NodeId::BOTH {
            mariadb::create_node_users(&mut self.connect(node)?)
                .with_context(|| format!("replication and peer users on {}", node.name()))?;
        }
        for node in NodeId::BOTH {
            mariadb::start_replication(&mut self.connect(node)?, node)
                .with_context(|| format!("replication on {}", node.name()))?;
        }
        mariadb::create_schema(&mut self.connect(NodeId::One)?).context("create schema")?;
        self.wait_converged(Duration::from_secs(20))?;
        Ok(())
    }

    /// Both replication threads running on both nodes and equal binlog positions.
    /// A session error counts as "not yet": backup hooks kill client sessions, the
    /// lab's own included.
    pub fn converged_now(&self) -> Result<bool> {
        let mut positions = Vec::new();
        for node in NodeId::BOTH {
            let Ok(mut conn) = self.connect(node) else {
                return Ok(false);
            };
            match mariadb::replica_status(&mut conn) {
                Ok(Some(status)) if status.running() => {}
                _ => return Ok(false),
            }
            match mariadb::gtid_binlog_pos(&mut conn) {
                Ok(pos) => positions.push(pos),
                Err(_) => return Ok(false),
            }
        }
        Ok(positions[0] == positions[1])
    }

    /// Starts again an IO thread that stopped on error 1236, as an operator would,
    /// and returns the nodes where it did. After a kill -9, semi-sync crash recovery
    /// (`init_rpl_role=SLAVE`) drops from the restarted node's binlog a transaction
    /// it never acknowledged; if the peer had already applied it and reconnects
    /// before the restarted node has fetched it back, the peer asks for a GTID the
    /// restarted node no longer has and its IO thread stops for good. Once it has
    /// been fetched back, `START SLAVE` resumes where it was; with a real divergence
    /// it stops on 1236 again, and convergence fails.
    pub fn restart_io_stopped_on_1236(&self) -> Result<Vec<NodeId>> {
        let mut restarted = Vec::new();
        for node in NodeId::BOTH {
            let Ok(mut conn) = self.connect(node) else {
                continue;
            };
            if let Ok(Some(status)) = mariadb::replica_status(&mut conn)
                && status.io_running == "No"
                && status.last_io_errno == 1236
                && conn.query_drop("START SLAVE IO_THREAD").is_ok()
            {
                restarted.push(node);
            }
        }
        Ok(restarted)
    }

    /// Starts again, [`MARIADBD_RESTART_SEC`] after the lab first finds it dead, a
    /// mariadbd that died without the lab stopping it: the guard's last resort kills
    /// it, and Debian's mariadb.service (`Restart=on-abnormal`, `RestartSec=5s`) would
    /// start it again. The nodes restarted now.
    pub fn restart_mariadbd_as_systemd_would(&mut self) -> Result<Vec<NodeId>> {
        let mut restarted = Vec::new();
        for node in NodeId::BOTH {
            let state = &mut self.nodes[node.index()];
            let Some(pid) = state.mariadbd else {
                continue;
            };
            if self.registry.is_running(pid) {
                state.mariadbd_died = None;
                continue;
            }
            let died = *state.mariadbd_died.get_or_insert_with(Instant::now);
            if died.elapsed() >= MARIADBD_RESTART_SEC {
                self.start_mariadb(node)?;
                self.nodes[node.index()].mariadbd_died = None;
                restarted.push(node);
            }
        }
        Ok(restarted)
    }

    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        wait::until(
            timeout,
            Duration::from_millis(50),
            "replication to converge",
            || Ok(self.converged_now()?.then_some(())),
        )
    }

    /// Why the lab is not healthy now, or None when it is: every VIP on its preferred
    /// node only, exactly the VIP holders writable, replication converged.
    pub fn health_problem(&self) -> Result<Option<String>> {
        for node in NodeId::BOTH {
            let held = topology::public_addresses(node)?;
            for instance in &self.instances {
                let should_hold = instance.preferred == node;
                if held.contains(&instance.vip) != should_hold {
                    return Ok(Some(format!(
                        "{} {} {}",
                        node.name(),
                        if should_hold { "lacks" } else { "holds" },
                        instance.vip
                    )));
                }
            }
            let writable_expected = self.instances.iter().any(|i| i.preferred == node);
            let read_only = match self
                .connect(node)
                .and_then(|mut c| mariadb::read_only(&mut c))
            {
                Ok(read_only) => read_only,
                Err(error) => return Ok(Some(format!("{}: {error:#}", node.name()))),
            };
            if read_only == writable_expected {
                return Ok(Some(format!(
                    "{} has read_only={}",
                    node.name(),
                    if read_only { "ON" } else { "OFF" }
                )));
            }
        }
        if !self.converged_now()? {
            return Ok(Some("replication not converged".into()));
        }
        Ok(None)
    }

    pub fn wait_healthy(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            wait::check()?;
            let Some(last) = self.health_problem()? else {
                return Ok(());
            };
            if start.elapsed() > HEALTHY_TIMEOUT {
                bail!(
                    "lab not healthy after {} s: {last}",
                    HEALTHY_TIMEOUT.as_secs()
                );
            }
            wait::sleep(Duration::from_millis(50))?;
        }
    }

    pub fn start_mariadb(&mut self, node: NodeId) -> Result<()> {
        // A server killed behind the lab's back (the guard's last resort) is gone.
        if let Some(old) = self.nodes[node.index()].mariadbd.take()
            && self.registry.is_running(old)
        {
            self.nodes[node.index()].mariadbd = Some(old);
            bail!("mariadbd on {} is already running", node.name());
        }
        let pid = mariadb::start(&self.registry, node, self.paths(node))?;
        self.nodes[node.index()].mariadbd = Some(pid);
        Ok(())
    }

    /// SIGTERM, which mariadbd takes as a clean shutdown, and wait for it.
    pub fn stop_mariadb(&mut self, node: NodeId) -> Result<()> {
        self.end_process(node, Daemon::Mariadbd, Signal::TERM, CLEAN_STOP_TIMEOUT)
    }

    pub fn kill_mariadb(&mut self, node: NodeId) -> Result<()> {
        self.end_process(node, Daemon::Mariadbd, Signal::KILL, KILL_TIMEOUT)
    }

    pub fn start_keepalived(&mut self, node: NodeId) -> Result<()> {
        let index = node.index();
        let pid = keepalived::start(
            &self.registry,
            node,
            &self.nodes[index].paths,
            &self.nodes[index].keepalived_config,
        )?;
        self.nodes[index].keepalived = Some(pid);
        Ok(())
    }

    /// Starts `mmvip guard` in the node's namespace and waits for its track files.
    pub fn start_guard(&mut self, node: NodeId) -> Result<()> {
        let paths = self.paths(node).clone();
        let command_line = hooks::guard_command(&paths);
        let mut command = netns::command_in(&node.namespace(), &command_line[0]);
        command.args(&command_line[1..]);
        let pid = self.registry.spawn(
            &format!("mmvip guard {}", node.name()),
            &mut command,
            &paths.guard_log(),
        )?;
        self.nodes[node.index()].guard = Some(pid);
        fs::write(paths.guard_pid(), format!("{pid}\n"))?;
        let health = paths.track_dir().join("health");
        wait::until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            &format!("the guard on {} to write its track files", node.name()),
            || {
                if !self.registry.is_running(pid) {
                    bail!(
                        "mmvip guard on {} exited at start: {}",
                        node.name(),
                        mariadb::last_lines(
                            &fs::read_to_string(paths.guard_log()).unwrap_or_default(),
                            3
                        )
                    );
                }
                Ok(health.exists().then_some(()))
            },
        )?;
        Ok(())
    }

    /// SIGKILL: the guard gets no chance to tidy up.
    pub fn kill_guard(&mut self, node: NodeId) -> Result<()> {
        self.end_process(node, Daemon::Guard, Signal::KILL, KILL_TIMEOUT)
    }

    /// Why some daemon of the pair is not running (mariadbd, keepalived, and the
    /// guard where there is one), or None.
    pub fn daemon_missing(&self) -> Option<String> {
        for node in NodeId::BOTH {
            let daemons = &self.nodes[node.index()];
            let mut expected = vec![
                ("mariadbd", daemons.mariadbd),
                ("keepalived", daemons.keepalived),
            ];
            if self.hooks.guarded() {
                expected.push(("the guard", daemons.guard));
            }
            for (name, pid) in expected {
                if !pid.is_some_and(|pid| self.registry.is_running(pid)) {
                    return Some(format!("{name} on {} is not running", node.name()));
                }
            }
        }
        None
    }

    /// Whether the node's mariadbd is still alive (the guard's last resort may kill a
    /// server it cannot make read-only).
    pub fn mariadb_running(&self, node: NodeId) -> bool {
        self.nodes[node.index()]
            .mariadbd
            .is_some_and(|pid| self.registry.is_running(pid))
    }

    /// SIGSTOP or SIGCONT to the node's mariadbd: a hung server, then its return.
    pub fn freeze_mariadb(&mut self, node: NodeId, frozen: bool) -> Result<()> {
        let Some(pid) = self.nodes[node.index()].mariadbd else {
            bail!("mariadbd on {} is not running", node.name());
        };
        self.registry
            .signal(pid, if frozen { Signal::STOP } else { Signal::CONT })
    }

    /// `mmvip switchover` run on the node, as an operator would; its report line.
    pub fn switchover(&self, node: NodeId) -> Result<String> {
        let paths = self.paths(node);
        let output = netns::command_in(&node.namespace(), &paths.mmvip_bin().display().to_string())
            .arg("--config")
            .arg(paths.mmvip_config())
            .arg("switchover")
            .output()
            .context("run mmvip switchover")?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() {
            bail!(
                "mmvip switchover on {} failed: {}{}",
                node.name(),
                String::from_utf8_lossy(&output.stderr).trim(),
                text
            );
        }
        Ok(text)
    }

    /// SIGTERM: keepalived leaves cleanly (priority-0 advert, VIPs removed).
    pub fn stop_keepalived(&mut self, node: NodeId) -> Result<()> {
        self.end_process(node, Daemon::Keepalived, Signal::TERM, KILL_TIMEOUT)
    }

    /// SIGKILL: keepalived leaves its VIPs behind and sends no priority-0 advert.
    pub fn kill_keepalived(&mut self, node: NodeId) -> Result<()> {
        if let Some(pid) = self.nodes[node.index()].keepalived {
            self.registry.kill_children(pid)?;
        }
        self.end_process(node, Daemon::Keepalived, Signal::KILL, KILL_TIMEOUT)
    }

    /// SIGSTOP (or SIGCONT) to every process of the node: a host that stalls whole (a
    /// VM paused, a kernel stuck) and then resumes. The clocks go on meanwhile, so
    /// every process wakes to find its timers long expired.
    pub fn freeze_node(&mut self, node: NodeId, frozen: bool) -> Result<()> {
        let signal = if frozen { Signal::STOP } else { Signal::CONT };
        self.registry.signal_namespace(&node.namespace(), signal)
    }

    fn end_process(
        &mut self,
        node: NodeId,
        daemon: Daemon,
        signal: Signal,
        timeout: Duration,
    ) -> Result<()> {
        let slot = match daemon {
            Daemon::Mariadbd => &mut self.nodes[node.index()].mariadbd,
            Daemon::Keepalived => &mut self.nodes[node.index()].keepalived,
            Daemon::Guard => &mut self.nodes[node.index()].guard,
        };
        let Some(pid) = slot.take() else {
            bail!("{daemon:?} on {} is not running", node.name());
        };
        self.registry.signal(pid, signal)?;
        if !self.registry.wait_exit(pid, timeout)? {
            bail!(
                "{daemon:?} on {} (pid {pid}) did not exit within {} s",
                node.name(),
                timeout.as_secs()
            );
        }
        Ok(())
    }

    /// A crash of the whole host: every process in the node's namespace is frozen at
    /// once (the crash instant), its links go down, then every process gets SIGKILL and
    /// the VIPs it held are gone. Not a power loss: the page cache (one kernel for the
    /// whole lab) keeps what was written but not yet fsynced, so a missing fsync would
    /// go unnoticed here.
    ///
    /// Links down before the kill, because the freeze is not airtight: a copy of
    /// keepalived's VRRP process forked for a hook just before it (right after a MASTER
    /// transition) escaped, took its parent's death for a shutdown, sent a priority-0
    /// advert and ran notify_stop, and the peer took over in 0.6 s instead of the
    /// master-down interval (seen with the README timers). Links down after the
    /// freeze, not before it, so the node does not go on committing, isolated, for the
    /// milliseconds the `ip` commands take.
    pub fn crash_node(&mut self, node: NodeId) -> Result<()> {
        self.registry
            .kill_namespace(&node.namespace(), || topology::set_node_links(node, false))?;
        let index = node.index();
        for pid in [
            self.nodes[index].mariadbd.take(),
            self.nodes[index].keepalived.take(),
            self.nodes[index].guard.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.registry.wait_exit(pid, KILL_TIMEOUT)?;
        }
        for instance in &self.instances {
            topology::forget_address(node, instance.vip)?;
        }
        Ok(())
    }

    /// The host comes back after a crash: links up, MariaDB (crash recovery), the
    /// guard where there is one (before keepalived, as its unit orders it), then
    /// keepalived.
    pub fn boot_node(&mut self, node: NodeId) -> Result<()> {
        topology::set_node_links(node, true)?;
        self.start_mariadb(node)?;
        if self.hooks.guarded() {
            self.start_guard(node)?;
        }
        self.start_keepalived(node)
    }

    pub fn failover_file(&self, node: NodeId) -> PathBuf {
        self.paths(node).failover_file()
    }

    /// Keeps the lab running after this process exits (`mmvip-lab up`).
    pub fn keep_running(mut self) {
        self.detached = true;
    }

    /// Stops everything of this lab instance and removes the node directories.
    pub fn teardown(&mut self) -> Vec<String> {
        self.detached = true;
        let mut problems = self.registry.stop_all();
        let dirs: Vec<PathBuf> = NodeId::BOTH
            .map(|node| self.paths(node).dir.clone())
            .into_iter()
            .chain([self.witness_paths().dir])
            .collect();
        for dir in dirs {
            if dir.exists()
                && let Err(error) = fs::remove_dir_all(&dir)
            {
                problems.push(format!("remove {}: {error}", dir.display()));
            }
        }
        problems
    }

    /// Log files worth keeping when a scenario goes wrong.
    pub fn log_files(&self, node: NodeId) -> Vec<PathBuf> {
        let paths = self.paths(node);
        vec![
            paths.keepalived_log(),
            paths.mariadb_log(),
            paths.hooks_log(),
            paths.mmvip_log(),
            paths.guard_log(),
            // What ran, for the post-mortem.
            paths.keepalived_conf(),
            paths.mmvip_config(),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
enum Daemon {
    Mariadbd,
    Keepalived,
    Guard,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.detached {
            for problem in self.teardown() {
                eprintln!("mmvip-lab: teardown: {problem}");
            }
        }
    }
}

/// Copies a node's logs to `dest` (for a failed scenario's post-mortem).
pub fn save_logs(lab: &Lab, dest: &Path) -> Result<()> {
    for node in NodeId::BOTH {
        let dir = dest.join(node.name());
        fs::create_dir_all(&dir)?;
        for file in lab.log_files(node) {
            if let Some(name) = file.file_name()
                && file.exists()
            {
                fs::copy(&file, dir.join(name))?;
            }
        }
    }
    Ok(())
}
