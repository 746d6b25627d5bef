//! Component tests: each built-in plugin instantiated through the host's own runtime
//! with test back-ends for its capabilities, covering every branch of its logic.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fake::{FakeDb, ScriptedFlag, Shared};
use common::{Limits, bounds, check_call, run_in_process};
use mmvip::bindings::types::{Call, Transition, VrrpState};
use mmvip::caps::sql::{ServerError, SqlError};
use mmvip::runtime::{OVERRUN_GRACE, Verdict};

fn health_with(
    call: Call,
    limits: Limits,
    answer: Result<(), SqlError>,
    delay: Duration,
) -> (Verdict, String) {
    let mut db = FakeDb::new();
    db.unreachable = answer.err();
    db.delay = delay;
    let run = run_in_process("mmvip-plugin-health", call, limits, |caps| {
        caps.sql = Box::new(Shared(db.shared()));
    })
    .expect("health loads");
    (run.report.verdict, run.report.message)
}

fn health(answer: Result<(), SqlError>) -> (Verdict, String) {
    health_with(check_call(&[]), bounds(2000), answer, Duration::ZERO)
}

#[test]
fn health_passes_when_mariadb_answers() {
    let (verdict, message) = health(Ok(()));
    assert_eq!(verdict, Verdict::Pass);
    assert_eq!(message, "mariadb answered");
}

#[test]
fn health_fails_when_mariadb_is_unreachable() {
    let (verdict, message) = health(Err(SqlError::Unreachable(
        "/run/mysqld/mysqld.sock: No such file".into(),
    )));
    assert_eq!(verdict, Verdict::Fail);
    assert_eq!(
        message,
        "mariadb unreachable: /run/mysqld/mysqld.sock: No such file"
    );
}

#[test]
fn health_fails_when_mariadb_times_out() {
    let (verdict, message) = health(Err(SqlError::Timeout("no answer within 500 ms".into())));
    assert_eq!(verdict, Verdict::Fail);
    assert_eq!(message, "mariadb timed out: no answer within 500 ms");
}

#[test]
fn health_fails_when_mariadb_refuses() {
    let (verdict, message) = health(Err(SqlError::Server(ServerError {
        code: 1045,
        message: "Access denied".into(),
    })));
    assert_eq!(verdict, Verdict::Fail);
    assert_eq!(message, "mariadb error 1045: Access denied");
}

#[test]
fn health_refuses_arguments_it_does_not_take() {
    let (verdict, message) = health_with(
        check_call(&["--sokcet=/run/mysqld/mysqld.sock"]),
        bounds(2000),
        Ok(()),
        Duration::ZERO,
    );
    assert_eq!(verdict, Verdict::Usage);
    assert_eq!(
        message,
        "takes no arguments, got `--sokcet=/run/mysqld/mysqld.sock`"
    );
    // The seed's health line passed the password on the command line: never repeated.
    let (verdict, message) = health_with(
        check_call(&["-uroot", "-ps3cret", "--password=s3cret"]),
        bounds(2000),
        Ok(()),
        Duration::ZERO,
    );
    assert_eq!(verdict, Verdict::Usage);
    assert_eq!(message, "takes no arguments, got `-uroot -p… --password=…`");
}

/// The epoch interrupt cannot reach a hook blocked in a host call; the run's overrun
/// callback (which ends the process on the command line) must fire instead.
#[test]
fn host_call_blocked_past_the_deadline_triggers_the_overrun_stop() {
    let (fired, overrun) = mpsc::channel();
    let mut limits = bounds(100);
    limits.on_overrun = Some(Box::new(move || fired.send(Instant::now()).unwrap()));
    let started = Instant::now();
    let (verdict, _) = health_with(check_call(&[]), limits, Ok(()), Duration::from_millis(1500));
    let returned = Instant::now();
    let fired_at = overrun.recv().expect("on_overrun was called");
    assert!(
        fired_at < returned - Duration::from_millis(500),
        "fired only as the call returned"
    );
    assert!(fired_at > started + Duration::from_millis(100) + OVERRUN_GRACE);
    // The interrupt was still delivered once the call came back.
    assert_eq!(verdict, Verdict::Timeout);
}

#[test]
fn hook_that_ends_in_time_never_triggers_the_overrun_stop() {
    let (fired, overrun) = mpsc::channel::<()>();
    let mut limits = bounds(2000);
    limits.on_overrun = Some(Box::new(move || fired.send(()).unwrap()));
    let (verdict, _) = health_with(check_call(&[]), limits, Ok(()), Duration::ZERO);
    assert_eq!(verdict, Verdict::Pass);
    // Ending the run drops the callback unsent.
    assert!(overrun.recv().is_err());
}

fn failover_with(call: Call, flag: Result<bool, String>) -> (Verdict, String) {
    let run = run_in_process("mmvip-plugin-failover", call, bounds(2000), |caps| {
        caps.failover_flag = Box::new(ScriptedFlag(flag));
    })
    .expect("failover loads");
    (run.report.verdict, run.report.message)
}

fn failover(flag: Result<bool, String>) -> (Verdict, String) {
    failover_with(check_call(&[]), flag)
}

#[test]
fn failover_refuses_arguments_it_does_not_take() {
    let (verdict, message) = failover_with(check_call(&["/etc/keepalived/failover"]), Ok(false));
    assert_eq!(verdict, Verdict::Usage);
    assert_eq!(
        message,
        "takes no arguments, got `/etc/keepalived/failover`"
    );
}

#[test]
fn failover_passes_while_flag_is_absent() {
    assert_eq!(
        failover(Ok(false)),
        (Verdict::Pass, "failover flag absent".into())
    );
}

#[test]
fn failover_fails_while_flag_is_present() {
    assert_eq!(
        failover(Ok(true)),
        (
            Verdict::Fail,
            "failover flag present: planned switch-over".into()
        )
    );
}

#[test]
fn failover_fails_when_flag_cannot_be_checked() {
    let (verdict, message) = failover(Err("cannot open /etc/keepalived: Permission denied".into()));
    assert_eq!(verdict, Verdict::Fail);
    assert!(
        message.starts_with("cannot check failover flag: cannot open /etc/keepalived"),
        "{message}"
    );
}

fn notify(transition: Option<Transition>) -> common::InProcess {
    notify_with(&[], transition)
}

fn notify_with(args: &[&str], transition: Option<Transition>) -> common::InProcess {
    let call = Call {
        event: transition,
        ..check_call(args)
    };
    run_in_process("mmvip-plugin-notify", call, bounds(2000), |_| {}).expect("notify loads")
}

#[test]
fn notify_logs_each_transition() {
    let run = notify(Some(Transition {
        group: false,
        name: "VI_1".into(),
        state: VrrpState::Master,
        priority: 101,
    }));
    assert_eq!(run.report.verdict, Verdict::Pass);
    assert_eq!(run.report.message, "INSTANCE VI_1 MASTER 101");
    assert!(
        run.log.contains("msg=\"INSTANCE VI_1 MASTER 101\""),
        "{}",
        run.log
    );
}

#[test]
fn notify_names_groups_and_every_state() {
    for (state, word) in [
        (VrrpState::Backup, "BACKUP"),
        (VrrpState::Fault, "FAULT"),
        (VrrpState::Stop, "STOP"),
        (VrrpState::Deleted, "DELETED"),
    ] {
        let run = notify(Some(Transition {
            group: true,
            name: "G1".into(),
            state,
            priority: 0,
        }));
        assert_eq!(run.report.message, format!("GROUP G1 {word} 0"));
    }
}

#[test]
fn notify_refuses_arguments_besides_the_transition() {
    let run = notify_with(
        &["--verbose"],
        Some(Transition {
            group: false,
            name: "VI_1".into(),
            state: VrrpState::Master,
            priority: 101,
        }),
    );
    assert_eq!(run.report.verdict, Verdict::Usage);
    assert_eq!(run.report.message, "takes no arguments, got `--verbose`");
}

#[test]
fn notify_without_transition_is_a_usage_error() {
    let run = notify(None);
    assert_eq!(run.report.verdict, Verdict::Usage);
    assert!(run.report.message.contains("keepalived's `notify` line"));
}
