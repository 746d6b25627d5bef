//! One node of a guarded pair in tests and benchmarks: its site (with `[guard]`),
//! a stand-in process playing its keepalived (the guard watches its pid), and the
//! real `mmvip guard` in the node's namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmvip::guard::control;

use super::mariadb::Server;
use super::topology::Topology;
use super::{Site, exit_code};

pub const VIP: &str = "10.97.0.1";
/// The second instance's VIP (`Node::two_instances`).
pub const VIP2: &str = "10.97.0.2";
/// The tests' guard timing: short, so that waiting a lease out is quick.
pub const LEASE_MS: u64 = 1000;
pub const MARGIN_MS: u64 = 500;
/// How often the guard asks its MariaDB (a hang shows within this plus 300 ms).
pub const PING_INTERVAL_MS: u64 = 100;

/// A guard's timing: `[guard] lease_ms`, `margin_ms`, `ping_interval_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_ms: u64,
    pub margin_ms: u64,
    pub ping_interval_ms: u64,
}

impl Timing {
    pub const TESTS: Timing = Timing {
        lease_ms: LEASE_MS,
        margin_ms: MARGIN_MS,
        ping_interval_ms: PING_INTERVAL_MS,
    };
    /// What a site gets when `[guard]` leaves them out.
    pub const DEFAULTS: Timing = Timing {
        lease_ms: 2000,
        margin_ms: 1000,
        ping_interval_ms: 200,
    };
}
pub const SECRET: &str = "a shared secret for both guards";

/// A process killed by PID when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

/// One node: its site (with `[guard]`), its stand-in keepalived and its guard.
pub struct Node {
    pub site: Site,
    pub netns: String,
    pub keepalived: Option<Running>,
    pub guard: Option<Running>,
    /// The path to the peer's MariaDB, when `[peer]` is configured.
    _peer_path: Option<super::netns::Forward>,
}

impl Node {
    pub fn new(
        topology: &Topology,
        index: usize,
        server: &Server,
        witness: Option<(&str, u16)>,
    ) -> Node {
        Node::with_peer(topology, index, server, witness, None)
    }

    /// `peer`: the other node's server, which `[peer]` reaches over TCP.
    pub fn with_peer(
        topology: &Topology,
        index: usize,
        server: &Server,
        witness: Option<(&str, u16)>,
        peer: Option<&Server>,
    ) -> Node {
        Node::timed(topology, index, server, witness, peer, Timing::TESTS)
    }

    pub fn timed(
        topology: &Topology,
        index: usize,
        server: &Server,
        witness: Option<(&str, u16)>,
        peer: Option<&Server>,
        timing: Timing,
    ) -> Node {
        Node::configured(
            topology,
            index,
            server,
            witness,
            peer,
            timing,
            &[("VI_1", VIP)],
        )
    }

    /// Two `rw` instances, VI_1 on [`VIP`] and VI_2 on [`VIP2`], as in the two-VIP
    /// layout; without `[peer]` (`master` applies what it received), which the gate
    /// tests do not need.
    pub fn two_instances(topology: &Topology, index: usize, server: &Server) -> Node {
        Node::configured(
            topology,
            index,
            server,
            None,
            None,
            Timing::TESTS,
            &[("VI_1", VIP), ("VI_2", VIP2)],
        )
    }

    fn configured(
        topology: &Topology,
        index: usize,
        server: &Server,
        witness: Option<(&str, u16)>,
        peer: Option<&Server>,
        timing: Timing,
        instances: &[(&str, &str)],
    ) -> Node {
        let site = Site::new().with_socket(&server.socket);
        let (peer_path, peer_table) = match peer {
            Some(peer) => {
                let port = peer.replication.expect("replicating peer").port;
                let forward = topology.nodes[index].forward(([127, 0, 0, 1], port).into());
                let password = site.path("peer-password");
                std::fs::write(&password, super::mariadb::PEER_PASSWORD).unwrap();
                std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                let table = format!(
                    "\n[peer]\naddresses = [\"127.0.0.1:{}\"]\npassword_file = \"{}\"\n",
                    forward.port,
                    password.display()
                );
                (Some(forward), table)
            }
            None => (None, String::new()),
        };
        let secret = site.path("guard-secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let witness_table = match witness {
            Some((host, port)) => {
                let password = site.path("witness-password");
                std::fs::write(&password, "witness-secret").unwrap();
                std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                format!(
                    "\n[guard.witness]\naddress = \"{host}:{port}\"\nuser = \"mmvip_witness\"\npassword_file = \"{}\"\n",
                    password.display()
                )
            }
            None => String::new(),
        };
        let (track, keepalived_pid) = (site.path("track"), site.path("keepalived.pid"));
        let instance_tables: String = instances
            .iter()
            .map(|(name, vip)| format!("\n[instances.{name}]\nvip = \"{vip}\"\nrole = \"rw\"\n"))
            .collect();
        let site = site.with_config(&format!(
            // The guard's benchmark promotes dozens of times on purpose: no flap damping.
            "{peer_table}{instance_tables}\n[plugins.master]\nflap_limit = 0\n\n[guard]\nnode = \"node{}\"\nlisten = [\"{}:7007\"]\npeer = [\"{}:7007\"]\nsecret_file = \"{}\"\nlease_ms = {}\nmargin_ms = {}\ntrack_dir = \"{}\"\nkeepalived_pidfile = \"{}\"\nmariadb_pidfile = \"{}\"\nprobes = [\"{}\"]\nping_interval_ms = {}\n{witness_table}",
            index + 1,
            topology.address(index),
            topology.address(1 - index),
            secret.display(),
            timing.lease_ms,
            timing.margin_ms,
            track.display(),
            keepalived_pid.display(),
            server.dir.path().join("mysqld.pid").display(),
            topology.probe(),
            timing.ping_interval_ms,
        ));
        site.install_builtins();
        assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
        let mut node = Node {
            site,
            netns: topology.nodes[index].name.clone(),
            keepalived: None,
            guard: None,
            _peer_path: peer_path,
        };
        node.start_keepalived();
        node.start_guard();
        node
    }

    pub fn start_keepalived(&mut self) {
        let child = Command::new("sleep").arg("3600").spawn().unwrap();
        std::fs::write(self.site.path("keepalived.pid"), child.id().to_string()).unwrap();
        self.keepalived = Some(Running(child));
    }

    pub fn start_guard(&mut self) {
        self.start_guard_with_clock_ahead(None);
    }

    /// Starts the guard (again), with its monotonic and boot clocks `seconds` ahead
    /// of the other node's when given (a time namespace: what it counts from differs,
    /// as on another machine).
    pub fn start_guard_with_clock_ahead(&mut self, seconds: Option<u64>) {
        self.launch_guard(seconds, &[]);
    }

    /// Starts the guard (again) as systemd would with `Type=notify` and `WatchdogSec`.
    pub fn start_guard_under_systemd(&mut self, notify_socket: &Path, watchdog: Duration) {
        let usec = watchdog.as_micros().to_string();
        let socket = notify_socket.to_str().unwrap();
        self.launch_guard(None, &[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", &usec)]);
    }

    fn launch_guard(&mut self, seconds: Option<u64>, env: &[(&str, &str)]) {
        self.guard = None;
        let socket = control::socket_path(&self.state_dir());
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.site.path("guard.out")).unwrap();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]);
        if let Some(seconds) = seconds {
            let offset = seconds.to_string();
            command.args(["unshare", "--time", "--kill-child", "--monotonic", &offset]);
            command.args(["--boottime", &offset]);
        }
        let child = command
            .arg(super::mmvip_binary())
            .arg("--config")
            .arg(self.site.config_path())
            .arg("guard")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.guard = Some(Running(child));
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the guard did not start: {}",
                std::fs::read_to_string(self.site.path("guard.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the `mmvip guard` process itself (under `unshare`, its child).
    pub fn guard_pid(&self) -> u32 {
        let pid = self.guard.as_ref().expect("guard running").0.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|child| child.parse().ok())
            .unwrap_or(pid)
    }

    pub fn signal_guard(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.guard_pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.site.path("state")
    }

    pub fn ask(&self, request: &str) -> String {
        control::ask(&self.state_dir(), request, Duration::from_secs(10)).unwrap()
    }

    pub fn hold_vip(&self, held: bool) {
        self.hold_address(VIP, held);
    }

    /// Adds `vip` to the node's loopback, or removes it, as keepalived would.
    pub fn hold_address(&self, vip: &str, held: bool) {
        let status = Command::new("ip")
            .args(["-n", &self.netns, "addr", if held { "add" } else { "del" }])
            .arg(format!("{vip}/32"))
            .args(["dev", "lo"])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn has_vip(&self) -> bool {
        let output = Command::new("ip")
            .args(["-n", &self.netns, "-o", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).contains(&format!("{VIP}/32"))
    }

    pub fn hook(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(super::mmvip_binary())
            .arg("--config")
            .arg(self.site.config_path())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn guard_log(&self) -> String {
        self.site.log_text()
    }
}
