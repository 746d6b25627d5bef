//! Builds every component crate of the workspace (the cdylibs under `plugins/` and
//! `tests/guests/`) for wasm32-wasip2, so that whatever depends on this crate always
//! has current components: cargo reruns this script when their sources change.
//!
//! The nested cargo uses a target directory of its own (`target/artifacts`): the
//! outer build holds the lock on the usual one.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &[&str] = &["wit", "sdk", "plugins", "tests/guests", "Cargo.lock"];

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("artifacts/ is in the workspace")
        .to_path_buf();
    for source in SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(source).display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let components = component_crates(&cargo, &workspace);
    let target_dir = workspace.join("target/artifacts");
    let mut build = Command::new(&cargo);
    build
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in &components {
        build.args(["-p", package]);
    }
    // What the outer build was told about itself is not for the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("run cargo for the components");
    assert!(
        status.success(),
        "building the components for wasm32-wasip2 failed ({status}); is the target installed? (rustup target add wasm32-wasip2)"
    );

    let dir = target_dir.join("wasm32-wasip2/release");
    let mut code = format!(
        "/// Where the built components are.\npub const DIR: &str = {:?};\n\n/// Every component: its crate name and its file.\npub const COMPONENTS: &[(&str, &str)] = &[\n",
        dir.display().to_string()
    );
    for (package, lib) in &components {
        let file = dir.join(format!("{lib}.wasm"));
        assert!(file.exists(), "{} was not built", file.display());
        code.push_str(&format!(
            "    ({package:?}, {:?}),\n",
            file.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("components.rs"), code).expect("write components.rs");
}

/// `(package, library file stem)` of every cdylib crate in the workspace, from
/// `cargo metadata`.
fn component_crates(cargo: &str, workspace: &Path) -> Vec<(String, String)> {
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_cdylib = target["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|t| t == "cdylib"));
            if is_cdylib {
                let name = package["name"].as_str().unwrap_or_default().to_string();
                let lib = target["name"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('-', "_");
                found.push((name, lib));
            }
        }
    }
    found.sort();
    assert!(
        !found.is_empty(),
        "cargo metadata lists no component crates"
    );
    found
}
