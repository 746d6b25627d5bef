//! mmvip's failover lab: two MariaDB nodes and a client, each in its own network
//! namespace, real keepalived and MariaDB, mmvip (or a shell baseline) as the hooks,
//! and the scenarios the original setup was tested with, measured under load.
//!
//! The binary is a thin CLI over [`run`], [`up`] and [`down`], which an integration
//! test can call directly.

pub mod addrwatch;
pub mod chaos;
pub mod cleanup;
pub mod hooks;
pub mod keepalived;
pub mod mariadb;
pub mod netns;
pub mod paths;
pub mod probe;
pub mod report;
pub mod sampler;
pub mod scenario;
pub mod testbed;
pub mod topology;
pub mod wait;
pub mod writer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cleanup::Registry;
use crate::hooks::{Artifacts, HookSet};
use crate::keepalived::Timers;
use crate::report::{Report, Row};
use crate::scenario::Scenario;
use crate::testbed::{Lab, LabConfig};
use crate::topology::Layout;

pub const DEFAULT_ROOT: &str = "/tmp/mmvip-lab";
/// Scenarios the shell baseline runs next to mmvip.
pub const BASELINE_SCENARIOS: [u8; 3] = [1, 4, 6];

/// Which hooks `run` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookChoice {
    One(HookSet),
    /// mmvip on every selected scenario, plus the shell baseline on the selected
    /// baseline scenarios (1, 4, 6), side by side.
    Both,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub root: PathBuf,
    pub artifacts: Artifacts,
    pub hooks: HookChoice,
    pub scenarios: BTreeSet<u8>,
    /// Scenario names left out of those numbers (e.g. one of the two runs of 7).
    pub skip: Vec<&'static str>,
    /// Each selected scenario runs once per timer set, in this order.
    pub timers: Vec<Timers>,
    pub logs_dir: PathBuf,
    pub keep_logs: bool,
}

/// The (scenario, hooks) pairs a run executes, in order: for each scenario its mmvip
/// row, then its baseline row.
pub fn plan(choice: HookChoice, numbers: &BTreeSet<u8>) -> Vec<(Scenario, HookSet)> {
    let mut plan = Vec::new();
    for scenario in scenario::select(numbers) {
        let hooks = match choice {
            HookChoice::One(hooks) => Some(hooks),
            HookChoice::Both => None,
        };
        if scenario.fault.needs_witness() && hooks != Some(HookSet::GuardWitness)
            || scenario.fault.needs_guard() && !hooks.is_some_and(HookSet::guarded)
        {
            continue;
        }
        match choice {
            HookChoice::One(hooks) => plan.push((scenario, hooks)),
            HookChoice::Both => {
                let baseline = BASELINE_SCENARIOS.contains(&scenario.number);
                plan.push((scenario.clone(), HookSet::Mmvip));
                if baseline {
                    plan.push((scenario, HookSet::Shell));
                }
            }
        }
    }
    plan
}

fn hook_sets(choice: HookChoice) -> Vec<HookSet> {
    match choice {
        HookChoice::One(hooks) => vec![hooks],
        HookChoice::Both => vec![HookSet::Mmvip, HookSet::Shell],
    }
}

/// Everything the lab needs from the machine, checked before anything is created.
pub fn preflight(root: &Path, artifacts: &Artifacts, hooks: &[HookSet]) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "must run as root (the lab creates network namespaces and runs mariadbd and keepalived)"
        );
    }
    for (binary, package) in [
        (mariadb::MARIADBD, "mariadb-server"),
        (mariadb::INSTALL_DB, "mariadb-server"),
        ("/usr/bin/mariadb", "mariadb-client"),
        (keepalived::KEEPALIVED, "keepalived"),
    ] {
        if !Path::new(binary).is_file() {
            let name = Path::new(binary)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            bail!("{name} not found: apt-get install {package}");
        }
    }
    netns::ip(&["-V"]).context("ip not found: apt-get install iproute2")?;
    // keepalived.conf holds these paths unquoted inside quoted script lines.
    let plain = root.to_str().is_some_and(|s| {
        s.starts_with('/')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    });
    if !plain {
        bail!(
            "lab root {} must be an absolute path of letters, digits, `/._-`",
            root.display()
        );
    }
    if root.as_os_str().len() > 60 {
        bail!(
            "lab root {} is too long for MariaDB's unix socket path",
            root.display()
        );
    }
    for hooks in hooks {
        artifacts.preflight(*hooks)?;
    }
    let leftovers = cleanup::leftovers()?;
    if !leftovers.is_empty() {
        bail!(
            "a lab is already up or was left behind (namespaces {}): run `mmvip-lab down` first",
            leftovers.join(", ")
        );
    }
    Ok(())
}

/// Creates the lab root and the data directory template shared by every lab of a run.
fn prepare_root(options_root: &Path) -> Result<(Arc<Registry>, PathBuf)> {
    let registry = Registry::create(options_root)?;
    let template = mariadb::make_template(options_root)?;
    Ok((registry, template))
}

/// Tears the whole run down (processes, namespaces, lab root) when dropped, also on
/// error or panic.
pub(crate) struct RunGuard(pub(crate) Arc<Registry>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        for problem in self.0.teardown() {
            eprintln!("mmvip-lab: teardown: {problem}");
        }
    }
}

/// Runs the planned scenarios and returns the report; `progress` hears one line per
/// step. A scenario that cannot finish becomes an aborted row; an interrupt stops
/// the run.
pub fn run(options: &RunOptions, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let started = Instant::now();
    preflight(&options.root, &options.artifacts, &hook_sets(options.hooks))?;
    let plan: Vec<(&Timers, Scenario, HookSet)> = options
        .timers
        .iter()
        .flat_map(|timers| {
            plan(options.hooks, &options.scenarios)
                .into_iter()
                .filter(|(scenario, _)| !options.skip.contains(&scenario.name))
                .map(move |(scenario, hooks)| (timers, scenario, hooks))
        })
        .collect();
    if plan.is_empty() {
        bail!("no scenario or no timer set selected");
    }
    let (registry, template) = prepare_root(&options.root)?;
    let _guard = RunGuard(Arc::clone(&registry));
    let mut rows = Vec::new();
    for (i, (timers, scenario, hooks)) in plan.iter().enumerate() {
        let config = LabConfig {
            artifacts: options.artifacts.clone(),
            timers: (*timers).clone(),
            template: template.clone(),
            logs_dir: options.logs_dir.clone(),
            keep_logs: options.keep_logs,
            probe: false,
        };
        let label = format!(
            "[{}/{}] {} ({}, {} timers)",
            i + 1,
            plan.len(),
            scenario.name,
            hooks.name(),
            timers.name
        );
        progress(&format!("{label}: starting"));
        let mut step = |line: &str| progress(&format!("{label}: {line}"));
        let row = match scenario::run(&registry, &config, scenario, *hooks, &mut step) {
            Ok(row) => row,
            Err(error) if wait::interrupted() => return Err(error),
            Err(error) => Row::aborted(
                scenario.name,
                hooks.name(),
                timers.name,
                scenario.layout.name(),
                &format!("{error:#}"),
            ),
        };
        progress(&format!(
            "{label}: {} in {:.1} s",
            row.verdict.word(),
            row.duration_s
        ));
        rows.push(row);
    }
    Ok(Report {
        scenarios: rows,
        timers: options.timers.iter().map(Timers::describe).collect(),
        total_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

/// One chaos run (see [`chaos`]) on a fresh lab in `root`, torn down afterwards.
pub fn chaos_run(
    root: &Path,
    artifacts: &Artifacts,
    options: &chaos::ChaosOptions,
    timers: &Timers,
    (logs_dir, keep_logs): (PathBuf, bool),
    progress: &mut dyn FnMut(&str),
) -> Result<chaos::ChaosReport> {
    preflight(root, artifacts, &[options.hooks])?;
    let nft = std::process::Command::new("nft").arg("--version").output();
    if !nft.is_ok_and(|out| out.status.success()) {
        bail!("nft not found (the lossy-link fault needs it): apt-get install nftables");
    }
    let (registry, template) = prepare_root(root)?;
    let _guard = RunGuard(Arc::clone(&registry));
    let config = LabConfig {
        artifacts: artifacts.clone(),
        timers: timers.clone(),
        template,
        logs_dir,
        keep_logs,
        probe: false,
    };
    chaos::run(&registry, &config, options, progress)
}

/// What `up` leaves running, for the user to explore.
pub struct UpSummary {
    pub root: PathBuf,
    pub keepalived_conf: PathBuf,
}

/// Brings one lab up and leaves it running after this process exits.
pub fn up(
    root: &Path,
    artifacts: &Artifacts,
    layout: Layout,
    hooks: HookSet,
    timers: &Timers,
) -> Result<UpSummary> {
    preflight(root, artifacts, &[hooks])?;
    let (registry, template) = prepare_root(root)?;
    let guard = RunGuard(Arc::clone(&registry));
    let config = LabConfig {
        artifacts: artifacts.clone(),
        timers: timers.clone(),
        template,
        logs_dir: std::env::current_dir()?.join("lab-logs"),
        keep_logs: false,
        probe: false,
    };
    let lab = Lab::up(&registry, &config, layout, hooks)?;
    let summary = UpSummary {
        root: root.to_path_buf(),
        keepalived_conf: lab.paths(topology::NodeId::One).keepalived_conf(),
    };
    lab.keep_running();
    // Success: the lab must outlive us, so the guard must not tear it down.
    std::mem::forget(guard);
    Ok(summary)
}

/// Stops whatever a previous `up` or a crashed `run` left behind.
pub fn down(root: &Path) -> Result<Vec<String>> {
    if !rustix::process::geteuid().is_root() {
        bail!("must run as root");
    }
    cleanup::down(root)
}

/// The workspace this crate lives in: default place of the built mmvip artifacts.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Artifacts from explicit paths, else `$MMVIP_LAB_MMVIP` / `$MMVIP_LAB_PLUGINS`, else
/// `target/release/mmvip` and the plugins `mmvip-artifacts` built.
pub fn artifacts(mmvip: Option<PathBuf>, plugins: Option<PathBuf>) -> Artifacts {
    let workspace = workspace_root();
    Artifacts {
        mmvip_bin: mmvip
            .or_else(|| std::env::var_os("MMVIP_LAB_MMVIP").map(PathBuf::from))
            .unwrap_or_else(|| workspace.join("target/release/mmvip")),
        plugin_dir: plugins
            .or_else(|| std::env::var_os("MMVIP_LAB_PLUGINS").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(mmvip_artifacts::DIR)),
        installed: false,
    }
}

/// Parses `fast`, `readme` or `both` (fast, then readme).
pub fn parse_timers(text: &str) -> Result<Vec<Timers>> {
    match text {
        "fast" => Ok(vec![Timers::fast()]),
        "readme" => Ok(vec![Timers::readme()]),
        "both" => Ok(vec![Timers::fast(), Timers::readme()]),
        other => bail!("timers `{other}`: use fast, readme or both"),
    }
}

/// Parses `1,4,6,7` or `all`.
/// Scenarios 8-15 exercise the guard (9 and 10 run with a guard hook set only, 11
/// and 12 with `guard-witness` only).
const LAST_SCENARIO: u8 = 15;

pub fn parse_scenarios(text: &str) -> Result<BTreeSet<u8>> {
    if text == "all" {
        return Ok((1..=LAST_SCENARIO).collect());
    }
    text.split(',')
        .map(|part| {
            let number: u8 = part.trim().parse().with_context(|| {
                format!("scenario `{part}`: expected a number 1-{LAST_SCENARIO}")
            })?;
            if !(1..=LAST_SCENARIO).contains(&number) {
                bail!("scenario {number}: there are scenarios 1 to {LAST_SCENARIO}");
            }
            Ok(number)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pairs_mmvip_with_the_baseline_where_asked() {
        let plan = plan(HookChoice::Both, &[1, 2, 7].into_iter().collect());
        let names: Vec<(&str, &str)> = plan.iter().map(|(s, h)| (s.name, h.name())).collect();
        assert_eq!(
            names,
            [
                ("1-switchover", "mmvip"),
                ("1-switchover", "shell"),
                ("2-keepalived-stop", "mmvip"),
                ("7a-dual-switchover", "mmvip"),
                ("7b-dual-kill9", "mmvip"),
                ("7c-dual-split-brain", "mmvip"),
            ]
        );
    }

    #[test]
    fn one_hook_set_runs_every_selected_scenario() {
        let plan = plan(HookChoice::One(HookSet::Shell), &(1..=7).collect());
        assert_eq!(plan.len(), 9);
        assert!(plan.iter().all(|(_, h)| *h == HookSet::Shell));
    }

    #[test]
    fn guard_only_scenarios_run_with_the_guard_only() {
        let numbers = (8..=12).collect();
        let names =
            |choice| -> Vec<&str> { plan(choice, &numbers).iter().map(|(s, _)| s.name).collect() };
        assert_eq!(names(HookChoice::Both), ["8-mariadb-freeze"]);
        assert_eq!(
            names(HookChoice::One(HookSet::Guard)),
            ["8-mariadb-freeze", "9-guard-kill9", "10-mmvip-switchover"]
        );
        assert_eq!(names(HookChoice::One(HookSet::GuardWitness)).len(), 5);
    }

    #[test]
    fn scenario_lists_parse() {
        assert_eq!(
            parse_scenarios("1,4, 6,7").unwrap(),
            [1, 4, 6, 7].into_iter().collect()
        );
        assert_eq!(parse_scenarios("all").unwrap().len(), 15);
        assert!(parse_scenarios("16").is_err());
        assert!(parse_scenarios("x").is_err());
    }

    #[test]
    fn timer_sets_parse() {
        let names = |text| -> Vec<&str> {
            parse_timers(text)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(names("both"), ["fast", "readme"]);
        assert_eq!(names("readme"), ["readme"]);
        assert!(parse_timers("slow").is_err());
    }
}
