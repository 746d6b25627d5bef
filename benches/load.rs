//! The hooks on a busy server: 2,000 client connections (a few of them writing as
//! fast as they can, some inside open transactions) while `mmvip health` runs, and
//! `mmvip backup` demotes the node under that load. Run with `cargo xtask bench`.
//! Figures and how to read them: BENCHMARKS.md ("On a busy server").

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Site;
use common::mariadb::{APP_PASSWORD, APP_USER, Pair, Server};
use mysql::prelude::Queryable;

/// Client connections open during every measurement, writers included.
const CLIENTS: usize = 2000;
/// Of them, sessions inserting in a loop (autocommit).
const WRITERS: usize = 16;
/// Of them, idle sessions holding an open transaction with a row written.
const OPEN_TRANSACTIONS: usize = 50;
const HEALTH_RUNS: usize = 200;
const BACKUP_ROUNDS: usize = 5;
/// keepalived's default `vrrp_script` timeout is its interval, 1 s; mmvip's health
/// hook is bounded at 800 ms by default.
const HEALTH_BOUND: Duration = Duration::from_millis(800);

fn main() {
    raise_file_limit(CLIENTS as u64 * 2 + 256);
    let pair = Pair::start();
    let server = &pair.node1;
    server.exec(&format!("SET GLOBAL max_connections = {}", CLIENTS + 100));
    let site = Site::new().with_socket(&server.socket).with_config(
        "[instances.VI_1]\nvip = \"10.99.0.1\"\nrole = \"rw\"\n[plugins.backup]\nspare_users = []\n",
    );
    site.install_builtins();
    assert!(site.mmvip(&["compile"]).status.success());
    let mmvip = |args: &[&str]| -> (Duration, bool) {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_mmvip"))
            .arg("--config")
            .arg(site.config_path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run mmvip");
        (started.elapsed(), status.success())
    };
    let ping = || -> (Duration, bool) {
        let started = Instant::now();
        let status = Command::new("mariadb-admin")
            .arg(format!("--socket={}", server.socket.display()))
            .args(["--user=root", "ping"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run mariadb-admin");
        (started.elapsed(), status.success())
    };

    println!(
        "# {CLIENTS} client connections ({WRITERS} writing, {OPEN_TRANSACTIONS} in open transactions)"
    );
    server.exec("SET GLOBAL read_only = OFF");
    let load = Load::start(server);
    let (mut health, mut pings) = (Vec::new(), Vec::new());
    let mut health_failures = 0;
    for _ in 0..HEALTH_RUNS {
        let (took, passed) = mmvip(&["health"]);
        health_failures += usize::from(!passed);
        health.push(took);
        let (took, passed) = ping();
        assert!(passed, "mariadb-admin ping failed under load");
        pings.push(took);
    }
    let commits = load.commits_per_second();
    drop(load);
    row("mmvip health under load", &health);
    row("mariadb-admin ping under load", &pings);
    println!(
        "health runs over its {} ms bound: {}; failed: {health_failures}; writers' commits during the runs: {commits:.0}/s",
        HEALTH_BOUND.as_millis(),
        health.iter().filter(|t| **t > HEALTH_BOUND).count(),
    );

    let mut backups = Vec::new();
    for _ in 0..BACKUP_ROUNDS {
        server.exec("SET GLOBAL read_only = OFF");
        let load = Load::start(server);
        let (took, passed) = mmvip(&["backup", "--instance=VI_1"]);
        assert!(passed, "mmvip backup failed under load");
        assert!(server.read_only(), "backup left the node writable");
        let survivors = load.surviving_clients();
        assert_eq!(survivors, 0, "client sessions survived the demotion");
        backups.push(took);
    }
    row("mmvip backup under load (all killed)", &backups);
    let log = site.log_text();
    let summary = log
        .lines()
        .rfind(|l| l.contains("plugin=backup") && l.contains("verdict=pass"))
        .unwrap_or_default();
    println!("last backup: {summary}");
}

/// The client sessions of one measurement.
struct Load {
    idle: Vec<mysql::Conn>,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    started: Instant,
    writers: Vec<std::thread::JoinHandle<mysql::Conn>>,
}

impl Load {
    fn start(server: &Server) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|n| {
                let mut conn = server.connect_as(APP_USER, APP_PASSWORD).unwrap();
                let (stop, commits) = (stop.clone(), commits.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let wrote = conn
                            .exec_drop("INSERT INTO app.t (note) VALUES (?)", (format!("w{n}"),));
                        if wrote.is_err() {
                            // Read-only or killed: the demotion has happened.
                            break;
                        }
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    conn
                })
            })
            .collect();
        let idle = (WRITERS..CLIENTS)
            .map(|n| {
                let mut conn = server.connect_as(APP_USER, APP_PASSWORD).unwrap();
                if n < WRITERS + OPEN_TRANSACTIONS {
                    conn.query_drop("BEGIN").unwrap();
                    conn.exec_drop("INSERT INTO app.t (note) VALUES (?)", ("open",))
                        .unwrap();
                }
                conn
            })
            .collect();
        Load {
            idle,
            stop,
            commits,
            started: Instant::now(),
            writers,
        }
    }

    fn commits_per_second(&self) -> f64 {
        self.commits.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }

    /// How many sessions still answer (after a demotion: should be none).
    fn surviving_clients(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut conns: Vec<mysql::Conn> = std::mem::take(&mut self.writers)
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect();
        conns.append(&mut self.idle);
        conns
            .iter_mut()
            .map(|c| c.query_drop("SELECT 1").is_ok())
            .filter(|alive| *alive)
            .count()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers.drain(..) {
            let _ = writer.join();
        }
    }
}

fn row(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what:<42} n={:<4} median {:>8.2} ms  p90 {:>8.2} ms  max {:>8.2} ms",
        sorted.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}

/// 2,000 sockets need more descriptors than the usual soft limit of 1,024.
fn raise_file_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_cur.max(wanted.min(limit.rlim_max));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}
