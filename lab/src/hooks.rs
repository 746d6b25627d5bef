//! The hooks keepalived runs on each node: mmvip and its plugins, installed the way
//! the README tells a user to, or the shell baseline that mimics the original scripts.
//! Either way the result is a set of command lines for keepalived.conf.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cleanup::set_mode;
use crate::mariadb::{PEER_PASSWORD, PEER_USER, PORT, WITNESS_PASSWORD, WITNESS_USER};
use crate::paths::NodePaths;
use crate::topology::{Instance, NodeId};

/// Which hooks keepalived runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookSet {
    /// Every hook is `mmvip <plugin>`: health, failover, notify, master, backup,
    /// fault, stop.
    Mmvip,
    /// Shell scripts that do what the original scripts did.
    Shell,
    /// mmvip's checks and notify logger with the shell role-change hooks: exercises
    /// the plugins that exist before the role-change plugins do.
    MmvipChecks,
    /// mmvip's role hooks with the resident guard (`mmvip guard`, write lease) on each
    /// node, and keepalived event-driven as the README's guard section sets it up:
    /// the guard's track files and process instead of polled checks.
    Guard,
    /// `Guard` with a witness: a third MariaDB both guards use as a voter.
    GuardWitness,
}

impl HookSet {
    pub fn name(self) -> &'static str {
        match self {
            HookSet::Mmvip => "mmvip",
            HookSet::Shell => "shell",
            HookSet::MmvipChecks => "mmvip-checks",
            HookSet::Guard => "guard",
            HookSet::GuardWitness => "guard-witness",
        }
    }

    /// Runs the resident guard on each node.
    pub fn guarded(self) -> bool {
        matches!(self, HookSet::Guard | HookSet::GuardWitness)
    }

    /// The plugins this hook set needs installed.
    pub fn plugins(self) -> &'static [&'static str] {
        match self {
            HookSet::Mmvip | HookSet::Guard | HookSet::GuardWitness => &[
                "health", "failover", "notify", "master", "backup", "fault", "stop",
            ],
            HookSet::MmvipChecks => &["health", "failover", "notify"],
            HookSet::Shell => &[],
        }
    }
}

/// Where the built mmvip binary and plugins are.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub mmvip_bin: PathBuf,
    /// Cargo's output directory for wasm32-wasip2 (`mmvip_plugin_<name>.wasm`), or the
    /// installed plugin directory (`<name>.wasm`).
    pub plugin_dir: PathBuf,
    /// The package's files, used where they are instead of copied to each node.
    pub installed: bool,
}

impl Artifacts {
    /// mmvip as the .deb or .rpm installs it.
    pub fn installed() -> Artifacts {
        Artifacts {
            mmvip_bin: PathBuf::from("/usr/sbin/mmvip"),
            plugin_dir: PathBuf::from("/usr/lib/mmvip/plugins"),
            installed: true,
        }
    }

    pub fn built_plugin(&self, name: &str) -> PathBuf {
        if self.installed {
            self.plugin_dir.join(format!("{name}.wasm"))
        } else {
            self.plugin_dir.join(format!("mmvip_plugin_{name}.wasm"))
        }
    }

    /// Refuses early, in one line, when the hook set needs files that are not built.
    pub fn preflight(&self, hooks: HookSet) -> Result<()> {
        if hooks == HookSet::Shell {
            return Ok(());
        }
        if !self.mmvip_bin.is_file() {
            bail!(
                "mmvip binary not found at {}: run `cargo build --release` (or pass --mmvip)",
                self.mmvip_bin.display()
            );
        }
        let missing: Vec<&str> = hooks
            .plugins()
            .iter()
            .copied()
            .filter(|name| !self.built_plugin(name).is_file())
            .collect();
        if !missing.is_empty() {
            let packages: Vec<String> = missing
                .iter()
                .map(|name| format!("-p mmvip-plugin-{name}"))
                .collect();
            bail!(
                "{} hooks need plugins not built in {}: {} (build: cargo build --release --target wasm32-wasip2 {}; or run with --hooks shell)",
                hooks.name(),
                self.plugin_dir.display(),
                missing.join(", "),
                packages.join(" ")
            );
        }
        Ok(())
    }
}

/// The keepalived role-change hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
    Fault,
    Stop,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Master, Role::Backup, Role::Fault, Role::Stop];

    pub fn word(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Fault => "fault",
            Role::Stop => "stop",
        }
    }
}

/// Command lines keepalived runs on one node. keepalived splits them on whitespace
/// and execs them without a shell, so they hold plain words only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommands {
    pub check_mysql: String,
    pub check_failover: String,
    /// `notify_master` etc. without the instance.
    pub roles: [String; 4],
    /// notify_* get nothing appended by keepalived, so mmvip is told the instance.
    pub roles_take_instance: bool,
    pub notify: String,
    /// A wrapper in front of every role hook (the notify probe): it is given the
    /// state and instance, then the hook's own command line.
    pub role_wrapper: Option<String>,
    /// The guard's track files and process, for event-driven keepalived (hook set
    /// `guard`).
    pub guard: Option<GuardTracking>,
}

/// What keepalived watches on a guarded node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardTracking {
    /// `health`, `failover` and one file per instance; 1 = FAULT.
    pub track_dir: PathBuf,
    /// A check that fails when the guard is not running. Not the README's
    /// `vrrp_track_process`: keepalived learns of processes from the kernel's proc
    /// connector, which answers only in the initial network namespace ("Failed to
    /// set/clear process event listen - errno 111" in a lab node, and the instance
    /// stays in FAULT), so the lab polls the guard's pid once a second instead.
    pub guard_check: String,
}

impl HookCommands {
    /// The command for `role` in `instance`, one of `all` the pair's instances.
    pub fn role(&self, role: Role, instance: &Instance, all: &[Instance]) -> String {
        let command = self.role_command(role, instance, all);
        match &self.role_wrapper {
            Some(wrapper) => format!(
                "{wrapper} {} {} {command}",
                role.word().to_uppercase(),
                instance.name
            ),
            None => command,
        }
    }

    fn role_command(&self, role: Role, instance: &Instance, all: &[Instance]) -> String {
        let index = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
        let base = &self.roles[index];
        if self.roles_take_instance {
            return format!("{base} --instance={}", instance.name);
        }
        // The original scripts are instance-blind: with two read/write VIPs, losing
        // one VIP would make a node read-only while it still serves the other. The
        // baseline's only adaptation for the two-VIP layout: skip the demotion while
        // this node holds another read/write VIP.
        let others: Vec<String> = all
            .iter()
            .filter(|other| other.name != instance.name)
            .map(|other| other.vip.to_string())
            .collect();
        if role == Role::Backup && !others.is_empty() {
            format!("{base} --unless-holding={}", others.join(","))
        } else {
            base.clone()
        }
    }

    pub fn mmvip(paths: &NodePaths) -> HookCommands {
        let run = |plugin: &str| {
            format!(
                "{} --config {} {plugin}",
                paths.mmvip_bin().display(),
                paths.mmvip_config().display()
            )
        };
        HookCommands {
            check_mysql: run("health"),
            check_failover: run("failover"),
            roles: Role::ALL.map(|role| run(role.word())),
            roles_take_instance: true,
            notify: run("notify"),
            role_wrapper: None,
            guard: None,
        }
    }

    /// mmvip's hooks, with keepalived watching the guard instead of polling.
    pub fn guarded(paths: &NodePaths) -> HookCommands {
        HookCommands {
            guard: Some(GuardTracking {
                track_dir: paths.track_dir(),
                guard_check: format!(
                    "{} {}",
                    paths.guard_check().display(),
                    paths.guard_pid().display()
                ),
            }),
            ..HookCommands::mmvip(paths)
        }
    }

    pub fn shell(paths: &NodePaths) -> HookCommands {
        let script = |name: &str| paths.hooks_dir().join(name).display().to_string();
        let socket = paths.socket().display().to_string();
        let log = paths.hooks_log().display().to_string();
        HookCommands {
            check_mysql: format!("{} {}", script("chk_mysql.sh"), paths.pid_file().display()),
            check_failover: format!(
                "{} {}",
                script("chk_failover.sh"),
                paths.failover_file().display()
            ),
            roles: [
                format!(
                    "{} --socket={socket} --wait=yes --variable=read_only --log={log}",
                    script("keepalived_master.sh")
                ),
                format!(
                    "{} --socket={socket} --kill=yes --variable=read_only --log={log}",
                    script("keepalived_backup.sh")
                ),
                format!("{} {log} fault", script("keepalived_log.sh")),
                format!("{} {log} stop", script("keepalived_log.sh")),
            ],
            roles_take_instance: false,
            notify: format!("{} {log}", script("keepalived_notify.sh")),
            role_wrapper: None,
            guard: None,
        }
    }

    /// mmvip's checks and notify logger, the shell's role changes.
    pub fn mmvip_checks(paths: &NodePaths) -> HookCommands {
        let mmvip = HookCommands::mmvip(paths);
        HookCommands {
            check_mysql: mmvip.check_mysql,
            check_failover: mmvip.check_failover,
            notify: mmvip.notify,
            ..HookCommands::shell(paths)
        }
    }
}

/// The baseline scripts, kept as files under lab/baseline and built into the lab.
const BASELINE_SCRIPTS: [(&str, &str); 6] = [
    ("chk_mysql.sh", include_str!("../baseline/chk_mysql.sh")),
    (
        "chk_failover.sh",
        include_str!("../baseline/chk_failover.sh"),
    ),
    (
        "keepalived_master.sh",
        include_str!("../baseline/keepalived_master.sh"),
    ),
    (
        "keepalived_backup.sh",
        include_str!("../baseline/keepalived_backup.sh"),
    ),
    (
        "keepalived_log.sh",
        include_str!("../baseline/keepalived_log.sh"),
    ),
    (
        "keepalived_notify.sh",
        include_str!("../baseline/keepalived_notify.sh"),
    ),
];

/// Installs `hooks` on `node` and returns the command lines for keepalived.
pub fn install(
    hooks: HookSet,
    node: NodeId,
    paths: &NodePaths,
    artifacts: &Artifacts,
    instances: &[Instance],
) -> Result<HookCommands> {
    fs::create_dir_all(paths.etc_dir())?;
    set_mode(&paths.etc_dir(), 0o755)?;
    if hooks != HookSet::Mmvip && !hooks.guarded() {
        install_shell(paths)?;
    }
    match hooks {
        HookSet::Shell => Ok(HookCommands::shell(paths)),
        HookSet::Mmvip => {
            install_mmvip(paths, artifacts, hooks, Some((node, instances)))?;
            Ok(HookCommands::mmvip(paths))
        }
        HookSet::Guard | HookSet::GuardWitness => {
            install_mmvip(paths, artifacts, hooks, Some((node, instances)))?;
            fs::write(paths.guard_check(), GUARD_CHECK)?;
            set_mode(&paths.guard_check(), 0o755)?;
            Ok(HookCommands::guarded(paths))
        }
        // The host accepts [instances] only together with the role-change plugins.
        HookSet::MmvipChecks => {
            install_mmvip(paths, artifacts, hooks, None)?;
            Ok(HookCommands::mmvip_checks(paths))
        }
    }
}

/// Root-owned 0755 scripts with a `#!` line in root-owned 0755 directories: what
/// keepalived's `enable_script_security` demands, or it drops the script.
fn install_shell(paths: &NodePaths) -> Result<()> {
    let dir = paths.hooks_dir();
    fs::create_dir_all(&dir)?;
    set_mode(&dir, 0o755)?;
    for (name, text) in BASELINE_SCRIPTS {
        if !text.starts_with("#!") {
            bail!("baseline script {name} has no #! line: keepalived would treat it as passing");
        }
        let path = dir.join(name);
        fs::write(&path, text)?;
        set_mode(&path, 0o755)?;
    }
    Ok(())
}

/// Installs mmvip as the README tells a user: copy the binary, copy each plugin as
/// `<name>.wasm`, write the config (and the peer account's password file when the
/// role plugins are installed), precompile with `mmvip --config CFG compile`.
fn install_mmvip(
    paths: &NodePaths,
    artifacts: &Artifacts,
    hooks: HookSet,
    roles: Option<(NodeId, &[Instance])>,
) -> Result<()> {
    fs::create_dir_all(paths.mmvip_dir())?;
    set_mode(&paths.mmvip_dir(), 0o755)?;
    for dir in [paths.mmvip_cache(), paths.mmvip_state()] {
        fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o700)?;
    }
    // An installed mmvip is used where the package put it.
    if !artifacts.installed {
        let bin_dir = paths.mmvip_bin().parent().map(Path::to_path_buf);
        for dir in [bin_dir, Some(paths.mmvip_plugins())].into_iter().flatten() {
            fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o755)?;
        }
        fs::copy(&artifacts.mmvip_bin, paths.mmvip_bin())
            .with_context(|| format!("copy {}", artifacts.mmvip_bin.display()))?;
        set_mode(&paths.mmvip_bin(), 0o755)?;
        for name in hooks.plugins() {
            let target = paths.mmvip_plugins().join(format!("{name}.wasm"));
            fs::copy(artifacts.built_plugin(name), &target)
                .with_context(|| format!("copy plugin {name}"))?;
            set_mode(&target, 0o644)?;
        }
    }
    if roles.is_some_and(|(_, instances)| asks_peer(hooks, instances)) {
        write_secret(&paths.peer_password(), PEER_PASSWORD)?;
    }
    let mut config = render_mmvip_config(paths, roles, hooks);
    if let (true, Some((node, _))) = (hooks.guarded(), roles) {
        write_secret(&paths.guard_secret(), GUARD_SECRET)?;
        fs::create_dir_all(paths.track_dir())?;
        set_mode(&paths.track_dir(), 0o755)?;
        config.push_str(&render_guard_config(paths, node));
        if hooks == HookSet::GuardWitness {
            write_secret(&paths.witness_password(), WITNESS_PASSWORD)?;
            config.push_str(&render_witness_config(paths));
        }
    }
    fs::write(paths.mmvip_config(), config)?;
    set_mode(&paths.mmvip_config(), 0o644)?;
    let output = Command::new(paths.mmvip_bin())
        .arg("--config")
        .arg(paths.mmvip_config())
        .arg("compile")
        .output()
        .context("run mmvip compile")?;
    if !output.status.success() {
        bail!(
            "mmvip compile failed on {}: {}",
            paths.dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Succeeds while the process whose pid is in the file named by `$1` runs.
const GUARD_CHECK: &str = "#!/bin/sh\n# The guard is alive: its pid (written by the lab) names a running process.\nread -r pid < \"$1\" && kill -0 \"$pid\"\n";

/// The secret both nodes' guards share (the same file content on both).
const GUARD_SECRET: &str = "mmvip-lab guard secret shared by both nodes";
/// Where each node's guard answers its peer's.
pub const GUARD_PORT: u16 = 7007;

/// `mmvip guard` as the lab starts it on a node.
pub fn guard_command(paths: &NodePaths) -> Vec<String> {
    vec![
        paths.mmvip_bin().display().to_string(),
        "--config".into(),
        paths.mmvip_config().display().to_string(),
        "guard".into(),
    ]
}

/// The node's `[guard]`: the README's settings (lease 2 s, margin 1 s, ping every
/// 200 ms) with the lab's addresses and per-node paths. The peer's guard is asked on
/// the heartbeat network first, then the public one; the client's address is the
/// probe that tells "cut off from everything" from "peer silent".
pub fn render_guard_config(paths: &NodePaths, node: NodeId) -> String {
    let peer = node.peer();
    format!(
        "
[guard]
node               = \"{name}\"
listen             = [\"{private}:{GUARD_PORT}\", \"{public}:{GUARD_PORT}\"]
peer               = [\"{peer_private}:{GUARD_PORT}\", \"{peer_public}:{GUARD_PORT}\"]
secret_file        = \"{secret}\"
probes             = [\"{probe}\"]
track_dir          = \"{track}\"
keepalived_pidfile = \"{vrrp_pid}\"
mariadb_pidfile    = \"{mariadb_pid}\"
",
        name = node.name(),
        private = node.private_ip(),
        public = node.public_ip(),
        peer_private = peer.private_ip(),
        peer_public = peer.public_ip(),
        secret = paths.guard_secret().display(),
        probe = crate::topology::CLIENT_IP,
        track = paths.track_dir().display(),
        vrrp_pid = paths.vrrp_pid().display(),
        mariadb_pid = paths.pid_file().display(),
    )
}

/// `[guard.witness]`: the lab's witness server and the README's account.
pub fn render_witness_config(paths: &NodePaths) -> String {
    format!(
        "
[guard.witness]
address       = \"{}:{PORT}\"
user          = \"{WITNESS_USER}\"
password_file = \"{}\"
",
        crate::topology::WITNESS_IP,
        paths.witness_password().display(),
    )
}

/// Writes `secret` to a new root-owned 0600 file: mmvip refuses a password file that
/// group or others can read. Created with that mode, so it is never readable by others
/// even for a moment.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    set_mode(path, 0o600)
}

/// Whether `master` is given `[peer]`: with one instance always; in the two-VIP
/// layout, where each node is writable by design for its own VIP, only under the
/// guard. Without a guard `master` cannot tell a peer writable for its own VIP from
/// a second writer, and would refuse every promotion there (at start-up and at
/// failback); under the guard each VIP has a gate, closed on the peer before it gave
/// the instance's lease back, so the peer's position is final for that instance.
fn asks_peer(hooks: HookSet, instances: &[Instance]) -> bool {
    instances.len() == 1 || hooks.guarded()
}

/// The node's mmvip.toml. `roles` (this node and the pair's instances) is None when
/// the role-change plugins are not installed: then there is no [instances] table
/// and no [peer] to ask.
pub fn render_mmvip_config(
    paths: &NodePaths,
    roles: Option<(NodeId, &[Instance])>,
    hooks: HookSet,
) -> String {
    let mut text = format!(
        "\
# mmvip on {dir}: one config per lab node, passed with --config.
plugin_dir    = \"{plugins}\"
cache_dir     = \"{cache}\"
log_file      = \"{log}\"
failover_file = \"{failover}\"
state_dir     = \"{state}\"

[mariadb]
socket     = \"{socket}\"
user       = \"root\"
timeout_ms = 1000
# semi-sync: `master` restarts it when the peer is silent (no wait for its ack).
settable_variables = [\"read_only\", \"rpl_semi_sync_master_enabled\"]
",
        dir = paths.dir.display(),
        plugins = paths.mmvip_plugins().display(),
        cache = paths.mmvip_cache().display(),
        log = paths.mmvip_log().display(),
        failover = paths.failover_file().display(),
        state = paths.mmvip_state().display(),
        socket = paths.socket().display(),
    );
    let Some((node, instances)) = roles else {
        return text;
    };
    // Without [peer] `master` logs that it cannot ask the peer and applies what it
    // received, as before the peer capability.
    if !asks_peer(hooks, instances) {
        text.push_str(
            "\n# No [peer]: both nodes are writable by design in the two-VIP layout, and\n# without the guard's gates `master` refuses to promote while the peer is writable.\n",
        );
    } else {
        // `master` asks the peer over the heartbeat network first, then the public one.
        let peer = node.peer();
        let _ = write!(
            text,
            "
[peer]
addresses     = [\"{private}:{PORT}\", \"{public}:{PORT}\"]
user          = \"{PEER_USER}\"
password_file = \"{password}\"
timeout_ms    = 500
",
            private = peer.private_ip(),
            public = peer.public_ip(),
            password = paths.peer_password().display(),
        );
    }
    for instance in instances {
        let _ = write!(
            text,
            "\n[instances.{}]\nvip  = \"{}\"\nrole = \"rw\"\n",
            instance.name, instance.vip
        );
    }
    // The scenarios change roles on purpose, several times a minute: flap damping
    // would hold the later ones back.
    text.push_str("\n[plugins.master]\nflap_limit = 0\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Layout;
    use crate::topology::NodeId;

    fn paths() -> NodePaths {
        NodePaths::new(Path::new("/tmp/mmvip-lab"), NodeId::One)
    }

    #[test]
    fn mmvip_role_hooks_name_the_instance() {
        let commands = HookCommands::mmvip(&paths());
        let single = Layout::Single.instances();
        assert_eq!(
            commands.role(Role::Master, &single[0], &single),
            "/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml master --instance=VI_1"
        );
        assert_eq!(
            commands.check_mysql,
            "/tmp/mmvip-lab/node1/mmvip/bin/mmvip --config /tmp/mmvip-lab/node1/mmvip/mmvip.toml health"
        );
    }

    #[test]
    fn shell_role_hooks_are_instance_blind_like_the_originals() {
        let commands = HookCommands::shell(&paths());
        let single = Layout::Single.instances();
        let master = commands.role(Role::Master, &single[0], &single);
        assert!(master.contains("keepalived_master.sh --socket=/tmp/mmvip-lab/node1/run/mysqld.sock --wait=yes --variable=read_only"));
        assert!(!master.contains("VI_1"));
        let backup = commands.role(Role::Backup, &single[0], &single);
        assert!(!backup.contains("--unless-holding"));
    }

    #[test]
    fn shell_backup_spares_a_node_serving_the_other_vip() {
        let commands = HookCommands::shell(&paths());
        let dual = Layout::Dual.instances();
        assert!(
            commands
                .role(Role::Backup, &dual[0], &dual)
                .ends_with(" --unless-holding=10.77.1.98")
        );
        assert!(
            commands
                .role(Role::Backup, &dual[1], &dual)
                .ends_with(" --unless-holding=10.77.1.99")
        );
        assert!(
            !commands
                .role(Role::Master, &dual[1], &dual)
                .contains("unless")
        );
    }

    #[test]
    fn checks_variant_mixes_mmvip_checks_with_shell_roles() {
        let commands = HookCommands::mmvip_checks(&paths());
        assert!(commands.check_mysql.ends_with(" health"));
        assert!(commands.notify.ends_with(" notify"));
        let single = Layout::Single.instances();
        assert!(
            commands
                .role(Role::Backup, &single[0], &single)
                .contains("keepalived_backup.sh")
        );
    }

    #[test]
    fn mmvip_config_lists_instances_and_the_peer_only_when_asked() {
        let dual = Layout::Dual.instances();
        let two = render_mmvip_config(&paths(), Some((NodeId::One, &dual)), HookSet::Mmvip);
        assert!(two.contains("[instances.VI_1]\nvip  = \"10.77.1.99\"\nrole = \"rw\""));
        assert!(two.contains("[instances.VI_2]\nvip  = \"10.77.1.98\""));
        assert!(two.contains("socket     = \"/tmp/mmvip-lab/node1/run/mysqld.sock\""));
        assert!(!two.contains("\n[peer]\n"));
        let guarded = render_mmvip_config(&paths(), Some((NodeId::One, &dual)), HookSet::Guard);
        assert!(guarded.contains("\n[peer]\n"));
        let single = Layout::Single.instances();
        let with = render_mmvip_config(&paths(), Some((NodeId::One, &single)), HookSet::Mmvip);
        assert!(with.contains(
            "[peer]\naddresses     = [\"10.77.0.2:3306\", \"10.77.1.2:3306\"]\nuser          = \"mmvip_peer\"\npassword_file = \"/tmp/mmvip-lab/node1/mmvip/peer-password\"\ntimeout_ms    = 500\n"
        ));
        let without = render_mmvip_config(&paths(), None, HookSet::MmvipChecks);
        assert!(!without.contains("[instances"));
        assert!(!without.contains("\n[peer]\n"));
        assert!(without.contains("failover_file = \"/tmp/mmvip-lab/node1/etc/failover\""));
    }

    #[test]
    fn guard_config_names_both_networks_and_the_node_paths() {
        let text = render_guard_config(&paths(), NodeId::One);
        for needle in [
            "node               = \"node1\"\n",
            "listen             = [\"10.77.0.1:7007\", \"10.77.1.1:7007\"]\n",
            "peer               = [\"10.77.0.2:7007\", \"10.77.1.2:7007\"]\n",
            "secret_file        = \"/tmp/mmvip-lab/node1/mmvip/guard-secret\"\n",
            "probes             = [\"10.77.1.100\"]\n",
            "track_dir          = \"/tmp/mmvip-lab/node1/run/track\"\n",
            "keepalived_pidfile = \"/tmp/mmvip-lab/node1/run/vrrp.pid\"\n",
            "mariadb_pidfile    = \"/tmp/mmvip-lab/node1/run/mariadbd.pid\"\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn baseline_scripts_start_with_a_shebang() {
        for (name, text) in BASELINE_SCRIPTS {
            assert!(text.starts_with("#!/bin/"), "{name}");
        }
    }

    #[test]
    fn preflight_names_missing_plugins() {
        let dir = std::env::temp_dir().join(format!("mmvl-preflight-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("mmvip");
        fs::write(&bin, b"").unwrap();
        for name in ["health", "failover", "notify"] {
            fs::write(dir.join(format!("mmvip_plugin_{name}.wasm")), b"").unwrap();
        }
        let artifacts = Artifacts {
            mmvip_bin: bin,
            plugin_dir: dir.clone(),
            installed: false,
        };
        assert!(artifacts.preflight(HookSet::MmvipChecks).is_ok());
        let message = artifacts.preflight(HookSet::Mmvip).unwrap_err().to_string();
        assert!(message.contains("master, backup, fault, stop"), "{message}");
        assert!(!message.contains('\n'));
        fs::remove_dir_all(dir).unwrap();
    }
}
