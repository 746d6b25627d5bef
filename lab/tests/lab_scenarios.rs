//! The lab as part of the test suite: the CI subset (scenarios 1, 4, 6 and the two-VIP
//! layout's kill -9, fast timers; plus, under the guard, the heartbeat cut and the
//! three two-VIP scenarios) must pass the lab's rules: every acknowledged write kept, a
//! takeover and a failback, rows read back on both nodes, convergence, the VIP moved,
//! and no two writers (single-VIP layout: both nodes writable; two-VIP layout: a VIP
//! on both nodes, open on both, while both are writable).
//!
//! It needs root, Debian's mariadb-server and keepalived, and the built host and
//! plugins (`cargo xtask test` builds them); without them it fails with the reason.
//! `MMVIP_LAB_TEST_HOOKS` = `mmvip`, `shell` or `both` (default) picks the hooks.

use std::collections::BTreeSet;

use mmvip_lab::hooks::HookSet;
use mmvip_lab::keepalived::Timers;
use mmvip_lab::{HookChoice, RunOptions, report};

#[test]
fn ci_subset_passes_the_lab_rules() {
    let hooks = match std::env::var("MMVIP_LAB_TEST_HOOKS").as_deref() {
        Ok("mmvip") => HookChoice::One(HookSet::Mmvip),
        Ok("shell") => HookChoice::One(HookSet::Shell),
        Ok("both") | Err(_) => HookChoice::Both,
        Ok(other) => panic!("MMVIP_LAB_TEST_HOOKS={other}: use mmvip, shell or both"),
    };
    let root = std::env::var_os("MMVIP_LAB_ROOT")
        .map(Into::into)
        .unwrap_or_else(|| mmvip_lab::DEFAULT_ROOT.into());
    let logs_dir = std::env::temp_dir().join("mmvip-lab-test-logs");
    let options = RunOptions {
        root,
        artifacts: mmvip_lab::artifacts(None, None),
        hooks,
        scenarios: BTreeSet::from([1, 4, 6, 7]),
        // Without the guard, the two-VIP switch-over fails about 1 run in 10 with the
        // sequence workload: the node taking VIP1 is already writable (for VIP2), so
        // VIP1's clients write there before node 1's last writes through VIP1 have
        // arrived (lab/README, pitfall 15), and the heartbeat cut leaves each VIP on
        // two writers. Those are the layout's hazards without the guard's gates, not
        // flakes; `./dev lab` keeps running and reporting them, and the guard's run
        // below must pass both.
        skip: vec!["7a-dual-switchover", "7c-dual-split-brain"],
        timers: vec![Timers::fast()],
        logs_dir,
        keep_logs: false,
    };
    let mut report = mmvip_lab::run(&options, &mut |line| eprintln!("{line}")).expect("lab run");
    if hooks != HookChoice::One(HookSet::Shell) {
        // The guard's promise in its hardest cases: the heartbeat link cut, in both
        // layouts, and the two-VIP switch-over; still never two writers (a FAIL there,
        // not a known failure).
        let guarded = RunOptions {
            hooks: HookChoice::One(HookSet::Guard),
            scenarios: BTreeSet::from([6, 7]),
            skip: Vec::new(),
            ..options.clone()
        };
        let guard_report =
            mmvip_lab::run(&guarded, &mut |line| eprintln!("{line}")).expect("guard lab run");
        report.scenarios.extend(guard_report.scenarios);
    }
    eprintln!("{}", report::table(&report.scenarios));
    // Baseline rows are the comparison and a split brain with two writers under mmvip
    // is a known failure: neither fails the test; every other broken rule does.
    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|row| row.failed())
        .map(|row| format!("{} [{}]: {}", row.name, row.hooks, row.problems.join("; ")))
        .collect();
    assert!(failed.is_empty(), "failed rows:\n{}", failed.join("\n"));
}
