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
        mmvip_time / results[1].0.as_secs_f64()
    );
    println!(
        "ratio mmvip / bash + mysql:       {:.2} (target <= 0.5)",
        mmvip_time / results[3].0.as_secs_f64()
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

fn main() {
    // `cargo bench` passes `--bench`; there are no filters to honour.
    health_benchmark();
}
