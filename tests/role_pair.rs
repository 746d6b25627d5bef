//! The role hooks (`master`, `backup`, `fault`, `stop`) through the `mmvip` binary on
//! a real GTID master/master pair. mmvip runs in a network namespace per test, where
//! the test adds and removes VIP addresses as keepalived would.

mod common;

use std::time::{Duration, Instant};

use common::mariadb::{APP_PASSWORD, APP_USER, Pair, Server, replicating};
use common::netns::Netns;
use common::{Site, exit_code, stderr};
use mysql::prelude::Queryable;

const VIP1: &str = "10.99.0.1";
const VIP2: &str = "10.99.0.2";
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;

/// One node as mmvip sees it: its site config and its namespace.
struct Node {
    site: Site,
    netns: Netns,
}

impl Node {
    fn new(server: &Server, config: &str) -> Node {
        let instances = format!("[instances.VI_1]\nvip = \"{VIP1}\"\nrole = \"rw\"\n{config}");
        let site = Site::new()
            .with_socket(&server.socket)
            .with_config(&instances);
        site.install_builtins();
        assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
        Node {
            site,
            netns: Netns::new(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.netns.mmvip(&self.site.config_path(), args)
    }
}

fn writable(server: &Server) {
    server.exec("SET GLOBAL read_only = OFF");
    assert!(!server.read_only());
}

fn app_insert(conn: &mut mysql::Conn, note: &str) -> mysql::Result<()> {
    conn.exec_drop("INSERT INTO app.t (note) VALUES (?)", (note,))
}

fn assert_ok(output: &std::process::Output) {
    assert_eq!(exit_code(output), 0, "{}", stderr(output));
}

#[test]
fn backup_makes_the_node_read_only_and_kills_clients_but_not_replication() {
    let pair = Pair::start();
    writable(&pair.node1);
    let node = Node::new(&pair.node1, "");
    let mut clients: Vec<_> = (0..5)
        .map(|_| pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap())
        .collect();
    app_insert(&mut clients[0], "before").unwrap();

    let output = node.run(&["backup", "--instance=VI_1"]);
    assert_ok(&output);
    assert!(pair.node1.read_only());
    // A fresh application connection cannot write.
    let mut fresh = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    match app_insert(&mut fresh, "after") {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, ER_OPTION_PREVENTS_STATEMENT),
        other => panic!("write on a read-only node: {other:?}"),
    }
    // The old connections are gone.
    for client in &mut clients {
        assert!(
            client.query_drop("SELECT 1").is_err(),
            "client connection survived the demotion"
        );
    }
    // Replication threads and the peer's binlog dump survive.
    assert!(replicating(&pair.node1));
    assert!(replicating(&pair.node2));
    let dumps = pair.node1.value(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
    );
    assert_eq!(dumps.as_deref(), Some("1"));
    let log = node.site.log_text();
    assert!(log.contains("sql=\"SET GLOBAL read_only = ON\""), "{log}");
    assert!(log.contains("sql=\"KILL CONNECTION"), "{log}");
    assert!(log.contains("killed 5 client connections"), "{log}");
}

#[test]
fn master_waits_for_the_relay_log_then_goes_writable() {
    let pair = Pair::start();
    writable(&pair.node1);
    // Hold node2's SQL thread back: it runs, but applies events 3 s late.
    pair.node2
        .exec("STOP SLAVE; CHANGE MASTER TO master_delay = 3; START SLAVE");
    // Set up first: the delay runs from the inserts, so nothing slow may sit
    // between them and the hook.
    let node = Node::new(&pair.node2, "[plugins.master]\ncatchup_timeout = \"20s\"\n");
    node.netns.hold(VIP1);
    let mut app = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    for i in 0..20 {
        app_insert(&mut app, &format!("row {i}")).unwrap();
    }
    pair.node1.exec("SET GLOBAL read_only = ON");

    let started = Instant::now();
    let mut child = node
        .netns
        .command(&node.site.config_path(), &["master", "--instance=VI_1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "master returned while the relay log was unapplied"
    );
    assert!(
        pair.node2.read_only(),
        "writable with the relay log unapplied"
    );
    let status = child.wait().unwrap();
    let elapsed = started.elapsed();
    assert!(status.success());
    assert!(!pair.node2.read_only());
    assert_eq!(
        pair.node2.value("SELECT COUNT(*) FROM app.t").as_deref(),
        Some("20")
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "went writable after {elapsed:?}, before the delayed events applied"
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "took {elapsed:?} after the relay log was applied"
    );
    assert!(
        node.site.log_text().contains("MASTER_GTID_WAIT"),
        "{}",
        node.site.log_text()
    );
}

#[test]
fn master_honours_the_catchup_timeout_and_its_policy() {
    let pair = Pair::start();
    writable(&pair.node1);
    pair.node2
        .exec("STOP SLAVE; CHANGE MASTER TO master_delay = 30; START SLAVE");
    let mut app = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    app_insert(&mut app, "late").unwrap();

    let node = Node::new(&pair.node2, "[plugins.master]\ncatchup_timeout = \"1s\"\n");
    node.netns.hold(VIP1);
    let started = Instant::now();
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stderr(&output).contains("catch-up failed"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only(), "stay-read-only is the default");
    assert!(
        node.site
            .log_text()
            .contains("staying read-only (on_catchup_timeout = stay-read-only)")
    );

    let node = Node::new(
        &pair.node2,
        "[plugins.master]\ncatchup_timeout = \"1s\"\non_catchup_timeout = \"go-writable\"\n",
    );
    node.netns.hold(VIP1);
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_ok(&output);
    assert!(!pair.node2.read_only());
    assert!(
        node.site.log_text().contains("GOING WRITABLE ANYWAY"),
        "{}",
        node.site.log_text()
    );
}

#[test]
fn master_refuses_when_the_vip_is_not_held() {
    let pair = Pair::start();
    let node = Node::new(&pair.node2, "");
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("is not on this node"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());
}

#[test]
fn master_with_broken_replication_follows_the_policy_and_says_so() {
    let pair = Pair::start();
    pair.node2.exec("STOP SLAVE SQL_THREAD");
    let node = Node::new(&pair.node2, "");
    node.netns.hold(VIP1);
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("SQL thread stopped"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());

    let node = Node::new(
        &pair.node2,
        "[plugins.master]\non_catchup_timeout = \"go-writable\"\n",
    );
    node.netns.hold(VIP1);
    assert_ok(&node.run(&["master", "--instance=VI_1"]));
    assert!(!pair.node2.read_only());
    assert!(
        node.site
            .log_text()
            .contains("is broken: SQL thread stopped"),
        "{}",
        node.site.log_text()
    );
}

#[test]
fn fault_and_stop_demote_like_backup() {
    let pair = Pair::start();
    let node = Node::new(&pair.node1, "");
    for hook in ["fault", "stop"] {
        writable(&pair.node1);
        let mut client = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
        assert_ok(&node.run(&[hook, "--instance=VI_1"]));
        assert!(pair.node1.read_only(), "{hook} left the node writable");
        assert!(
            client.query_drop("SELECT 1").is_err(),
            "{hook} left a client connected"
        );
    }
}

#[test]
fn two_instances_writable_exactly_while_an_rw_vip_is_held() {
    let pair = Pair::start();
    let server = &pair.node1;
    let extra = format!("[instances.VI_2]\nvip = \"{VIP2}\"\nrole = \"ro\"\n");
    let node = Node::new(server, &extra);
    // ro instance alone: never changes read_only.
    node.netns.hold(VIP2);
    assert_ok(&node.run(&["master", "--instance=VI_2"]));
    assert!(server.read_only());
    writable(server);
    assert_ok(&node.run(&["backup", "--instance=VI_2"]));
    assert!(
        !server.read_only(),
        "losing an ro VIP must not change read_only"
    );
    server.exec("SET GLOBAL read_only = ON");
    // rw instance: writable while held, also with the ro one beside it.
    node.netns.hold(VIP1);
    assert_ok(&node.run(&["master", "--instance=VI_1"]));
    assert!(!server.read_only());
    node.netns.release(VIP1);
    assert_ok(&node.run(&["backup", "--instance=VI_1"]));
    assert!(server.read_only());
    node.netns.release(VIP2);

    // Both instances rw.
    let extra = format!("[instances.VI_2]\nvip = \"{VIP2}\"\nrole = \"rw\"\n");
    let node = Node::new(server, &extra);
    node.netns.hold(VIP1);
    node.netns.hold(VIP2);
    assert_ok(&node.run(&["master", "--instance=VI_1"]));
    assert_ok(&node.run(&["master", "--instance=VI_2"]));
    assert!(!server.read_only());
    // Losing one rw VIP while holding the other keeps it writable.
    node.netns.release(VIP1);
    let output = node.run(&["backup", "--instance=VI_1"]);
    assert_ok(&output);
    assert!(!server.read_only());
    let log = node.site.log_text();
    assert!(log.contains("still holds the rw VIP of VI_2"), "{log}");
    // The host answered who is connected through the departing VIP (nobody here).
    assert!(
        log.contains(&format!(
            "killed 0 sessions that came in through VIP {VIP1}"
        )),
        "{log}"
    );
    // Losing the last one demotes.
    node.netns.release(VIP2);
    assert_ok(&node.run(&["fault", "--instance=VI_2"]));
    assert!(server.read_only());
    // Neither held: a master run changes nothing.
    assert_eq!(exit_code(&node.run(&["master", "--instance=VI_2"])), 1);
    assert!(server.read_only());
}

#[test]
fn late_master_after_backup_never_makes_the_node_writable() {
    let pair = Pair::start();
    let node = Node::new(&pair.node1, "");
    node.netns.hold(VIP1);
    writable(&pair.node1);
    // keepalived: MASTER then BACKUP, the VIP moved away, but the notify_master run
    // is delivered after notify_backup.
    node.netns.release(VIP1);
    assert_ok(&node.run(&["backup", "--instance=VI_1"]));
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(pair.node1.read_only());
    // The same through keepalived's `notify` arguments instead of --instance.
    let output = node.run(&["master", "INSTANCE", "VI_1", "MASTER", "100"]);
    assert_eq!(exit_code(&output), 1);
    assert!(pair.node1.read_only());
}

#[test]
fn concurrent_hooks_are_serialized() {
    let pair = Pair::start();
    let node = Node::new(&pair.node1, "");
    node.netns.hold(VIP1);
    let children: Vec<_> = (0..4)
        .map(|i| {
            let hook = if i % 2 == 0 { "master" } else { "backup" };
            node.netns
                .command(&node.site.config_path(), &[hook, "--instance=VI_1"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_ok(&output);
    }
    // Each run's lines are contiguous: no run started before the previous one ended.
    let log = node.site.log_text();
    let pids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin=master") || l.contains("plugin=backup"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let mut runs: Vec<&str> = pids.clone();
    runs.dedup();
    let mut unique = runs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(runs.len(), unique.len(), "interleaved hook runs: {pids:?}");
}

#[test]
fn seed_option_strings_work_and_passwords_are_refused() {
    let pair = Pair::start();
    let node = Node::new(&pair.node1, "");
    node.netns.hold(VIP1);
    assert_ok(&node.run(&[
        "master",
        "--wait=yes",
        "--variable=read_only",
        "--instance=VI_1",
    ]));
    assert!(!pair.node1.read_only());
    let mut client = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    // keepalived takes the VIP away before it runs notify_backup.
    node.netns.release(VIP1);
    assert_ok(&node.run(&[
        "backup",
        "--kill=no",
        "--variable=read_only",
        "--instance=VI_1",
    ]));
    assert!(pair.node1.read_only());
    assert!(
        client.query_drop("SELECT 1").is_ok(),
        "--kill=no killed a client"
    );
    assert_ok(&node.run(&[
        "backup",
        "--kill=yes",
        "--variable=read_only",
        "--instance=VI_1",
    ]));
    assert!(
        client.query_drop("SELECT 1").is_err(),
        "--kill=yes spared a client"
    );

    // A password on the command line: master refuses to act at all...
    let output = node.run(&[
        "master",
        "--user=root",
        "--password=hunter2",
        "--instance=VI_1",
    ]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("--password is refused"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("password_file"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node1.read_only());
    // ...and a demotion still demotes, then reports the refused argument.
    writable(&pair.node1);
    let output = node.run(&["backup", "--password=hunter2", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 2);
    assert!(pair.node1.read_only());
    assert!(!node.site.log_text().contains("hunter2") && !stderr(&output).contains("hunter2"));
}

#[test]
fn server_down_or_frozen_fails_cleanly_and_never_leaves_the_node_writable() {
    let mut pair = Pair::start();
    let node = Node::new(
        &pair.node2,
        "[plugins.master]\ntimeout_ms = 3000\n[plugins.backup]\ntimeout_ms = 3000\n",
    );
    node.netns.hold(VIP1);
    pair.node2.freeze();
    let started = Instant::now();
    let output = node.run(&["master", "--instance=VI_1"]);
    let elapsed = started.elapsed();
    pair.node2.thaw();
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    assert!(
        elapsed < Duration::from_millis(3000 + 500),
        "took {elapsed:?}"
    );
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert!(pair.node2.read_only());

    pair.node2.stop();
    for hook in ["master", "backup"] {
        // The VIP is here for the promotion and gone (as keepalived removes it) for
        // the demotion.
        if hook == "backup" {
            node.netns.release(VIP1);
        }
        let output = node.run(&[hook, "--instance=VI_1"]);
        assert_eq!(exit_code(&output), 1, "{hook}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("mariadb unreachable"),
            "{hook}: {}",
            stderr(&output)
        );
    }
    pair.node2.restart();
    assert!(
        pair.node2.read_only(),
        "read_only=ON from the config after restart"
    );
}

#[test]
fn missing_privileges_are_reported_and_change_nothing() {
    let pair = Pair::start();
    pair.node1.exec("SET sql_log_bin = 0; CREATE USER 'watcher'@'localhost' IDENTIFIED BY 'w'; GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'watcher'@'localhost'");
    writable(&pair.node1);
    let node = Node::new(&pair.node1, "");
    let password = node.site.path("password");
    std::fs::write(&password, "w").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(node.site.config_path())
        .unwrap()
        .replace(
            "timeout_ms = 500\n",
            &format!(
                "timeout_ms = 500\nuser = \"watcher\"\npassword_file = \"{}\"\n",
                password.display()
            ),
        );
    std::fs::write(node.site.config_path(), text).unwrap();
    let output = node.run(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("SET GLOBAL read_only = ON failed: mariadb error 1227"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stderr(&output).lines().count(), 1);
    pair.node1.exec("SET GLOBAL read_only = ON");
    node.netns.hold(VIP1);
    let output = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    assert!(pair.node1.read_only());
}

#[test]
fn a_flapping_node_stops_promoting_until_the_operator_acks() {
    let pair = Pair::start();
    let node = Node::new(&pair.node1, "");
    // Two round trips: four role changes, the default flap_limit.
    for _ in 0..2 {
        node.netns.hold(VIP1);
        assert_ok(&node.run(&["master", "--instance=VI_1"]));
        node.netns.release(VIP1);
        assert_ok(&node.run(&["backup", "--instance=VI_1"]));
    }
    node.netns.hold(VIP1);
    let refused = node.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&refused), 1);
    assert!(
        stderr(&refused).contains("flap damping: 4 role changes"),
        "{}",
        stderr(&refused)
    );
    assert!(pair.node1.read_only());
    let status = node.site.mmvip(&["status"]);
    let text = common::stdout(&status);
    assert!(
        text.contains("PROMOTION HELD BACK"),
        "{text}{}",
        stderr(&status)
    );

    let doctor = common::stdout(&node.site.mmvip(&["doctor"]));
    assert!(
        doctor.contains("✗ promotion is held back by flap damping"),
        "{doctor}"
    );

    let ack = node.site.mmvip(&["ack"]);
    assert_ok(&ack);
    let said = String::from_utf8_lossy(&ack.stdout);
    assert!(
        said.contains("acknowledged: promotion allowed again; forgot 4 recorded role changes"),
        "{said}"
    );
    assert!(node.site.log_text().contains("plugin=ack"));
    assert_ok(&node.run(&["master", "--instance=VI_1"]));
    assert!(!pair.node1.read_only());
    let status = node.site.mmvip(&["status"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("HELD BACK"));
    let doctor = common::stdout(&node.site.mmvip(&["doctor"]));
    assert!(
        doctor.contains("✓ flap damping holds nothing back (1 role changes recorded)"),
        "{doctor}"
    );
}
