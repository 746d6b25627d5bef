//! Whole-process benchmarks of mmvip's hooks against a live, throwaway MariaDB, side
//! by side with what the original shell approach runs. Run with `cargo xtask bench`.
//! Figures and how to read them: BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Site;
use common::mariadb::Server;

const ROUNDS: usize = 300;
const COLD_ROUNDS: usize = 7;

/// One command under test: a name and its argv.
struct Subject {
    name: &'static str,
    argv: Vec<String>,
}

/// Runs `argv` once and returns its wall time and peak RSS (KiB), measured for that
/// child alone through `wait4`.
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(argv: &[String]) -> (Duration, i64) {
    let started = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0]));
    let mut status = 0;
    // SAFETY: plain libc call on our own child's pid with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(waited, child.id() as libc::pid_t, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} failed: status {status}",
        argv.join(" ")
    );
    (elapsed, usage.ru_maxrss)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// Interleaves the subjects round by round so drift affects all alike.
fn measure(subjects: &[Subject]) -> Vec<(Duration, i64)> {
    for subject in subjects {
        for _ in 0..10 {
            run_once(&subject.argv);
        }
    }
    let mut times = vec![Vec::with_capacity(ROUNDS); subjects.len()];
    let mut peak = vec![0i64; subjects.len()];
    for _ in 0..ROUNDS {
        for (index, subject) in subjects.iter().enumerate() {
            let (elapsed, rss) = run_once(&subject.argv);
            times[index].push(elapsed);
            peak[index] = peak[index].max(rss);
        }
    }
    times.into_iter().map(median).zip(peak).collect()
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn health_benchmark() {
    let server = Server::start();
    let site = Site::new().with_socket(&server.socket);
    site.install_builtins();
    let mmvip = env!("CARGO_BIN_EXE_mmvip").to_string();
    let config = site.config_path().display().to_string();
    let socket = server.socket.display().to_string();
    let script = site.path("chk_mysql.sh");
    write_script(
        &script,
        &format!("mysql --socket={socket} -e 'SELECT 1' > /dev/null"),
    );

    // Cold: an empty cache, so the component is compiled on this run.
    let mut cold = Vec::new();
    for _ in 0..COLD_ROUNDS {
        let _ = std::fs::remove_dir_all(site.path("cache"));
        cold.push(
            run_once(&[
                mmvip.clone(),
                "--config".into(),
                config.clone(),
                "health".into(),
            ])
            .0,
        );
    }
    let cold = median(cold);

    // The same site logging to the journal too: a socket where journald's would be,
    // drained by a thread as journald would.
    let journal_site = Site::new()
        .with_socket(&server.socket)
        .with_top("log = [\"file\", \"journal\"]")
        .with_top(&format!(
            "journal_socket = \"{}\"",
            site.path("journal.sock").display()
        ));
    journal_site.install_builtins();
    let journal = std::os::unix::net::UnixDatagram::bind(site.path("journal.sock")).unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let received = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65536];
            while journal.recv(&mut buffer).is_ok() {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let journal_config = journal_site.config_path().display().to_string();

    let subjects = [
        Subject {
            name: "mmvip health (warm cache)",
            argv: vec![
                mmvip.clone(),
                "--config".into(),
                config.clone(),
                "health".into(),
            ],
        },
        Subject {
            name: "mmvip health, logging to the journal too",
            argv: vec![
                mmvip.clone(),
                "--config".into(),
                journal_config,
                "health".into(),
            ],
        },
        Subject {
            name: "mariadb-admin ping",
            argv: vec![
                "mariadb-admin".into(),
                format!("--socket={socket}"),
                "ping".into(),
            ],
        },
        Subject {
            name: "pidof mariadbd",
            argv: vec!["pidof".into(), "mariadbd".into()],
        },
        Subject {
            name: "bash + mysql -e 'SELECT 1'",
            argv: vec![script.display().to_string()],
        },
    ];
    let results = measure(&subjects);
    println!("\n## mmvip health ({ROUNDS} interleaved rounds, median wall time, whole process)\n");
    println!("| command | median ms | peak RSS MiB |");
    println!("|---|---:|---:|");
    for (subject, (time, rss)) in subjects.iter().zip(&results) {
        println!(
            "| {} | {} | {:.1} |",
            subject.name,
            ms(*time),
            *rss as f64 / 1024.0
        );
    }
    let mmvip_time = results[0].0.as_secs_f64();
    println!(
        "| mmvip health, empty cache (compiles; median of {COLD_ROUNDS}) | {} | |",
        ms(cold)
    );
    println!();
    println!(
        "ratio mmvip / mariadb-admin ping: {:.2} (target <= 1.0)",
        mmvip_time / results[2].0.as_secs_f64()
    );
    println!(
        "ratio mmvip (journal too) / ping: {:.2} (target <= 1.0; {} journal entries received)",
        results[1].0.as_secs_f64() / results[2].0.as_secs_f64(),
        received.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "ratio mmvip / bash + mysql:       {:.2} (target <= 0.5)",
        mmvip_time / results[4].0.as_secs_f64()
    );
    println!(
        "peak RSS mmvip health:            {:.1} MiB (target <= 20)",
        results[0].1 as f64 / 1024.0
    );
    println!(
        "first run, empty cache:           {} ms (target < 300)",
        ms(cold)
    );
}

/// Runs `argv` with its network namespace switched to `netns` right before exec, so
/// the measured time is the hook process itself (no `ip netns exec` in between).
fn run_in_netns(netns: &str, argv: &[String]) -> Duration {
    use std::os::unix::process::CommandExt;
    let path = std::ffi::CString::new(format!("/var/run/netns/{netns}")).unwrap();
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (open, setns) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0]));
    let elapsed = started.elapsed();
    assert!(status.success(), "{} failed: {status}", argv.join(" "));
    elapsed
}

fn time_shell(script: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(script).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
    started.elapsed()
}

const ROLE_ROUNDS: usize = 30;
const APPLY_ROUNDS: usize = 10;
/// Transactions the peer wrote that the promoted node has received but not applied.
const BACKLOG: usize = 500;
const IDLE_CLIENTS: usize = 200;
const BACKUP_ROUNDS: usize = 10;

fn role_benchmark() {
    use common::mariadb::{APP_PASSWORD, APP_USER, PEER_PASSWORD, PEER_USER, Pair};
    use mysql::prelude::Queryable;
    let pair = Pair::start();
    let server = &pair.node1;
    let peer = &pair.node2;
    let netns = common::netns::Netns::new();
    netns.hold("10.99.0.1");
    // The peer, read-only as after its demotion, asked over TCP from the namespace.
    peer.exec("SET GLOBAL read_only = ON");
    let forward = netns.forward(([127, 0, 0, 1], peer.replication.unwrap().port).into());
    let site = Site::new().with_socket(&server.socket);
    let password = site.path("peer-password");
    std::fs::write(&password, PEER_PASSWORD).unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The rounds below promote dozens of times on purpose: no flap damping.
    let site = site.with_config(&format!(
        "[peer]\naddresses = [\"127.0.0.1:{}\"]\nuser = \"{PEER_USER}\"\npassword_file = \"{}\"\n[instances.VI_1]\nvip = \"10.99.0.1\"\nrole = \"rw\"\n[plugins.master]\nflap_limit = 0\n",
        forward.port,
        password.display()
    ));
    site.install_builtins();
    let mmvip = env!("CARGO_BIN_EXE_mmvip").to_string();
    let config = site.config_path().display().to_string();
    let hook = |name: &str| {
        vec![
            mmvip.clone(),
            "--config".into(),
            config.clone(),
            name.into(),
            "--instance=VI_1".into(),
        ]
    };
    assert!(
        Command::new(&mmvip)
            .args(["--config", &config, "compile"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let socket = server.socket.display().to_string();

    // The original keepalived_master.sh steps: poll Seconds_Behind_Master until 0,
    // then SET GLOBAL read_only = OFF (never verified).
    let master_sh = site.path("keepalived_master.sh");
    write_script(
        &master_sh,
        &format!(
            "while true; do\n  lag=$(mysql --socket={socket} -e 'SHOW SLAVE STATUS\\G' | awk '/Seconds_Behind_Master/ {{print $2}}')\n  [ \"$lag\" = 0 ] || [ \"$lag\" = NULL ] && break\n  sleep 0.5\ndone\nmysql --socket={socket} -e 'SET GLOBAL read_only = OFF'"
        ),
    );
    // The original keepalived_backup.sh steps: read_only ON, then one KILL per client.
    let backup_sh = site.path("keepalived_backup.sh");
    write_script(
        &backup_sh,
        &format!(
            "mysql --socket={socket} -e 'SET GLOBAL read_only = ON'\nfor id in $(mysql --socket={socket} -N -e \"SELECT ID FROM information_schema.PROCESSLIST WHERE USER NOT IN ('system user', 'event_scheduler') AND COMMAND NOT LIKE 'Binlog Dump%' AND ID <> CONNECTION_ID()\"); do\n  mysql --socket={socket} -e \"KILL $id\" 2>/dev/null\ndone"
        ),
    );

    let (mut mmvip_master, mut shell_master) = (Vec::new(), Vec::new());
    for _ in 0..ROLE_ROUNDS {
        server.exec("SET GLOBAL read_only = ON");
        mmvip_master.push(run_in_netns(&netns.name, &hook("master")));
        assert!(
            !server.read_only(),
            "mmvip master did not make the node writable"
        );
        server.exec("SET GLOBAL read_only = ON");
        shell_master.push(time_shell(&master_sh));
        assert!(!server.read_only());
    }
    assert!(
        site.log_text().contains("caught up with the peer"),
        "the benchmark did not ask the peer"
    );

    // With something to apply: the peer wrote BACKLOG transactions that this node
    // received (IO thread) but has not applied (SQL thread held), then the SQL thread
    // is released as the hook starts.
    let backlog_round = |run: &mut dyn FnMut() -> Duration| {
        server.exec("SET GLOBAL read_only = ON; STOP SLAVE SQL_THREAD");
        peer.exec("SET GLOBAL read_only = OFF");
        let mut app = peer.connect_as(APP_USER, APP_PASSWORD).unwrap();
        for n in 0..BACKLOG {
            app.exec_drop(
                "INSERT INTO app.t (note) VALUES (?)",
                (format!("backlog {n}"),),
            )
            .unwrap();
        }
        peer.exec("SET GLOBAL read_only = ON");
        let target = peer.value("SELECT @@GLOBAL.gtid_binlog_pos").unwrap();
        // Wait until the backlog is in this node's relay log.
        let mut conn = server.root();
        let received = |conn: &mut mysql::Conn| -> bool {
            let row: Option<mysql::Row> = conn.query_first("SHOW SLAVE STATUS").unwrap();
            let io: Option<String> = row.and_then(|r| r.get("Gtid_IO_Pos"));
            io.is_some_and(|io| target.split(',').all(|g| io.contains(g.trim())))
        };
        while !received(&mut conn) {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.exec("START SLAVE SQL_THREAD");
        let took = run();
        let applied: Option<i64> = conn
            .query_first(format!("SELECT MASTER_GTID_WAIT('{target}', 0)"))
            .unwrap();
        (took, applied == Some(0))
    };
    let (mut mmvip_apply, mut shell_apply, mut shell_apply_incomplete) =
        (Vec::new(), Vec::new(), 0);
    for _ in 0..APPLY_ROUNDS {
        let (took, applied) = backlog_round(&mut || run_in_netns(&netns.name, &hook("master")));
        assert!(applied, "mmvip went writable before applying the backlog");
        assert!(!server.read_only());
        mmvip_apply.push(took);
        let (took, applied) = backlog_round(&mut || time_shell(&master_sh));
        shell_apply_incomplete += usize::from(!applied);
        shell_apply.push(took);
    }
    // The backup rounds below: keepalived removes the VIP before notify_backup.
    netns.release("10.99.0.1");

    let (mut mmvip_backup, mut shell_backup) = (Vec::new(), Vec::new());
    for round in 0..BACKUP_ROUNDS * 2 {
        server.exec("SET GLOBAL read_only = OFF");
        let mut clients: Vec<_> = (0..IDLE_CLIENTS)
            .map(|_| server.connect_as(APP_USER, APP_PASSWORD).unwrap())
            .collect();
        if round % 2 == 0 {
            mmvip_backup.push(run_in_netns(&netns.name, &hook("backup")));
        } else {
            shell_backup.push(time_shell(&backup_sh));
        }
        assert!(server.read_only());
        use mysql::prelude::Queryable;
        let survivors = clients
            .iter_mut()
            .map(|c| c.query_drop("SELECT 1").is_ok())
            .filter(|alive| *alive)
            .count();
        assert_eq!(survivors, 0, "client connections survived the demotion");
    }

    println!("\n## Role hooks on a real pair (median wall time, whole process)\n");
    println!("| step | mmvip ms | original shell steps ms | target |");
    println!("|---|---:|---:|---|");
    println!(
        "| master, nothing to apply (peer asked over TCP; {ROLE_ROUNDS} runs): start to read_only OFF verified | {} | {} | < 20 ms |",
        ms(median(mmvip_master)),
        ms(median(shell_master))
    );
    println!(
        "| master, {BACKLOG} received transactions to apply ({APPLY_ROUNDS} runs): start to read_only OFF, all applied | {} | {} (went writable before all were applied in {shell_apply_incomplete} of {APPLY_ROUNDS} runs) | |",
        ms(median(mmvip_apply)),
        ms(median(shell_apply))
    );
    println!(
        "| backup: read_only ON + kill {IDLE_CLIENTS} idle clients ({BACKUP_ROUNDS} runs) | {} | {} | < 100 ms |",
        ms(median(mmvip_backup)),
        ms(median(shell_backup))
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there are no filters to honour.
    health_benchmark();
    role_benchmark();
}
