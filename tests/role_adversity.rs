//! Role changes under adversity, on a real GTID master/master pair through the
//! `mmvip` binary: promotion catches up to what the live peer acknowledged (asked
//! over real TCP), demotion gets through whatever blocks `read_only`, replication is
//! never killed, and any interleaving of hooks ends where VRRP ends.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::mariadb::{
    APP_PASSWORD, APP_USER, PEER_PASSWORD, PEER_USER, Pair, REPLICATION_PASSWORD, REPLICATION_USER,
    Server,
};
use common::netns::{Forward, Netns};
use common::{Site, exit_code, stderr};
use mysql::prelude::Queryable;

const VIP: &str = "10.99.0.1";

/// One node as mmvip sees it: its site, its namespace and (optionally) a TCP path to
/// its peer's MariaDB.
struct Node {
    site: Site,
    netns: Netns,
    forward: Option<Forward>,
}

impl Node {
    /// `peer`: the other server, reached over TCP from inside the namespace.
    fn new(server: &Server, peer: Option<&Server>, config: &str) -> Node {
        let netns = Netns::new();
        let site = Site::new().with_socket(&server.socket);
        let (forward, peer_table) = match peer {
            Some(peer) => {
                let port = peer.replication.expect("replicating peer").port;
                let forward = netns.forward(([127, 0, 0, 1], port).into());
                let password = site.path("peer-password");
                std::fs::write(&password, PEER_PASSWORD).unwrap();
                std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                let table = format!(
                    "\n[peer]\naddresses = [\"127.0.0.1:1\", \"127.0.0.1:{}\"]\nuser = \"{PEER_USER}\"\npassword_file = \"{}\"\ntimeout_ms = 500\n",
                    forward.port,
                    password.display()
                );
                (Some(forward), table)
            }
            None => (None, String::new()),
        };
        let site = site.with_config(&format!(
            "{peer_table}\n[instances.VI_1]\nvip = \"{VIP}\"\nrole = \"rw\"\n{config}"
        ));
        site.install_builtins();
        assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
        Node {
            site,
            netns,
            forward,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.netns.mmvip(&self.site.config_path(), args)
    }
}

fn rows(server: &Server) -> u64 {
    server
        .value("SELECT COUNT(*) FROM app.t")
        .unwrap()
        .parse()
        .unwrap()
}

fn insert_rows(server: &Server, count: usize) {
    let mut app = server.connect_as(APP_USER, APP_PASSWORD).unwrap();
    for n in 0..count {
        app.exec_drop("INSERT INTO app.t (note) VALUES (?)", (format!("row {n}"),))
            .unwrap();
    }
}

#[test]
fn promotion_catches_up_to_what_the_live_peer_acknowledged() {
    let pair = Pair::start();
    pair.node1.exec("SET GLOBAL read_only = OFF");
    // An operator stopped node2's IO thread (no error): the relay log says nothing
    // is missing, yet node1 goes on acknowledging writes.
    pair.node2.exec("STOP SLAVE IO_THREAD");
    insert_rows(&pair.node1, 50);
    assert_eq!(rows(&pair.node2), 0);
    // node1 is demoted (read-only) as keepalived moves the VIP.
    pair.node1.exec("SET GLOBAL read_only = ON");
    let node2 = Node::new(&pair.node2, Some(&pair.node1), "");
    node2.netns.hold(VIP);
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!pair.node2.read_only());
    assert_eq!(
        rows(&pair.node2),
        50,
        "acknowledged writes were left behind"
    );
    let log = node2.site.log_text();
    assert!(
        log.contains("started it to fetch the peer's transactions"),
        "{log}"
    );
    assert!(
        log.contains("caught up with the peer at 127.0.0.1:"),
        "{log}"
    );
    // The first address (nothing listens on port 1) was tried and passed over.
    assert!(log.contains("server=127.0.0.1:1 "), "{log}");
}

#[test]
fn a_live_peer_that_refuses_the_account_stops_the_promotion() {
    let pair = Pair::start();
    let node2 = Node::new(&pair.node2, Some(&pair.node1), "");
    // The peer is up but rejects mmvip's account: what it acknowledged is unknown.
    std::fs::write(node2.site.path("peer-password"), "not-the-password").unwrap();
    node2.netns.hold(VIP);
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    assert!(pair.node2.read_only());
    assert!(
        stderr(&output).contains("the peer answered with an error"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("1045"), "{}", stderr(&output));
}

#[test]
fn a_peer_that_stays_writable_stops_the_promotion() {
    let pair = Pair::start();
    pair.node1.exec("SET GLOBAL read_only = OFF");
    let node2 = Node::new(
        &pair.node2,
        Some(&pair.node1),
        "[plugins.master]\npeer_read_only_timeout = \"1s\"\n",
    );
    node2.netns.hold(VIP);
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("still writable after 1 s"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());
}

#[test]
fn a_silent_peer_leaves_what_was_received_and_says_so() {
    let pair = Pair::start();
    pair.node1.exec("SET GLOBAL read_only = OFF");
    insert_rows(&pair.node1, 5);
    pair.wait_converged();
    let mut node2 = Node::new(&pair.node2, Some(&pair.node1), "");
    // Every path to the peer is gone.
    node2.forward = None;
    node2.netns.hold(VIP);
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(rows(&pair.node2), 5);
    let log = node2.site.log_text();
    assert!(
        log.contains("the peer's final position is unknown"),
        "{log}"
    );
    assert!(
        log.contains("no answer from the peer (127.0.0.1:1:"),
        "{log}"
    );
}

#[test]
fn errant_transactions_and_a_missing_replica_stop_the_promotion() {
    let pair = Pair::start();
    // Written on node2 with node1's domain while node1 did not replicate from node2:
    // node1 will never have it.
    pair.node1.exec("STOP SLAVE");
    pair.node2
        .exec("SET SESSION gtid_domain_id = 1; INSERT INTO app.t (note) VALUES ('errant')");
    pair.node1.exec("SET GLOBAL read_only = ON");
    let node2 = Node::new(&pair.node2, Some(&pair.node1), "");
    node2.netns.hold(VIP);
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("errant transactions"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());

    pair.node2.exec("STOP SLAVE; RESET SLAVE ALL");
    let output = node2.run(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("does not replicate from anyone"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());
}

#[test]
fn demotion_gets_through_locks_and_open_transactions_within_about_a_second() {
    let pair = Pair::start();
    pair.node1.exec(&format!(
        "GRANT LOCK TABLES ON app.* TO '{APP_USER}'@'localhost'; CREATE TABLE app.u (n INT); SET GLOBAL read_only = OFF"
    ));
    let node1 = Node::new(
        &pair.node1,
        None,
        "[plugins.backup]\nkill = false\ntimeout_ms = 5000\n",
    );
    // A session holding LOCK TABLES while it runs a long statement.
    let locker_conn = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    let locker = std::thread::spawn(move || {
        let mut conn = locker_conn;
        conn.query_drop("LOCK TABLES app.t WRITE").unwrap();
        conn.query_drop("SELECT SLEEP(30)")
    });
    std::thread::sleep(Duration::from_millis(200));
    // Uncommitted writes on another table: read_only waits for them to end too.
    let mut open_transaction = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    open_transaction
        .query_drop("BEGIN; INSERT INTO app.u VALUES (1)")
        .unwrap();
    let mut bystander = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    let started = Instant::now();
    let output = node1.run(&["backup", "--instance=VI_1"]);
    let took = started.elapsed();
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(pair.node1.read_only());
    assert!(took < Duration::from_secs(3), "demotion took {took:?}");
    assert!(locker.join().unwrap().is_err(), "the lock holder survived");
    assert!(
        open_transaction.query_drop("SELECT 1").is_err(),
        "the open transaction survived"
    );
    let log = node1.site.log_text();
    assert!(log.contains("sessions holding it up"), "{log}");
    // With kill = false, a session that held nothing is left alone.
    assert!(bystander.query_drop("SELECT 1").is_ok());
}

#[test]
fn demotion_gets_through_an_idle_lock_tables_too() {
    let pair = Pair::start();
    pair.node1.exec(&format!(
        "GRANT LOCK TABLES ON app.* TO '{APP_USER}'@'localhost'; SET GLOBAL read_only = OFF"
    ));
    let node1 = Node::new(
        &pair.node1,
        None,
        "[plugins.backup]\nkill = false\ntimeout_ms = 5000\n",
    );
    // LOCK TABLES, then nothing: the session is idle, with no transaction to show.
    let mut locker = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    locker.query_drop("LOCK TABLES app.t WRITE").unwrap();
    let output = node1.run(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(pair.node1.read_only());
    assert!(
        locker.query_drop("SELECT 1").is_err(),
        "the lock holder survived"
    );
}

#[test]
fn accounts_that_write_through_read_only_are_killed_and_replication_never() {
    let pair = Pair::start();
    pair.node1.exec(
        "CREATE USER 'dba'@'localhost' IDENTIFIED BY 'dba-secret'; GRANT READ ONLY ADMIN ON *.* TO 'dba'@'localhost'; SET GLOBAL read_only = OFF",
    );
    let node1 = Node::new(&pair.node1, None, "[plugins.backup]\nkill = false\n");
    let mut dba = pair.node1.connect_as("dba", "dba-secret").unwrap();
    let mut app = pair.node1.connect_as(APP_USER, APP_PASSWORD).unwrap();
    // The replication account of the ring, connected but not (yet) dumping the
    // binlog, as the peer's IO thread is during its handshake.
    let port = pair.node1.replication.unwrap().port;
    let mut replication = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(port)
            .user(Some(REPLICATION_USER))
            .pass(Some(REPLICATION_PASSWORD)),
    )
    .unwrap();
    let output = node1.run(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(
        dba.query_drop("SELECT 1").is_err(),
        "READ ONLY ADMIN session survived"
    );
    assert!(
        app.query_drop("SELECT 1").is_ok(),
        "kill = false killed an app session"
    );
    assert!(
        replication.query_drop("SELECT 1").is_ok(),
        "a replication session was killed"
    );
    assert!(
        node1
            .site
            .log_text()
            .contains("could write through read_only"),
        "{}",
        node1.site.log_text()
    );
    // With kill on, clients go; replication still stays.
    pair.node1.exec("SET GLOBAL read_only = OFF");
    let node1 = Node::new(&pair.node1, None, "");
    let output = node1.run(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(app.query_drop("SELECT 1").is_err());
    assert!(
        replication.query_drop("SELECT 1").is_ok(),
        "a replication session was killed"
    );
}

#[test]
fn a_demotion_handed_a_master_transition_refuses_and_one_without_the_lock_still_demotes() {
    let pair = Pair::start();
    pair.node1.exec("SET GLOBAL read_only = OFF");
    let node1 = Node::new(&pair.node1, None, "[plugins.backup]\ntimeout_ms = 3000\n");
    node1.netns.hold(VIP);
    let output = node1.run(&["backup", "INSTANCE", "VI_1", "MASTER", "101"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        !pair.node1.read_only(),
        "a MASTER transition demoted the VIP holder"
    );

    // Another hook holds the node lock for longer than this hook's whole bound.
    node1.netns.release(VIP);
    let state_dir = node1.site.path("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let held = std::fs::File::open(&state_dir).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let output = node1.run(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(pair.node1.read_only());
    assert!(
        node1
            .site
            .log_text()
            .contains("running without the node lock"),
        "{}",
        node1.site.log_text()
    );
}

/// keepalived runs notify scripts without waiting and without order. Whatever the
/// interleaving of role hooks around VIP changes, the node ends writable exactly when
/// it holds the VIP (each VIP change is followed, sooner or later, by its own hook).
#[test]
fn any_interleaving_of_role_hooks_ends_where_vrrp_ends() {
    let pair = Pair::start();
    let node = Node::new(
        &pair.node1,
        None,
        // Flap damping would rightly hold back this many role changes.
        "[plugins.master]\ncatchup_timeout = \"2s\"\nflap_limit = 0\n",
    );
    let mut seed: u64 = 0x5eed_0f40;
    let mut next = |n: u64| {
        // xorshift: a fixed, reproducible schedule.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut held = false;
    for round in 0..12 {
        let mut children = Vec::new();
        for _ in 0..(2 + next(3)) {
            // A VIP change, then its hook; some hooks arrive late, after later ones.
            let now_held = next(2) == 0;
            match (held, now_held) {
                (false, true) => node.netns.hold(VIP),
                (true, false) => node.netns.release(VIP),
                _ => {}
            }
            held = now_held;
            let hook = match (held, next(3)) {
                (true, _) => "master",
                (false, 0) => "backup",
                (false, 1) => "fault",
                (false, _) => "stop",
            };
            let mut command = node
                .netns
                .command(&node.site.config_path(), &[hook, "--instance=VI_1"]);
            children.push(command.stderr(std::process::Stdio::null()).spawn().unwrap());
            // A stale hook of the opposite kind, delivered out of order.
            if next(2) == 0 {
                let stale = if held { "backup" } else { "master" };
                let mut command = node
                    .netns
                    .command(&node.site.config_path(), &[stale, "--instance=VI_1"]);
                children.push(command.stderr(std::process::Stdio::null()).spawn().unwrap());
            }
            std::thread::sleep(Duration::from_millis(next(30)));
        }
        for mut child in children {
            child.wait().unwrap();
        }
        assert_eq!(
            pair.node1.read_only(),
            !held,
            "round {round}: VIP {}, but read_only is {}",
            if held { "held" } else { "not held" },
            pair.node1.read_only()
        );
    }
}
