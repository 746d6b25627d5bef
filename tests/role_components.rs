//! Component tests of the role plugins' logic (`master`, `backup`, `fault`, `stop`):
//! the real components, run by the host's runtime, against a scripted database and
//! scripted VIP ownership. The real-pair behaviour is in role_pair.rs.

mod common;

use std::collections::BTreeSet;

use common::fake::{FakeDb, HeldVips, Shared, connection, replica};
use common::{bounds, run_in_process};
use mmvip::bindings::types::{Call, InstanceRole, Transition, VrrpInstance, VrrpState};
use mmvip::caps::sql::{ClientConnection, EventInfo, EventStatus, IoState, SqlState};
use mmvip::caps::state::StateStore;
use mmvip::runtime::Verdict;

/// The site: VI_1 (rw) on 10.0.0.1 and, optionally, VI_2 on 10.0.0.2; `extra`
/// settings as TOML would give them (JSON values).
fn settings(vi2_role: Option<&str>, extra: &[(&str, &str)]) -> (String, Vec<VrrpInstance>) {
    let mut instances = vec![VrrpInstance {
        name: "VI_1".into(),
        vip: "10.0.0.1".into(),
        role: InstanceRole::ReadWrite,
    }];
    if let Some(role) = vi2_role {
        instances.push(VrrpInstance {
            name: "VI_2".into(),
            vip: "10.0.0.2".into(),
            role: if role == "ro" {
                InstanceRole::ReadOnly
            } else {
                InstanceRole::ReadWrite
            },
        });
    }
    let fields: Vec<String> = extra
        .iter()
        .map(|(key, value)| {
            let value = if *value == "true" || *value == "false" {
                value.to_string()
            } else {
                format!("{value:?}")
            };
            format!("{key:?}: {value}")
        })
        .collect();
    (format!("{{{}}}", fields.join(", ")), instances)
}

struct Outcome {
    verdict: Verdict,
    message: String,
    log: String,
    db: FakeDb,
    state: StateStore,
}

fn run(
    plugin: &str,
    db: FakeDb,
    held: &[&str],
    args: &[&str],
    settings: (String, Vec<VrrpInstance>),
) -> Outcome {
    run_event(plugin, db, held, args, settings, None)
}

fn run_event(
    plugin: &str,
    db: FakeDb,
    held: &[&str],
    args: &[&str],
    (settings, instances): (String, Vec<VrrpInstance>),
    event: Option<Transition>,
) -> Outcome {
    let shared = db.shared();
    let state_root = common::private_tempdir();
    let state_path = state_root.path().join("state");
    let log = mmvip::log::Log::open(
        &mmvip::log::Targets::file(&state_root.path().join("log")),
        Default::default(),
    );
    let state_dir = || mmvip::trust::open_dir(&state_path, "state_dir", true).ok();
    let call = Call {
        args: args.iter().map(|a| a.to_string()).collect(),
        settings,
        time_left_ms: 5000,
        event,
        instances,
        exclusive: true,
    };
    let held: BTreeSet<String> = held.iter().map(|a| a.to_string()).collect();
    let run = run_in_process(
        &format!("mmvip-plugin-{plugin}"),
        call,
        bounds(5000),
        |caps| {
            caps.sql = Box::new(Shared(shared.clone()));
            caps.vip = Box::new(HeldVips(held));
            caps.state = StateStore::load(state_dir(), &log);
        },
    )
    .expect("plugin loads");
    let db = shared.lock().unwrap().clone();
    Outcome {
        verdict: run.report.verdict,
        message: run.report.message,
        log: run.log,
        db,
        state: StateStore::load(state_dir(), &log),
    }
}

/// `master --instance=VI_1` on a node holding VI_1's VIP (the usual promotion).
fn master_on_vi1(db: FakeDb, extra: &[(&str, &str)]) -> Outcome {
    run(
        "master",
        db,
        &["10.0.0.1"],
        &["--instance=VI_1"],
        settings(None, extra),
    )
}

#[test]
fn master_waits_for_the_peer_domain_then_goes_writable() {
    let out = master_on_vi1(FakeDb::new(), &[]);
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
    // Own domain 2 is left out of the wait; the position is read twice to see it still.
    assert_eq!(out.db.calls, vec!["WAIT 1-1-10", "SET read_only=OFF"]);
    assert!(
        out.message.starts_with(
            "writable for VI_1; peer's final position unknown; applied what was received (1-1-10)"
        ),
        "{}",
        out.message
    );
    assert_eq!(out.state.get("VI_1").as_deref(), Some("MASTER"));
    assert_eq!(out.state.get("writable").as_deref(), Some("yes"));
}

#[test]
fn master_takes_the_instance_from_keepalived_notify_arguments() {
    let event = Transition {
        group: false,
        name: "VI_1".into(),
        state: VrrpState::Master,
        priority: 100,
    };
    let out = run_event(
        "master",
        FakeDb::new(),
        &["10.0.0.1"],
        &[],
        settings(Some("rw"), &[]),
        Some(event),
    );
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
}

#[test]
fn master_refuses_without_the_vip() {
    let out = run(
        "master",
        FakeDb::new(),
        &[],
        &["--instance=VI_1"],
        settings(None, &[]),
    );
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message
            .contains("VIP 10.0.0.1 of VI_1 is not on this node"),
        "{}",
        out.message
    );
    assert!(out.db.calls.is_empty(), "{:?}", out.db.calls);
}

#[test]
fn master_catchup_timeout_stays_read_only_by_default() {
    let mut db = FakeDb::new();
    db.wait_reaches = false;
    let out = master_on_vi1(db, &[("catchup_timeout", "2s")]);
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message.contains("not applied up to 1-1-10 within 2 s"),
        "{}",
        out.message
    );
    assert!(!out.db.calls.iter().any(|c| c.starts_with("SET")));
    assert!(out.log.contains("level=error"), "{}", out.log);
}

#[test]
fn master_catchup_timeout_goes_writable_when_told_to() {
    let mut db = FakeDb::new();
    db.wait_reaches = false;
    let extra = [("on_catchup_timeout", "go-writable")];
    let out = master_on_vi1(db, &extra);
    assert_eq!(out.verdict, Verdict::Pass);
    assert_eq!(out.db.variables["read_only"], "0");
    assert!(out.log.contains("GOING WRITABLE ANYWAY"), "{}", out.log);
}

#[test]
fn master_reports_a_broken_replica_instead_of_waiting() {
    let mut db = FakeDb::new();
    db.replicas = vec![replica(IoState::Running, SqlState::Stopped, "1-1-10")];
    db.replicas[0].last_sql_error = "Duplicate entry '7' for key 'PRIMARY'".into();
    let out = master_on_vi1(db, &[]);
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message.contains("SQL thread stopped (Duplicate entry"),
        "{}",
        out.message
    );
    assert!(out.db.calls.is_empty());
}

#[test]
fn master_drains_what_was_received_when_the_peer_is_gone() {
    let mut db = FakeDb::new();
    db.replicas = vec![replica(IoState::Connecting, SqlState::Running, "1-1-42")];
    let out = master_on_vi1(db, &[]);
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
    assert_eq!(out.db.calls, vec!["WAIT 1-1-42", "SET read_only=OFF"]);
    assert!(out.log.contains("IO thread connecting"), "{}", out.log);
}

#[test]
fn master_treats_an_io_thread_stopped_on_an_error_as_broken() {
    let mut db = FakeDb::new();
    db.replicas = vec![replica(IoState::Stopped, SqlState::Running, "1-1-42")];
    db.replicas[0].last_io_error =
        "Got fatal error 1236 from master when reading data from binary log".into();
    let out = master_on_vi1(db, &[]);
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message
            .contains("IO thread stopped (Got fatal error 1236"),
        "{}",
        out.message
    );
    assert!(out.db.calls.is_empty());
    // Stopped by hand, without an error: what was received is still applied.
    let mut db = FakeDb::new();
    db.replicas = vec![replica(IoState::Stopped, SqlState::Running, "1-1-42")];
    let out = master_on_vi1(db, &[]);
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
}

#[test]
fn master_without_replication_refuses_unless_told_not_to_wait() {
    let mut db = FakeDb::new();
    db.replicas.clear();
    let out = master_on_vi1(db.clone(), &[]);
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message.contains("does not replicate from anyone"),
        "{}",
        out.message
    );
    assert!(out.db.calls.is_empty(), "{:?}", out.db.calls);

    let out = run(
        "master",
        db,
        &["10.0.0.1"],
        &["--wait=no", "--instance=VI_1"],
        settings(None, &[]),
    );
    assert_eq!(out.verdict, Verdict::Pass);
    assert_eq!(out.db.calls, vec!["SET read_only=OFF"]);
    assert!(out.message.contains("catch-up skipped"), "{}", out.message);
}

#[test]
fn master_verifies_the_variable_after_setting_it() {
    let mut db = FakeDb::new();
    db.set_ignored = true;
    let out = master_on_vi1(db, &[]);
    assert_eq!(out.verdict, Verdict::Fail);
    assert_eq!(out.message, "read_only reads 1 after SET OFF");
}

#[test]
fn master_needs_to_know_the_instance() {
    let out = run(
        "master",
        FakeDb::new(),
        &["10.0.0.1"],
        &[],
        settings(Some("rw"), &[]),
    );
    assert_eq!(out.verdict, Verdict::Usage);
    assert!(out.message.contains("no instance named"), "{}", out.message);
    let out = run(
        "master",
        FakeDb::new(),
        &["10.0.0.1"],
        &["--instance=VI_9"],
        settings(None, &[]),
    );
    assert_eq!(out.verdict, Verdict::Usage);
    assert!(
        out.message.contains("add [instances.VI_9]"),
        "{}",
        out.message
    );
    // With one instance configured it is implied.
    let out = run(
        "master",
        FakeDb::new(),
        &["10.0.0.1"],
        &[],
        settings(None, &[]),
    );
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
}

#[test]
fn master_of_an_ro_instance_changes_nothing() {
    let out = run(
        "master",
        FakeDb::new(),
        &["10.0.0.2"],
        &["--instance=VI_2"],
        settings(Some("ro"), &[]),
    );
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(out.db.calls.is_empty());
}

#[test]
fn master_refuses_bad_arguments_without_acting() {
    for args in [
        ["--wait=perhaps", "--instance=VI_1"],
        ["--password=x", "--instance=VI_1"],
        ["--frobnicate", "--instance=VI_1"],
    ] {
        let out = run(
            "master",
            FakeDb::new(),
            &["10.0.0.1"],
            &args,
            settings(None, &[]),
        );
        assert_eq!(out.verdict, Verdict::Usage, "{args:?}");
        assert!(out.db.calls.is_empty(), "{args:?}");
    }
}

fn crowded_db() -> FakeDb {
    let mut db = FakeDb::new();
    db.variables.insert("read_only".into(), "0".into());
    db.connections = vec![
        connection(1, "system user", "Slave_IO"),
        connection(2, "system user", "Slave_SQL"),
        connection(3, "event_scheduler", "Daemon"),
        connection(4, "repl", "Binlog Dump"),
        ClientConnection {
            is_self: true,
            ..connection(5, "root", "Query")
        },
        connection(6, "monitor", "Sleep"),
        connection(7, "app", "Sleep"),
        connection(8, "app", "Query"),
    ];
    db.already_gone.insert(8);
    db
}

#[test]
fn backup_goes_read_only_first_then_kills_only_clients() {
    let out = run(
        "backup",
        crowded_db(),
        &[],
        &["--instance=VI_1"],
        settings(None, &[("spare_users", "monitor")]),
    );
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
    assert_eq!(out.db.calls, vec!["SET read_only=ON", "KILL 7", "KILL 8"]);
    assert_eq!(
        out.message,
        "VI_1 BACKUP: read-only; killed 1 client connections (1 already gone)"
    );
    assert_eq!(out.state.get("VI_1").as_deref(), Some("BACKUP"));
    assert_eq!(out.state.get("writable").as_deref(), Some("no"));
}

#[test]
fn fault_and_stop_demote_exactly_like_backup() {
    for plugin in ["fault", "stop"] {
        let out = run(
            plugin,
            crowded_db(),
            &[],
            &["--instance=VI_1"],
            settings(None, &[]),
        );
        assert_eq!(out.verdict, Verdict::Pass, "{plugin}: {}", out.message);
        assert_eq!(
            out.db.calls,
            vec!["SET read_only=ON", "KILL 6", "KILL 7", "KILL 8"],
            "{plugin}"
        );
        assert_eq!(
            out.state.get("VI_1").as_deref(),
            Some(plugin.to_uppercase().as_str())
        );
    }
}

#[test]
fn backup_keeps_the_node_writable_while_another_rw_vip_is_held() {
    let out = run(
        "backup",
        crowded_db(),
        &["10.0.0.2"],
        &["--instance=VI_1"],
        settings(Some("rw"), &[]),
    );
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(out.db.calls.is_empty());
    // No session came in through VI_1's VIP (the fake node has no clients on it).
    assert_eq!(
        out.message,
        "still holds the rw VIP of VI_2: staying writable; killed 0 sessions that came in through VIP 10.0.0.1"
    );
    // An ro VIP does not keep it writable.
    let out = run(
        "backup",
        crowded_db(),
        &["10.0.0.2"],
        &["--instance=VI_1"],
        settings(Some("ro"), &[]),
    );
    assert_eq!(out.db.calls[0], "SET read_only=ON");
}

#[test]
fn backup_with_bad_arguments_still_demotes_then_reports() {
    let out = run(
        "backup",
        crowded_db(),
        &[],
        &["--kill=maybe", "--password=x", "--instance=VI_1"],
        settings(None, &[]),
    );
    assert_eq!(out.verdict, Verdict::Usage);
    assert_eq!(out.db.variables["read_only"], "1");
    assert!(
        out.message.starts_with("VI_1 BACKUP: read-only; killed"),
        "{}",
        out.message
    );
    assert!(
        out.message.contains("--password is refused"),
        "{}",
        out.message
    );
    // An unknown instance also demotes (the safe direction).
    let out = run(
        "backup",
        crowded_db(),
        &[],
        &["--instance=VI_7"],
        settings(None, &[]),
    );
    assert_eq!(out.db.variables["read_only"], "1");
}

#[test]
fn backup_against_an_unreachable_server_fails() {
    let mut db = crowded_db();
    db.unreachable = Some(mmvip::caps::sql::SqlError::Unreachable(
        "/run/mysqld/mysqld.sock: Connection refused".into(),
    ));
    let out = run("backup", db, &[], &["--instance=VI_1"], settings(None, &[]));
    assert_eq!(out.verdict, Verdict::Fail);
    assert!(
        out.message.contains("mariadb unreachable"),
        "{}",
        out.message
    );
}

#[test]
fn events_are_disabled_on_demotion_and_only_those_re_enabled_on_promotion() {
    let mut db = crowded_db();
    db.events = vec![
        EventInfo {
            schema: "app".into(),
            name: "purge".into(),
            status: EventStatus::Enabled,
            comment: "nightly".into(),
        },
        EventInfo {
            schema: "app".into(),
            name: "manual".into(),
            status: EventStatus::Disabled,
            comment: "".into(),
        },
    ];
    let extra = [("handle_events", "true")];
    let out = run(
        "backup",
        db,
        &[],
        &["--instance=VI_1"],
        settings(None, &extra),
    );
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
    assert!(
        out.db
            .calls
            .contains(&"EVENT app.purge DISABLE mmvip-disabled:nightly".to_string())
    );
    assert!(!out.db.calls.iter().any(|c| c.contains("manual")));

    let out = master_on_vi1(out.db, &extra);
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.message);
    assert!(
        out.db
            .calls
            .contains(&"EVENT app.purge ENABLE nightly".to_string())
    );
    assert!(!out.db.calls.iter().any(|c| c.contains("manual ENABLE")));
    assert!(
        out.message.ends_with("re-enabled 1 events"),
        "{}",
        out.message
    );
}
