//! The write lease and the guard on a real pair: two node namespaces on a switch, a
//! guard per node (the real `mmvip guard`, talking to its peer's over TCP), a real
//! MariaDB per node and, where a test says so, a real MariaDB as the witness. A
//! stand-in process plays each node's keepalived (the guard watches its pid).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::guard::{LEASE_MS, MARGIN_MS, Node, Timing, VIP, VIP2};
use common::mariadb::{Pair, Server};
use common::topology::Topology;
use common::{exit_code, stderr, wait_for};

/// Gives `node` the VIP and runs its `master` hook, which must succeed.
fn promote(node: &Node) {
    node.hold_vip(true);
    let output = node.hook(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
}

/// Kills `node`'s keepalived (-9) and waits until its guard has fenced it: `server`
/// read-only and the VIP keepalived left behind removed.
fn fenced_by_a_dead_keepalived(node: &mut Node, server: &Server) {
    node.keepalived = None;
    wait_for(
        "read-only after keepalived died",
        Duration::from_secs(3),
        || server.read_only(),
    );
    wait_for("the VIP removed", Duration::from_secs(3), || {
        !node.has_vip()
    });
}

/// Writes on `writer` until semi-sync is on there: it switches on once the replica
/// has acknowledged a commit, and until then a commit does not wait.
fn wait_for_semi_sync_on(writer: &Server) {
    wait_for(
        "semi-sync on at the writer",
        Duration::from_secs(10),
        || {
            writer.exec("INSERT INTO app.t (note) VALUES ('acknowledged by the replica')");
            writer
            .value("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'")
            .as_deref()
            == Some("ON")
        },
    );
}

#[test]
fn the_lease_goes_to_one_node_at_a_time_and_a_release_hands_it_over_at_once() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::new(&topology, 0, &pair.node1, None);
    let node2 = Node::new(&topology, 1, &pair.node2, None);
    node1.hold_vip(true);
    assert!(
        node1.ask("ACQUIRE VI_1 2000").starts_with("HELD"),
        "{}",
        node1.guard_log()
    );
    let refused = node2.ask("ACQUIRE VI_1 300");
    assert!(
        refused.starts_with("REFUSED") && refused.contains("node1"),
        "{refused}"
    );
    // Renewed by its guard: still node1's after several leases.
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    let answer = node2.ask("ACQUIRE VI_1 300");
    assert!(answer.starts_with("REFUSED"), "{answer}");
    assert!(
        node1.ask("STATUS").contains("VI_1=held:"),
        "{}",
        node1.ask("STATUS")
    );
    // keepalived moves the VIP; the demotion gives the lease back.
    node1.hold_vip(false);
    assert_eq!(node1.ask("RELEASE VI_1"), "RELEASED");
    let started = Instant::now();
    assert!(node2.ask("ACQUIRE VI_1 3000").starts_with("HELD"));
    assert!(
        started.elapsed() < Duration::from_millis(LEASE_MS / 2),
        "a released lease was waited out: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_silent_holders_lease_is_waited_out_before_another_node_holds_it() {
    let pair = Pair::start();
    let topology = Topology::new();
    let mut node1 = Node::new(&topology, 0, &pair.node1, None);
    let node2 = Node::new(&topology, 1, &pair.node2, None);
    node1.hold_vip(true);
    assert!(node1.ask("ACQUIRE VI_1 2000").starts_with("HELD"));
    // Its guard dies (kill -9): nobody gives the lease back.
    node1.guard = None;
    let started = Instant::now();
    let answer = node2.ask("ACQUIRE VI_1 6000");
    let waited = started.elapsed();
    assert!(answer.starts_with("HELD"), "{answer}");
    // node2's own vote stood for lease + margin from node1's last renewal, which was
    // at most a quarter lease before the kill.
    assert!(
        waited >= Duration::from_millis(LEASE_MS + MARGIN_MS - LEASE_MS / 4 - 50),
        "took the lease after only {waited:?}"
    );
}

#[test]
fn the_promotion_gate_then_a_holder_cut_off_from_everything_fences_itself() {
    let pair = Pair::start();
    let (topology, node1, node2) = node1_promoted(&pair);
    assert!(!pair.node1.read_only());
    assert!(
        node1.site.log_text().contains("write lease held"),
        "{}",
        node1.site.log_text()
    );
    // A second writer is refused at the gate: node1 holds the lease.
    node2.hold_vip(true);
    let output = node2.hook(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("no write lease"),
        "{}",
        stderr(&output)
    );
    assert!(pair.node2.read_only());
    node2.hold_vip(false);

    topology.cut(0, true);
    let fenced = wait_for(
        "node1 read-only after being cut off",
        Duration::from_millis(LEASE_MS + MARGIN_MS + 2000),
        || pair.node1.read_only(),
    );
    // Fenced by its own guard, not later than its lease plus the fence.
    assert!(
        fenced <= Duration::from_millis(LEASE_MS + MARGIN_MS),
        "node1 stayed writable {fenced:?} after the cut"
    );
    assert!(
        node1.guard_log().contains("fencing:"),
        "{}",
        node1.guard_log()
    );
    // node2 takes over once node1's lease is past (it still reaches the probe).
    node2.hold_vip(true);
    assert!(node2.ask("ACQUIRE VI_1 5000").starts_with("HELD"));
}

#[test]
fn a_dead_keepalived_fences_the_writer_and_its_vip_goes() {
    let pair = Pair::start();
    let topology = Topology::new();
    let mut node1 = Node::new(&topology, 0, &pair.node1, None);
    let _node2 = Node::new(&topology, 1, &pair.node2, None);
    promote(&node1);
    assert!(!pair.node1.read_only());
    // keepalived killed with -9: its VIP stays behind on the interface.
    fenced_by_a_dead_keepalived(&mut node1, &pair.node1);
    assert!(
        node1.guard_log().contains("keepalived is not running"),
        "{}",
        node1.guard_log()
    );
    // The fence keeps the instance in FAULT while keepalived is gone, and lifts it
    // once keepalived runs again and the node is read-only and healthy: a fenced
    // node that stayed in FAULT for good never failed back (lab, keepalived -9).
    let track = node1.site.path("track/VI_1");
    let read = || std::fs::read_to_string(&track).unwrap_or_default();
    assert_eq!(read().trim(), "1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(read().trim(), "1", "lifted without keepalived");
    node1.start_keepalived();
    wait_for("the fence lifted", Duration::from_secs(3), || {
        read().trim() == "0"
    });
    // The log line follows the track file by a moment.
    wait_for(
        "the fence lifted in the log",
        Duration::from_secs(1),
        || node1.guard_log().contains("fence lifted"),
    );
}

/// A fenced node is held in FAULT until it has caught up with its peer whenever the
/// peer's guard answers, writer or not: a peer whose own guard has just killed its
/// server holds no lease, yet has writes this node lacks (lab, writer cut off: the
/// node let go at once promoted without 1244 of them).
#[test]
fn a_fenced_node_behind_its_peer_is_held_until_caught_up_though_the_peer_is_no_writer() {
    let pair = Pair::start();
    let topology = Topology::new();
    let mut node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let _node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    promote(&node1);
    fenced_by_a_dead_keepalived(&mut node1, &pair.node1);
    // Behind node 2, which is no writer: node 1 no longer replicates from it.
    pair.node1.exec_through_fences("STOP SLAVE");
    node1.start_keepalived();
    let track = node1.site.path("track/VI_1");
    let read = || std::fs::read_to_string(&track).unwrap_or_default();
    wait_for("held in FAULT", Duration::from_secs(5), || {
        node1
            .guard_log()
            .contains("held in FAULT until this node has caught up with the peer")
    });
    assert_eq!(read().trim(), "1", "{}", node1.guard_log());
    pair.node1.exec_through_fences("START SLAVE");
    wait_for("caught up, no longer held", Duration::from_secs(10), || {
        read().trim() == "0"
    });
    // The log line follows the track file by a moment (CI once read between them).
    wait_for("no longer held, in the log", Duration::from_secs(1), || {
        node1.guard_log().contains("no longer held in FAULT")
    });
}

#[test]
fn a_demotion_that_kills_the_guards_session_does_not_make_the_node_unhealthy() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::new(&topology, 0, &pair.node1, None);
    let _node2 = Node::new(&topology, 1, &pair.node2, None);
    wait_for("node1's guard healthy", Duration::from_secs(5), || {
        node1
            .guard_log()
            .contains("healthy: this node may be the writer")
    });
    // The fault hook kills every session of an account that writes through
    // read_only, the guard's own root session too. Seen in the lab: the guard took
    // that for a dead MariaDB, wrote health 1, keepalived went to FAULT, the fault
    // hook killed the guard's next session, and the instance flapped forever.
    let output = node1.hook(&["fault", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    // The guard's sessions are the only clients: its watch and its semi-sync check
    // (and its dump-thread check, if it was connected at that moment).
    let log = node1.site.log_text();
    assert!(
        log.contains("killed 2 client connections") || log.contains("killed 3 client connections"),
        "the fault hook did not kill the guard's sessions:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(5 * common::guard::PING_INTERVAL_MS));
    let health = std::fs::read_to_string(node1.site.path("track/health")).unwrap();
    assert_eq!(health.trim(), "0", "{}", node1.guard_log());
    assert!(
        !node1.guard_log().contains("unhealthy"),
        "{}",
        node1.guard_log()
    );
}

#[test]
fn a_node_that_stepped_aside_and_then_got_the_lease_leaves_fault() {
    let pair = Pair::start();
    let (_topology, node1, node2) = node1_promoted(&pair);
    // Both MASTER (a heartbeat cut, in real life): node2's guard is refused by the
    // live holder for a whole lease and steps aside (FAULT)...
    node2.hold_vip(true);
    let track = node2.site.path("track/VI_1");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    wait_for("node2 stepping aside", Duration::from_secs(3), || {
        read(&track).trim() == "1"
    });
    // ...then node1 is demoted and gives the lease back, and node2's master hook
    // gets it.
    node1.hold_vip(false);
    let output = node1.hook(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let answer = node2.ask("ACQUIRE VI_1 6000");
    assert!(answer.starts_with("HELD"), "{answer}");
    // Seen in the lab: the step aside was forgotten but its track file stayed 1, so
    // keepalived kept node2 in FAULT for good and nobody took over.
    wait_for(
        "node2's track file back to 0",
        Duration::from_millis(500),
        || read(&track).trim() == "0",
    );
}

/// The fence armed inside mariadbd: a writer whose guard stops (frozen, stuck) is
/// read-only before its peer can hold the lease, though nothing of the guard runs;
/// once the guard resumes it finishes the fence (FAULT, the lease given back).
#[test]
fn a_writer_whose_guard_stops_is_read_only_before_its_peer_can_hold_the_lease() {
    let pair = Pair::start();
    let (_topology, node1, node2) = node1_promoted(&pair);
    assert!(
        !pair.node1.read_only(),
        "node 1 writable after its promotion"
    );
    node1.signal_guard(rustix::process::Signal::STOP);
    let stopped = Instant::now();
    node2.hold_vip(true);
    let (read_only_at, held_at) = std::thread::scope(|scope| {
        let read_only_at = scope.spawn(|| {
            wait_for(
                "node 1 read-only while its guard is stopped",
                Duration::from_secs(5),
                || pair.node1.read_only(),
            );
            Instant::now()
        });
        let answer = node2.ask("ACQUIRE VI_1 5000");
        assert!(answer.starts_with("HELD"), "{answer}");
        let held_at = Instant::now();
        (read_only_at.join().unwrap(), held_at)
    });
    assert!(
        read_only_at < held_at,
        "read-only {:?} after the guard stopped, but the peer held the lease after {:?}",
        read_only_at - stopped,
        held_at - stopped
    );
    eprintln!(
        "read-only {:?} after the guard stopped; the peer held the lease after {:?}",
        read_only_at - stopped,
        held_at - stopped
    );
    node1.signal_guard(rustix::process::Signal::CONT);
    wait_for(
        "the resumed guard finishing the fence",
        Duration::from_secs(3),
        || {
            node1
                .guard_log()
                .contains("the fence armed in mariadbd made the node read-only")
        },
    );
    // The fence's log line comes before its track file.
    let track = node1.site.path("track/VI_1");
    wait_for("node 1 in FAULT", Duration::from_secs(1), || {
        std::fs::read_to_string(&track).unwrap_or_default().trim() == "1"
    });
    assert!(node1.ask("ACQUIRE VI_1 300").starts_with("REFUSED"));
}

/// A killed guard's fence fires at once: its statements wait for a lock the guard's
/// own connection held, and that connection ended with it. The node is read-only
/// long before its lease could pass on. A new guard arms anew, and nothing of the
/// old one fires into the lease the new one takes.
#[test]
fn a_dead_guards_armed_fence_fires_at_once_and_a_new_guard_arms_anew() {
    let pair = Pair::start();
    let (_topology, mut node1, _node2) = node1_promoted(&pair);
    node1.guard = None;
    let read_only_after = wait_for(
        "read-only with no guard running",
        Duration::from_secs(5),
        || pair.node1.read_only(),
    );
    assert!(
        read_only_after < Duration::from_millis(LEASE_MS),
        "read-only only {read_only_after:?} after the guard died: its lease had run out"
    );
    // keepalived's FAULT for the dead guard, then a new guard and a promotion.
    node1.hold_vip(false);
    node1.start_guard();
    promote(&node1);
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    assert!(
        !pair.node1.read_only(),
        "a fence fired into the new guard's lease: {}",
        node1.guard_log()
    );
    let status = node1.hook(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        json["guard"]["armed_fence_ms"].as_u64().is_some(),
        "{json:#}"
    );
    eprintln!("read-only {read_only_after:?} after its guard died");
}

#[test]
fn with_a_witness_the_lease_survives_a_silent_peer_and_a_silent_witness() {
    let pair = Pair::start();
    let topology = Topology::new();
    let witness = Server::start_witness(&topology.switch.name, &topology.probe());
    witness.exec(
        "CREATE DATABASE mmvip; CREATE USER 'mmvip_witness'@'%' IDENTIFIED BY 'witness-secret'; GRANT SELECT, INSERT, UPDATE, CREATE ON mmvip.* TO 'mmvip_witness'@'%'",
    );
    let witness_at = (topology.probe(), 3306);
    let node1 = Node::new(
        &topology,
        0,
        &pair.node1,
        Some((&witness_at.0, witness_at.1)),
    );
    let mut node2 = Node::new(
        &topology,
        1,
        &pair.node2,
        Some((&witness_at.0, witness_at.1)),
    );
    node1.hold_vip(true);
    assert!(node1.ask("ACQUIRE VI_1 2000").starts_with("HELD"));
    let row = witness.value("SELECT holder FROM mmvip.mmvip_lease WHERE instance = 'VI_1'");
    assert_eq!(row.as_deref(), Some("node1"));
    // The peer's guard gone: the witness's vote keeps the lease.
    node2.guard = None;
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(
        node1.ask("STATUS").contains("VI_1=held:"),
        "{}",
        node1.ask("STATUS")
    );
    // The witness gone too, peer back: the peer's vote keeps it.
    node2.start_guard();
    drop(witness);
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(
        node1.ask("STATUS").contains("VI_1=held:"),
        "{}",
        node1.ask("STATUS")
    );
    let answer = node2.ask("ACQUIRE VI_1 300");
    assert!(answer.starts_with("REFUSED"), "{answer}");
}

/// A client connecting to the VIP from a namespace: what it sees as keepalived takes
/// the VIP away.
struct VipClient {
    netns: String,
    vip: std::net::SocketAddr,
}

/// keepalived's part in a switch-over, played by the test: when the writer's failover
/// track file goes to FAULT, its VIP goes to the other node, whose `master` hook runs.
/// With a `client`, it connects to the VIP at that moment, before the VIP goes: the
/// second value returned.
fn keepalived_stand_in(
    from: &Node,
    to: &Node,
    client: Option<VipClient>,
) -> std::thread::JoinHandle<(std::process::Output, Option<std::io::Result<()>>)> {
    let track = from.site.path("track/failover");
    let (from_ns, to_ns, config) = (from.netns.clone(), to.netns.clone(), to.site.config_path());
    std::thread::spawn(move || {
        let started = Instant::now();
        while std::fs::read_to_string(&track).unwrap_or_default().trim() != "1" {
            assert!(started.elapsed() < Duration::from_secs(20), "no FAULT");
            std::thread::sleep(Duration::from_millis(1));
        }
        let connected = client.map(|client| {
            common::netns::connect_from(&client.netns, client.vip, Duration::from_secs(1))
        });
        let vip = format!("{VIP}/32");
        for (ns, verb) in [(&from_ns, "del"), (&to_ns, "add")] {
            assert!(
                Command::new("ip")
                    .args(["-n", ns, "addr", verb, &vip, "dev", "lo"])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let promoted = Command::new("ip")
            .args(["netns", "exec", &to_ns])
            .arg(common::mmvip_binary())
            .arg("--config")
            .arg(config)
            .args(["master", "--instance=VI_1"])
            .output()
            .unwrap();
        (promoted, connected)
    })
}

#[test]
fn switchover_from_either_node_moves_the_writer_with_nothing_left_behind() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    promote(&node1);
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('before the switch-over')");

    // Refused while the peer does not apply what the writer wrote: nothing changes.
    pair.node2.exec("STOP SLAVE");
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('while the peer stopped')");
    let output = node2.hook(&["switchover"]);
    assert_eq!(exit_code(&output), 1);
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the peer lags"),
        "{}",
        stderr(&output)
    );
    assert!(!pair.node1.read_only());
    assert!(
        !node1.site.flag_path().exists(),
        "a refused switch-over raised the flag"
    );
    pair.node2.exec("START SLAVE");
    pair.wait_converged();

    // A client on the switch reaches the VIP through node1, where a listener on
    // MariaDB's port stands in for the server (the guard asks MariaDB for its port).
    let port: u16 = pair
        .node1
        .value("SELECT @@GLOBAL.port")
        .unwrap()
        .parse()
        .unwrap();
    let _listener = topology.nodes[0].listen(port);
    topology.route_through(VIP, 0);
    let vip: std::net::SocketAddr = format!("{VIP}:{port}").parse().unwrap();
    common::netns::connect_from(&topology.switch.name, vip, Duration::from_secs(1))
        .expect("the client reaches node1's VIP before the switch-over");

    // Run on the node that is not the writer: its guard asks the writer's.
    let keepalived = keepalived_stand_in(
        &node1,
        &node2,
        Some(VipClient {
            netns: topology.switch.name.clone(),
            vip,
        }),
    );
    let output = node2.hook(&["switchover"]);
    assert_eq!(
        exit_code(&output),
        0,
        "{}\n{}",
        stderr(&output),
        node1.site.log_text()
    );
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("switch-over: {report}");
    for step in [
        "checks",
        "new connections refused",
        "read-only",
        "peer applied",
        "lease released",
        "VIP gone",
        "peer writable",
    ] {
        assert!(report.contains(step), "{step} missing: {report}");
    }
    let (promoted, connected) = keepalived.join().unwrap();
    assert_eq!(exit_code(&promoted), 0, "{}", stderr(&promoted));
    // Refused, not accepted, while the VIP was still there: a connection accepted
    // then would be left unable to answer once the VIP went.
    let refused = connected.expect("the client tried");
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a new connection to the leaving VIP: {refused:?}"
    );
    assert!(pair.node1.read_only());
    assert!(!pair.node2.read_only());
    // A packet for the VIP that still reaches node1 (a client's stale ARP entry) is
    // reset at once rather than dropped, so its client does not wait out a timeout.
    let stale = common::netns::connect_from(&topology.switch.name, vip, Duration::from_secs(1));
    assert_eq!(
        stale.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connection to the VIP that moved on, through node1: {stale:?}"
    );
    assert_eq!(
        pair.node2
            .value("SELECT COUNT(*) FROM app.t WHERE note = 'before the switch-over'")
            .as_deref(),
        Some("1")
    );
    // The old writer stays out until an operator lowers the flag.
    assert!(node1.site.flag_path().exists());
    std::fs::remove_file(node1.site.flag_path()).unwrap();
    wait_for(
        "node1's failover track file lowered",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(node1.site.path("track/failover"))
                .unwrap_or_default()
                .trim()
                == "0"
        },
    );

    // The flag raised by hand on the writer: its guard switches over before
    // keepalived hears of it, so nothing written before the flag is left behind.
    pair.node2
        .exec("INSERT INTO app.t (note) VALUES ('before the flag')");
    let keepalived = keepalived_stand_in(&node2, &node1, None);
    std::fs::write(node2.site.flag_path(), "").unwrap();
    let (promoted, _) = keepalived.join().unwrap();
    assert_eq!(exit_code(&promoted), 0, "{}", stderr(&promoted));
    assert!(pair.node2.read_only());
    assert!(!pair.node1.read_only());
    // node1 refused new connections only during its own switch-over.
    common::netns::connect_from(&topology.switch.name, vip, Duration::from_secs(1))
        .expect("the client reaches node1's VIP again");
    assert_eq!(
        pair.node1
            .value("SELECT COUNT(*) FROM app.t WHERE note = 'before the flag'")
            .as_deref(),
        Some("1")
    );
    // The guard logs its report once it has seen the peer writable.
    wait_for("node2's switch-over report", Duration::from_secs(5), || {
        node2
            .site
            .log_text()
            .contains("switch-over (failover flag): checks")
    });
}

#[test]
fn clocks_a_day_apart_and_a_grantor_whose_clock_jumps_a_lease_change_nothing() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::new(&topology, 0, &pair.node1, None);
    let mut node2 = Node::new(&topology, 1, &pair.node2, None);
    node2.start_guard_with_clock_ahead(Some(86_400));
    promote(&node1);

    // Renewed across leases, counted on clocks a day apart; a rival is refused.
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(!pair.node1.read_only(), "{}", node1.guard_log());
    let answer = node2.ask("ACQUIRE VI_1 300");
    assert!(answer.starts_with("REFUSED"), "{answer}");

    // The grantor's guard stops for two leases: to it, time jumps. The holder keeps
    // its lease (its peer silent, a probe answering), and the grantor, resumed with
    // its vote lapsed, still cannot take the lease from a live writer.
    node2.signal_guard(rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    node2.signal_guard(rustix::process::Signal::CONT);
    let answer = node2.ask("ACQUIRE VI_1 300");
    assert!(answer.starts_with("REFUSED"), "{answer}");
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    assert!(!pair.node1.read_only(), "{}", node1.guard_log());
    assert!(
        !node1.guard_log().contains("fencing:"),
        "{}",
        node1.guard_log()
    );

    // Again, but the holder's guard stops answering as the grantor resumes, until
    // the grantor's vote has lapsed: the grantor heard nothing while it was stopped
    // itself, and one silent round is not a dead peer, so it does not take the lease
    // alone. (The holder, resumed past its lease, fences itself or, nobody having
    // taken the lease meanwhile, renews it first: either is one writer.)
    node2.signal_guard(rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    node1.signal_guard(rustix::process::Signal::STOP);
    node2.signal_guard(rustix::process::Signal::CONT);
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    let answer = node2.ask("ACQUIRE VI_1 300");
    node1.signal_guard(rustix::process::Signal::CONT);
    assert!(answer.starts_with("REFUSED"), "{answer}");
    assert!(answer.contains("ms of silence"), "{answer}");

    // A release hands the lease over at once.
    node1.hold_vip(false);
    let output = node1.hook(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    node2.hold_vip(true);
    let started = Instant::now();
    assert!(node2.ask("ACQUIRE VI_1 5000").starts_with("HELD"));
    assert!(
        started.elapsed() < Duration::from_millis(LEASE_MS / 2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn status_shows_the_vip_the_servers_the_lease_and_the_last_runs() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let _node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    promote(&node1);

    let output = node1.hook(&["status"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}");
    for expected in [
        &format!("instance VI_1 (rw): VIP {VIP} held here") as &str,
        "mariadb: WRITABLE",
        "replicating '': IO running, SQL running",
        "peer 127.0.0.1:",
        "guard VI_1: lease held here",
        "guard: local MariaDB healthy",
        "guard: fence armed in mariadbd",
        "plugin=master",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(text.contains(": read-only, server_id 2"), "{text}");

    let output = node1.hook(&["status", "--json"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["instances"][0]["held_here"], true);
    assert_eq!(json["mariadb"]["read_only"], false);
    assert_eq!(json["peer"]["server"]["read_only"], true);
    assert!(json["guard"]["leases"]["VI_1"]["held_ms"].as_u64().unwrap() > 0);
    assert!(json["guard"]["armed_fence_ms"].as_u64().unwrap() > 0);
    assert_eq!(json["guard"]["healthy"], true);

    // Demoted, VIP gone: the lease is given back, and status says so.
    node1.hold_vip(false);
    let output = node1.hook(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let json: serde_json::Value =
        serde_json::from_slice(&node1.hook(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["instances"][0]["held_here"], false);
    assert_eq!(json["mariadb"]["read_only"], true);
    assert!(
        json["guard"]["leases"]["VI_1"]["held_ms"].is_null(),
        "{json:#}"
    );
    assert!(json["guard"]["armed_fence_ms"].is_null(), "{json:#}");
}

#[test]
fn under_systemd_the_guard_says_ready_and_feeds_the_watchdog_only_while_it_runs() {
    let pair = Pair::start();
    let topology = Topology::new();
    let mut node1 = Node::new(&topology, 0, &pair.node1, None);
    let notify_path = node1.site.path("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let watchdog = Duration::from_millis(800);
    node1.start_guard_under_systemd(&notify_path, watchdog);
    // What systemd receives within `window`.
    let heard = |window: Duration| -> Vec<String> {
        let until = Instant::now() + window;
        let mut messages = Vec::new();
        let mut buffer = [0u8; 256];
        while Instant::now() < until {
            if let Ok(n) = systemd.recv(&mut buffer) {
                messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
        messages
    };
    let first = heard(watchdog * 2);
    assert_eq!(
        first.first().map(String::as_str),
        Some("READY=1"),
        "{first:?}"
    );
    let pings = first.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 3, "{first:?}");

    // Stopped, the guard goes quiet: systemd's watchdog would kill it.
    node1.signal_guard(rustix::process::Signal::STOP);
    let _in_flight = heard(Duration::from_millis(100));
    let stopped = heard(watchdog * 2);
    node1.signal_guard(rustix::process::Signal::CONT);
    assert!(stopped.is_empty(), "{stopped:?}");
    let resumed = heard(watchdog);
    assert!(resumed.contains(&"WATCHDOG=1".to_string()), "{resumed:?}");
}

/// The heartbeat link cut: VRRP makes the reader MASTER too. It cannot get the lease,
/// steps aside (FAULT) and stays aside while the writer holds the lease, instead of
/// taking the VIP back every few seconds; once the writer gives it back, it is done.
#[test]
fn a_node_refused_the_lease_steps_aside_while_the_writer_holds_it() {
    let pair = Pair::start();
    let (_topology, node1, node2) = node1_promoted(&pair);

    let aside = || {
        std::fs::read_to_string(node2.site.path("track/VI_1"))
            .unwrap_or_default()
            .trim()
            == "1"
    };
    node2.hold_vip(true);
    wait_for("node2 stepping aside", Duration::from_secs(2), aside);
    // keepalived, told FAULT, removes the VIP.
    node2.hold_vip(false);
    // Well past a step aside (0.5 s, then asked each round): still aside, node1 the writer.
    std::thread::sleep(Duration::from_secs(5));
    assert!(aside(), "{}", node2.guard_log());
    assert!(!pair.node1.read_only());
    assert!(pair.node2.read_only());

    // The writer gives the lease back: node2's next look ends the step aside.
    node1.hold_vip(false);
    let output = node1.hook(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    wait_for("node2's step aside over", Duration::from_secs(5), || {
        !aside()
    });
    assert!(node2.guard_log().contains("no longer stepping aside"));
}

/// Both nodes of `pair` with their guards in a fresh topology, node 1 promoted (it
/// holds the VIP and the lease, and is writable). Bound as a tuple, they drop in
/// reverse: the nodes' guards before the topology's namespaces.
fn node1_promoted(pair: &Pair) -> (Topology, Node, Node) {
    let topology = Topology::new();
    let node1 = Node::new(&topology, 0, &pair.node1, None);
    let node2 = Node::new(&topology, 1, &pair.node2, None);
    promote(&node1);
    (topology, node1, node2)
}

/// Freezes the writer's mariadbd, waits until its guard has killed it, and checks that
/// the peer can then hold the lease.
fn freeze_until_killed_and_the_peer_holds_the_lease(writer: &Server, peer: &Node) {
    let pid = writer.pid().as_raw_nonzero().get();
    // Gone, or a zombie the test has not reaped: either way it runs no more.
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
    };
    writer.freeze();
    wait_for(
        "the hung writer's mariadbd killed",
        Duration::from_secs(5),
        gone,
    );
    let answer = peer.ask("ACQUIRE VI_1 5000");
    assert!(answer.starts_with("HELD"), "{answer}");
}

/// A writer whose MariaDB hangs could resume and commit after the peer took over: its
/// guard kills it (the last resort) before it gives the lease back, and only then can
/// the peer hold the lease.
#[test]
fn a_hung_writer_is_killed_before_its_lease_is_given_back() {
    let pair = Pair::start();
    let (_topology, node1, node2) = node1_promoted(&pair);
    freeze_until_killed_and_the_peer_holds_the_lease(&pair.node1, &node2);
    let log = node1.guard_log();
    assert!(log.contains("MariaDB hangs"), "{log}");
    assert!(log.contains("last resort: mariadbd killed"), "{log}");
}

/// A hung writer whose last answer showed semi-sync covering every acknowledged commit
/// has nothing of its own to lose: its guard kills it at once, without waiting for the
/// lease to run out, and the acknowledged commit is on the peer.
#[test]
fn a_hung_writer_whose_every_ack_semi_sync_covered_is_killed_without_waiting_out_its_lease() {
    let pair = Pair::start();
    // Semi-sync from node 1 to node 2; the replica acknowledges once its IO thread
    // reconnects as a semi-sync replica.
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_timeout = 5000; SET GLOBAL rpl_semi_sync_master_enabled = ON",
    );
    pair.node2.exec(
        "SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD",
    );
    let semi_sync_on = || {
        pair.node1
            .value("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'")
            .as_deref()
            == Some("1")
    };
    wait_for(
        "node 2 acknowledging as a semi-sync replica",
        Duration::from_secs(10),
        semi_sync_on,
    );
    let (_topology, node1, node2) = node1_promoted(&pair);
    // A commit acknowledged by the replica turns the status ON.
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('acknowledged by node 2')");
    // The guard's statement sees it on its next answers.
    std::thread::sleep(Duration::from_millis(3 * common::guard::PING_INTERVAL_MS));
    freeze_until_killed_and_the_peer_holds_the_lease(&pair.node1, &node2);
    let log = node1.guard_log();
    assert!(
        log.contains("semi-sync covered every acknowledged commit when last checked); last resort: mariadbd killed"),
        "{log}"
    );
    // Killed at once: the guard did not wait for its lease to run out first.
    assert!(
        !log.contains("the last resort waits until the lease is about to run out"),
        "{log}"
    );
    let row = pair
        .node2
        .value("SELECT COUNT(*) FROM app.t WHERE note = 'acknowledged by node 2'");
    assert_eq!(row.as_deref(), Some("1"));
}

/// A writer cut off from everything while a commit waits for the peer's
/// acknowledgement: its guard kills mariadbd before semi-sync gives up on the peer
/// and commits it here alone (the peer, taking over, would write its own transactions
/// in its place, and replication would stop on the conflict after the heal). The
/// default lease and margin: with them, the fence at the lease's end comes after
/// `rpl_semi_sync_master_timeout` (1.5 s here) and the commit would complete first.
#[test]
fn a_writer_cut_off_with_a_commit_waiting_for_the_peer_is_killed_before_it_commits_alone() {
    let pair = Pair::start();
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_timeout = 1500; \
         SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC; \
         SET GLOBAL rpl_semi_sync_master_enabled = ON",
    );
    pair.node2.exec(
        "SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD",
    );
    wait_for(
        "node 2 acknowledging as a semi-sync replica",
        Duration::from_secs(10),
        || {
            pair.node1
                .value("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'")
                .as_deref()
                == Some("1")
        },
    );
    let topology = Topology::new();
    let node1 = Node::timed(&topology, 0, &pair.node1, None, None, Timing::DEFAULTS);
    let _node2 = Node::timed(&topology, 1, &pair.node2, None, None, Timing::DEFAULTS);
    promote(&node1);
    // Semi-sync switches on once the replica has acknowledged a commit: until then a
    // commit does not wait, and there would be nothing in flight to stop.
    wait_for_semi_sync_on(&pair.node1);

    // Node 2 stops acknowledging (frozen: its connection stays open), then node 1 is
    // cut off from the peer's guard and the probe.
    pair.node2.freeze();
    let mut client = pair.node1.root();
    let in_flight = std::thread::spawn(move || {
        let started = Instant::now();
        let outcome = mysql::prelude::Queryable::query_drop(
            &mut client,
            "INSERT INTO app.t (note) VALUES ('in flight at the cut')",
        );
        (outcome, started.elapsed())
    });
    topology.cut(0, true);
    let (outcome, after) = in_flight.join().unwrap();
    pair.node2.thaw();
    assert!(
        outcome.is_err(),
        "the commit completed on node 1 alone after {after:?}: {}",
        node1.guard_log()
    );
    wait_for("the guard's last resort", Duration::from_secs(5), || {
        node1.guard_log().contains(
            "commits wait for a peer this node cannot reach; none was acknowledged without it); last resort: mariadbd killed",
        )
    });
}

/// A node promoted while its peer is silent closes its replication connection before
/// it applies what it received. A commit in flight on the old writer when it died
/// was already sent, and sits in the network (here: a relay that holds the old
/// writer's bytes, as its kernel held them while a cut lasted); delivered after the
/// new writer's own writes, it would be applied after them (the lab's long chaos
/// run: the same sequence number twice, replication stopped). Once the old writer's
/// MariaDB answers again, restarted as a replica that rolled the commit back, the
/// new writer's guard resumes replication, and the pair converges without it.
#[test]
fn a_node_promoted_without_its_silent_peers_position_takes_nothing_more_from_the_old_connection() {
    let mut pair = Pair::start();
    let source = pair.node1.replication.unwrap().port;
    let relay = common::relay::Relay::to(([127, 0, 0, 1], source).into());
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_timeout = 30000; \
         SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC; \
         SET GLOBAL rpl_semi_sync_master_enabled = ON",
    );
    pair.node2.exec(&format!(
        "SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE; \
         CHANGE MASTER TO master_port = {}; START SLAVE",
        relay.port
    ));
    let topology = Topology::new();
    let node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    promote(&node1);
    wait_for_semi_sync_on(&pair.node1);
    pair.wait_converged();

    // The commit is sent and waits for node 2's acknowledgement, which cannot come.
    relay.hold();
    let mut client = pair.node1.root();
    let in_flight = std::thread::spawn(move || {
        mysql::prelude::Queryable::query_drop(
            &mut client,
            "INSERT INTO app.t (note) VALUES ('in flight when the writer died')",
        )
    });
    wait_for("the commit's event sent", Duration::from_secs(10), || {
        relay.held_bytes() > 0
    });
    pair.node1.kill();
    assert!(in_flight.join().unwrap().is_err(), "acknowledged");

    node1.hold_vip(false);
    promote(&node2);
    let log = node2.site.log_text();
    assert!(
        log.contains("peer's final position unknown")
            && log.contains("paused replication from the silent peer (default)"),
        "{log}"
    );
    pair.node2
        .exec("INSERT INTO app.t (note) VALUES ('written by the new writer')");

    // The cut heals: the old connection's bytes arrive, and nobody takes them.
    let delivery = relay.release();
    assert_eq!(delivery.delivered, 0, "{delivery:?}");
    assert!(delivery.refused > 0, "{delivery:?}");
    std::thread::sleep(Duration::from_secs(1));
    let late = "SELECT COUNT(*) FROM app.t WHERE note = 'in flight when the writer died'";
    assert_eq!(pair.node2.value(late).as_deref(), Some("0"));

    // The old writer restarts as a replica, rolling back what no one acknowledged.
    pair.node1.extra_args = vec![
        "--init-rpl-role=SLAVE".into(),
        "--rpl-semi-sync-slave-enabled=ON".into(),
    ];
    pair.node1.restart();
    wait_for(
        "node 2's guard resuming replication",
        Duration::from_secs(10),
        || {
            node2
                .guard_log()
                .contains("replication from the peer resumed (default)")
        },
    );
    pair.wait_converged();
    assert_eq!(pair.node1.value(late).as_deref(), Some("0"));
    let new = "SELECT COUNT(*) FROM app.t WHERE note = 'written by the new writer'";
    assert_eq!(pair.node1.value(new).as_deref(), Some("1"));
    // Forgotten once resumed: an operator's later STOP SLAVE is left alone.
    assert!(
        !std::fs::read_to_string(node2.state_dir().join("state"))
            .unwrap_or_default()
            .contains("replication-paused")
    );
}

/// A writer killed while a commit waited for the peer's acknowledgement, after the
/// peer had already applied that commit and sent it back around the ring: restarted
/// as a replica (`init_rpl_role = SLAVE`), its recovery truncates the commit from its
/// binlog, but its `gtid_slave_pos` counts it as seen, so it would ask the peer for
/// what comes after it and never get it back (the write lost at a reboot in the lab's
/// long chaos run). Its guard rewinds the position to the binlog's, and it comes back.
#[test]
fn a_commit_recovery_dropped_after_it_came_back_around_the_ring_is_fetched_again() {
    let mut pair = Pair::start();
    // Node 2 applies node 1's commits but never acknowledges them (no semi-sync
    // replica): node 1's commit stays prepared, waiting.
    pair.node1.exec(
        "SET GLOBAL rpl_semi_sync_master_timeout = 30000; \
         SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC; \
         SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON; \
         SET GLOBAL rpl_semi_sync_master_enabled = ON",
    );
    let topology = Topology::new();
    let node1 = Node::new(&topology, 0, &pair.node1, None);
    let _node2 = Node::new(&topology, 1, &pair.node2, None);
    promote(&node1);
    let mut client = pair.node1.root();
    let waiting = std::thread::spawn(move || {
        mysql::prelude::Queryable::query_drop(
            &mut client,
            "INSERT INTO app.t (note) VALUES ('around the ring')",
        )
    });
    let row = "SELECT COUNT(*) FROM app.t WHERE note = 'around the ring'";
    let own = |variable: &str| {
        pair.node1
            .value(&format!("SELECT @@GLOBAL.{variable}"))
            .unwrap_or_default()
    };
    wait_for(
        "the commit applied by node 2 and seen back at node 1",
        Duration::from_secs(10),
        || {
            pair.node2.value(row).as_deref() == Some("1")
                && own("gtid_slave_pos").contains(&own("gtid_binlog_pos"))
        },
    );
    pair.node1.kill();
    assert!(waiting.join().unwrap().is_err(), "acknowledged");
    pair.node1.extra_args = vec![
        "--init-rpl-role=SLAVE".into(),
        "--rpl-semi-sync-slave-enabled=ON".into(),
    ];
    pair.node1.restart();
    let error_log =
        std::fs::read_to_string(pair.node1.dir.path().join("error.log")).unwrap_or_default();
    assert!(
        error_log.contains("Successfully truncated binlog"),
        "recovery kept the commit: {error_log}"
    );
    wait_for(
        &format!(
            "the commit fetched back from node 2 ({})",
            node1.site.path("mmvip.log").display()
        ),
        Duration::from_secs(10),
        || pair.node1.value(row).as_deref() == Some("1"),
    );
    let log = node1.guard_log();
    assert!(log.contains("replica position rewound from"), "{log}");
    pair.wait_converged();
}

/// An IO thread stopped on error 1236 (the peer lacks the GTID asked for, as after
/// the peer's recovery dropped a transaction this node had applied) is started again
/// by the guard, and replication resumes once the peer has that GTID.
#[test]
fn an_io_thread_stopped_on_1236_is_started_again_once_the_peer_has_the_gtid() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node2 = Node::new(&topology, 1, &pair.node2, None);
    // Node 2 counts three of node 1's transactions that node 1 does not have yet.
    let position = pair.node1.value("SELECT @@GLOBAL.gtid_binlog_pos").unwrap();
    let last = common::mariadb::last_seq(&position, 1);
    let ahead = position.replace(&format!("1-1-{last}"), &format!("1-1-{}", last + 3));
    pair.node2.exec(&format!(
        "STOP SLAVE; SET GLOBAL gtid_slave_pos = '{ahead}'; START SLAVE"
    ));
    let io_errno = || {
        let mut conn = pair.node2.root();
        let row: Option<mysql::Row> =
            mysql::prelude::Queryable::query_first(&mut conn, "SHOW SLAVE STATUS").unwrap();
        row.and_then(|row| row.get::<u32, _>("Last_IO_Errno"))
    };
    wait_for(
        "node 2's IO thread stopped on 1236",
        Duration::from_secs(10),
        || io_errno() == Some(1236),
    );
    // Node 1 writes them (as root, through read_only); node 2 may fetch after them now.
    for n in 1..=3 {
        pair.node1
            .exec(&format!("INSERT INTO app.t (note) VALUES ('skipped {n}')"));
    }
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('after the gap')");
    wait_for(
        "replication resumed by node 2's guard",
        Duration::from_secs(15),
        || {
            pair.node2
                .value("SELECT COUNT(*) FROM app.t WHERE note = 'after the gap'")
                .as_deref()
                == Some("1")
        },
    );
    let log = node2.guard_log();
    assert!(
        log.contains("IO thread stopped on error 1236") && log.contains("started again"),
        "{log}"
    );
}

/// A failover flag lowered while the writer's switch-over still runs (here: waiting
/// for a peer that does not apply, then failing) leaves the failover track file
/// lowered: the switch-over's own "move the VIP" comes after the lowering was seen
/// and would otherwise keep the node in FAULT for good (a lab chaos run).
#[test]
fn a_flag_lowered_during_the_switch_over_leaves_the_node_out_of_fault() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let _node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    promote(&node1);
    // The peer stops applying: the switch-over's first check waits 1 s, then fails.
    pair.node2.exec("STOP SLAVE SQL_THREAD");
    pair.node1
        .exec("INSERT INTO app.t (note) VALUES ('not applied by node 2')");
    let track = node1.site.path("track/failover");
    let track_value = || {
        std::fs::read_to_string(&track)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    std::fs::write(node1.site.flag_path(), "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(node1.site.flag_path()).unwrap();
    wait_for("the switch-over's end", Duration::from_secs(5), || {
        node1
            .guard_log()
            .contains("switch-over (failover flag) failed: the peer lags")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(track_value(), "0", "{}", node1.guard_log());
}

/// A peer whose MariaDB accepts connections but is slow to answer, while its guard
/// answers, is alive: `master` waits for its final position instead of promoting on
/// what this node received (a lab chaos run: the peer's server had just restarted,
/// and its transaction that this node lacked was written here again under the same
/// GTID).
#[test]
fn a_peer_alive_but_slow_to_answer_is_waited_for() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::with_peer(&topology, 0, &pair.node1, None, Some(&pair.node2));
    let _node2 = Node::with_peer(&topology, 1, &pair.node2, None, Some(&pair.node1));
    let slow = pair.node2.pid();
    pair.node2.freeze();
    let thaw = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        rustix::process::kill_process(slow, rustix::process::Signal::CONT).unwrap();
    });
    promote(&node1);
    thaw.join().unwrap();
    let log = node1.site.log_text();
    assert!(log.contains("caught up with the peer at"), "{log}");
    assert!(!log.contains("final position unknown"), "{log}");
}

/// With two `rw` instances a node may already be writable when another instance's
/// VIP arrives, and `read_only` keeps nobody out: each VIP has a gate that resets
/// every TCP packet for it until this node's `master` for it has passed under its
/// lease, and closes again as the lease goes (the two-VIP layout's switch-over and
/// heartbeat cut).
#[test]
fn with_two_rw_instances_a_vip_reaches_a_writable_node_only_once_it_serves_that_instance() {
    let pair = Pair::start();
    let topology = Topology::new();
    let node1 = Node::two_instances(&topology, 0, &pair.node1);
    let node2 = Node::two_instances(&topology, 1, &pair.node2);
    // A client on the switch reaches both VIPs through node1, where a listener
    // stands in for MariaDB (the gate does not depend on the port).
    let _listener = topology.nodes[0].listen(3306);
    topology.route_through(VIP, 0);
    topology.route_through(VIP2, 0);
    let connect = |vip: &str| {
        let to: std::net::SocketAddr = format!("{vip}:3306").parse().unwrap();
        common::netns::connect_from(&topology.switch.name, to, Duration::from_secs(1))
            .map_err(|e| e.kind())
    };
    let refused = Err(std::io::ErrorKind::ConnectionRefused);

    // VI_1 arrives and is promoted: served.
    node1.hold_vip(true);
    assert_eq!(connect(VIP), refused, "reached before master passed");
    let output = node1.hook(&["master", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!pair.node1.read_only());
    assert_eq!(connect(VIP), Ok(()), "{}", node1.guard_log());

    // VI_2's VIP arrives too (both nodes VRRP MASTER: a heartbeat cut) while node2
    // holds its lease: node1 is writable, yet nothing reaches it through VIP2.
    node2.hold_address(VIP2, true);
    assert!(node2.ask("ACQUIRE VI_2 2000").starts_with("HELD"));
    node1.hold_address(VIP2, true);
    assert_eq!(
        connect(VIP2),
        refused,
        "VIP2 reached node1 without its lease"
    );
    let output = node1.hook(&["master", "--instance=VI_2"]);
    assert_ne!(
        exit_code(&output),
        0,
        "promoted without the lease: {}\n{}",
        node1.guard_log(),
        node2.guard_log()
    );
    assert_eq!(connect(VIP2), refused, "{}", node1.guard_log());
    assert_eq!(connect(VIP), Ok(()), "VI_1's clients were cut off");
    // What `mmvip status` shows of it.
    let status = node1.ask("STATUS");
    let gate_of = |name: &str| {
        status
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .and_then(|parts| parts.split(',').find_map(|part| part.strip_prefix("gate:")))
            .map(str::to_string)
    };
    assert_eq!(gate_of("VI_1").as_deref(), Some("open"), "{status}");
    assert_eq!(gate_of("VI_2").as_deref(), Some("closed"), "{status}");

    // node2 gives VI_2 up (a switch-over): node1's master serves it once it passes.
    node2.hold_address(VIP2, false);
    assert_eq!(node2.ask("RELEASE VI_2"), "RELEASED");
    let output = node1.hook(&["master", "--instance=VI_2"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(connect(VIP2), Ok(()), "{}", node1.guard_log());

    // VI_1 leaves node1, which stays writable for VI_2: its gate closes with the
    // lease, so a VIP1 that lingers (or comes back before master) reaches nothing.
    node1.hold_vip(false);
    let output = node1.hook(&["backup", "--instance=VI_1"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!pair.node1.read_only());
    node1.hold_vip(true);
    assert_eq!(connect(VIP), refused, "{}", node1.guard_log());
    assert_eq!(connect(VIP2), Ok(()));
    assert!(
        node1.guard_log().contains("VI_1: gate of 10.97.0.1 closed"),
        "{}",
        node1.guard_log()
    );
}
