//! Shared test harness: built plugin paths, a throwaway mmvip site (config, plugin
//! dir, cache, log), in-process plugin runs with test back-ends, and real `mariadbd`.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod fake;
pub mod guard;
pub mod mariadb;
pub mod netns;
pub mod relay;
pub mod topology;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mmvip::bindings::types::Call;
use mmvip::caps::Backends;
use mmvip::caps::state::StateStore;
use mmvip::log::{Log, LogContext};
use mmvip::runtime::{self, Bounds, Report, Watchdog};
use mmvip::{cache, manifest, plugin};

/// A component built by the `mmvip-artifacts` crate (plugins and test guests).
pub fn wasm(crate_name: &str) -> PathBuf {
    mmvip_artifacts::path(crate_name)
}

/// The plugins mmvip ships.
pub const BUILTINS: [&str; 7] = [
    "health", "failover", "notify", "master", "backup", "fault", "stop",
];

/// The mmvip binary under test: this build's, unless `MMVIP_TEST_BINARY` names
/// another (to run the suite against an installed or an older mmvip).
pub fn mmvip_binary() -> PathBuf {
    std::env::var_os("MMVIP_TEST_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mmvip")), PathBuf::from)
}

/// A throwaway site: everything mmvip reads and writes lives in one temp dir.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub config_extra: String,
    /// Top-level keys other than paths (`log = [...]`).
    pub top_extra: String,
    pub socket: PathBuf,
    /// Top-level path keys (`cache_dir`, `log_file`, ...) set to other places.
    pub paths: Vec<(String, PathBuf)>,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let socket = dir.path().join("no-mariadb.sock");
        let site = Site {
            dir,
            config_extra: String::new(),
            top_extra: String::new(),
            socket,
            paths: Vec::new(),
        };
        site.write_config();
        site
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("mmvip.toml")
    }

    pub fn flag_path(&self) -> PathBuf {
        self.path("failover")
    }

    /// Points the site at a MariaDB socket.
    pub fn with_socket(mut self, socket: &Path) -> Site {
        self.socket = socket.to_path_buf();
        self.write_config();
        self
    }

    /// Sets a top-level path key (`cache_dir`, `log_file`, `state_dir`, ...).
    pub fn with_path(mut self, key: &str, path: &Path) -> Site {
        self.paths.retain(|(k, _)| k != key);
        self.paths.push((key.to_string(), path.to_path_buf()));
        self.write_config();
        self
    }

    /// Adds a top-level line (before any table).
    pub fn with_top(mut self, line: &str) -> Site {
        self.top_extra.push_str(line);
        self.top_extra.push('\n');
        self.write_config();
        self
    }

    /// Appends TOML (plugin tables, `[mariadb]` keys go through `mariadb_extra`).
    pub fn with_config(mut self, extra: &str) -> Site {
        self.config_extra.push_str(extra);
        self.write_config();
        self
    }

    pub fn write_config(&self) {
        let root = self.dir.path();
        let mut text = String::new();
        for (key, default) in [
            ("plugin_dir", "plugins"),
            ("cache_dir", "cache"),
            ("log_file", "mmvip.log"),
            ("failover_file", "failover"),
            ("state_dir", "state"),
        ] {
            let path = self
                .paths
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| root.join(default), |(_, p)| p.clone());
            text.push_str(&format!("{key} = \"{}\"\n", path.display()));
        }
        text.push_str(&self.top_extra);
        text.push_str(&format!(
            "\n[mariadb]\nsocket = \"{}\"\ntimeout_ms = 500\n{}",
            self.socket.display(),
            self.config_extra
        ));
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Installs a built component as `<plugin>.wasm`.
    pub fn install(&self, plugin: &str, crate_name: &str) -> PathBuf {
        let target = self.path("plugins").join(format!("{plugin}.wasm"));
        std::fs::copy(wasm(crate_name), &target).unwrap();
        target
    }

    pub fn install_builtins(&self) {
        for name in BUILTINS {
            self.install(name, &format!("mmvip-plugin-{name}"));
        }
    }

    /// The real `mmvip` binary with `--config` for this site, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(mmvip_binary());
        command
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("MMVIP_CONFIG");
        command
    }

    /// Runs the real `mmvip` binary for this site and waits for it.
    pub fn mmvip(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mmvip")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("mmvip.log")).unwrap_or_default()
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("mmvip exited by a signal")
}

/// The result of running a plugin in-process through the host's own runtime.
pub struct InProcess {
    pub report: Report,
    pub log: String,
}

/// Limits of an in-process run: its timeout counts from the start of the run.
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Grants other than the manifest's.
    pub grants: Option<Vec<mmvip::caps::Grant>>,
    /// What the command line's overrun stop would do (it ends the process there).
    pub on_overrun: Option<Box<dyn FnOnce() + Send>>,
}

/// Back-ends that a test fills in: a healthy scripted database, no VIPs, an absent
/// failover flag and a state that lives for the run.
pub fn backends(log: Log) -> Backends {
    Backends {
        failover_flag: Box::new(fake::ScriptedFlag(Ok(false))),
        sql: Box::new(fake::Shared(fake::FakeDb::new().shared())),
        vip: Box::new(fake::HeldVips(Default::default())),
        state: StateStore::load(None, &log),
        peer: mmvip::caps::peer::backend(None, None, std::time::Instant::now(), &log),
        lease: mmvip::caps::lease::backend(
            PathBuf::new(),
            false,
            std::time::Instant::now(),
            Default::default(),
        ),
        log,
    }
}

/// A call as the host makes it for a check (no event, no instances).
pub fn check_call(args: &[&str]) -> Call {
    Call {
        args: args.iter().map(|a| a.to_string()).collect(),
        settings: "{}".into(),
        time_left_ms: 10_000,
        event: None,
        instances: Vec::new(),
        exclusive: true,
    }
}

/// Loads `crate_name`'s component through the host's cache, linked to the grants of
/// its manifest, and runs it with test back-ends (`setup` fills them in).
pub fn run_in_process(
    crate_name: &str,
    call: Call,
    limits: Limits,
    setup: impl FnOnce(&mut Backends),
) -> Result<InProcess, mmvip::error::Error> {
    let dir = private_tempdir();
    let log_path = dir.path().join("test.log");
    let log = Log::open(
        &mmvip::log::Targets::file(&log_path),
        LogContext {
            plugin: crate_name.into(),
            ..LogContext::default()
        },
    );
    let engine = runtime::engine()?;
    let path = wasm(crate_name);
    let bytes = cache::read_plugin(&path)?;
    let grants = match &limits.grants {
        Some(grants) => grants.clone(),
        None => manifest::read(&bytes.wasm, crate_name)?.grants,
    };
    let (component, _) = cache::load(&engine, &bytes, &path, &dir.path().join("cache"), &log)?;
    let linked = plugin::link(&engine, &component, crate_name, &grants)?;
    let mut caps = backends(log);
    setup(&mut caps);
    let deadline = std::time::Instant::now() + limits.timeout;
    let _watchdog = Watchdog::arm(&engine, deadline, limits.on_overrun);
    let bounds = Bounds {
        deadline,
        timeout: limits.timeout,
        memory_bytes: limits.memory_bytes,
    };
    let (report, _instance) = runtime::run(&engine, &linked, caps, &call, bounds);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Ok(InProcess { report, log })
}

pub fn bounds(timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: 64 << 20,
        grants: None,
        on_overrun: None,
    }
}

/// A temporary directory only root can change: the temp root itself (/tmp) is
/// sticky, so mmvip's trust rules accept what is below it.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The property tests' settings: `cases` in the normal run, `PROPTEST_CASES=N` for a
/// long one; a failing case is kept as a plain test rather than in a file.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = None;
    config
}

/// Polls `done` every 10 ms until it holds, failing the test after `limit`; how
/// long it took.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}
