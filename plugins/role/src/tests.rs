//! The role decisions against a scripted node, natively: no wasm, no server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mmvip_sdk::sql::{
    ClientConnection, Error as SqlError, EventInfo, EventStatus, IoState, ReplicaStatus, SqlState,
};
use mmvip_sdk::{Call, HookError, InstanceRole, Transition, VrrpInstance, VrrpState};

use super::*;

/// A node whose answers a test scripts; every change is recorded in `calls`.
struct Scripted {
    variables: BTreeMap<String, String>,
    replicas: Vec<ReplicaStatus>,
    wait_reaches: bool,
    connections: Vec<ClientConnection>,
    events: Vec<EventInfo>,
    vips: BTreeSet<String>,
    state: BTreeMap<String, String>,
    calls: Vec<String>,
}

impl Scripted {
    fn new() -> Scripted {
        Scripted {
            variables: [("read_only", "1"), ("gtid_domain_id", "2")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            replicas: vec![replica(IoState::Running, "1-1-10,2-2-7")],
            wait_reaches: true,
            connections: Vec::new(),
            events: Vec::new(),
            vips: ["10.0.1.100".to_string()].into(),
            state: BTreeMap::new(),
            calls: Vec::new(),
        }
    }

    fn read_only(&self) -> bool {
        self.variables["read_only"] == "1"
    }
}

fn replica(io: IoState, io_pos: &str) -> ReplicaStatus {
    ReplicaStatus {
        connection_name: String::new(),
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
    }
}

impl Node for Scripted {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        Ok(self.variables.get(name).cloned())
    }

    fn set_global_variable(&mut self, name: &str, value: &str) -> Result<(), SqlError> {
        self.calls.push(format!("SET {name}={value}"));
        let value = if value == "ON" { "1" } else { "0" };
        self.variables.insert(name.into(), value.into());
        Ok(())
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        Ok(self.replicas.clone())
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        Ok(self.connections.clone())
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        self.calls.push(format!("KILL {id}"));
        Ok(true)
    }

    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        self.calls
            .push(format!("WAIT {position} {}ms", timeout.as_millis()));
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

    fn remember(&mut self, key: &str, value: &str) {
        self.state.insert(key.into(), value.into());
    }

    fn warn(&mut self, _message: &str) {}

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
fn promotion_waits_for_the_peers_domain_then_goes_writable() {
    let mut node = Scripted::new();
    let summary = promote_on(&mut node, &call(&["--instance=VI_1"], "{}")).unwrap();
    assert!(!node.read_only());
    assert!(
        summary.starts_with("writable for VI_1; caught up (applied up to 1-1-10)"),
        "{summary}"
    );
    // Its own domain (2) is never waited for.
    assert!(
        node.calls[0].starts_with("WAIT 1-1-10 "),
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
    let waited: u64 = node.calls[0]
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
    assert_eq!(node.calls, ["SET read_only=ON", "KILL 1", "KILL 6"]);
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
    let summary = demote_on(
        &mut node,
        &call(&["--instance=VI_1"], "{}"),
        VrrpState::Fault,
    )
    .unwrap();
    assert!(
        summary.contains("still holds the rw VIP of VI_2"),
        "{summary}"
    );
    assert!(!node.read_only());

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
