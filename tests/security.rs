//! The attack review's findings, each as the attack: an unprivileged local user
//! (`nobody`) preparing the ground, or a plugin using its grants against the host.
//! Every test failed on the host before the fixes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mariadb::Server;
use common::{Site, exit_code, stderr, stdout};

/// Debian's unprivileged `nobody`.
const NOBODY: u32 = 65534;
/// The hostile guest imports every capability it may use, so it is granted all of
/// them; each test then uses one.
const HOSTILE_GRANTS: &str =
    "grants = [\"log\", \"sql-read\", \"sql-admin\", \"sql-raw\", \"state\"]";

/// Runs a shell command as `nobody`, as the attacker would.
fn as_nobody(script: &str) {
    let status = Command::new("/bin/sh")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .expect("run sh as nobody");
    assert!(status.success(), "as nobody: {script}");
}

/// A world-writable sticky directory inside the site, like /tmp.
fn sticky_dir(site: &Site) -> PathBuf {
    let dir = site.path("tmp");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The site directory itself must be traversable for nobody.
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs mmvip, killing it (by PID) if it has not ended within `limit`: `None` then.
fn run_within(mut command: Command, limit: Duration) -> Option<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmvip");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    files
}

fn failover_site() -> Site {
    let site = Site::new();
    site.install("failover", "mmvip-plugin-failover");
    site
}

// --- Critical: compiled code only from a trusted cache ---------------------------

#[test]
fn a_cache_dir_another_user_created_first_is_never_used_and_never_stops_a_hook() {
    let site = failover_site();
    let tmp = sticky_dir(&site);
    let cache = tmp.join("mmvip-cache");
    // The attacker gets there before root and leaves the door open.
    as_nobody(&format!("mkdir -m 0777 {}", cache.display()));
    let site = site.with_path("cache_dir", &cache);
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        cache_files(&cache).is_empty(),
        "compiled code was written there"
    );
    let log = site.log_text();
    assert!(log.contains("cache not used"), "{log}");
    assert!(log.contains("owned by uid 65534"), "{log}");
}

#[test]
fn a_cache_dir_symlink_another_user_planted_is_not_followed() {
    let site = failover_site();
    let tmp = sticky_dir(&site);
    let theirs = tmp.join("theirs");
    let link = tmp.join("mmvip-cache");
    as_nobody(&format!(
        "mkdir -m 0700 {0} && ln -s {0} {1}",
        theirs.display(),
        link.display()
    ));
    let site = site.with_path("cache_dir", &link);
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("cache not used"),
        "{}",
        site.log_text()
    );
}

#[test]
fn a_cache_file_compiled_from_another_plugin_is_rebuilt_not_run() {
    let site = Site::new();
    site.install("failover", "mmvip-plugin-failover");
    site.install("notify", "mmvip-plugin-notify");
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let cache = site.path("cache");
    let names = |plugin: &str| {
        let wasm = std::fs::read(site.path("plugins").join(format!("{plugin}.wasm"))).unwrap();
        let sha = sha256_hex(&wasm);
        cache_files(&cache)
            .into_iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha))
            .expect("cache file of the plugin")
    };
    let (failover, notify) = (names("failover"), names("notify"));
    // A valid cache file, checksum and all, under another plugin's name.
    std::fs::rename(&notify, &failover).unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("failover"),
        "ran the wrong code: {}",
        stdout(&output)
    );
    assert!(
        site.log_text().contains("compiled from a different plugin"),
        "{}",
        site.log_text()
    );
}

#[test]
fn a_cache_file_compiled_by_another_engine_is_rebuilt_not_run() {
    let site = failover_site();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let file = cache_files(&site.path("cache")).pop().expect("cache file");
    // The trailer: magic (8), the plugin's SHA-256 (32), the engine hash (8), CRC (4).
    let mut bytes = std::fs::read(&file).unwrap();
    let engine_hash = bytes.len() - 4 - 8;
    bytes[engine_hash] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("compiled by a different engine"),
        "{}",
        site.log_text()
    );
    assert_ne!(std::fs::read(&file).unwrap(), bytes, "not rebuilt");
}

#[test]
fn a_cache_file_anyone_else_could_have_written_is_rebuilt() {
    let site = failover_site();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let file = cache_files(&site.path("cache")).pop().expect("cache file");
    std::os::unix::fs::chown(&file, Some(NOBODY), None).unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("owned by uid 65534"),
        "{}",
        site.log_text()
    );
    // Rebuilt in place, by root.
    let rebuilt = cache_files(&site.path("cache")).pop().unwrap();
    assert_eq!(
        std::fs::metadata(&rebuilt).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&rebuilt, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        site.log_text().contains("writable by group or others"),
        "{}",
        site.log_text()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

// --- Medium: nothing blocks a demotion; no file hangs a hook ---------------------

#[test]
fn a_fifo_at_the_log_file_neither_hangs_nor_stops_a_hook() {
    let site = failover_site();
    let fifo = site.path("fifo.log");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let site = site.with_path("log_file", &fifo);
    let output = run_within(site.command(&["failover"]), Duration::from_secs(5))
        .expect("mmvip hung on a FIFO log file");
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not a regular file (a FIFO)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_fifo_at_the_plugin_path_is_refused_at_once() {
    let site = Site::new();
    let fifo = site.path("plugins").join("failover.wasm");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let output = run_within(site.command(&["failover"]), Duration::from_secs(5))
        .expect("mmvip hung on a FIFO plugin");
    assert_eq!(exit_code(&output), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains("a FIFO"), "{}", stderr(&output));
}

#[test]
fn fifos_at_the_cache_file_and_state_paths_neither_hang_nor_stop_a_hook() {
    let site = Site::new().with_config(&format!("[plugins.probe]\n{HOSTILE_GRANTS}\n"));
    site.install("probe", "guest-hostile");
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let cache_file = cache_files(&site.path("cache")).pop().unwrap();
    std::fs::remove_file(&cache_file).unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mkfifoat(rustix::fs::CWD, &cache_file, mode).unwrap();
    std::fs::create_dir_all(site.path("state")).unwrap();
    for name in ["state", "lock"] {
        rustix::fs::mkfifoat(rustix::fs::CWD, site.path("state").join(name), mode).unwrap();
    }
    let output = run_within(
        site.command(&["probe", "state-get", "x"]),
        Duration::from_secs(5),
    )
    .expect("mmvip hung on a FIFO");
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "probe: (none)");
}

#[test]
fn a_state_file_that_is_not_text_is_an_empty_state() {
    let site = Site::new().with_config(&format!("[plugins.probe]\n{HOSTILE_GRANTS}\n"));
    site.install("probe", "guest-hostile");
    std::fs::create_dir_all(site.path("state")).unwrap();
    std::fs::write(site.path("state/state"), b"VI_1\tMASTER\n\xff\n").unwrap();
    let output = site.mmvip(&["probe", "state-get", "VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(site.log_text().contains("not UTF-8"), "{}", site.log_text());
}

#[test]
fn a_temporary_state_file_left_by_a_stopped_hook_is_removed() {
    let site = Site::new().with_config(&format!("[plugins.probe]\n{HOSTILE_GRANTS}\n"));
    site.install("probe", "guest-hostile");
    std::fs::create_dir_all(site.path("state")).unwrap();
    std::fs::write(site.path("state/state.tmp"), "half a state").unwrap();
    let output = site.mmvip(&["probe", "state-get", "x"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!site.path("state/state.tmp").exists());
}

/// A demotion on a real server with everything around it broken: a state file that
/// is not text, and a state directory that cannot be created (its parent is a file,
/// as good as a full disk for `mkdir`). The node still ends read-only.
#[test]
fn demotion_happens_when_the_state_cannot_be_read_or_written() {
    let server = Server::start();
    server.exec("SET GLOBAL read_only = OFF");
    let site = Site::new()
        .with_socket(&server.socket)
        .with_config("\n[instances.VI_1]\nvip = \"192.0.2.10\"\n");
    site.install_builtins();
    std::fs::write(site.path("not-a-dir"), "").unwrap();
    let broken = site.path("not-a-dir/state");
    let site = site.with_path("state_dir", &broken);
    let output = site.mmvip(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(server.read_only());
    assert!(
        site.log_text().contains("running without the node lock"),
        "{}",
        site.log_text()
    );

    server.exec("SET GLOBAL read_only = OFF");
    let state_dir = site.path("state");
    let site = site.with_path("state_dir", &state_dir);
    std::fs::create_dir_all(site.path("state")).unwrap();
    std::fs::write(site.path("state/state"), b"\xff\xfe garbage").unwrap();
    let output = site.mmvip(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(server.read_only());
}

// --- High: a grant means what it says ----------------------------------------------

#[test]
fn sql_admin_cannot_set_arbitrary_text_through_literals() {
    let server = Server::start();
    let site = Site::new()
        .with_socket(&server.socket)
        .with_config(&format!("[plugins.setter]\n{HOSTILE_GRANTS}\n"));
    site.install("setter", "guest-hostile");
    let before = server.value("SELECT @@GLOBAL.init_connect");
    for (name, value) in [
        ("init_connect", "0x44524f50"),
        ("init_connect", "x'44524f50'"),
        ("read_only", "0b1"),
        ("read_only", "b'1'"),
        ("general_log_file", "ON"),
    ] {
        let output = site.mmvip(&["setter", "set", name, value]);
        assert_eq!(
            exit_code(&output),
            1,
            "{name} = {value}: {}",
            stdout(&output)
        );
        assert!(
            stderr(&output).contains("refused by mmvip"),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(server.value("SELECT @@GLOBAL.init_connect"), before);
    let output = site.mmvip(&["setter", "set", "read_only", "ON"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(server.read_only());
}

// --- High: a plugin cannot exhaust the host ---------------------------------------

#[test]
fn long_names_cannot_flood_the_log() {
    let server = Server::start();
    let site = Site::new()
        .with_socket(&server.socket)
        .with_config(&format!(
            "[plugins.flood]\n{HOSTILE_GRANTS}\ntimeout_ms = 20000\n"
        ));
    site.install("flood", "guest-hostile");
    let output = site.mmvip(&["flood", "long-names", "2000"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let size = std::fs::metadata(site.path("mmvip.log")).unwrap().len();
    assert!(size < 2 << 20, "log grew to {size} bytes");
}

#[test]
fn log_calls_stop_at_the_budget() {
    let site = Site::new().with_config(&format!(
        "[plugins.flood]\n{HOSTILE_GRANTS}\ntimeout_ms = 20000\n"
    ));
    site.install("flood", "guest-hostile");
    let output = site.mmvip(&["flood", "log-flood", "5000"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let size = std::fs::metadata(site.path("mmvip.log")).unwrap().len();
    assert!(size < 2 << 20, "log grew to {size} bytes");
    assert!(
        site.log_text().contains("log budget"),
        "budget line missing"
    );
}

#[test]
fn the_state_store_has_bounds() {
    let site = Site::new().with_config(&format!(
        "[plugins.hoard]\n{HOSTILE_GRANTS}\ntimeout_ms = 20000\n"
    ));
    site.install("hoard", "guest-hostile");
    let output = site.mmvip(&["hoard", "state-flood", "100000"]);
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("state refused"),
        "the cause is lost: {}",
        stderr(&output)
    );
    let size = std::fs::metadata(site.path("state/state")).map_or(0, |m| m.len());
    assert!(size < 256 << 10, "state file grew to {size} bytes");
}

#[test]
fn a_raw_result_larger_than_the_plugin_may_hold_is_refused_before_it_is_buffered() {
    let server = Server::start();
    let site = Site::new()
        .with_socket(&server.socket)
        .with_config(&format!(
            "[plugins.hoard]\n{HOSTILE_GRANTS}\nmemory_mib = 16\ntimeout_ms = 20000\n"
        ));
    site.install("hoard", "guest-hostile");
    // 2 GB of result rows.
    let output = site.mmvip(&[
        "hoard",
        "raw",
        "SELECT REPEAT('x', 1000000) FROM mysql.seq_1_to_2000",
    ]);
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("result larger than"),
        "{}",
        stderr(&output)
    );
    // Small results still work.
    let output = site.mmvip(&["hoard", "raw", "SELECT seq FROM mysql.seq_1_to_10"]);
    assert_eq!(
        stdout(&output).trim(),
        "hoard: 10 rows",
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_final_message_is_bounded() {
    let site = Site::new().with_config(&format!("[plugins.loud]\n{HOSTILE_GRANTS}\n"));
    site.install("loud", "guest-hostile");
    let output = site.mmvip(&["loud", "long-message", "1000000"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).len() < 8 << 10,
        "{} bytes",
        stderr(&output).len()
    );
    let longest = site.log_text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8 << 10, "log line of {longest} bytes");
}

// --- Medium: the path rules hold along the whole path ------------------------------

#[test]
fn a_symlinked_directory_others_can_write_in_the_config_path_is_refused() {
    let site = failover_site();
    let open = site.path("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::symlink(site.dir.path(), open.join("etc")).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let via_link = open.join("etc/mmvip.toml");
    let output = Command::new(common::mmvip_binary())
        .arg("--config")
        .arg(&via_link)
        .arg("failover")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("is writable by group or others"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn another_users_symlink_in_a_sticky_directory_is_refused() {
    let site = failover_site();
    let tmp = sticky_dir(&site);
    let link = tmp.join("mmvip.toml");
    as_nobody(&format!(
        "ln -s {} {}",
        site.config_path().display(),
        link.display()
    ));
    let output = Command::new(common::mmvip_binary())
        .arg("--config")
        .arg(&link)
        .arg("failover")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("owned by uid 65534"),
        "{}",
        stderr(&output)
    );
}

// --- Low ---------------------------------------------------------------------------

#[test]
fn a_plugin_name_cannot_forge_a_log_line() {
    let site = Site::new();
    let output =
        site.mmvip(&["x\n2026-01-01T00:00:00.000Z pid=1 plugin=master level=info verdict=pass"]);
    assert_eq!(exit_code(&output), 2);
    assert_eq!(site.log_text().lines().count(), 1, "{}", site.log_text());
}

#[test]
fn command_words_are_refused_as_plugin_names() {
    let site = Site::new().with_config(&format!("[plugins.plugins]\n{HOSTILE_GRANTS}\n"));
    let output = site.mmvip(&["plugins"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("[plugins.plugins]"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_guest_exit_says_so() {
    let site = Site::new().with_config(&format!("[plugins.quitter]\n{HOSTILE_GRANTS}\n"));
    site.install("quitter", "guest-hostile");
    let output = site.mmvip(&["quitter", "exit", "7"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("plugin called exit("),
        "{}",
        stderr(&output)
    );
}
