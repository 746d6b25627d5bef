//! The host-guest boundary as a property: a guest (tests/guests/chaos) makes some
//! host calls, then returns anything, fails, or traps in one of many ways, as each
//! case draws. Whatever it does, `mmvip` ends with the exit status that verdict
//! maps to, within the deadline (plus the overrun grace and process start), with
//! the run's log line written last and every log entry on one line.
//!
//! `PROPTEST_CASES=2000 cargo test --release --test guest_boundary` for a long run.

mod common;

use std::time::{Duration, Instant};

use common::{Site, exit_code, proptest_config, stderr, stdout};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// The chaos plugin's bound in this site.
const DEADLINE: Duration = Duration::from_millis(400);
/// Process start, loading the compiled plugin, the overrun grace and a loaded
/// machine: what the whole run may take beyond the deadline.
const SLACK: Duration = Duration::from_millis(1600);

/// How a run ends, and the exit status and verdict the host must give for it.
#[derive(Debug, Clone)]
enum End {
    Ok(String),
    Fail(String),
    Usage(String),
    Long(usize),
    Panic(String),
    Trap,
    Exit(i32),
    Spin,
    Oom,
    Recurse,
    /// The script runs out: a pass.
    Nothing,
}

impl End {
    fn argument(&self) -> Option<String> {
        Some(match self {
            End::Ok(text) => format!("ok:{text}"),
            End::Fail(text) => format!("fail:{text}"),
            End::Usage(text) => format!("usage:{text}"),
            End::Long(bytes) => format!("long:{bytes}"),
            End::Panic(text) => format!("panic:{text}"),
            End::Trap => "trap".into(),
            End::Exit(code) => format!("exit:{code}"),
            End::Spin => "spin".into(),
            End::Oom => "oom".into(),
            End::Recurse => "recurse".into(),
            End::Nothing => return None,
        })
    }

    fn expected(&self) -> (i32, &'static str) {
        match self {
            End::Ok(_) | End::Long(_) | End::Nothing => (0, "pass"),
            End::Fail(_) => (1, "fail"),
            End::Usage(_) => (2, "usage"),
            End::Panic(_) | End::Trap | End::Exit(_) | End::Oom | End::Recurse => (1, "crash"),
            End::Spin => (1, "timeout"),
        }
    }
}

/// Text as hostile as a command line can carry (no NUL: exec cannot pass one).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("line one\nline two\r\n\ttabbed".to_string()),
        Just("level=info verdict=pass msg=forged".to_string()),
        Just("\u{1b}[31mred\u{1b}[0m \u{202e}reversed".to_string()),
        Just(String::new()),
    ]
    .prop_map(|t| t.replace('\0', ""))
}

fn along() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| format!("log:{t}")),
        text().prop_map(|t| format!("state:{t}")),
        Just("sql".to_string()),
        (0..2000u32).prop_map(|n| format!("work:{n}")),
        (0..8u32).prop_map(|n| format!("fill:{n}")),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => text().prop_map(End::Ok),
        3 => text().prop_map(End::Fail),
        2 => text().prop_map(End::Usage),
        1 => (0..300_000usize).prop_map(End::Long),
        2 => text().prop_map(End::Panic),
        1 => Just(End::Trap),
        1 => any::<i32>().prop_map(End::Exit),
        1 => Just(End::Spin),
        1 => Just(End::Oom),
        1 => Just(End::Recurse),
        1 => Just(End::Nothing),
    ]
}

/// A log entry as the host writes it: a timestamp, then `pid=`.
fn is_entry(line: &str) -> bool {
    line.len() > 24 && line.starts_with("20") && line[..40.min(line.len())].contains(" pid=")
}

fn run_one(site: &Site, script: &[String], end: &End) -> Result<(), TestCaseError> {
    let before = site.log_text().len();
    let mut args = vec!["chaos".to_string()];
    args.extend(script.iter().cloned());
    args.extend(end.argument());
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = site.mmvip(&words);
    let took = started.elapsed();
    let (mut status, mut verdict) = end.expected();
    let told = format!("{}{}", stdout(&output), stderr(&output));
    // Near the memory limit, any allocation (the guest's, or one for a host call's
    // answer) may be the one that crashes the run first.
    let filled: u32 = script
        .iter()
        .filter_map(|a| a.strip_prefix("fill:")?.parse::<u32>().ok())
        .sum();
    if filled >= 10 && exit_code(&output) == 1 && told.contains(": crash: ") {
        (status, verdict) = (1, "crash");
    }
    prop_assert_eq!(exit_code(&output), status, "{}", told);
    prop_assert!(took < DEADLINE + SLACK, "took {:?}", took);
    // One line for the operator, on stdout for a pass and stderr otherwise.
    prop_assert_eq!(told.lines().count(), 1, "{}", told);
    let log = site.log_text();
    let written: Vec<&str> = log[before..].lines().collect();
    prop_assert!(!written.is_empty());
    for line in &written {
        prop_assert!(is_entry(line), "not one entry per line: {:?}", line);
    }
    let last = written.last().unwrap();
    let fields = last.split(" msg=").next().unwrap();
    prop_assert!(
        fields.contains(&format!(" verdict={verdict} ")),
        "last line {:?}",
        last
    );
    Ok(())
}

#[test]
fn any_guest_behaviour_ends_in_its_exit_status_within_the_deadline_with_its_log_line() {
    let site = Site::new().with_config(&format!(
        "[plugins.chaos]\ntimeout_ms = {}\nmemory_mib = 16\n",
        DEADLINE.as_millis()
    ));
    site.install("chaos", "guest-chaos");
    assert!(site.mmvip(&["compile"]).status.success());
    let mut runner = TestRunner::new(proptest_config(48));
    let cases = (prop::collection::vec(along(), 0..6), end());
    if let Err(failure) = runner.run(&cases, |(script, end)| run_one(&site, &script, &end)) {
        panic!("{failure}");
    }
}
