//! The packages `cargo xtask package` builds into target/package/ (`cargo xtask test`
//! builds them before the suite runs): the `.deb` is installed on this machine, run
//! from its installed paths against a real `mariadbd`, reinstalled (the upgrade path),
//! removed and purged, and the machine is purged again even when a check fails; the
//! `.rpm`'s file list, modes and scripts are read with `rpm`; the SELinux module is
//! compiled with Debian's policy tools; the README's examples are the shipped ones.
//! Needs root, dpkg, rpm, keepalived, mariadb-server, selinux-policy-dev,
//! checkpolicy and semodule-utils; each missing one fails its test, naming it.

mod common;

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mariadb::Server;
use common::netns::Netns;
use common::{BUILTINS, Site, exit_code, stderr, stdout};

const INSTALLED: &str = "/usr/sbin/mmvip";
const PLUGIN_DIR: &str = "/usr/lib/mmvip/plugins";
const CONFIG: &str = "/etc/mmvip/mmvip.toml";
const CACHE_DIR: &str = "/var/cache/mmvip";
const UNIT: &str = "/usr/lib/systemd/system/mmvip-guard.service";
const UNIT_ENABLED: &str = "/etc/systemd/system/multi-user.target.wants/mmvip-guard.service";
const EXAMPLES: &str = "/usr/share/doc/mmvip/examples";
const MAN_PAGE: &str = "/usr/share/man/man8/mmvip.8.gz";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The one package of `extension` that `cargo xtask package` built.
fn built_package(extension: &str) -> PathBuf {
    let dir = workspace().join("target/package");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the packages first: cargo xtask package (cargo xtask test does)",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one .{extension} in {}, found {found:?}; run cargo xtask package",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is its Debian package installed?): {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// The `.deb` and the `.rpm` install into the same paths: one at a time.
static SYSTEM_PATHS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn is_installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f=${Status}", "mmvip"]);
    output.status.success() && stdout(&output).contains("installed")
}

/// Purges the package when dropped, so a failed check leaves the machine as it was.
struct Installation;

impl Installation {
    fn install(deb: &Path) -> Installation {
        assert!(
            rustix::process::geteuid().is_root(),
            "installing the .deb needs root"
        );
        assert!(
            !is_installed() && !Path::new(INSTALLED).exists(),
            "mmvip is already installed on this machine; this test installs and purges its own"
        );
        let installation = Installation;
        run_ok("dpkg", &["-i", deb.to_str().unwrap()]);
        installation
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "mmvip"]).output();
        // The test enables the guard before removing the package; a failed removal
        // check must not leave that link behind.
        let _ = std::fs::remove_file(UNIT_ENABLED);
    }
}

/// Whether `path` exists as a name, even as a dangling link (`Path::exists` follows).
fn is_there(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// What keepalived's enable_script_security demands of a script: it and every
/// directory above it owned by root and writable by nobody else.
fn assert_root_owned_all_the_way_up(path: &str) {
    let mut current = Some(Path::new(path));
    while let Some(path) = current {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(meta.uid(), 0, "{} is not owned by root", path.display());
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "{} is writable by group or others",
            path.display()
        );
        current = path.parent();
    }
}

fn cached_plugins() -> usize {
    std::fs::read_dir(CACHE_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
        .unwrap_or(0)
}

/// `keepalived -t` on an installed example, in a namespace with the interfaces the
/// examples name (keepalived refuses a config whose interfaces do not exist).
fn keepalived_accepts(config: &str) -> Output {
    let netns = Netns::new();
    netns.add_interface("eth0");
    netns.add_interface("eth1");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &netns.name,
            "keepalived",
            "-t",
            "-f",
            config,
        ],
    )
}

#[test]
fn deb_installs_runs_from_its_paths_upgrades_and_purges_cleanly() {
    let deb = built_package("deb");
    let _one_at_a_time = SYSTEM_PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let installation = Installation::install(&deb);

    // Where keepalived and the trust rules want the files, and how.
    assert_eq!(mode(INSTALLED), 0o755);
    assert_root_owned_all_the_way_up(INSTALLED);
    for name in BUILTINS {
        let plugin = format!("{PLUGIN_DIR}/{name}.wasm");
        assert_eq!(mode(&plugin), 0o644, "{plugin}");
        assert_root_owned_all_the_way_up(&plugin);
    }
    assert_eq!(mode(CONFIG), 0o640, "the config may name a password file");
    assert_root_owned_all_the_way_up(CONFIG);
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "mmvip"]);
    assert!(conffiles.contains(CONFIG), "not a conffile: {conffiles}");
    assert_eq!(mode(UNIT), 0o644);
    assert!(
        !is_there(UNIT_ENABLED),
        "the package must not enable the guard"
    );

    // The postinst compiled every plugin into the cache (root only).
    assert_eq!(mode(CACHE_DIR), 0o700);
    assert_eq!(cached_plugins(), BUILTINS.len(), "postinst did not compile");

    // Man page and completions generated from the clap definitions.
    let mut man = String::new();
    let gz = std::fs::read(MAN_PAGE).expect("man page installed");
    let mut gunzip = Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    std::io::Write::write_all(&mut gunzip.stdin.take().unwrap(), &gz).unwrap();
    gunzip
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut man)
        .unwrap();
    assert!(gunzip.wait().unwrap().success(), "man page is not gzip");
    assert!(
        man.starts_with(".ie") || man.contains(".TH mmvip 8"),
        "{man}"
    );
    for word in [
        "compile",
        "plugins",
        "guard",
        "switchover",
        "status",
        "--config",
        "FILES",
    ] {
        assert!(man.contains(word), "man page lacks {word}");
    }
    for (file, marker) in [
        (
            "/usr/share/bash-completion/completions/mmvip",
            "complete -F",
        ),
        ("/usr/share/zsh/vendor-completions/_mmvip", "#compdef mmvip"),
        (
            "/usr/share/fish/vendor_completions.d/mmvip.fish",
            "complete -c mmvip",
        ),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.contains(marker) && text.contains("switchover"),
            "{file}"
        );
    }

    // The installed binary, its packaged config and plugins.
    let version = run_ok(INSTALLED, &["--version"]);
    assert_eq!(
        version.trim(),
        format!("mmvip {}", env!("CARGO_PKG_VERSION"))
    );
    let plugins = run_ok(INSTALLED, &["plugins"]);
    for name in BUILTINS {
        assert!(
            plugins
                .lines()
                .any(|line| line.starts_with(name) && line.contains(" ok ")),
            "{name} not listed as ok:\n{plugins}"
        );
    }
    let compiled = run_ok(INSTALLED, &["compile"]);
    assert_eq!(
        compiled.matches("already cached").count(),
        BUILTINS.len(),
        "{compiled}"
    );

    // A real hook from the installed paths against a real server.
    let mut server = Server::start();
    let site = Site::new()
        .with_socket(&server.socket)
        .with_path("plugin_dir", Path::new(PLUGIN_DIR))
        .with_path("cache_dir", Path::new(CACHE_DIR));
    let health = |site: &Site| {
        Command::new(INSTALLED)
            .arg("--config")
            .arg(site.config_path())
            .arg("health")
            .env_remove("MMVIP_CONFIG")
            .output()
            .unwrap()
    };
    let output = health(&site);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "health: mariadb answered");

    // doctor from the installed paths: mmvip's own checks pass (paths trusted, every
    // plugin loads, the postinst's cache is fresh); this lone server without binlog or
    // replication fails others, each with its fix, so the exit status is 1.
    let output = Command::new(INSTALLED)
        .arg("--config")
        .arg(site.config_path())
        .args(["doctor", "--json", "--keepalived-conf"])
        .arg(format!("{EXAMPLES}/keepalived-one-vip.conf"))
        .env_remove("MMVIP_CONFIG")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    let checks: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", stdout(&output)));
    let checks = checks.as_array().expect("doctor --json prints an array");
    let passed = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("doctor has no check {name}: {checks:?}"))["ok"]
            == true
    };
    assert!(passed("trust.plugin_dir"));
    assert!(
        passed("cache"),
        "the postinst's cache is not fresh: {checks:?}"
    );
    for name in BUILTINS {
        assert!(passed(&format!("plugin.{name}")), "{name}: {checks:?}");
    }
    assert!(
        checks
            .iter()
            .any(|c| c["ok"] == false && c["fix"].as_str().is_some_and(|f| !f.is_empty())),
        "a lone server passed every check: {checks:?}"
    );
    server.stop();
    assert_eq!(
        exit_code(&health(&site)),
        1,
        "health passed without a server"
    );

    // The failover lab against the installed mmvip (keepalived runs /usr/sbin/mmvip
    // with the plugins in /usr/lib/mmvip/plugins): a planned switch-over, judged by the
    // lab's rules, and the node's log written by the installed binary.
    let lab = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("mmvip-lab"))
        .filter(|lab| lab.exists())
        .expect("mmvip-lab next to the test binaries (cargo xtask test builds it)");
    let reports = tempfile::tempdir().unwrap();
    let report = reports.path().join("lab.json");
    let output = Command::new(&lab)
        .args(["run", "--installed", "--hooks", "mmvip", "--scenarios", "1"])
        .args(["--timers", "fast", "--report"])
        .arg(&report)
        .arg("--logs")
        .arg(reports.path().join("logs"))
        .arg("--keep-logs")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lab with the installed mmvip: {}",
        stderr(&output)
    );
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(rows["scenarios"][0]["verdict"], "pass", "{rows}");
    let saved = |file: &str| {
        let path = reports
            .path()
            .join("logs/1-switchover-mmvip-fast/node2")
            .join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let keepalived_conf = saved("keepalived.conf");
    assert!(
        keepalived_conf.contains(&format!("\"{INSTALLED} --config")),
        "{keepalived_conf}"
    );
    assert!(
        saved("mmvip.toml").contains(&format!("plugin_dir    = \"{PLUGIN_DIR}\"")),
        "{}",
        saved("mmvip.toml")
    );
    let node_log = saved("mmvip.log");
    assert!(
        node_log.contains("plugin=master") && node_log.contains("verdict=pass"),
        "{node_log}"
    );

    // The shipped keepalived examples, against the installed script.
    for example in ["keepalived-one-vip.conf", "keepalived-two-vips.conf"] {
        let path = format!("{EXAMPLES}/{example}");
        let output = keepalived_accepts(&path);
        assert!(
            output.status.success(),
            "keepalived -t {path}: {}{}",
            stdout(&output),
            stderr(&output)
        );
    }
    // keepalived refuses a script that anyone may change: the check above saw the
    // installed file, not just the text.
    std::fs::set_permissions(INSTALLED, std::fs::Permissions::from_mode(0o757)).unwrap();
    let output = keepalived_accepts(&format!("{EXAMPLES}/keepalived-one-vip.conf"));
    std::fs::set_permissions(INSTALLED, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        !output.status.success(),
        "keepalived accepted a world-writable script"
    );

    // The my.cnf snippets: mariadbd parses them and reads what they say.
    for node in [1, 2] {
        let path = format!("{EXAMPLES}/mariadb-node{node}.cnf");
        let help = run_ok(
            "/usr/sbin/mariadbd",
            &[
                &format!("--defaults-file={path}"),
                "--user=root",
                "--help",
                "--verbose",
            ],
        );
        // The table of values ends the help; the option descriptions come before it.
        let value = |name: &str| {
            help.lines()
                .rev()
                .find_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next() == Some(name)).then(|| words.next().unwrap_or("").to_string())
                })
                .unwrap_or_else(|| panic!("{name} not in mariadbd --help for {path}"))
        };
        assert_eq!(value("server-id"), node.to_string(), "{path}");
        assert_eq!(value("auto-increment-offset"), node.to_string(), "{path}");
        assert_eq!(value("gtid-domain-id"), node.to_string(), "{path}");
        assert_eq!(value("auto-increment-increment"), "2", "{path}");
        for on in ["read-only", "gtid-strict-mode", "log-slave-updates"] {
            assert_eq!(value(on), "TRUE", "{on} in {path}");
        }
    }

    // Upgrade path (reinstalling runs the postinst again): a site's edit of the
    // conffile survives, the old cache goes and the plugins are compiled anew.
    let edited = format!(
        "{}\n# edited by the site\n",
        std::fs::read_to_string(CONFIG).unwrap()
    );
    std::fs::write(CONFIG, &edited).unwrap();
    std::fs::write(format!("{CACHE_DIR}/stale.cwasm"), b"old host").unwrap();
    run_ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert!(!Path::new(&format!("{CACHE_DIR}/stale.cwasm")).exists());
    assert_eq!(cached_plugins(), BUILTINS.len());

    // Removal: the guard is disabled, the binary and the cache go, the conffile stays.
    run_ok("systemctl", &["enable", "mmvip-guard.service"]);
    assert!(is_there(UNIT_ENABLED));
    run_ok("dpkg", &["-r", "mmvip"]);
    assert!(!is_there(UNIT_ENABLED), "removal left the guard enabled");
    assert!(!Path::new(INSTALLED).exists());
    assert!(!Path::new(CACHE_DIR).exists(), "removal left the cache");
    assert!(!Path::new(PLUGIN_DIR).exists());
    assert!(Path::new(CONFIG).exists(), "removal dropped the conffile");

    // Purge: nothing of mmvip is left.
    run_ok("dpkg", &["--purge", "mmvip"]);
    assert!(!is_installed());
    for path in [
        CONFIG,
        "/etc/mmvip",
        "/var/log/mmvip.log",
        "/usr/share/doc/mmvip",
    ] {
        assert!(!Path::new(path).exists(), "purge left {path}");
    }
    drop(installation);
}

/// Erases the `.rpm` (from its own database) when dropped, and what an erase leaves of
/// a test's edits, so a failed check leaves the machine as it was.
struct RpmInstallation {
    database: tempfile::TempDir,
}

impl RpmInstallation {
    fn database(&self) -> &str {
        self.database.path().to_str().unwrap()
    }
}

impl Drop for RpmInstallation {
    fn drop(&mut self) {
        let _ = Command::new("rpm")
            .args(["-e", "--dbpath", self.database(), "mmvip"])
            .output();
        let _ = std::fs::remove_file(UNIT_ENABLED);
        let _ = std::fs::remove_file(format!("{CONFIG}.rpmsave"));
        // Empty directories only: what a broken %postun would leave.
        for dir in [
            PLUGIN_DIR,
            "/usr/lib/mmvip",
            "/usr/share/doc/mmvip/examples",
            "/usr/share/doc/mmvip/selinux",
            "/usr/share/doc/mmvip",
            "/etc/mmvip",
        ] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The `.rpm` installed for real with Debian's rpm (a database of its own; `--nodeps`:
/// Debian's rpm database provides no libc), so its scriptlets run: compile after
/// install and upgrade, the guard disabled and the cache and directories gone on erase.
#[test]
fn rpm_installs_compiles_upgrades_and_erases_cleanly() {
    let rpm = built_package("rpm");
    let rpm = rpm.to_str().unwrap();
    let _one_at_a_time = SYSTEM_PATHS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        rustix::process::geteuid().is_root(),
        "installing the .rpm needs root"
    );
    assert!(
        !Path::new(INSTALLED).exists() && !Path::new("/etc/mmvip").exists(),
        "mmvip is already installed on this machine; this test installs and erases its own"
    );
    let installation = RpmInstallation {
        database: tempfile::tempdir().unwrap(),
    };
    let db = installation.database().to_string();
    run_ok("rpm", &["-i", "--nodeps", "--dbpath", &db, rpm]);
    assert_eq!(mode(INSTALLED), 0o755);
    assert_root_owned_all_the_way_up(INSTALLED);
    assert_eq!(mode(CONFIG), 0o640);
    assert_eq!(mode(CACHE_DIR), 0o700);
    assert_eq!(cached_plugins(), BUILTINS.len(), "%post did not compile");
    let plugins = run_ok(INSTALLED, &["plugins"]);
    assert_eq!(plugins.matches(" ok ").count(), BUILTINS.len(), "{plugins}");

    // Upgrade (the same package again): the edited config stays, the cache is renewed.
    let edited = format!(
        "{}\n# edited by the site\n",
        std::fs::read_to_string(CONFIG).unwrap()
    );
    std::fs::write(CONFIG, &edited).unwrap();
    std::fs::write(format!("{CACHE_DIR}/stale.cwasm"), b"old host").unwrap();
    run_ok(
        "rpm",
        &["-U", "--replacepkgs", "--nodeps", "--dbpath", &db, rpm],
    );
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert!(!Path::new(&format!("{CACHE_DIR}/stale.cwasm")).exists());
    assert_eq!(cached_plugins(), BUILTINS.len());
    assert!(
        Path::new(INSTALLED).exists(),
        "the upgrade's %postun removed files"
    );

    // Erase: the guard disabled, files, cache and directories gone, the edit kept.
    run_ok("systemctl", &["enable", "mmvip-guard.service"]);
    run_ok("rpm", &["-e", "--dbpath", &db, "mmvip"]);
    assert!(!is_there(UNIT_ENABLED), "erase left the guard enabled");
    for path in [
        INSTALLED,
        CACHE_DIR,
        PLUGIN_DIR,
        "/usr/lib/mmvip",
        "/usr/share/doc/mmvip",
    ] {
        assert!(!is_there(path), "erase left {path}");
    }
    assert_eq!(
        std::fs::read_to_string(format!("{CONFIG}.rpmsave")).unwrap(),
        edited,
        "the edited config is kept as .rpmsave"
    );
    drop(installation);
    assert!(!Path::new("/etc/mmvip").exists());
}

/// `rpm -qp --dump`: path size mtime digest mode owner group isconfig isdoc rdev symlink.
#[test]
fn rpm_lists_its_files_with_modes_and_runs_compile_after_install() {
    let rpm = built_package("rpm");
    let rpm = rpm.to_str().unwrap();
    let dump = run_ok("rpm", &["-qp", "--dump", rpm]);
    let entry = |path: &str| -> Vec<String> {
        dump.lines()
            .find(|line| line.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in the rpm:\n{dump}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let check = |path: &str, mode: &str, config: &str| {
        let fields = entry(path);
        assert_eq!(fields[4], mode, "mode of {path}");
        assert_eq!(
            (fields[5].as_str(), fields[6].as_str()),
            ("root", "root"),
            "{path}"
        );
        assert_eq!(fields[7], config, "isconfig of {path}");
    };
    check(INSTALLED, "0100755", "0");
    for name in BUILTINS {
        check(&format!("{PLUGIN_DIR}/{name}.wasm"), "0100644", "0");
    }
    check(CONFIG, "0100640", "1");
    check(UNIT, "0100644", "0");
    check(MAN_PAGE, "0100644", "0");
    for file in [
        "/usr/share/bash-completion/completions/mmvip",
        "/usr/share/zsh/site-functions/_mmvip",
        "/usr/share/fish/vendor_completions.d/mmvip.fish",
        "/usr/share/doc/mmvip/examples/keepalived-one-vip.conf",
        "/usr/share/doc/mmvip/examples/keepalived-two-vips.conf",
        "/usr/share/doc/mmvip/examples/mariadb-node1.cnf",
        "/usr/share/doc/mmvip/examples/mariadb-node2.cnf",
        "/usr/share/doc/mmvip/selinux/mmvip.te",
        "/usr/share/doc/mmvip/selinux/mmvip.fc",
    ] {
        check(file, "0100644", "0");
    }
    // %config(noreplace): a site's edit survives an upgrade.
    let config_flags = run_ok(
        "rpm",
        &["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm],
    );
    assert!(
        config_flags
            .lines()
            .any(|line| line.starts_with(CONFIG) && line.contains('n')),
        "{CONFIG} is not noreplace:\n{config_flags}"
    );

    let scripts = run_ok("rpm", &["-qp", "--scripts", rpm]);
    let section = |name: &str| -> String {
        let start = scripts
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{scripts}"));
        let rest = &scripts[start + name.len()..];
        rest[..rest.find("scriptlet (using").unwrap_or(rest.len())].to_string()
    };
    let post = section("postinstall scriptlet");
    assert!(post.contains("/usr/sbin/mmvip compile"), "{post}");
    assert!(post.contains("rm -rf /var/cache/mmvip"), "{post}");
    let preun = section("preuninstall scriptlet");
    assert!(
        preun.contains("disable --now mmvip-guard.service"),
        "{preun}"
    );
    let postun = section("postuninstall scriptlet");
    assert!(postun.contains("rm -rf /var/cache/mmvip"), "{postun}");
    assert!(postun.contains("rmdir /usr/lib/mmvip/plugins"), "{postun}");
}

#[test]
fn selinux_module_compiles_with_debians_policy_tools() {
    let makefile = Path::new("/usr/share/selinux/devel/Makefile");
    assert!(
        makefile.exists(),
        "{} missing: apt-get install selinux-policy-dev checkpolicy semodule-utils",
        makefile.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for file in ["mmvip.te", "mmvip.fc", "mmvip.if"] {
        std::fs::copy(
            workspace().join("dist/selinux").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    let output = Command::new("make")
        .args(["-f", makefile.to_str().unwrap(), "mmvip.pp"])
        .current_dir(dir.path())
        .output()
        .expect("run make (apt-get install make)");
    assert!(
        output.status.success(),
        "the SELinux module does not compile: {}{}",
        stdout(&output),
        stderr(&output)
    );
    let package = dir.path().join("mmvip.pp");
    assert!(std::fs::metadata(&package).unwrap().len() > 0);

    // The file contexts cover every path the packages install or mmvip creates.
    let contexts = std::fs::read_to_string(workspace().join("dist/selinux/mmvip.fc")).unwrap();
    for (path, context) in [
        ("/usr/sbin/mmvip", "mmvip_exec_t"),
        ("/usr/lib/mmvip(/.*)?", "mmvip_plugin_t"),
        ("/etc/mmvip(/.*)?", "mmvip_conf_t"),
        ("/var/cache/mmvip(/.*)?", "mmvip_cache_t"),
        ("/run/mmvip(/.*)?", "mmvip_runtime_t"),
        ("/var/log/mmvip\\.log.*", "mmvip_log_t"),
    ] {
        assert!(
            contexts
                .lines()
                .any(|line| line.split_whitespace().next() == Some(path) && line.contains(context)),
            "{path} is not labelled {context} in mmvip.fc"
        );
    }
}

/// The README's text of `what` (the fenced block after heading `heading`).
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let after = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading}"))..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

#[test]
fn readme_shows_the_shipped_config_and_keepalived_example() {
    let shipped_config = std::fs::read_to_string(workspace().join("dist/mmvip.toml")).unwrap();
    assert!(
        shipped_config.ends_with(&readme_block("### Configuration")),
        "dist/mmvip.toml and README's Configuration block differ"
    );
    let example =
        std::fs::read_to_string(workspace().join("dist/examples/keepalived-one-vip.conf")).unwrap();
    let without_header: String = example
        .lines()
        .skip_while(|line| line.starts_with('!') || line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        without_header,
        readme_block("### keepalived (the seed's single-VIP setup)"),
        "dist/examples/keepalived-one-vip.conf and README's keepalived block differ"
    );
}
