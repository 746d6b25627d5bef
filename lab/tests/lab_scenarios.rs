//! The lab as part of the test suite: the CI subset (scenarios 1, 4, 6 and the two-VIP
//! layout) must keep every acknowledged write, converge, and move the VIP.
//!
//! It needs root, Debian's mariadb-server and keepalived, and the built host and
//! plugins (`cargo xtask test` builds them); without them it fails with the reason.
//! `MMVIP_LAB_TEST_HOOKS` = `mmvip`, `shell` or `both` (default) picks the hooks.

use std::collections::BTreeSet;

use mmvip_lab::hooks::HookSet;
use mmvip_lab::keepalived::Timers;
use mmvip_lab::{HookChoice, RunOptions, report};

#[test]
fn ci_subset_keeps_every_acknowledged_write_and_moves_the_vip() {
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
        timers: vec![Timers::fast()],
        logs_dir,
        keep_logs: false,
    };
    let report = mmvip_lab::run(&options, &mut |line| eprintln!("{line}")).expect("lab run");
    eprintln!("{}", report::table(&report.scenarios));
    for row in &report.scenarios {
        assert_eq!(
            row.lost, 0,
            "{} [{}] lost acknowledged writes",
            row.name, row.hooks
        );
        assert!(
            row.converged,
            "{} [{}] did not converge",
            row.name, row.hooks
        );
        assert!(
            row.vip_moved,
            "{} [{}]: the VIP never moved",
            row.name, row.hooks
        );
    }
    assert!(!report.failed());
}
