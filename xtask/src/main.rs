//! Project tasks: `cargo xtask <build|package|test|bench|lab>`. Each builds what it
//! needs first, so one command works on a checkout with nothing built yet. The
//! plugins and test guests are built by the `mmvip-artifacts` crate's build script,
//! which the lab and the tests depend on.

mod package;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What `cargo xtask test` runs: every crate with native tests (the plugins are
/// wasm components, tested through the host's suite and, for the role library,
/// natively).
const TESTED_PACKAGES: &[&str] = &[
    "mmvip",
    "mmvip-lab",
    "mmvip-role",
    "mmvip-artifacts",
    "xtask",
    "regex",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
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

/// The host and the lab (building the lab builds every plugin).
fn build(root: &Path) -> Result<(), String> {
    cargo(
        root,
        &["build", "--release", "-p", "mmvip", "-p", "mmvip-lab"],
    )
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
        "package" => build(&root).and_then(|()| package::build(&root)),
        // The packages first: the suite installs and checks them (tests/packages.rs).
        "test" => build(&root)
            .and_then(|()| package::build(&root))
            .and_then(|()| {
                let mut args = vec!["test", "--release"];
                for package in TESTED_PACKAGES {
                    args.extend(["-p", package]);
                }
                cargo(&root, &args)
            }),
        "bench" => build(&root).and_then(|()| {
            cargo(
                &root,
                &[
                    "bench", "-p", "mmvip", "--bench", "hooks", "--bench", "guard", "--bench",
                    "load",
                ],
            )
        }),
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
            eprintln!("usage: cargo xtask <build|package|test|bench|lab [ARGS...]>");
            eprintln!("  build    the mmvip host, the lab and every plugin and test guest");
            eprintln!(
                "  package  build, then the .deb and the .rpm into target/package (needs cargo-deb, cargo-generate-rpm)"
            );
            eprintln!(
                "  test     build and package, then run the whole test suite, lab scenarios and packages included (as root)"
            );
            eprintln!(
                "  bench    build, then run the benchmarks (as root; starts throwaway MariaDB servers)"
            );
            eprintln!(
                "  lab      build, then run the failover lab (`lab up`, `lab down`, `lab run --help`)"
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
