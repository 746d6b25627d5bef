//! The role decisions against a scripted node, natively: no wasm, no server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mmvip_sdk::lease::Answer as LeaseAnswer;
use mmvip_sdk::peer::PeerStatus;

use mmvip_sdk::sql::{
    ClientConnection, Error as SqlError, EventInfo, EventStatus, IoState, ReplicaStatus, SqlState,
};
use mmvip_sdk::{Call, HookError, InstanceRole, Transition, VrrpInstance, VrrpState};

use super::*;

mod parsers;
mod properties;

/// A node whose answers a test scripts; every change is recorded in `calls`.
struct Scripted {
    variables: BTreeMap<String, String>,
    replicas: Vec<ReplicaStatus>,
    wait_reaches: bool,
    connections: Vec<ClientConnection>,
    events: Vec<EventInfo>,
    vips: BTreeSet<String>,
    /// Remote `host:port` of clients connected through each VIP.
    vip_clients: BTreeMap<String, Vec<String>>,
    state: BTreeMap<String, String>,
    /// What the peer answers, in turn (the last answer repeats).
    peer: Vec<Result<PeerStatus, SqlError>>,
    privileged: Vec<String>,
    /// `SET GLOBAL read_only = ON` waits behind a lock until these sessions are gone.
    blocked_by: BTreeSet<u64>,
    /// The node's own clock: `pause` moves it, nothing sleeps.
    clock: Instant,
    /// What the guard answers for the lease.
    lease: LeaseAnswer,
    /// The wall clock, in Unix seconds.
    wall: u64,
    calls: Vec<String>,
    warnings: Vec<String>,
    /// What `STOP SLAVE IO_THREAD` answers instead of stopping.
    stop_io_fails: Option<SqlError>,
    peer_guard_answers: bool,
}

impl Scripted {
    fn new() -> Scripted {
        Scripted {
            variables: [
                ("read_only", "1"),
                ("gtid_domain_id", "2"),
                ("gtid_binlog_state", "1-1-10,2-2-7"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
            replicas: vec![replica(IoState::Running, "1-1-10,2-2-7")],
            wait_reaches: true,
            connections: Vec::new(),
            events: Vec::new(),
            vips: ["10.0.1.100".to_string()].into(),
            vip_clients: BTreeMap::new(),
            state: BTreeMap::new(),
            peer: vec![Err(SqlError::Unreachable("10.0.0.2:3306: refused".into()))],
            privileged: Vec::new(),
            blocked_by: BTreeSet::new(),
            clock: Instant::now(),
            lease: LeaseAnswer::NotUsed,
            wall: 1_800_000_000,
            calls: Vec::new(),
            warnings: Vec::new(),
            stop_io_fails: None,
            peer_guard_answers: false,
        }
    }

    fn read_only(&self) -> bool {
        self.variables["read_only"] == "1"
    }
}

fn peer(read_only: bool, binlog_pos: &str, binlog_state: &str) -> Result<PeerStatus, SqlError> {
    Ok(PeerStatus {
        address: "10.0.0.2:3306".into(),
        read_only,
        server_id: 1,
        gtid_domain_id: 1,
        gtid_binlog_pos: binlog_pos.into(),
        gtid_binlog_state: binlog_state.into(),
    })
}

fn replica(io: IoState, io_pos: &str) -> ReplicaStatus {
    ReplicaStatus {
        connection_name: String::new(),
        master_user: "repl".into(),
        io_state: io,
        sql_state: SqlState::Running,
        gtid_io_pos: io_pos.into(),
        last_io_error: String::new(),
        last_sql_error: String::new(),
        seconds_behind_master: Some(0),
    }
}

fn connection(id: u64, user: &str, command: &str) -> ClientConnection {
    ClientConnection {
        id,
        user: user.into(),
        host: "10.0.1.7:40000".into(),
        command: command.into(),
        is_self: false,
        in_transaction: false,
    }
}

fn with_host(connection: ClientConnection, host: &str) -> ClientConnection {
    ClientConnection {
        host: host.into(),
        ..connection
    }
}

impl Node for Scripted {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        Ok(self.variables.get(name).cloned())
    }

    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within: Duration,
    ) -> Result<bool, SqlError> {
        self.calls.push(format!("SET {name}={value}"));
        if value == "ON" && !self.blocked_by.is_empty() {
            self.clock += within;
            return Ok(false);
        }
        let value = if value == "ON" { "1" } else { "0" };
        self.variables.insert(name.into(), value.into());
        Ok(true)
    }

    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        self.calls.push(format!("START IO {connection_name}"));
        for replica in &mut self.replicas {
            replica.io_state = IoState::Running;
        }
        Ok(())
    }

    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        self.calls.push(format!("STOP IO {connection_name}"));
        if let Some(error) = self.stop_io_fails.clone() {
            return Err(error);
        }
        for replica in &mut self.replicas {
            replica.io_state = IoState::Stopped;
        }
        Ok(())
    }

    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        Ok(self.privileged.clone())
    }

    fn peer_status(&mut self) -> Result<PeerStatus, SqlError> {
        if self.peer.len() > 1 {
            self.peer.remove(0)
        } else {
            self.peer[0].clone()
        }
    }

    fn acquire_lease(&mut self, instance: &str, _timeout: Duration) -> LeaseAnswer {
        self.calls.push(format!("ACQUIRE {instance}"));
        self.lease.clone()
    }

    fn release_lease(&mut self, instance: &str) -> LeaseAnswer {
        self.calls.push(format!("RELEASE {instance}"));
        LeaseAnswer::Held(0)
    }

    fn peer_guard_answers(&mut self) -> bool {
        self.peer_guard_answers
    }

    fn now(&self) -> Instant {
        self.clock
    }

    fn pause(&mut self, duration: Duration) {
        self.clock += duration;
    }

    fn unix_time(&self) -> u64 {
        self.wall
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        Ok(self.replicas.clone())
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        Ok(self.connections.clone())
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        self.calls.push(format!("KILL {id}"));
        self.blocked_by.remove(&id);
        self.connections.retain(|c| c.id != id);
        Ok(true)
    }

    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        self.calls
            .push(format!("WAIT {position} {}ms", timeout.as_millis()));
        if !self.wait_reaches {
            self.clock += timeout;
        }
        Ok(self.wait_reaches)
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        Ok(self.events.clone())
    }

    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError> {
        self.calls
            .push(format!("EVENT {schema}.{name} {enabled} {comment}"));
        Ok(())
    }

    fn holds_vip(&mut self, address: &str) -> Result<bool, String> {
        Ok(self.vips.contains(address))
    }

    fn vip_clients(&mut self, address: &str) -> Result<Vec<String>, String> {
        Ok(self.vip_clients.get(address).cloned().unwrap_or_default())
    }

    fn remember(&mut self, key: &str, value: &str) {
        self.state.insert(key.into(), value.into());
    }

    fn recall(&mut self, key: &str) -> Option<String> {
        self.state.get(key).cloned()
    }

    fn forget(&mut self, key: &str) {
        self.state.remove(key);
    }

    fn warn(&mut self, message: &str) {
        self.warnings.push(message.into());
    }

    fn error(&mut self, _message: &str) {}
}

fn instances() -> Vec<VrrpInstance> {
    vec![
        VrrpInstance {
            name: "VI_1".into(),
            vip: "10.0.1.100".into(),
            role: InstanceRole::ReadWrite,
        },
        VrrpInstance {
            name: "VI_2".into(),
            vip: "10.0.1.101".into(),
            role: InstanceRole::ReadWrite,
        },
    ]
}

fn call(args: &[&str], settings: &str) -> Call {
    Call::new(args, settings, Duration::from_secs(30)).with_event(None, instances(), true)
}

fn event(state: VrrpState) -> Option<Transition> {
    Some(Transition {
        group: false,
        name: "VI_1".into(),
        state,
        priority: 100,
    })
}

#[test]
fn with_the_peer_silent_semi_sync_is_restarted_so_no_commit_waits_for_it() {
    let mut node = Scripted::new();
    node.variables
        .insert("rpl_semi_sync_master_enabled".into(), "1".into());
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    let semi_sync: Vec<&String> = node
        .calls
        .iter()
        .filter(|c| c.starts_with("SET rpl_semi_sync"))
        .collect();
    assert_eq!(
        semi_sync,
        [
            "SET rpl_semi_sync_master_enabled=OFF",
            "SET rpl_semi_sync_master_enabled=ON"
        ]
    );
    // Before the wait for what was received: the applier's commits must not wait.
    let restarted = node.calls.iter().position(|c| c.ends_with("=ON")).unwrap();
    let waited = node
        .calls
        .iter()
        .position(|c| c.starts_with("WAIT "))
        .unwrap();
    assert!(restarted < waited, "{:?}", node.calls);
    assert_eq!(node.variables["rpl_semi_sync_master_enabled"], "1");

    // Not enabled: left alone.
    let mut node = Scripted::new();
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(
        !node
            .calls
            .iter()
            .any(|c| c.starts_with("SET rpl_semi_sync"))
    );
}

#[test]
fn a_peer_whose_guard_answers_is_waited_for_when_its_mariadb_is_slow() {
    let slow = || {
        Err(SqlError::Timeout(
            "no answer on 10.0.0.2:3306 within 500 ms".into(),
        ))
    };
    // Slow twice, then it answers: the catch-up uses its final position.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer_guard_answers = true;
    node.peer = vec![slow(), slow(), peer(true, "1-1-10,2-2-7", "1-1-10,2-2-7")];
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(summary.contains("caught up with the peer at"), "{summary}");
    assert!(!node.calls.iter().any(|c| c.starts_with("STOP IO")));

    // Slow throughout: not promoted on what was received.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer_guard_answers = true;
    node.peer = vec![slow()];
    let refused = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(node.read_only());
    assert!(
        format!("{refused:?}").contains("while its guard does"),
        "{refused:?}"
    );

    // Its guard silent too (a whole node frozen): gone, as before.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer = vec![slow()];
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(
        summary.contains("peer's final position unknown"),
        "{summary}"
    );
}

#[test]
fn with_the_peer_silent_and_a_guard_fetching_is_paused_before_what_was_received_is_applied() {
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    let paused = node.calls.iter().position(|c| c == "STOP IO ").unwrap();
    let waited = node
        .calls
        .iter()
        .position(|c| c.starts_with("WAIT 1-1-10 "))
        .unwrap();
    assert!(paused < waited, "{:?}", node.calls);
    // The guard resumes the default connection (the empty name) from this key.
    assert_eq!(node.state[crate::catchup::PAUSED_KEY], "");
    assert!(
        node.warnings
            .iter()
            .any(|line| line.contains("paused replication from the silent peer (default)")),
        "{:?}",
        node.warnings
    );

    // An IO thread reconnecting to the silent peer keeps its error once stopped:
    // paused, not broken.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.replicas[0].io_state = IoState::Connecting;
    node.replicas[0].last_io_error = "error reconnecting to master: Connection refused".into();
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only(), "{summary}");

    // A STOP that times out may still take effect: the guard is told either way.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.stop_io_fails = Some(SqlError::Timeout("no answer within 1000 ms".into()));
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert_eq!(node.state[crate::catchup::PAUSED_KEY], "");

    // Without a guard nobody would resume it: fetching goes on as before.
    let mut node = Scripted::new();
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.calls.iter().any(|c| c.starts_with("STOP IO")));
    assert!(!node.state.contains_key(crate::catchup::PAUSED_KEY));

    // The peer answering, its final position is known: nothing is paused.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer = vec![peer(true, "1-1-10,2-2-7", "1-1-10,2-2-7")];
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.calls.iter().any(|c| c.starts_with("STOP IO")));

    // No [peer] (the two-VIP layout): the peer is not silent, only not asked, and
    // pausing would cut it off from a live writer.
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer = vec![Err(SqlError::Refused(
        "no [peer] in the config: the peer's addresses and account are not known".into(),
    ))];
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert!(!node.calls.iter().any(|c| c.starts_with("STOP IO")));
    assert!(!node.state.contains_key(crate::catchup::PAUSED_KEY));
}

#[test]
fn with_the_peer_silent_promotion_applies_what_was_received_then_goes_writable() {
    let mut node = Scripted::new();
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert!(
        summary.starts_with(
            "writable for VI_1; peer's final position unknown; applied what was received (1-1-10)"
        ),
        "{summary}"
    );
    // The lease first, then the catch-up, whose target is final once it is held.
    // Its own domain (2) is never waited for.
    assert_eq!(node.calls[0], "ACQUIRE VI_1");
    assert!(
        node.calls[1].starts_with("WAIT 1-1-10 "),
        "{:?}",
        node.calls
    );
    assert_eq!(node.state["writable"], "yes");
}

#[test]
fn promotion_needs_the_vip_the_lock_and_a_master_transition() {
    let mut node = Scripted::new();
    node.vips.clear();
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(err.to_string().contains("is not on this node"), "{err}");

    let mut node = Scripted::new();
    let unlocked = Call::new(&["--instance=VI_1"], "{}", Duration::from_secs(30)).with_event(
        None,
        instances(),
        false,
    );
    let err = promote_on(&mut node, &unlocked).unwrap_err();
    assert!(err.to_string().contains("node lock"), "{err}");

    let mut node = Scripted::new();
    let backup = Call::new(&[], "{}", Duration::from_secs(30)).with_event(
        event(VrrpState::Backup),
        instances(),
        true,
    );
    assert!(matches!(
        promote_on(&mut node, &backup),
        Err(HookError::Usage(_))
    ));
    assert!(node.read_only() && node.calls.is_empty());
}

#[test]
fn the_catchup_wait_is_cut_to_the_hooks_own_budget_and_says_so() {
    let mut node = Scripted::new();
    node.wait_reaches = false;
    let short = Call::new(
        &["--instance=VI_1"],
        r#"{"catchup_timeout": "30s"}"#,
        Duration::from_secs(5),
    )
    .with_event(None, instances(), true);
    let err = promote_on(&mut node, &short).unwrap_err();
    assert!(err.to_string().contains("cut to"), "{err}");
    let waited: u64 = node.calls[1]
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    assert!(waited <= 4_000, "waited {waited} ms of a 5 s budget");
    assert!(node.read_only());
}

#[test]
fn a_broken_replica_is_reported_not_waited_on() {
    let mut node = Scripted::new();
    node.replicas[0].io_state = IoState::Stopped;
    node.replicas[0].last_io_error = "Got fatal error 1236".into();
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(err.to_string().contains("IO thread stopped"), "{err}");
    assert!(node.read_only());
    let summary = promote_on(
        &mut node,
        &call(
            &["--instance=VI_1"],
            r#"{"on_catchup_timeout": "go-writable"}"#,
        ),
    )
    .unwrap();
    assert!(summary.contains("writable by policy"), "{summary}");
}

#[test]
fn demotion_goes_read_only_before_killing_and_spares_replication() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    node.vips.clear();
    node.connections = vec![
        connection(1, "app", "Query"),
        connection(2, "system user", "Slave_SQL"),
        connection(3, "repl", "Binlog Dump GTID"),
        connection(4, "event_scheduler", "Daemon"),
        connection(5, "monitor", "Sleep"),
        connection(6, "app", "Sleep"),
    ];
    let summary = demote_on(
        &mut node,
        &call(&["--instance=VI_1"], r#"{"spare_users": ["monitor"]}"#),
        VrrpState::Backup,
    )
    .unwrap();
    // Read-only first, then the lease is given back, then clients go.
    assert_eq!(
        node.calls,
        ["SET read_only=ON", "RELEASE VI_1", "KILL 1", "KILL 6"]
    );
    assert!(
        summary.starts_with("VI_1 BACKUP: read-only; killed 2"),
        "{summary}"
    );
    assert_eq!(node.state["VI_1"], "BACKUP");
}

#[test]
fn demotion_keeps_another_held_rw_vip_writable_and_refuses_a_master_transition() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    node.vips = ["10.0.1.101".to_string()].into();
    node.connections = vec![
        with_host(connection(1, "app", "Query"), "10.0.1.7:40001"),
        with_host(connection(2, "app", "Sleep"), "10.0.1.8:40002"),
        with_host(connection(3, "monitor", "Sleep"), "10.0.1.7:40003"),
    ];
    node.vip_clients.insert(
        "10.0.1.100".into(),
        vec!["10.0.1.7:40001".into(), "10.0.1.7:40003".into()],
    );
    let summary = demote_on(
        &mut node,
        &call(&["--instance=VI_1"], r#"{"spare_users": ["monitor"]}"#),
        VrrpState::Fault,
    )
    .unwrap();
    assert!(
        summary.contains("still holds the rw VIP of VI_2"),
        "{summary}"
    );
    assert!(!node.read_only());
    // Only the unspared session that came in through VI_1's VIP goes; the one
    // through VI_2's VIP stays. Killed before the lease goes: once it is given
    // back the peer may write for VI_1.
    assert_eq!(node.calls, ["ACQUIRE VI_2", "KILL 1", "RELEASE VI_1"]);
    assert!(summary.contains("killed 1 sessions"), "{summary}");

    let master = Call::new(&[], "{}", Duration::from_secs(30)).with_event(
        event(VrrpState::Master),
        instances(),
        true,
    );
    assert!(matches!(
        demote_on(&mut node, &master, VrrpState::Backup),
        Err(HookError::Usage(_))
    ));
    assert!(!node.read_only());
}

#[test]
fn bad_arguments_still_demote_then_report() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    node.vips.clear();
    let err = demote_on(
        &mut node,
        &call(&["--instance=VI_1", "--bogus"], "{}"),
        VrrpState::Stop,
    )
    .unwrap_err();
    assert!(matches!(err, HookError::Usage(_)));
    assert!(
        err.to_string().contains("unknown argument `--bogus`"),
        "{err}"
    );
    assert!(node.read_only());
}

#[test]
fn event_marks_fit_the_comment_by_characters() {
    let mut node = Scripted::new();
    node.events = vec![EventInfo {
        schema: "app".into(),
        name: "purge".into(),
        status: EventStatus::Enabled,
        comment: "é".repeat(60),
    }];
    events::disable_enabled(&mut node).unwrap();
    let comment = node.calls[0].splitn(4, ' ').nth(3).unwrap();
    assert_eq!(comment.chars().count(), 64, "{comment}");
    assert!(comment.starts_with("mmvip-disabled:"));

    node.calls.clear();
    node.events = vec![EventInfo {
        schema: "app".into(),
        name: "purge".into(),
        status: EventStatus::ReplicaSideDisabled,
        comment: "mmvip-disabled:nightly".into(),
    }];
    events::enable_disabled_by_mmvip(&mut node).unwrap();
    assert_eq!(node.calls, ["EVENT app.purge true nightly"]);
}

#[test]
fn promotion_catches_up_to_what_the_read_only_peer_binlogged_not_to_the_relay_log() {
    let mut node = Scripted::new();
    // The peer is still writable for a moment (its demotion is running), then not.
    node.peer = vec![
        peer(false, "1-1-14,2-2-7", "1-1-14,2-2-7"),
        peer(true, "1-1-15,2-2-7", "1-1-15,2-2-7"),
    ];
    node.variables
        .insert("gtid_binlog_state".into(), "1-1-15,2-2-7".into());
    node.variables
        .insert("rpl_semi_sync_master_enabled".into(), "1".into());
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    // A peer that answers can acknowledge: semi-sync is left as it is.
    assert!(
        !node
            .calls
            .iter()
            .any(|c| c.starts_with("SET rpl_semi_sync"))
    );
    // Not the relay log's 1-1-10: the peer acknowledged up to 1-1-15.
    assert!(
        node.calls[1].starts_with("WAIT 1-1-15 "),
        "{:?}",
        node.calls
    );
    assert!(
        summary.contains("caught up with the peer at 10.0.0.2:3306"),
        "{summary}"
    );
    assert!(!node.read_only());
}

#[test]
fn a_peer_that_stays_writable_is_a_second_writer_and_stops_the_promotion() {
    let mut node = Scripted::new();
    node.peer = vec![peer(false, "1-1-14", "1-1-14")];
    let err = promote_on(
        &mut node,
        &call(&["--instance=VI_1"], r#"{"peer_read_only_timeout": "2s"}"#),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("still writable after 2 s"),
        "{err}"
    );
    assert!(node.read_only());
}

/// Under a guard with two rw instances, the peer writable for its own instance has
/// closed its gate for this one before giving the lease back: its position now is
/// final for this instance's clients, and the catch-up waits for it.
#[test]
fn with_gates_a_peer_writable_for_its_own_instance_is_caught_up_with() {
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer = vec![peer(false, "1-1-14", "1-1-14")];
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(
        summary.contains(
            "writable for another instance, its gate for this one closed, binlog at 1-1-14"
        ),
        "{summary}"
    );
    assert!(
        node.calls.iter().any(|c| c.starts_with("WAIT 1-1-14 ")),
        "{:?}",
        node.calls
    );
    assert!(!node.read_only());

    // One rw instance has no gate: a writable peer is a second writer, lease or not.
    let one_instance = Call::new(
        &["--instance=VI_1"],
        r#"{"peer_read_only_timeout": "2s"}"#,
        Duration::from_secs(30),
    )
    .with_event(None, instances()[..1].to_vec(), true);
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    node.peer = vec![peer(false, "1-1-14", "1-1-14")];
    let err = promote_on(&mut node, &one_instance).unwrap_err();
    assert!(
        err.to_string().contains("still writable after 2 s"),
        "{err}"
    );
    assert!(node.read_only());
}

#[test]
fn an_io_thread_an_operator_stopped_is_started_and_no_replica_is_no_catch_up() {
    let mut node = Scripted::new();
    node.replicas[0].io_state = IoState::Stopped;
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert_eq!(node.calls[1], "START IO ");

    let mut node = Scripted::new();
    node.replicas.clear();
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(
        err.to_string().contains("does not replicate from anyone"),
        "{err}"
    );
    assert!(node.read_only());
}

/// A node whose binlog state is `own_binlog_state`, promoted while its peer (server 1,
/// domain 1) is read-only at 1-1-15,2-2-7.
fn facing_a_read_only_peer_at_1_1_15_2_2_7(own_binlog_state: &str) -> Scripted {
    let mut node = Scripted::new();
    node.peer = vec![peer(true, "1-1-15,2-2-7", "1-1-15,2-2-7")];
    node.variables
        .insert("gtid_binlog_state".into(), own_binlog_state.into());
    node
}

#[test]
fn errant_transactions_in_the_peers_domain_stop_the_promotion() {
    // This node (server 2) binlogged 1-2-16..17: written here with the peer's domain.
    let mut node = facing_a_read_only_peer_at_1_1_15_2_2_7("1-1-15,1-2-17,2-2-7");
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(err.to_string().contains("errant transactions"), "{err}");
    assert!(err.to_string().contains("1-2-1..17"), "{err}");
    assert!(node.read_only());
}

#[test]
fn a_tail_the_peers_crash_recovery_dropped_is_no_reason_to_stay_read_only() {
    // The peer (server 1) lost 1-1-16..17 in its crash recovery; this node has them.
    let mut node = facing_a_read_only_peer_at_1_1_15_2_2_7("1-1-17,2-2-7");
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert!(
        node.warnings
            .iter()
            .any(|w| w.contains("lacks 1-1-16..17 of its own")),
        "{:?}",
        node.warnings
    );
}

#[test]
fn a_node_that_lost_its_own_tail_gets_it_back_before_it_writes() {
    // This node (domain 2) recovered to 2-2-5; the peer had received 2-2-6..7.
    let mut node = facing_a_read_only_peer_at_1_1_15_2_2_7("1-1-15,2-2-5");
    node.wait_reaches = false;
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(
        err.to_string().contains("not applied up to 1-1-15,2-2-7"),
        "{err}"
    );
    assert!(node.read_only());
    assert!(
        node.warnings
            .iter()
            .any(|w| w.contains("ends before 2-2-7")),
        "{:?}",
        node.warnings
    );

    // Its own domain's entry is otherwise left out: its applied position there is
    // stale, as this node writes that domain itself.
    let mut node = facing_a_read_only_peer_at_1_1_15_2_2_7("1-1-10,2-2-7");
    promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(
        node.calls.iter().any(|c| c.starts_with("WAIT 1-1-15 ")),
        "{:?}",
        node.calls
    );
}

#[test]
fn the_catchup_stops_when_the_vip_goes_away() {
    let mut node = Scripted::new();
    node.wait_reaches = false;
    node.vips.clear();
    node.vips.insert("10.0.1.100".into());
    // Held at the start, gone after the first slice.
    let mut calls = 0;
    let mut with_vip_leaving = LeavingVip {
        node: &mut node,
        checks_left: &mut calls,
    };
    let err = promote_on(&mut with_vip_leaving, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(
        err.to_string().contains("went away during the catch-up"),
        "{err}"
    );
    assert!(node.read_only());
}

/// A node whose VIP is held for the first check only.
struct LeavingVip<'a> {
    node: &'a mut Scripted,
    checks_left: &'a mut u32,
}

impl Node for LeavingVip<'_> {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        self.node.global_variable(name)
    }
    fn set_global_variable(&mut self, n: &str, v: &str, w: Duration) -> Result<bool, SqlError> {
        self.node.set_global_variable(n, v, w)
    }
    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        self.node.replicas()
    }
    fn start_replica_io(&mut self, name: &str) -> Result<(), SqlError> {
        self.node.start_replica_io(name)
    }
    fn stop_replica_io(&mut self, name: &str) -> Result<(), SqlError> {
        self.node.stop_replica_io(name)
    }
    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        self.node.connections()
    }
    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        self.node.privileged_users()
    }
    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        self.node.kill_connection(id)
    }
    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        self.node.wait_for_gtid(position, timeout)
    }
    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        self.node.events()
    }
    fn set_event_enabled(&mut self, s: &str, n: &str, e: bool, c: &str) -> Result<(), SqlError> {
        self.node.set_event_enabled(s, n, e, c)
    }
    fn peer_status(&mut self) -> Result<PeerStatus, SqlError> {
        self.node.peer_status()
    }
    fn acquire_lease(&mut self, instance: &str, timeout: Duration) -> LeaseAnswer {
        self.node.acquire_lease(instance, timeout)
    }
    fn release_lease(&mut self, instance: &str) -> LeaseAnswer {
        self.node.release_lease(instance)
    }
    fn peer_guard_answers(&mut self) -> bool {
        self.node.peer_guard_answers()
    }
    fn holds_vip(&mut self, address: &str) -> Result<bool, String> {
        *self.checks_left += 1;
        Ok(*self.checks_left == 1 && self.node.vips.contains(address))
    }
    fn vip_clients(&mut self, address: &str) -> Result<Vec<String>, String> {
        self.node.vip_clients(address)
    }
    fn remember(&mut self, key: &str, value: &str) {
        self.node.remember(key, value)
    }
    fn recall(&mut self, key: &str) -> Option<String> {
        self.node.recall(key)
    }
    fn forget(&mut self, key: &str) {
        self.node.forget(key)
    }
    fn warn(&mut self, message: &str) {
        self.node.warn(message)
    }
    fn error(&mut self, message: &str) {
        self.node.error(message)
    }
    fn now(&self) -> Instant {
        self.node.now()
    }
    fn pause(&mut self, duration: Duration) {
        self.node.pause(duration)
    }
    fn unix_time(&self) -> u64 {
        self.node.unix_time()
    }
}

#[test]
fn demotion_kills_evident_blockers_first_and_idle_lock_holders_only_if_needed() {
    let demote = |blocked_by: u64| {
        let mut node = Scripted::new();
        node.variables.insert("read_only".into(), "0".into());
        node.vips.clear();
        node.connections = vec![
            connection(11, "app", "Sleep"),
            connection(12, "reporting", "Query"),
            connection(13, "repl", "Connect"),
        ];
        node.blocked_by.insert(blocked_by);
        let started = node.clock;
        let summary = demote_on(
            &mut node,
            &call(&["--instance=VI_1"], r#"{"kill": false}"#),
            VrrpState::Backup,
        )
        .unwrap();
        assert!(node.read_only());
        assert!(node.clock.duration_since(started) <= Duration::from_secs(1));
        // The peer's replication account, still in its handshake, is never killed.
        assert!(
            !node.calls.iter().any(|c| c == "KILL 13"),
            "{:?}",
            node.calls
        );
        summary
    };
    // A running statement holds it up: killing it is enough, the idle session stays.
    let summary = demote(12);
    assert!(
        summary.contains("killed 1 sessions holding it up: 12 (reporting)"),
        "{summary}"
    );
    // An idle session holds LOCK TABLES (nothing shows it): every client goes.
    let summary = demote(11);
    assert!(
        summary.contains("killed 2 sessions holding it up: 12 (reporting), 11 (app)"),
        "{summary}"
    );
}

#[test]
fn accounts_that_write_through_read_only_are_killed_even_without_kill() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    node.vips.clear();
    node.privileged = vec!["dba".into(), "monitor".into()];
    node.connections = vec![
        connection(21, "app", "Sleep"),
        connection(22, "dba", "Sleep"),
        connection(23, "monitor", "Sleep"),
    ];
    let summary = demote_on(
        &mut node,
        &call(
            &["--instance=VI_1"],
            r#"{"kill": false, "spare_users": ["monitor"]}"#,
        ),
        VrrpState::Backup,
    )
    .unwrap();
    assert_eq!(node.calls, ["SET read_only=ON", "RELEASE VI_1", "KILL 22"]);
    assert!(
        summary.contains("could write through read_only: 22 (dba)"),
        "{summary}"
    );
}

#[test]
fn a_demotion_while_its_own_vip_stays_is_stale_and_leaves_the_holder_writable() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    let summary = demote_on(
        &mut node,
        &call(&["--instance=VI_1"], "{}"),
        VrrpState::Backup,
    )
    .unwrap();
    assert!(summary.contains("stale notification"), "{summary}");
    assert!(!node.read_only());
    // Only the lease is asked after (kept by the guard, so still this node's).
    assert_eq!(node.calls, ["ACQUIRE VI_1"]);
}

#[test]
fn promotion_goes_writable_only_with_the_write_lease() {
    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Refused("the peer's vote is with node1 for 2400 ms more".into());
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap_err();
    assert!(err.to_string().contains("no write lease for VI_1"), "{err}");
    assert!(node.read_only());

    let mut node = Scripted::new();
    node.lease = LeaseAnswer::Held(1900);
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert!(summary.contains("write lease held"), "{summary}");
    // The lease is asked for after the catch-up and before read_only=OFF.
    let acquire = node.calls.iter().position(|c| c == "ACQUIRE VI_1").unwrap();
    let set_off = node
        .calls
        .iter()
        .position(|c| c == "SET read_only=OFF")
        .unwrap();
    assert!(acquire < set_off, "{:?}", node.calls);
}

#[test]
fn a_fence_demotes_whatever_the_vips_say() {
    let mut node = Scripted::new();
    node.variables.insert("read_only".into(), "0".into());
    // The VIP is still here (keepalived died with it): a fence does not care.
    let summary = demote_on(&mut node, &call(&["--fence"], "{}"), VrrpState::Fault).unwrap();
    assert!(summary.starts_with("fenced: read-only"), "{summary}");
    assert!(node.read_only());
}

#[test]
fn a_node_that_keeps_changing_roles_stops_promoting_until_acked_or_the_window_passes() {
    let mut node = Scripted::new();
    let promote = call(&["--instance=VI_1"], "{}");
    let demote = call(&["--instance=VI_1"], "{}");
    // Two round trips a minute apart: four role changes, the default limit.
    for _ in 0..2 {
        promote_on(&mut node, &promote).unwrap();
        node.vips.clear();
        demote_on(&mut node, &demote, VrrpState::Backup).unwrap();
        node.vips.insert("10.0.1.100".into());
        node.wall += 60;
    }
    assert_eq!(node.state[CHANGES_KEY].split(' ').count(), 4);
    let err = promote_on(&mut node, &promote).unwrap_err().to_string();
    assert!(node.read_only());
    assert!(
        err.contains("flap damping: 4 role changes in the last 10 min (flap_limit = 4)")
            && err.contains("for 8 min more"),
        "{err}"
    );
    assert!(node.state[DAMPED_KEY].contains("flap damping"));

    // `mmvip ack` forgets the history: promotion goes ahead.
    node.state.remove(CHANGES_KEY);
    promote_on(&mut node, &promote).unwrap();
    assert!(!node.read_only());
    assert!(!node.state.contains_key(DAMPED_KEY));

    // Or the window passes.
    let mut node = Scripted::new();
    node.state.insert(
        CHANGES_KEY.into(),
        format!("{0} {0} {0} {0}", node.wall - 600),
    );
    node.state.insert(DAMPED_KEY.into(), "since then".into());
    promote_on(&mut node, &promote).unwrap();
    assert!(!node.state.contains_key(DAMPED_KEY));
}

#[test]
fn flap_damping_counts_role_changes_only_and_can_be_turned_off() {
    let mut node = Scripted::new();
    node.state
        .insert(CHANGES_KEY.into(), format!("{0} {0} {0} {0}", node.wall));
    // Already writable (a second rw instance): no role change, no refusal.
    node.variables.insert("read_only".into(), "0".into());
    node.vips.insert("10.0.1.101".into());
    promote_on(&mut node, &call(&["--instance=VI_2"], "{}")).unwrap();
    assert_eq!(node.state[CHANGES_KEY].split(' ').count(), 4);

    let mut node = Scripted::new();
    node.state
        .insert(CHANGES_KEY.into(), format!("{0} {0} {0} {0}", node.wall));
    promote_on(
        &mut node,
        &call(&["--instance=VI_1"], r#"{"flap_limit": 0}"#),
    )
    .unwrap();
    assert!(!node.read_only());

    // A demotion from writable is a change; one of a read-only node is not.
    let mut node = Scripted::new();
    node.vips.clear();
    demote_on(
        &mut node,
        &call(&["--instance=VI_1"], "{}"),
        VrrpState::Fault,
    )
    .unwrap();
    assert!(!node.state.contains_key(CHANGES_KEY));
}

#[test]
fn a_peer_that_answers_with_an_error_is_alive_and_promotion_follows_the_policy() {
    let denied = || {
        Err(SqlError::Server {
            code: 1045,
            message: "Access denied for user 'mmvip_peer'".into(),
        })
    };
    let mut node = Scripted::new();
    node.peer = vec![denied()];
    let err = promote_on(&mut node, &call(&["--instance=VI_1"], "{}"))
        .unwrap_err()
        .to_string();
    assert!(node.read_only());
    assert!(
        err.contains("the peer answered with an error") && err.contains("staying read-only"),
        "{err}"
    );

    let mut node = Scripted::new();
    node.peer = vec![denied()];
    let summary = promote_on(
        &mut node,
        &call(
            &["--instance=VI_1"],
            r#"{"on_catchup_timeout": "go-writable"}"#,
        ),
    )
    .unwrap();
    assert!(!node.read_only());
    assert!(summary.contains("writable by policy"), "{summary}");
}
