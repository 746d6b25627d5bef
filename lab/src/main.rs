//! `mmvip-lab`: run the failover lab, bring it up for exploration, or tear it down.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use mmvip_lab::hooks::HookSet;
use mmvip_lab::keepalived::Timers;
use mmvip_lab::topology::Layout;
use mmvip_lab::{HookChoice, RunOptions, chaos, report, wait};

#[derive(Parser, Debug)]
#[command(
    name = "mmvip-lab",
    about = "Failover lab for mmvip: two MariaDB nodes and a client in network namespaces, real keepalived, measured scenarios",
    after_help = "Run as root. Exit status: 0 no mmvip row failed; 1 an mmvip row failed (a write lost, no takeover or failback, rows unreadable, no convergence, the VIP never moved, or two writers: both nodes writable in the single-VIP layout, a VIP on two writable nodes in the two-VIP layout); 2 setup or usage error; 130 interrupted."
)]
struct Cli {
    /// Lab root: per-node files, logs and the state file `down` uses
    /// [default: $MMVIP_LAB_ROOT, else /tmp/mmvip-lab].
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scenarios, print the table, write lab-report.json.
    Run {
        /// mmvip, the shell baseline, or both (mmvip on every scenario plus the
        /// baseline on scenarios 1, 4 and 6).
        #[arg(long, value_enum, default_value_t = HooksArg::Both)]
        hooks: HooksArg,
        /// Comma-separated scenario numbers (1-15) or `all`.
        #[arg(long, default_value = "all")]
        scenarios: String,
        /// keepalived timers: `fast` (the lab's), `readme` (the README's: VRRPv2,
        /// 1 s adverts, fall 3) or `both` (every scenario with each, fast first);
        /// `fast-seed`, `readme-seed`: the same with the seed's priorities 101/100
        /// under the guard too (251/250 otherwise).
        #[arg(long, value_enum, default_value_t = TimersArg::Both)]
        timers: TimersArg,
        /// Where to write the JSON report.
        #[arg(long, default_value = "lab-report.json")]
        report: PathBuf,
        /// Also write the table as Markdown (for BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Where a failed scenario's logs are copied.
        #[arg(long, default_value = "lab-logs")]
        logs: PathBuf,
        /// Copy every scenario's logs there, not only a failed one's.
        #[arg(long)]
        keep_logs: bool,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
    /// Bring one lab up and leave it running (stop it with `down`).
    Up {
        #[arg(long, value_enum, default_value_t = LayoutArg::Single)]
        layout: LayoutArg,
        #[arg(long, value_enum, default_value_t = OneHooksArg::Mmvip)]
        hooks: OneHooksArg,
        #[arg(long, value_enum, default_value_t = OneTimersArg::Fast)]
        timers: OneTimersArg,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
    /// Random faults from a seed on one lab under load, invariants checked
    /// throughout; exit 1 on a violation (its logs and schedule kept for replay).
    Chaos {
        /// The schedule's seed: the same seed draws the same faults in the same
        /// order [default: from the clock, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// How long to keep injecting faults, e.g. 90s, 10m, 1h.
        #[arg(long, default_value = "5m")]
        duration: String,
        #[arg(long, value_enum, default_value_t = LayoutArg::Single)]
        layout: LayoutArg,
        /// `guard` or `guard-witness`: the invariants are the write lease's.
        #[arg(long, value_enum, default_value_t = OneHooksArg::Guard)]
        hooks: OneHooksArg,
        #[arg(long, value_enum, default_value_t = OneTimersArg::Fast)]
        timers: OneTimersArg,
        /// Fault kinds to leave out, comma-separated (e.g. isolated,node-freeze).
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// Print the first N steps the seed draws and exit, without a lab.
        #[arg(long, value_name = "N")]
        plan: Option<usize>,
        /// Where to write the JSON report.
        #[arg(long, default_value = "chaos-report.json")]
        report: PathBuf,
        /// Where a violating run's logs (and, with --keep-logs, every run's) go.
        #[arg(long, default_value = "lab-logs")]
        logs: PathBuf,
        #[arg(long)]
        keep_logs: bool,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
    /// Stop every lab process and delete every lab namespace, also after a crash.
    Down,
    /// Observe keepalived: is a MASTER's VIP already gone when notify_backup,
    /// notify_fault and notify_stop start? (exit 1 if any started with it present)
    ProbeNotify {
        #[arg(long, value_enum, default_value_t = OneTimersArg::Fast)]
        timers: OneTimersArg,
        /// Where the findings and the raw evidence are written.
        #[arg(long, default_value = "notify-probe.txt")]
        out: PathBuf,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
}

#[derive(clap::Args, Debug)]
struct ArtifactArgs {
    /// The mmvip binary [default: $MMVIP_LAB_MMVIP, else target/release/mmvip].
    #[arg(long)]
    mmvip: Option<PathBuf>,
    /// Directory of the built mmvip_plugin_*.wasm [default: $MMVIP_LAB_PLUGINS, else
    /// target/artifacts/wasm32-wasip2/release, built with the lab].
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Use mmvip as the .deb or .rpm installed it (/usr/sbin/mmvip and
    /// /usr/lib/mmvip/plugins), where it is, instead of a copy of the build per node.
    #[arg(long, conflicts_with_all = ["mmvip", "plugins"])]
    installed: bool,
}

impl ArtifactArgs {
    fn resolve(self) -> mmvip_lab::hooks::Artifacts {
        if self.installed {
            mmvip_lab::hooks::Artifacts::installed()
        } else {
            mmvip_lab::artifacts(self.mmvip, self.plugins)
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HooksArg {
    Mmvip,
    Shell,
    Both,
    /// mmvip's health/failover/notify with the shell role-change hooks.
    MmvipChecks,
    /// mmvip with the resident guard (write lease) and event-driven keepalived.
    Guard,
    /// The guard with a witness (a third MariaDB) as a voter.
    GuardWitness,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OneHooksArg {
    Mmvip,
    Shell,
    MmvipChecks,
    Guard,
    GuardWitness,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TimersArg {
    Fast,
    Readme,
    Both,
    /// `fast` with the seed's priorities 101/100 under the guard too.
    FastSeed,
    /// `readme` with the seed's priorities 101/100 under the guard too.
    ReadmeSeed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OneTimersArg {
    Fast,
    Readme,
}

impl OneTimersArg {
    fn timers(self) -> Timers {
        match self {
            OneTimersArg::Fast => Timers::fast(),
            OneTimersArg::Readme => Timers::readme(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    Single,
    Dual,
}

impl LayoutArg {
    fn layout(self) -> Layout {
        match self {
            LayoutArg::Single => Layout::Single,
            LayoutArg::Dual => Layout::Dual,
        }
    }
}

impl OneHooksArg {
    fn hooks(self) -> HookSet {
        match self {
            OneHooksArg::Mmvip => HookSet::Mmvip,
            OneHooksArg::Shell => HookSet::Shell,
            OneHooksArg::MmvipChecks => HookSet::MmvipChecks,
            OneHooksArg::Guard => HookSet::Guard,
            OneHooksArg::GuardWitness => HookSet::GuardWitness,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli
        .root
        .or_else(|| std::env::var_os("MMVIP_LAB_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(mmvip_lab::DEFAULT_ROOT));
    install_signal_handling(root.clone());
    let status = match cli.command {
        Command::Run {
            hooks,
            scenarios,
            timers,
            report,
            markdown,
            logs,
            keep_logs,
            artifacts,
        } => run(
            root,
            hooks,
            (&scenarios, timers),
            report,
            markdown,
            (logs, keep_logs),
            artifacts,
        ),
        Command::Up {
            layout,
            hooks,
            timers,
            artifacts,
        } => up(root, layout, hooks, timers.timers(), artifacts),
        Command::ProbeNotify {
            timers,
            out,
            artifacts,
        } => probe_notify(root, timers.timers(), &out, artifacts),
        Command::Chaos {
            seed,
            duration,
            layout,
            hooks,
            timers,
            exclude,
            plan,
            report,
            logs,
            keep_logs,
            artifacts,
        } => {
            let seed = seed.unwrap_or_else(seed_from_clock);
            let options = ChaosCli {
                seed,
                duration,
                layout: layout.layout(),
                hooks: hooks.hooks(),
                timers: timers.timers(),
                exclude,
            };
            match plan {
                Some(count) => print_plan(&options, count),
                None => chaos(root, options, report, (logs, keep_logs), artifacts),
            }
        }
        Command::Down => match mmvip_lab::down(&root) {
            Ok(problems) if problems.is_empty() => {
                println!("mmvip-lab: nothing of the lab is left");
                0
            }
            Ok(problems) => {
                for problem in problems {
                    eprintln!("mmvip-lab: down: {problem}");
                }
                1
            }
            Err(error) => fail(&error),
        },
    };
    ExitCode::from(status)
}

fn fail(error: &anyhow::Error) -> u8 {
    if wait::interrupted() {
        eprintln!("mmvip-lab: interrupted; the lab was torn down");
        return 130;
    }
    eprintln!("mmvip-lab: {error:#}");
    2
}

fn run(
    root: PathBuf,
    hooks: HooksArg,
    (scenarios, timers): (&str, TimersArg),
    report_path: PathBuf,
    markdown: Option<PathBuf>,
    (logs, keep_logs): (PathBuf, bool),
    artifacts: ArtifactArgs,
) -> u8 {
    let scenarios = match mmvip_lab::parse_scenarios(scenarios) {
        Ok(s) => s,
        Err(error) => return fail(&error),
    };
    let hooks = match hooks {
        HooksArg::Mmvip => HookChoice::One(HookSet::Mmvip),
        HooksArg::Shell => HookChoice::One(HookSet::Shell),
        HooksArg::MmvipChecks => HookChoice::One(HookSet::MmvipChecks),
        HooksArg::Guard => HookChoice::One(HookSet::Guard),
        HooksArg::GuardWitness => HookChoice::One(HookSet::GuardWitness),
        HooksArg::Both => HookChoice::Both,
    };
    let options = RunOptions {
        root,
        artifacts: artifacts.resolve(),
        hooks,
        scenarios,
        skip: Vec::new(),
        timers: match timers {
            TimersArg::Fast => vec![Timers::fast()],
            TimersArg::Readme => vec![Timers::readme()],
            TimersArg::Both => vec![Timers::fast(), Timers::readme()],
            TimersArg::FastSeed => vec![Timers::fast().with_seed_priorities()],
            TimersArg::ReadmeSeed => vec![Timers::readme().with_seed_priorities()],
        },
        logs_dir: absolute(logs),
        keep_logs,
    };
    let report = match mmvip_lab::run(&options, &mut |line| eprintln!("mmvip-lab: {line}")) {
        Ok(report) => report,
        Err(error) => return fail(&error),
    };
    println!("\n{}", report::table(&report.scenarios));
    for timers in &report.timers {
        println!("timers {timers}");
    }
    println!("total: {:.1} s", report.total_s);
    if let Err(error) = std::fs::write(&report_path, report.to_json()) {
        eprintln!("mmvip-lab: write {}: {error}", report_path.display());
        return 2;
    }
    println!("report: {}", report_path.display());
    let mut text = report::markdown(&report.scenarios);
    for timers in &report.timers {
        text.push_str(&format!("- timers {timers}\n"));
    }
    text.push_str(&format!("- total: {:.1} s\n", report.total_s));
    if let Some(path) = markdown
        && let Err(error) = std::fs::write(&path, text)
    {
        eprintln!("mmvip-lab: write {}: {error}", path.display());
        return 2;
    }
    if report.failed() { 1 } else { 0 }
}

struct ChaosCli {
    seed: u64,
    duration: String,
    layout: Layout,
    hooks: HookSet,
    timers: Timers,
    exclude: Vec<String>,
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_secs())
}

fn print_plan(options: &ChaosCli, count: usize) -> u8 {
    let catalogue = match chaos::catalogue_without(options.hooks, options.layout, &options.exclude)
    {
        Ok(catalogue) => catalogue,
        Err(error) => return fail(&error),
    };
    for (i, step) in chaos::schedule(options.seed, &catalogue, count)
        .iter()
        .enumerate()
    {
        println!(
            "#{:<3} {:<24} on the {:<8} held {:>5} ms, then {:>5} ms quiet",
            i + 1,
            chaos::fault_name(step.fault),
            format!("{:?}", step.target).to_lowercase(),
            step.hold.as_millis(),
            step.pause.as_millis()
        );
    }
    0
}

fn chaos(
    root: PathBuf,
    options: ChaosCli,
    report_path: PathBuf,
    (logs, keep_logs): (PathBuf, bool),
    artifacts: ArtifactArgs,
) -> u8 {
    let duration = match chaos::parse_duration(&options.duration) {
        Ok(duration) => duration,
        Err(error) => return fail(&error),
    };
    let run = mmvip_lab::chaos_run(
        &root,
        &artifacts.resolve(),
        &chaos::ChaosOptions {
            seed: options.seed,
            duration,
            layout: options.layout,
            hooks: options.hooks,
            exclude: options.exclude.clone(),
        },
        &options.timers,
        (absolute(logs), keep_logs),
        &mut |line| eprintln!("mmvip-lab: chaos seed {}: {line}", options.seed),
    );
    let report = match run {
        Ok(report) => report,
        Err(error) => return fail(&error),
    };
    print!("{}", report.summary());
    if let Err(error) = std::fs::write(&report_path, report.to_json()) {
        eprintln!("mmvip-lab: write {}: {error}", report_path.display());
        return 2;
    }
    println!("report: {}", report_path.display());
    if report.violations.is_empty() {
        0
    } else {
        let exclude = if report.excluded.is_empty() {
            String::new()
        } else {
            format!(" --exclude {}", report.excluded.join(","))
        };
        println!(
            "replay: mmvip-lab chaos --seed {} --layout {} --hooks {} --timers {}{exclude}",
            report.seed, report.layout, report.hooks, report.timers
        );
        1
    }
}

fn up(
    root: PathBuf,
    layout: LayoutArg,
    hooks: OneHooksArg,
    timers: Timers,
    artifacts: ArtifactArgs,
) -> u8 {
    let (layout, hooks) = (layout.layout(), hooks.hooks());
    let artifacts = artifacts.resolve();
    match mmvip_lab::up(&root, &artifacts, layout, hooks, &timers) {
        Ok(summary) => {
            let root = summary.root.display();
            println!(
                "mmvip-lab: lab up ({} layout, {} hooks) in {root}\n\
                 \n  write through the VIP:  ip netns exec mmvl-client mariadb -h 10.77.1.99 -u app -papp-lab-secret lab\n  \
                 node shell:             ip netns exec mmvl-node1 bash\n  \
                 node1 SQL:              mariadb -S {root}/node1/run/mysqld.sock -u root\n  \
                 keepalived config:      {}\n  \
                 logs:                   {root}/node1/keepalived.log, {root}/node1/mariadbd.err\n  \
                 planned switch-over:    touch {root}/node1/etc/failover\n  \
                 tear down:              mmvip-lab down",
                layout.name(),
                hooks.name(),
                summary.keepalived_conf.display()
            );
            0
        }
        Err(error) => fail(&error),
    }
}

fn probe_notify(
    root: PathBuf,
    timers: Timers,
    out: &std::path::Path,
    artifacts: ArtifactArgs,
) -> u8 {
    let artifacts = artifacts.resolve();
    let report = match mmvip_lab::probe::run(&root, &artifacts, &timers, &mut |line| {
        eprintln!("mmvip-lab: {line}")
    }) {
        Ok(report) => report,
        Err(error) => return fail(&error),
    };
    print!("{}", report.text);
    if let Err(error) = std::fs::write(out, &report.text) {
        eprintln!("mmvip-lab: write {}: {error}", out.display());
        return 2;
    }
    println!("evidence: {}", out.display());
    if report.vip_present_at_demotion > 0 {
        1
    } else {
        0
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&path))
            .unwrap_or(path)
    }
}

/// Ctrl-C (or SIGTERM/SIGHUP) first asks the lab to stop: every wait notices within
/// a poll step and the lab tears itself down in order. A second signal cleans up from
/// the state file at once and exits. Signals are blocked in every thread and taken by
/// one thread with sigwait, so no handler runs in an arbitrary thread.
fn install_signal_handling(root: PathBuf) {
    // SAFETY: plain libc signal-set calls on a local, initialised sigset_t, made
    // before any other thread exists, so every later thread inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = 0;
            loop {
                let mut signal = 0;
                // SAFETY: `set` is a valid sigset_t; `signal` is a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                received += 1;
                if received == 1 {
                    eprintln!("mmvip-lab: stopping and cleaning up (signal again to force)");
                    wait::interrupt();
                } else {
                    eprintln!("mmvip-lab: forced cleanup");
                    let _ = mmvip_lab::down(&root);
                    std::process::exit(130);
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("mmvip-lab: cannot watch for Ctrl-C: {error}");
    }
}
