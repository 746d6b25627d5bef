//! Project tasks: `cargo xtask <build|test|bench|lab>`. Each builds what it needs
//! first, so one command works on a checkout with nothing built yet.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Crates that build a component for wasm32-wasip2 (a `cdylib`): the plugins and
/// the test guests. Libraries beside them (such as plugins/role) come in as deps.
fn component_crates(root: &Path) -> Vec<String> {
    let mut crates = Vec::new();
    for dir in ["plugins", "tests/guests"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(manifest) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else {
                continue;
            };
            let name = manifest
                .lines()
                .find_map(|line| line.strip_prefix("name = "))
                .map(|name| name.trim_matches('"').to_string());
            if let Some(name) = name.filter(|_| manifest.contains("\"cdylib\"")) {
                crates.push(name);
            }
        }
    }
    crates.sort();
    crates
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// The host (release), the lab, and every component.
fn build(root: &Path) -> Result<(), String> {
    cargo(
        root,
        &["build", "--release", "-p", "mmvip", "-p", "mmvip-lab"],
    )?;
    let crates = component_crates(root);
    let mut args = vec!["build", "--release", "--target", "wasm32-wasip2"];
    for name in &crates {
        args.extend(["-p", name.as_str()]);
    }
    cargo(root, &args)
}

/// Runs `cargo test ARGS`, passing its output through, and ends with one line that
/// totals every test binary's results (cargo prints one line per binary, and the last
/// of them, often a doc-test binary with nothing in it, says nothing about the run).
fn cargo_test(root: &Path, args: &[&str]) -> Result<(), String> {
    use std::io::BufRead;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .arg("test")
        .args(args)
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(count)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(count) = count.parse::<u64>() else {
                    continue;
                };
                match what {
                    "passed" => passed += count,
                    "failed" => failed += count,
                    "ignored" => ignored += count,
                    _ => {}
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo test {}` failed ({status})", args.join(" ")))
    }
}

fn run(root: &Path, program: &Path, args: &[String]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", program.display()))
    }
}

/// What `cargo xtask test` runs: the plugins and test guests are wasm components,
/// tested through the host's suite.
const TESTED_PACKAGES: &[&str] = &["mmvip", "mmvip-lab", "xtask", "regex"];

fn main() -> ExitCode {
    let root = workspace_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest.to_vec()),
        None => ("help", Vec::new()),
    };
    let lab = root.join("target/release/mmvip-lab");
    let result = match task {
        "build" => build(&root),
        "test" => build(&root).and_then(|()| {
            let mut args = vec!["--release"];
            for package in TESTED_PACKAGES {
                args.extend(["-p", package]);
            }
            cargo_test(&root, &args)
        }),
        "bench" => {
            build(&root).and_then(|()| cargo(&root, &["bench", "-p", "mmvip", "--bench", "hooks"]))
        }
        "lab" => build(&root).and_then(|()| {
            run(
                &root,
                &lab,
                &if rest.is_empty() {
                    vec!["run".to_string()]
                } else {
                    rest
                },
            )
        }),
        _ => {
            eprintln!("usage: cargo xtask <build|test|bench|lab [ARGS...]>");
            eprintln!(
                "  build  the mmvip host, the lab and every plugin and test guest (wasm32-wasip2)"
            );
            eprintln!(
                "  test   build, then run the whole test suite, lab scenarios included (as root)"
            );
            eprintln!(
                "  bench  build, then run the benchmarks (as root; starts throwaway MariaDB servers)"
            );
            eprintln!(
                "  lab    build, then run the failover lab (`lab up`, `lab down`, `lab run --help`)"
            );
            return if task == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}
