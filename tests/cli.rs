//! The `mmvip` binary end to end: command-line and configuration errors, config
//! discovery, trust rules, and keepalived's argument conventions.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{Site, exit_code, stderr, stdout};

fn mmvip_raw(args: &[&str], config_env: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(common::mmvip_binary());
    command.args(args).env_remove("MMVIP_CONFIG");
    if let Some(path) = config_env {
        command.env("MMVIP_CONFIG", path);
    }
    command.output().unwrap()
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn help_and_version_exit_zero() {
    let help = mmvip_raw(&["--config", "/nonexistent/mmvip.toml", "--help"], None);
    assert_eq!(exit_code(&help), 0);
    for expected in [
        "Usage: mmvip [OPTIONS] <PLUGIN> [ARGS...]",
        "mmvip master --instance=VI_1",
        "status ",
        "switchover ",
        "Exit status: 0",
        // No config there: the help says so instead of a list.
        "Plugins: cannot tell",
    ] {
        assert!(
            stdout(&help).contains(expected),
            "{expected}: {}",
            stdout(&help)
        );
    }
    let version = mmvip_raw(&["--version"], None);
    assert_eq!(exit_code(&version), 0);
    assert_eq!(
        stdout(&version).trim(),
        format!("mmvip {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_installed_plugins_and_what_each_is_for() {
    let site = Site::new();
    site.install_builtins();
    let help = site.mmvip(&["--help"]);
    assert_eq!(exit_code(&help), 0);
    let text = stdout(&help);
    assert!(text.contains("Plugins in "), "{text}");
    for (name, about) in [
        ("health", "passes while MariaDB answers SELECT 1"),
        ("master", "catch up to what the peer acknowledged"),
        ("backup", "read_only=ON through blockers"),
    ] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(name) && line.contains(about)),
            "{name}: {text}"
        );
    }
}

#[test]
fn no_plugin_is_a_one_line_usage_error() {
    let output = mmvip_raw(&[], None);
    assert_eq!(exit_code(&output), 2);
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    assert!(stderr(&output).starts_with("mmvip: no plugin given"));
}

#[test]
fn unknown_option_is_a_one_line_usage_error() {
    let output = mmvip_raw(&["--frobnicate", "health"], None);
    assert_eq!(exit_code(&output), 2);
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    assert!(stderr(&output).contains("--frobnicate"));
}

#[test]
fn missing_config_names_the_file() {
    let output = mmvip_raw(&["--config", "/nonexistent/mmvip.toml", "health"], None);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("/nonexistent/mmvip.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_env_overrides_default_and_flag_wins_over_env() {
    let site = Site::new();
    site.install_builtins();
    // MMVIP_CONFIG is used when there is no --config.
    let output = mmvip_raw(&["failover"], Some(&site.config_path()));
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    // --config wins over MMVIP_CONFIG.
    let output = mmvip_raw(
        &["--config", "/nonexistent/flag.toml", "failover"],
        Some(&site.config_path()),
    );
    assert_eq!(exit_code(&output), 2);
    assert!(stderr(&output).contains("/nonexistent/flag.toml"));
    // Without either, the default path is read: shown here with an empty /etc/mmvip
    // (a private mount over it, when the machine has one).
    let mut command = Command::new("unshare");
    command.args(["--mount", "--", "/bin/sh", "-c"]).arg(format!(
        "if [ -d /etc/mmvip ]; then mount -t tmpfs mmvip-test /etc/mmvip || exit 99; fi; exec {} failover",
        common::mmvip_binary().display()
    ));
    let output = command
        .env_remove("MMVIP_CONFIG")
        .output()
        .expect("run unshare");
    assert_eq!(exit_code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/etc/mmvip/mmvip.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_config_key_names_file_line_and_key() {
    let site = Site::new().with_config("\n[plugins.health]\ntimeout_ms = 500\n");
    let text = std::fs::read_to_string(site.config_path()).unwrap();
    std::fs::write(
        site.config_path(),
        format!("{text}\n[mariadb2]\nsocket = \"/x\"\n"),
    )
    .unwrap();
    let line = text.lines().count() + 2;
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 2);
    let message = stderr(&output);
    assert!(
        message.contains(&format!("mmvip.toml:{line}:")),
        "{message}"
    );
    assert!(message.contains("mariadb2"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let site = Site::new().with_config("[plugins.health]\ntimeout_ms = \"soon\"\n");
    let line = std::fs::read_to_string(site.config_path())
        .unwrap()
        .lines()
        .count();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 2);
    let message = stderr(&output);
    assert!(
        message.contains(&format!("mmvip.toml:{line}: [plugins.health] timeout_ms")),
        "{message}"
    );
}

#[test]
fn wrong_type_outside_plugins_names_file_line_and_key() {
    let site = Site::new();
    let text = std::fs::read_to_string(site.config_path()).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l == "timeout_ms = 500")
        .expect("the site config sets [mariadb] timeout_ms");
    std::fs::write(
        site.config_path(),
        text.replace("timeout_ms = 500", "timeout_ms = \"soon\""),
    )
    .unwrap();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 2);
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(&format!(
            "mmvip.toml:{line}: [mariadb] timeout_ms: invalid type"
        )),
        "{message}"
    );
}

#[test]
fn plugin_that_is_not_installed_is_a_configuration_error() {
    let site = Site::new();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("plugins/health.wasm"),
        "{}",
        stderr(&output)
    );
    assert!(
        site.log_text().contains("verdict=error"),
        "{}",
        site.log_text()
    );
}

#[test]
fn path_like_plugin_name_is_refused() {
    let site = Site::new();
    let output = site.mmvip(&["../../bin/sh"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("invalid plugin name"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_writable_by_others_is_refused() {
    let site = Site::new();
    site.install_builtins();
    chmod(&site.config_path(), 0o666);
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("refusing config"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn plugin_writable_by_others_is_refused() {
    let site = Site::new();
    site.install_builtins();
    chmod(&site.path("plugins/failover.wasm"), 0o646);
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("refusing plugin"),
        "{}",
        stderr(&output)
    );
    chmod(&site.path("plugins"), 0o777);
    chmod(&site.path("plugins/failover.wasm"), 0o644);
    let output = site.mmvip(&["failover"]);
    assert_eq!(
        exit_code(&output),
        2,
        "a group/other-writable plugin dir must be refused too"
    );
}

#[test]
fn password_file_readable_by_others_is_refused() {
    let site = Site::new();
    site.install_builtins();
    let password = site.path("password");
    std::fs::write(&password, "secret").unwrap();
    chmod(&password, 0o644);
    let text = std::fs::read_to_string(site.config_path())
        .unwrap()
        .replace(
            "timeout_ms = 500\n",
            &format!(
                "timeout_ms = 500\npassword_file = \"{}\"\n",
                password.display()
            ),
        );
    std::fs::write(site.config_path(), text).unwrap();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("readable by group or others"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn failover_check_follows_the_flag_file() {
    let site = Site::new();
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["failover"])), 0);
    std::fs::write(site.flag_path(), "").unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 1);
    assert!(stderr(&output).contains("failover flag present"));
    std::fs::remove_file(site.flag_path()).unwrap();
    assert_eq!(exit_code(&site.mmvip(&["failover"])), 0);
}

#[test]
fn notify_takes_keepalived_arguments() {
    let site = Site::new();
    site.install_builtins();
    let output = site.mmvip(&["notify", "INSTANCE", "VI_1", "BACKUP", "100"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let log = site.log_text();
    assert!(
        log.contains(
            "plugin=notify instance=VI_1 state=BACKUP level=info msg=\"INSTANCE VI_1 BACKUP 100\""
        ),
        "{log}"
    );
}

#[test]
fn malformed_keepalived_arguments_are_a_usage_error() {
    let site = Site::new();
    site.install_builtins();
    let output = site.mmvip(&["notify", "INSTANCE", "VI_1", "BOGUS", "100"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("unknown state `BOGUS`"),
        "{}",
        stderr(&output)
    );
    let output = site.mmvip(&["notify", "GROUP", "G1", "MASTER", "many"]);
    assert_eq!(exit_code(&output), 2);
}

#[test]
fn plugins_lists_kind_timeout_grants_and_purpose_from_each_manifest() {
    let site = Site::new().with_config("[plugins.master]\ntimeout_ms = 9000\n");
    site.install_builtins();
    let output = site.mmvip(&["plugins"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let listing = stdout(&output);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
            .to_string()
    };
    let health = line("health");
    for part in ["check", "800ms", "log,sql-read", "ok", "SELECT 1"] {
        assert!(health.contains(part), "{part} missing: {health}");
    }
    assert!(line("notify").contains("notify"), "{listing}");
    // The site's table wins over the manifest.
    assert!(line("master").contains("9000ms"), "{listing}");
}

#[test]
fn compile_fills_the_cache_once() {
    let site = Site::new();
    site.install_builtins();
    let first = site.mmvip(&["compile"]);
    assert_eq!(exit_code(&first), 0, "{}", stderr(&first));
    assert_eq!(
        stdout(&first).matches(": compiled").count(),
        common::BUILTINS.len(),
        "{}",
        stdout(&first)
    );
    let second = site.mmvip(&["compile"]);
    assert_eq!(
        stdout(&second).matches(": already cached").count(),
        common::BUILTINS.len(),
        "{}",
        stdout(&second)
    );
}

#[test]
fn compile_reports_a_broken_plugin_and_fails() {
    let site = Site::new();
    site.install_builtins();
    std::fs::write(site.path("plugins/broken.wasm"), "nope").unwrap();
    let output = site.mmvip(&["compile"]);
    assert_eq!(exit_code(&output), 2);
    assert!(stderr(&output).contains("broken"), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).matches(": compiled").count(),
        common::BUILTINS.len()
    );
}

/// Whatever words keepalived (or a typo) puts on the command line, `mmvip` ends
/// with a status it documents (0, 1, 2; never a panic's 101 or a signal) and at most
/// one line on stderr.
#[test]
fn any_command_line_ends_in_a_documented_status_and_one_line() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    let site = Site::new().with_config("[plugins.chaos]\ntimeout_ms = 400\n");
    site.install("chaos", "guest-chaos");
    let word = prop_oneof![
        prop::sample::select(
            &[
                "chaos",
                "health",
                "compile",
                "plugins",
                "help",
                "--help",
                "-h",
                "--version",
                "--",
                "-",
                "--config",
                "--timeout-ms",
                "--timeout-ms=0",
                "--timeout-ms=18446744073709551615",
                "INSTANCE",
                "GROUP",
                "VI_1",
                "MASTER",
                "101",
                "ok:fine",
                "fail:no",
                "../../etc/passwd",
                "/nonexistent/mmvip.toml",
                "",
            ][..]
        )
        .prop_map(OsString::from),
        any::<String>().prop_map(|s| OsString::from(s.replace('\0', ""))),
        prop::collection::vec(1..=255u8, 0..12).prop_map(OsString::from_vec),
    ];
    let mut runner = TestRunner::new(common::proptest_config(64));
    let result = runner.run(&prop::collection::vec(word, 0..6), |words| {
        let output = site.command(&[]).args(&words).output().unwrap();
        let told = stderr(&output);
        let status = output.status.code();
        prop_assert!(matches!(status, Some(0..=2)), "{:?}: {}", status, told);
        prop_assert!(told.lines().count() <= 1, "{}", told);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
