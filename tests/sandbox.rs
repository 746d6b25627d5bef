//! Adversarial guests: the host must bound, contain and refuse them cleanly.

mod common;

use std::time::{Duration, Instant};

use common::{Limits, Site, bounds, check_call, exit_code, run_in_process, stderr};
use mmvip::caps::Grant;
use mmvip::runtime::Verdict;

/// Runs `plugin` through the binary and returns its error, after checking that it was
/// refused as a usage error (exit 2) in one line.
fn refusal(site: &Site, plugin: &str) -> String {
    let output = site.mmvip(&[plugin]);
    let message = stderr(&output);
    assert_eq!(exit_code(&output), 2, "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    message
}

#[test]
fn infinite_loop_is_interrupted_at_the_deadline() {
    let site = Site::new().with_config("[plugins.spin]\ntimeout_ms = 300\n");
    site.install("spin", "guest-spin");
    site.mmvip(&["compile"]);
    let started = Instant::now();
    let output = site.mmvip(&["spin"]);
    let elapsed = started.elapsed();
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("timeout: interrupted at its"),
        "{}",
        stderr(&output)
    );
    assert!(
        elapsed < Duration::from_millis(300 + 700),
        "took {elapsed:?}"
    );
    assert!(
        site.log_text().contains("verdict=timeout"),
        "{}",
        site.log_text()
    );
}

#[test]
fn panic_message_reaches_the_log() {
    let site = Site::new();
    site.install("panics", "guest-panic");
    let output = site.mmvip(&["panics", "a", "b"]);
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    let log = site.log_text();
    assert!(
        log.contains("guest gave up: 2 arguments were too many"),
        "{log}"
    );
    assert!(log.contains("verdict=crash"), "{log}");
}

#[test]
fn memory_hog_is_stopped_at_its_limit() {
    let limit = Limits {
        timeout: Duration::from_secs(10),
        memory_bytes: 16 << 20,
        grants: None,
        on_overrun: None,
    };
    let run = run_in_process("guest-memhog", check_call(&[]), limit, |_| {}).unwrap();
    assert_eq!(run.report.verdict, Verdict::Crash);
    assert_eq!(
        run.report.message,
        "plugin failed: exceeded its 16 MiB memory limit"
    );
}

#[test]
fn memory_limit_is_configurable_per_plugin() {
    let site = Site::new().with_config("[plugins.hog]\nmemory_mib = 8\ntimeout_ms = 5000\n");
    site.install("hog", "guest-memhog");
    let output = site.mmvip(&["hog"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("exceeded its 8 MiB memory limit"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn ungranted_capability_is_refused_at_load() {
    let site = Site::new().with_config("[plugins.sneaky]\ngrants = [\"log\", \"failover-flag\"]\n");
    site.install("sneaky", "guest-sneaky");
    let message = refusal(&site, "sneaky");
    assert!(
        message.contains("imports mmvip:hooks/sql-admin@0.2.1 but is not granted `sql-admin`"),
        "{message}"
    );
    // Granting it is the site's explicit decision, and then it loads.
    let mut limits = bounds(1000);
    limits.grants = Some(
        ["log", "failover-flag", "sql-admin"]
            .iter()
            .map(|g| Grant::from_name(g).unwrap())
            .collect(),
    );
    assert!(run_in_process("guest-sneaky", check_call(&[]), limits, |_| {}).is_ok());
}

#[test]
fn builtin_plugin_with_a_reduced_grant_is_refused() {
    let site = Site::new().with_config("[plugins.health]\ngrants = [\"log\"]\n");
    site.install_builtins();
    let message = refusal(&site, "health");
    assert!(message.contains("not granted `sql-read`"), "{message}");
}

#[test]
fn a_plugin_built_for_contract_0_1_gets_a_clear_error() {
    let site = Site::new();
    site.install("old", "guest-wrong-version");
    let message = refusal(&site, "old");
    assert!(
        message.contains(
            "was built against mmvip:hooks@0.1.0; this mmvip provides mmvip:hooks@0.2.1 (0.2.x)"
        ),
        "{message}"
    );
}

#[test]
fn a_plugin_built_for_an_earlier_0_2_release_still_runs() {
    let site = Site::new().with_config("[plugins.older]\ngrants = [\"log\", \"sql-admin\"]\n");
    site.install("older", "guest-older-minor");
    let output = site.mmvip(&["older"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let log = site.log_text();
    // Its `sql-admin` of 0.2.0 is linked to this host's, which has more.
    assert!(
        log.contains("built for 0.2.0, running; start-replica-io answered: true"),
        "{log}"
    );
}

#[test]
fn plugin_calling_a_function_this_host_lacks_is_refused_at_load() {
    let site = Site::new().with_config("[plugins.newer]\ngrants = [\"log\"]\n");
    site.install("newer", "guest-newer-minor");
    let message = refusal(&site, "newer");
    assert!(
        message.contains("does not provide") && message.contains("mmvip:hooks/log@0.2.9"),
        "{message}"
    );
    // Refused before it ran: its first log call never happened.
    assert!(
        !site.log_text().contains("about to flush"),
        "{}",
        site.log_text()
    );
    // Checking a node with `mmvip plugins` finds it too, without running anything.
    let listing = site.mmvip(&["plugins"]);
    assert_eq!(exit_code(&listing), 2);
    let row = common::stdout(&listing)
        .lines()
        .find(|line| line.starts_with("newer "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(row.contains("does not provide"), "{row}");
}

#[test]
fn non_wasm_file_gets_a_clear_error() {
    let site = Site::new();
    std::fs::write(
        site.path("plugins/health.wasm"),
        "#!/bin/sh\npidof mysqld\n",
    )
    .unwrap();
    let message = refusal(&site, "health");
    assert!(message.contains("is not a WebAssembly file"), "{message}");
}

#[test]
fn core_module_gets_a_clear_error() {
    let site = Site::new();
    // The smallest valid core module: magic and version 1, no sections.
    std::fs::write(site.path("plugins/health.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let message = refusal(&site, "health");
    assert!(
        message.contains("core WebAssembly module, not a component"),
        "{message}"
    );
}

#[test]
fn truncated_component_gets_a_clear_error() {
    let site = Site::new();
    let bytes = std::fs::read(common::wasm("mmvip-plugin-health")).unwrap();
    std::fs::write(site.path("plugins/health.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    let message = refusal(&site, "health");
    assert!(message.contains("is not a valid component"), "{message}");
}

#[test]
fn guest_sees_no_files_environment_or_arguments() {
    let site = Site::new();
    site.install("snoop", "guest-snoop");
    let output = site
        .command(&["snoop", "--password=hunter2"])
        .env("SECRET_TOKEN", "hunter2")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let seen = common::stdout(&output);
    for expected in [
        "file /etc/hostname: denied",
        "file /etc/passwd: denied",
        "file .: denied",
        "file /: denied",
        "env vars: 0",
        "process args: 0",
    ] {
        assert!(seen.contains(expected), "expected `{expected}` in {seen}");
    }
}

#[test]
fn guest_that_imports_sockets_is_refused_before_it_runs() {
    let site = Site::new();
    site.install("netcat", "guest-netcat");
    let message = refusal(&site, "netcat");
    assert!(message.contains("imports wasi:sockets/"), "{message}");
    assert!(
        message.contains("which mmvip never provides; refused"),
        "{message}"
    );
}

#[test]
fn guest_stderr_is_routed_into_the_log() {
    let site = Site::new();
    site.install("snoop", "guest-snoop");
    assert_eq!(exit_code(&site.mmvip(&["snoop"])), 0);
    assert!(
        site.log_text()
            .contains("plugin=snoop level=warn stderr=\"snoop was here\""),
        "{}",
        site.log_text()
    );
}

#[test]
fn corrupt_cache_file_is_rebuilt_not_executed() {
    let site = Site::new();
    site.install_builtins();
    std::fs::write(site.flag_path(), "").unwrap();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let cached: Vec<_> = std::fs::read_dir(site.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), common::BUILTINS.len());
    for file in &cached {
        let mut bytes = std::fs::read(file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(file, bytes).unwrap();
    }
    let output = site.mmvip(&["failover"]);
    assert_eq!(
        exit_code(&output),
        1,
        "flag present must still fail: {}",
        stderr(&output)
    );
    assert!(
        site.log_text().contains("checksum mismatch (corrupt)"),
        "{}",
        site.log_text()
    );
    // Rebuilt: the next run loads it without complaint.
    let before = site.log_text().matches("rebuilding cache file").count();
    site.mmvip(&["failover"]);
    assert_eq!(
        site.log_text().matches("rebuilding cache file").count(),
        before
    );
}

#[test]
fn foreign_cache_file_is_rebuilt_not_executed() {
    let site = Site::new();
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    for entry in std::fs::read_dir(site.path("cache")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"\x7fELF not ours").unwrap();
    }
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("not an mmvip cache file"),
        "{}",
        site.log_text()
    );
}

#[test]
fn replacing_a_plugin_changes_behaviour_on_the_next_run() {
    let site = Site::new();
    site.install("failover", "mmvip-plugin-failover");
    assert_eq!(exit_code(&site.mmvip(&["failover"])), 0);
    site.install("failover", "guest-panic");
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        site.log_text().contains("guest gave up"),
        "{}",
        site.log_text()
    );
}

#[test]
fn cache_is_written_into_a_root_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let mode = std::fs::metadata(site.path("cache"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    for entry in std::fs::read_dir(site.path("cache")).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn world_writable_cache_directory_is_not_used_but_the_hook_runs() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    std::fs::set_permissions(site.path("cache"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("cache not used"),
        "{}",
        site.log_text()
    );
    // `compile` exists to fill the cache: it says it could not.
    let output = site.mmvip(&["compile"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("not cached"),
        "{}",
        stderr(&output)
    );
}
