//! `mmvip doctor` through the real binary: a correctly configured pair of real
//! `mariadbd` passes every check; each server check fails on a real server configured
//! wrong for it; keepalived's config is read from files (with `include`) and given to
//! the real `keepalived -t`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mariadb::{PEER_PASSWORD, PEER_USER, Pair, Server, replicating};
use common::{Site, exit_code, mmvip_binary, stderr, stdout};
use mysql::prelude::Queryable;
use serde_json::Value;

const VIP: &str = "10.98.0.1";
const VIP2: &str = "10.98.0.2";

/// A veth pair in this namespace, named for this test: `keepalived -t` refuses an
/// interface that does not exist, and a loopback one. It carries no address and no
/// traffic; deleted (by name) when dropped.
struct Link(String);

impl Link {
    fn new() -> Link {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("mmvd{}x{n}", std::process::id() % 1_000_000);
        let output = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name"])
            .arg(format!("{name}p"))
            .output()
            .expect("run ip (apt-get install iproute2)");
        assert!(
            output.status.success(),
            "ip link add {name}: {} (these tests run as root)",
            String::from_utf8_lossy(&output.stderr)
        );
        Link(name)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// keepalived's config for one node as the README shows it, the instance in an
/// included file (`include DIR/*.conf`); returns the main file.
fn write_keepalived(site: &Site, interface: &str, instances: &[(&str, &str)]) -> PathBuf {
    let mmvip = mmvip_binary();
    let mmvip = format!(
        "{} --config {}",
        mmvip.display(),
        site.config_path().display()
    );
    let dir = site.path("keepalived.d");
    std::fs::create_dir_all(&dir).unwrap();
    let main = site.path("keepalived.conf");
    std::fs::write(
        &main,
        format!(
            "global_defs {{\n    enable_script_security\n    script_user root\n}}\n\nvrrp_script chk_mysql {{\n    script \"{mmvip} health\"\n    interval 1\n    timeout 3\n    fall 3\n    weight 2\n}}\n\nvrrp_script chk_failover {{\n    script \"{mmvip} failover\"\n    interval 1\n    weight -4\n}}\n\ninclude {}/*.conf\n",
            dir.display()
        ),
    )
    .unwrap();
    for (index, (name, vip)) in instances.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{name}.conf")),
            format!(
                "vrrp_instance {name}\n{{\n    state BACKUP\n    interface {interface}\n    virtual_router_id {}\n    priority 101\n    advert_int 1\n    unicast_src_ip 10.98.1.1\n    unicast_peer {{\n        10.98.1.2\n    }}\n    virtual_ipaddress {{\n        {vip}/32 dev {interface}\n    }}\n    track_script {{\n        chk_mysql\n        chk_failover\n    }}\n    notify_master \"{mmvip} master --instance={name}\"\n    notify_backup \"{mmvip} backup --instance={name}\"\n    notify_fault  \"{mmvip} fault --instance={name}\"\n    notify_stop   \"{mmvip} stop --instance={name}\"\n    notify        \"{mmvip} notify\"\n}}\n",
                51 + index
            ),
        )
        .unwrap();
    }
    main
}

/// What the test harness's servers leave at their defaults and doctor wants for a
/// failover (the harness keeps them off to stay fast).
fn production_settings(pair: &Pair) {
    for node in [&pair.node1, &pair.node2] {
        node.exec("STOP SLAVE; SET GLOBAL sync_binlog = 1, slave_net_timeout = 10; START SLAVE");
    }
    pair.wait_converged();
}

/// A node's site: its server's socket, `[instances.VI_1]`, `[peer]` at the other
/// server (when given), the built-in plugins installed and compiled, and keepalived's
/// config beside it.
struct Node {
    site: Site,
    keepalived_conf: PathBuf,
}

impl Node {
    fn new(server: &Server, peer: Option<&Server>, link: &Link) -> Node {
        Node::with_mariadb(server, peer, link, "")
    }

    /// With more `[mariadb]` keys (`user`, `password_file`).
    fn with_mariadb(server: &Server, peer: Option<&Server>, link: &Link, mariadb: &str) -> Node {
        let mut config = format!("{mariadb}[instances.VI_1]\nvip = \"{VIP}\"\nrole = \"rw\"\n");
        let site = Site::new().with_socket(&server.socket);
        if let Some(peer) = peer {
            let password_file = site.path("peer-password");
            write_secret(&password_file, PEER_PASSWORD);
            config.push_str(&format!(
                "[peer]\naddresses = [\"127.0.0.1:{}\"]\nuser = \"{PEER_USER}\"\npassword_file = \"{}\"\n",
                peer.replication.expect("replicating peer").port,
                password_file.display()
            ));
        }
        let site = site.with_config(&config);
        site.install_builtins();
        assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
        let keepalived_conf = write_keepalived(&site, &link.0, &[("VI_1", VIP)]);
        Node {
            site,
            keepalived_conf,
        }
    }

    /// `mmvip doctor --json`: the exit code and the checks.
    fn doctor(&self, extra: &[&str]) -> (i32, Vec<Value>) {
        doctor_json(&self.site, &self.keepalived_conf, extra)
    }
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, secret).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn doctor_json(site: &Site, keepalived_conf: &Path, extra: &[&str]) -> (i32, Vec<Value>) {
    let conf = keepalived_conf.display().to_string();
    let mut args = vec!["doctor", "--json", "--keepalived-conf", &conf];
    args.extend_from_slice(extra);
    let output = site.mmvip(&args);
    let checks: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {}\n{}",
            stdout(&output),
            stderr(&output)
        )
    });
    let Value::Array(checks) = checks else {
        panic!("doctor --json is not an array: {checks}")
    };
    (exit_code(&output), checks)
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {}", listing(checks)))
}

fn listing(checks: &[Value]) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {} | {}",
                if c["ok"] == true { "✓" } else { "✗" },
                c["check"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("?"),
                c["fix"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `name` passed, and its detail says each of `words`.
fn assert_passed(checks: &[Value], name: &str, words: &[&str]) {
    let check = find(checks, name);
    assert_eq!(check["ok"], true, "{name} failed:\n{}", listing(checks));
    let detail = check["detail"].as_str().unwrap();
    for word in words {
        assert!(detail.contains(word), "{name}: `{word}` not in `{detail}`");
    }
}

/// `name` failed, and its detail and fix together say each of `words`.
fn assert_failed(checks: &[Value], name: &str, words: &[&str]) {
    let check = find(checks, name);
    assert_eq!(check["ok"], false, "{name} passed:\n{}", listing(checks));
    let text = format!(
        "{} {}",
        check["detail"].as_str().unwrap(),
        check["fix"].as_str().expect("a failed check has a fix")
    );
    for word in words {
        assert!(text.contains(word), "{name}: `{word}` not in `{text}`");
    }
}

/// Waits until `condition` holds (replication catching up, a thread stopping).
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_correctly_configured_pair_passes_every_check_and_exits_0() {
    let link = Link::new();
    let pair = Pair::start();
    production_settings(&pair);
    pair.node1.exec("SET GLOBAL read_only = OFF");
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('written on the writer')");
    pair.wait_converged();
    let node1 = Node::new(&pair.node1, Some(&pair.node2), &link);
    let node2 = Node::new(&pair.node2, Some(&pair.node1), &link);

    let (code, checks) = node1.doctor(&["--peer"]);
    assert!(
        checks.iter().all(|c| c["ok"] == true),
        "{}",
        listing(&checks)
    );
    assert_eq!(code, 0, "{}", listing(&checks));
    // Every group of checks ran (a check that silently went missing would pass).
    for name in [
        "config",
        "trust.plugin_dir",
        "trust.peer_password_file",
        "plugin.master",
        "cache",
        "mariadb",
        "log_bin",
        "log_slave_updates",
        "gtid_strict_mode",
        "sync_binlog",
        "innodb_flush_log_at_trx_commit",
        "slave_net_timeout",
        "read_only_at_start",
        "replication",
        "lag",
        "master_use_gtid",
        "connect_retry",
        "replicated_by_peer",
        "peer",
        "peer.gtid_strict_mode",
        "writers",
        "server_id",
        "gtid_domain_id",
        "auto_increment",
        "errant_gtids",
        "accounts.mmvip",
        "accounts.bypass_read_only",
        "keepalived.conf",
        "keepalived.config_test",
        "keepalived.enable_script_security",
        "keepalived.script_user",
        "keepalived.track_blocks",
        "keepalived.script_timeouts",
        "keepalived.VI_1.vip",
        "keepalived.VI_1.unicast_peer",
        "keepalived.VI_1.notify",
        "keepalived.VI_1.tracking",
    ] {
        find(&checks, name);
    }
    assert_passed(&checks, "keepalived.conf", &["1 included file"]);
    assert_passed(
        &checks,
        "replicated_by_peer",
        &["has its domain 1 up to 1-1-"],
    );
    assert_passed(&checks, "writers", &["this node is the writer"]);
    // The JSON shape tools rely on: exactly these keys, fix null when ok.
    for check in &checks {
        let object = check.as_object().expect("each check is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["check", "detail", "fix", "ok"], "{check}");
        assert!(check["check"].is_string() && check["detail"].is_string());
        assert!(check["fix"].is_null(), "{check}");
    }

    let (code, checks) = node2.doctor(&[]);
    assert_eq!(code, 0, "{}", listing(&checks));
    assert!(
        !checks.iter().any(|c| c["check"] == "peer.gtid_strict_mode"),
        "without --peer the peer's settings are not checked"
    );
    assert_passed(&checks, "writers", &["the peer is the writer"]);

    // The text form: one ✓ line per check, in the same order.
    let conf = node2.keepalived_conf.display().to_string();
    let output = node2
        .site
        .mmvip(&["doctor", "--keepalived-conf", conf.as_str()]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), checks.len(), "{text}");
    for (line, check) in lines.iter().zip(&checks) {
        assert_eq!(
            *line,
            format!("✓ {}", check["detail"].as_str().unwrap()),
            "{text}"
        );
    }
}

#[test]
fn settings_set_wrong_at_runtime_each_fail_with_their_fix() {
    let link = Link::new();
    let pair = Pair::start();
    production_settings(&pair);
    // This node: durability, strict mode, timers, the replication connection.
    pair.node1.exec(
        "STOP SLAVE; SET GLOBAL gtid_strict_mode = OFF, sync_binlog = 0, innodb_flush_log_at_trx_commit = 2, slave_net_timeout = 60, auto_increment_offset = 2, read_only = OFF, rpl_semi_sync_master_wait_no_slave = OFF, rpl_semi_sync_master_enabled = ON; CHANGE MASTER TO master_use_gtid = current_pos, master_connect_retry = 60; START SLAVE",
    );
    wait_until("node1 replicating again", || replicating(&pair.node1));
    // The peer: this node's server_id and domain, and writable too (after node1's IO
    // thread connected: it refuses a master with its own server_id).
    pair.node2
        .exec("SET GLOBAL server_id = 1, gtid_domain_id = 1, read_only = OFF");
    let node1 = Node::new(&pair.node1, Some(&pair.node2), &link);

    let (code, checks) = node1.doctor(&[]);
    assert_eq!(code, 1, "{}", listing(&checks));
    assert_failed(
        &checks,
        "gtid_strict_mode",
        &["is OFF", "gtid_strict_mode = ON"],
    );
    assert_failed(
        &checks,
        "sync_binlog",
        &["is 0", "sync_binlog = 1", "the OS decides", "same GTIDs"],
    );
    assert_failed(
        &checks,
        "innodb_flush_log_at_trx_commit",
        &[
            "is 2",
            "innodb_flush_log_at_trx_commit = 1",
            "host crash or power loss",
        ],
    );
    assert_failed(
        &checks,
        "slave_net_timeout",
        &["is 60 s", "slave_net_timeout = 10"],
    );
    // Semi-sync on, and the config does not let mmvip restart it.
    assert_failed(
        &checks,
        "settable_variables.semi_sync",
        &[
            "semi-sync master is on",
            "add \"rpl_semi_sync_master_enabled\" to [mariadb] settable_variables",
        ],
    );
    assert_failed(
        &checks,
        "master_use_gtid",
        &[
            "master_use_gtid=current_pos",
            "slave_pos",
            "1236",
            "own binary log",
        ],
    );
    assert_failed(
        &checks,
        "connect_retry",
        &["every 60 s", "master_connect_retry = 10"],
    );
    assert_failed(
        &checks,
        "auto_increment",
        &[
            "2/2 here, 2/2 on the peer",
            "auto_increment_offset = 1 on one",
        ],
    );
    assert_failed(&checks, "server_id", &["both nodes have server_id 1"]);
    assert_failed(
        &checks,
        "gtid_domain_id",
        &["both nodes have gtid_domain_id 1"],
    );
    assert_failed(&checks, "errant_gtids", &["cannot be told from lag"]);
    assert_failed(&checks, "writers", &["both nodes are writable"]);
    // What is still right stays right.
    assert_passed(&checks, "log_bin", &["ON"]);
    assert_passed(&checks, "replication", &["running"]);
    assert_passed(&checks, "read_only_at_start", &["--read-only=ON"]);

    // --peer: the peer's own settings, as its unprivileged account reads them.
    pair.node2.exec("SET GLOBAL sync_binlog = 0");
    let (_, checks) = node1.doctor(&["--peer"]);
    assert_failed(
        &checks,
        "peer.sync_binlog",
        &["the peer's sync_binlog is 0"],
    );
    assert_passed(
        &checks,
        "peer.gtid_strict_mode",
        &["the peer's gtid_strict_mode is ON"],
    );
}

#[test]
fn a_server_started_without_binlog_or_read_only_fails_those_checks() {
    let link = Link::new();
    let server = Server::start();
    // read_only ON now is not what it starts with.
    server.exec("SET GLOBAL read_only = ON");
    let node = Node::new(&server, None, &link);
    let (code, checks) = node.doctor(&[]);
    assert_eq!(code, 1);
    assert_failed(&checks, "log_bin", &["log_bin is OFF", "log_bin = "]);
    assert_failed(
        &checks,
        "log_slave_updates",
        &["log_slave_updates is OFF", "log_slave_updates = ON"],
    );
    assert_failed(
        &checks,
        "read_only_at_start",
        &[
            "not set in no option files (--no-defaults), nor on the command line",
            "read_only = ON under [mariadbd]",
        ],
    );
    assert_failed(
        &checks,
        "replication",
        &["replicates from nobody", "master_use_gtid = slave_pos"],
    );
    assert_failed(&checks, "replicated_by_peer", &["log_bin is OFF"]);
    assert_failed(&checks, "peer", &["no [peer]"]);
}

#[test]
fn read_only_at_start_is_read_from_the_option_files_the_server_reads() {
    let dir = common::private_tempdir();
    let file = dir.path().join("my.cnf");
    std::fs::write(
        &file,
        "[mysqld]\nread_only = OFF\n[mariadbd]\nread-only = ON\n",
    )
    .unwrap();
    let link = Link::new();
    let mut server = Server::start_with_defaults_file(&file);
    let node = Node::new(&server, None, &link);
    let (_, checks) = node.doctor(&[]);
    assert_passed(
        &checks,
        "read_only_at_start",
        &["--read-only=ON", &file.display().to_string()],
    );

    // The last one wins, in the order mariadbd reads its groups; the live value does
    // not count.
    std::fs::write(
        &file,
        "[mariadbd]\nread_only = ON\n[server]\nskip-read-only\n",
    )
    .unwrap();
    server.restart();
    server.exec("SET GLOBAL read_only = ON");
    let (_, checks) = node.doctor(&[]);
    assert_failed(
        &checks,
        "read_only_at_start",
        &[
            "OFF at start (--skip-read-only in",
            "read_only = ON under [mariadbd] in",
        ],
    );
}

#[test]
fn replication_stopped_lagging_or_with_errant_gtids_fails() {
    let link = Link::new();
    let pair = Pair::start();
    production_settings(&pair);
    let node1 = Node::new(&pair.node1, Some(&pair.node2), &link);
    let node2 = Node::new(&pair.node2, Some(&pair.node1), &link);

    // Lag: node2's SQL thread waits on a table lock at an event an hour old.
    let mut holder = pair.node2.root();
    holder.query_drop("LOCK TABLES app.t WRITE").unwrap();
    pair.node1.exec(
        "SET timestamp = UNIX_TIMESTAMP() - 3600; INSERT INTO app.t (note) VALUES ('an hour ago')",
    );
    wait_until("node2 lagging", || {
        let mut conn = pair.node2.root();
        let row: mysql::Row = conn.query_first("SHOW SLAVE STATUS").unwrap().unwrap();
        let lag: Option<u64> = row.get("Seconds_Behind_Master").flatten();
        lag.is_some_and(|lag| lag > 1000)
    });
    let (code, checks) = node2.doctor(&[]);
    assert_eq!(code, 1);
    assert_failed(&checks, "lag", &["s behind", "SHOW PROCESSLIST"]);
    assert_passed(&checks, "replication", &["running"]);
    // node1's last transaction has not reached node2's binary log state yet.
    let (_, checks) = node1.doctor(&[]);
    assert_failed(&checks, "replicated_by_peer", &["only up to"]);
    holder.query_drop("UNLOCK TABLES").unwrap();
    pair.wait_converged();
    let (code, checks) = node2.doctor(&[]);
    assert_passed(&checks, "lag", &["0 s behind"]);
    assert_eq!(code, 0, "{}", listing(&checks));

    // Replication stopped on node1, and node2 writes in node1's domain meanwhile: an
    // errant transaction, on either side's doctor.
    pair.node1.exec("STOP SLAVE");
    wait_until("node2's Binlog Dump gone", || {
        pair.node2
            .value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .as_deref()
            == Some("0")
    });
    pair.node2.exec(
        "SET SESSION gtid_domain_id = 1; INSERT INTO app.t (note) VALUES ('errant'); SET SESSION gtid_domain_id = 2",
    );
    // Its GTID: the domain's next sequence number, from server 2.
    let errant = pair
        .node2
        .value("SELECT @@GLOBAL.gtid_binlog_state")
        .unwrap()
        .split(',')
        .find(|g| g.starts_with("1-2-"))
        .expect("node2 wrote in domain 1")
        .to_string();
    let (code, checks) = node1.doctor(&[]);
    assert_eq!(code, 1);
    assert_failed(
        &checks,
        "replication",
        &["IO thread No, SQL thread No", "START SLAVE"],
    );
    assert_failed(
        &checks,
        "errant_gtids",
        &[&format!(
            "the peer has {errant} in this node's domain 1, which this node lacks"
        )],
    );
    let (_, checks) = node2.doctor(&[]);
    assert_failed(&checks, "replicated_by_peer", &["no Binlog Dump thread"]);
    assert_failed(
        &checks,
        "errant_gtids",
        &[&format!(
            "this node has {errant} in the peer's domain 1, which the peer lacks"
        )],
    );

    // Applied on node1 (by replication): nothing is errant any more.
    pair.node1.exec("START SLAVE");
    pair.wait_converged();
    let (code, checks) = node1.doctor(&[]);
    assert_passed(&checks, "errant_gtids", &["no errant GTIDs"]);
    assert_eq!(code, 0, "{}", listing(&checks));
}

#[test]
fn accounts_that_write_through_read_only_and_missing_privileges_are_named() {
    let link = Link::new();
    let server = Server::start();
    let password_file = {
        let dir = common::private_tempdir();
        let path = dir.path().join("password");
        write_secret(&path, "mmvip-secret");
        (dir, path)
    };
    server.exec(
        "CREATE USER 'mmvip'@'localhost' IDENTIFIED BY 'mmvip-secret'; GRANT PROCESS ON *.* TO 'mmvip'@'localhost';
         CREATE USER 'admin'@'%' IDENTIFIED BY 'x'; GRANT SUPER ON *.* TO 'admin'@'%';
         CREATE USER 'ops'@'10.%' IDENTIFIED BY 'x'; GRANT READ_ONLY ADMIN ON *.* TO 'ops'@'10.%';
         CREATE ROLE dba; GRANT READ_ONLY ADMIN ON *.* TO dba; CREATE USER 'app'@'%' IDENTIFIED BY 'x'; GRANT dba TO 'app'@'%';
         CREATE USER 'monitor'@'localhost' IDENTIFIED BY 'x'; GRANT READ_ONLY ADMIN ON *.* TO 'monitor'@'localhost';
         CREATE USER 'super_only'@'localhost' IDENTIFIED BY 'x'; GRANT SUPER ON *.* TO 'super_only'@'localhost';
         CREATE DATABASE probe; CREATE TABLE probe.t (id INT);
         GRANT INSERT ON probe.* TO 'monitor'@'localhost'; GRANT INSERT ON probe.* TO 'super_only'@'localhost'",
    );
    // The premise, on this server's version (10.11): READ_ONLY ADMIN writes while
    // read_only is ON, SUPER alone does not.
    server.exec("SET GLOBAL read_only = ON");
    server
        .connect_as("monitor", "x")
        .unwrap()
        .query_drop("INSERT INTO probe.t VALUES (1)")
        .expect("READ_ONLY ADMIN writes through read_only");
    let refused = server
        .connect_as("super_only", "x")
        .unwrap()
        .query_drop("INSERT INTO probe.t VALUES (2)");
    assert!(
        refused.is_err(),
        "SUPER alone writes through read_only on 10.11"
    );

    let node = Node::with_mariadb(
        &server,
        None,
        &link,
        &format!(
            "user = \"mmvip\"\npassword_file = \"{}\"\n",
            password_file.1.display()
        ),
    );
    let (code, checks) = node.doctor(&[]);
    assert_eq!(code, 1);
    assert_passed(&checks, "mariadb", &["as mmvip"]);
    assert_failed(
        &checks,
        "accounts.mmvip",
        &[
            "'mmvip'@'localhost' lacks",
            "READ_ONLY ADMIN (set read_only)",
            "CONNECTION ADMIN (kill sessions)",
            "SLAVE MONITOR (read replication status)",
            "REPLICATION SLAVE ADMIN (start replication)",
            "EVENT (disable and enable events)",
            "GRANT SELECT ON mysql.* TO 'mmvip'@'localhost'",
        ],
    );
    assert!(
        !find(&checks, "accounts.mmvip")["detail"]
            .as_str()
            .unwrap()
            .contains("PROCESS"),
        "PROCESS is granted"
    );
    // Without SELECT on mysql.* the other accounts cannot be seen.
    assert_failed(
        &checks,
        "accounts.bypass_read_only",
        &["cannot tell", "SELECT on mysql.*"],
    );

    server.exec("GRANT SELECT ON mysql.* TO 'mmvip'@'localhost'");
    let (_, checks) = node.doctor(&[]);
    assert_failed(
        &checks,
        "accounts.bypass_read_only",
        &[
            "'ops'@'10.%' (READ_ONLY ADMIN)",
            "'app'@'%' (role dba)",
            "REVOKE READ_ONLY ADMIN ON *.* FROM 'ops'@'10.%'",
            "REVOKE dba FROM 'app'@'%'",
        ],
    );
    let bypass = find(&checks, "accounts.bypass_read_only")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !bypass.contains("monitor"),
        "a local account is not a client's: {bypass}"
    );
    assert!(
        !bypass.contains("admin'@"),
        "SUPER does not bypass read_only on 10.11: {bypass}"
    );

    server.exec(
        "GRANT READ_ONLY ADMIN, CONNECTION ADMIN, SLAVE MONITOR, REPLICATION SLAVE ADMIN, EVENT ON *.* TO 'mmvip'@'localhost';
         REVOKE READ_ONLY ADMIN ON *.* FROM 'ops'@'10.%'; REVOKE dba FROM 'app'@'%'",
    );
    let (_, checks) = node.doctor(&[]);
    assert_passed(&checks, "accounts.mmvip", &["has every privilege"]);
    assert_passed(
        &checks,
        "accounts.bypass_read_only",
        &["no client account", "'monitor'@'localhost'"],
    );
}

#[test]
fn keepalived_configs_are_checked_for_each_instance() {
    let link = Link::new();
    // No MariaDB: keepalived's checks do not need one.
    let site = Site::new().with_config(&format!(
        "[instances.VI_1]\nvip = \"{VIP}\"\n[instances.VI_2]\nvip = \"{VIP2}\"\nrole = \"ro\"\n"
    ));
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let good = write_keepalived(&site, &link.0, &[("VI_1", VIP), ("VI_2", VIP2)]);
    let (code, checks) = doctor_json(&site, &good, &[]);
    assert_eq!(code, 1, "no MariaDB here");
    let keepalived: Vec<&Value> = checks
        .iter()
        .filter(|c| c["check"].as_str().unwrap().starts_with("keepalived."))
        .collect();
    assert_eq!(keepalived.len(), 6 + 2 * 4, "{}", listing(&checks));
    assert!(
        keepalived.iter().all(|c| c["ok"] == true),
        "{}",
        listing(&checks)
    );
    assert_passed(&checks, "keepalived.conf", &["2 included files"]);
    assert_passed(&checks, "keepalived.VI_2.vip", &[VIP2]);

    // Everything wrong at once, each named.
    let mmvip = mmvip_binary().display().to_string();
    let bad = site.path("bad.conf");
    std::fs::write(
        &bad,
        format!(
            "global_defs {{\n    bogus_keyword 1\n}}\nvrrp_script chk_mysql {{\n    script \"{mmvip} --timeout-ms 2000 health\"\n    interval 1\n}}\nvrrp_script chk_failover {{\n    script \"{mmvip} failover\"\n    interval 1\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface {}\n    virtual_router_id 51\n    priority 100\n    virtual_ipaddress {{\n        10.98.0.9/32\n    }}\n    track_script {{\n        chk_mysql chk_failover\n    }}\n    notify_master \"{mmvip} master\"\n    notify_backup \"{mmvip} backup --instance=VI_2\"\n}}\n",
            link.0
        ),
    )
    .unwrap();
    let (_, checks) = doctor_json(&site, &bad, &[]);
    assert_failed(
        &checks,
        "keepalived.config_test",
        &["keepalived -t rejects", "bogus_keyword"],
    );
    assert_failed(
        &checks,
        "keepalived.enable_script_security",
        &["not set", "add enable_script_security"],
    );
    assert_failed(
        &checks,
        "keepalived.script_user",
        &["not set", "script_user root"],
    );
    assert_failed(
        &checks,
        "keepalived.track_blocks",
        &["track_script { chk_mysql chk_failover }", "bad.conf:21"],
    );
    assert_failed(
        &checks,
        "keepalived.script_timeouts",
        &[
            "chk_mysql gives `mmvip health` 1 s for at most 2100 ms",
            "timeout 3 in vrrp_script chk_mysql",
        ],
    );
    assert_failed(
        &checks,
        "keepalived.VI_1.vip",
        &["moves 10.98.0.9, not [instances.VI_1] vip 10.98.0.1"],
    );
    assert_failed(
        &checks,
        "keepalived.VI_1.unicast_peer",
        &["no unicast_peer"],
    );
    assert_failed(
        &checks,
        "keepalived.VI_1.notify",
        &[
            "notify_master runs `mmvip master` without --instance=VI_1",
            "notify_backup runs `mmvip backup` for --instance=VI_2",
            "no notify_fault line",
            "no notify_stop line",
        ],
    );
    assert_failed(
        &checks,
        "keepalived.VI_1.tracking",
        // chk_failover, second on its line, is dropped as keepalived drops it.
        &["tracks no mmvip check of the failover flag"],
    );
    assert!(
        !find(&checks, "keepalived.VI_1.tracking")["detail"]
            .as_str()
            .unwrap()
            .contains("health")
    );
    assert_failed(&checks, "keepalived.VI_2", &["no vrrp_instance VI_2"]);

    // A config others may change is not read (keepalived would run it as root).
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (_, checks) = doctor_json(&site, &good, &[]);
    assert_failed(
        &checks,
        "keepalived.conf",
        &["cannot read keepalived's config", "writable"],
    );
}

#[test]
fn mmvip_itself_paths_plugins_and_cache() {
    let link = Link::new();
    let site = Site::new();
    let password_file = site.path("password");
    write_secret(&password_file, "secret");
    let site = site.with_config(&format!(
        "password_file = \"{}\"\n[instances.VI_1]\nvip = \"{VIP}\"\n",
        password_file.display()
    ));
    site.install_builtins();
    let conf = write_keepalived(&site, &link.0, &[("VI_1", VIP)]);
    // Nothing compiled yet.
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(
        &checks,
        "cache",
        &["plugins not in the cache: ", "master", "mmvip compile"],
    );
    assert_passed(&checks, "plugin.master", &["loads", "sql-admin"]);
    assert_passed(&checks, "trust.mariadb_password_file", &["is trusted"]);
    // doctor creates nothing.
    assert!(!site.path("cache").exists());
    assert!(!site.path("state").exists());
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    // A cache that holds nothing compiled for this mmvip.
    for entry in std::fs::read_dir(site.path("cache")).unwrap().flatten() {
        std::fs::remove_file(entry.path()).unwrap();
    }
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(&checks, "cache", &["stop (not compiled for this mmvip)"]);
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_passed(&checks, "cache", &["every plugin is compiled"]);

    // A plugin that is not a component, a secret others can read.
    std::fs::write(site.path("plugins").join("stop.wasm"), b"not wasm").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, checks) = doctor_json(&site, &conf, &[]);
    assert_eq!(code, 1);
    assert_failed(
        &checks,
        "plugin.stop",
        &["plugin stop does not load", "reinstall stop.wasm"],
    );
    assert_passed(&checks, "plugin.master", &["loads"]);
    assert_failed(
        &checks,
        "trust.mariadb_password_file",
        &["password", "mode 0600 or 0400"],
    );
    assert_failed(&checks, "mariadb", &["password_file"]);

    // No plugin at all.
    for entry in std::fs::read_dir(site.path("plugins")).unwrap().flatten() {
        std::fs::remove_file(entry.path()).unwrap();
    }
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(&checks, "plugins", &["no plugin in", "install the plugins"]);

    // A plugin directory others can change.
    std::fs::set_permissions(site.path("plugins"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(&checks, "trust.plugin_dir", &["plugins", "chmod go-w"]);
}

#[test]
fn a_missing_config_is_a_usage_error() {
    let output = Command::new(mmvip_binary())
        .args(["--config", "/nonexistent/mmvip.toml", "doctor"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("/nonexistent/mmvip.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn with_the_guard_instances_track_its_files_at_weight_0_and_its_process() {
    let link = Link::new();
    let site = Site::new();
    let secret = site.path("guard-secret");
    write_secret(&secret, "a shared secret for both guards");
    let track_dir = site.path("track");
    let site = site.with_config(&format!(
        "[instances.VI_1]\nvip = \"{VIP}\"\n[guard]\nnode = \"db1\"\nlisten = [\"127.0.0.1:7007\"]\npeer = [\"127.0.0.2:7007\"]\nsecret_file = \"{}\"\ntrack_dir = \"{}\"\n",
        secret.display(),
        track_dir.display()
    ));
    site.install_builtins();
    // The guard's process as keepalived matches it: with arguments, the command line
    // word for word (here the binary under test stands where the unit's would).
    let track = |weight: &str, process: &str| {
        format!(
            "vrrp_track_file mmvip_health {{\n    file \"{0}/health\"\n    weight 0\n}}\nvrrp_track_file mmvip_failover {{\n    file \"{0}/failover\"\n    {weight}\n}}\nvrrp_track_file mmvip_VI_1 {{\n    file \"{0}/VI_1\"\n    weight 0\n}}\nvrrp_track_process mmvip_guard {{\n    {process}\n    weight 0\n}}\n",
            track_dir.display(),
        )
    };
    let process = format!("process {} guard", mmvip_binary().display());
    let conf = write_keepalived(&site, &link.0, &[("VI_1", VIP)]);
    let instance = site.path("keepalived.d").join("VI_1.conf");
    let tracked = std::fs::read_to_string(&instance).unwrap().replace(
        "    notify_master",
        "    track_file {\n        mmvip_health\n        mmvip_failover\n        mmvip_VI_1\n    }\n    track_process {\n        mmvip_guard\n    }\n    notify_master",
    );
    std::fs::write(&instance, &tracked).unwrap();
    // Defined before the instance that uses them (includes are read in name order).
    let guard_blocks = site.path("keepalived.d").join("00-guard.conf");
    std::fs::write(&guard_blocks, track("weight 0", &process)).unwrap();
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_passed(
        &checks,
        "keepalived.VI_1.tracking",
        &["tracks the guard's files", "and its process"],
    );
    assert_passed(&checks, "keepalived.config_test", &[]);
    // The guard is not running here.
    assert_failed(&checks, "guard", &["systemctl enable --now mmvip-guard"]);

    // A track file with keepalived's default weight only lowers the priority.
    std::fs::write(&guard_blocks, track("", &process)).unwrap();
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(
        &checks,
        "keepalived.VI_1.tracking",
        &[&format!(
            "tracks {}/failover without weight 0",
            track_dir.display()
        )],
    );
    // A process line keepalived would never match to the guard: the name alone is
    // compared with the first word of the command line once arguments are involved,
    // and `parameters` is no keyword of keepalived 2.2.
    std::fs::write(
        &guard_blocks,
        track(
            "weight 0",
            "process mmvip\n    param_match initial\n    parameters guard",
        ),
    )
    .unwrap();
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(
        &checks,
        "keepalived.VI_1.tracking",
        &["does not track the process `mmvip guard`"],
    );
    assert_failed(
        &checks,
        "keepalived.config_test",
        &["Unknown keyword 'parameters'"],
    );
    // Nor tracking the guard's process at all.
    std::fs::write(&guard_blocks, track("weight 0", &process)).unwrap();
    std::fs::write(&instance, tracked.replace("        mmvip_guard\n", "")).unwrap();
    let (_, checks) = doctor_json(&site, &conf, &[]);
    assert_failed(
        &checks,
        "keepalived.VI_1.tracking",
        &["does not track the process `mmvip guard`"],
    );
}

/// With the guard, semi-sync must leave the guard time to kill a writer cut off with
/// a commit in flight (README, "What happens when"), and wait before the engine
/// commit, so that the killed server's restart rolls the commit back.
#[test]
fn with_the_guard_semi_sync_leaves_time_to_stop_a_commit_on_a_cut_off_writer() {
    let link = Link::new();
    let pair = Pair::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("guard-secret");
    write_secret(&secret, "a shared secret for both guards");
    let guard = format!(
        "[guard]\nnode = \"db1\"\nlisten = [\"127.0.0.1:7007\"]\npeer = [\"127.0.0.2:7007\"]\nsecret_file = \"{}\"\nping_interval_ms = 200\n",
        secret.display()
    );
    let node1 = Node::with_mariadb(&pair.node1, None, &link, &guard);
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_enabled = ON, rpl_semi_sync_master_timeout = 500, rpl_semi_sync_master_wait_point = AFTER_COMMIT",
    );
    let (_, checks) = node1.doctor(&[]);
    assert_failed(
        &checks,
        "guard.semi_sync",
        &[
            "rpl_semi_sync_master_timeout is 500 ms",
            "needs 950 ms",
            "rpl_semi_sync_master_wait_point is AFTER_COMMIT",
            "rpl_semi_sync_master_timeout = 950, rpl_semi_sync_master_wait_point = AFTER_SYNC",
        ],
    );
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_timeout = 1000, rpl_semi_sync_master_wait_point = AFTER_SYNC",
    );
    let (_, checks) = node1.doctor(&[]);
    assert_passed(
        &checks,
        "guard.semi_sync",
        &["waits 1000 ms (at least 950)"],
    );
    assert_passed(&checks, "guard.nft", &["nft for the guard's table"]);
}
