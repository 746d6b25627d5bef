//! The command line: `mmvip [--config FILE] <plugin> [ARGS...]`, `compile`, `plugins`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::args::{Cli, Command};
use crate::cache::Source;
use crate::config::Config;
use crate::error::Error;
use crate::hook;
use crate::log::{Level, Log, LogContext, one_line};
use crate::plugin;
use crate::runtime::{self, Verdict};

/// How a command ended; `main` turns it into the exit status.
pub enum Ended {
    /// Help or version was printed, or the command found nothing wrong.
    Done,
    /// A hook ran to a verdict. Its instance is kept so that the process can exit
    /// without tearing it down (the kernel reclaims it in one go).
    Hook(Verdict, Option<runtime::Instance>),
    /// The command could not do its job; already reported on stderr and in the log.
    Failed(Error),
}

/// Ends the process with the status of an `Ended` (`main` provides it): the one way
/// out, also for a hook stopped past its deadline from the watchdog's thread.
pub type Exit = fn(Ended) -> !;

/// Runs the command line.
pub fn run(args: impl IntoIterator<Item = OsString>, exit: Exit) -> Ended {
    let started = Instant::now();
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => return clap_ended(error, config_option(&args)),
    };
    let config_path = Config::locate(cli.config);
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => return refuse(None, error),
    };
    match cli.command {
        Command::Compile => compile_all(&config),
        Command::Plugins => list_plugins(&config),
        Command::Switchover => switchover(&config),
        Command::Ack => ack(&config),
        Command::Status { json } => {
            let status = crate::status::gather(&config, &command_log(&config, "status"));
            if json {
                println!("{status:#}");
            } else {
                print!("{}", crate::status::render(&status));
            }
            Ended::Done
        }
        Command::Doctor {
            json,
            peer,
            keepalived_conf,
        } => doctor(&config, &config_path, &keepalived_conf, peer, json),
        Command::Guard => {
            let log = command_log(&config, "guard");
            match crate::guard::run(&config, &config_path, log.clone()) {
                Ok(()) => Ended::Done,
                Err(error) => refuse(Some(&log), error),
            }
        }
        Command::Hook(words) => {
            let words: Vec<String> = words
                .into_iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            let (name, args) = words
                .split_first()
                .expect("clap yields the subcommand name");
            let timeout = cli.timeout_ms.map(std::time::Duration::from_millis);
            hook::run(&config, name, args, started, timeout, exit)
        }
    }
}

/// Help and version go to stdout; anything else is one line on stderr.
fn clap_ended(error: clap::Error, config_path: Option<PathBuf>) -> Ended {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp => {
            print!("{error}");
            print!("{}", installed_plugins(config_path));
            Ended::Done
        }
        ErrorKind::DisplayVersion => {
            print!("{error}");
            Ended::Done
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            refuse(
                None,
                Error::usage(
                    "no plugin given; usage: mmvip [--config FILE] <plugin> [ARGS...] (see mmvip --help)",
                ),
            )
        }
        _ => {
            let text = error.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            refuse(None, Error::usage(format!("{line} (see mmvip --help)")))
        }
    }
}

/// `--config FILE` or `--config=FILE` among arguments clap refused or answered.
fn config_option(args: &[OsString]) -> Option<PathBuf> {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.to_str().and_then(|w| w.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The help's list of the plugins this node has, with what each is for (from their
/// manifests; nothing is compiled).
fn installed_plugins(config_path: Option<PathBuf>) -> String {
    let path = Config::locate(config_path);
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => return format!("\nPlugins: cannot tell ({})\n", one_line(error.message())),
    };
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(error) => return format!("\nPlugins: cannot tell ({})\n", one_line(error.message())),
    };
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut text = format!("\nPlugins in {}:\n", config.plugin_dir.display());
    for name in names {
        let about = match config.plugin(&name).and_then(plugin::find) {
            Ok(found) => format!("{} ({})", found.spec.about, found.spec.kind.word()),
            Err(error) => format!("unusable: {}", one_line(error.message())),
        };
        text.push_str(&format!("  {name:<width$}  {about}\n"));
    }
    text
}

/// Reports an error (one line on stderr, and in the log when there is one).
pub fn refuse(log: Option<&Log>, error: Error) -> Ended {
    if let Some(log) = log {
        log.write(
            Level::Error,
            &[("verdict", "error"), ("msg", error.message())],
        );
    }
    eprintln!("mmvip: {}", one_line(error.message()));
    Ended::Failed(error)
}

/// Reports one plugin's problem in a listing and keeps the worst kind seen.
fn note_problem(worst: &mut Option<Error>, log: &Log, name: &str, error: Error) {
    let message = format!("{name}: {}", one_line(error.message()));
    log.write(Level::Error, &[("verdict", "error"), ("msg", &message)]);
    eprintln!("mmvip: {message}");
    let usage = matches!(error, Error::Usage(_));
    if worst
        .as_ref()
        .is_none_or(|w| usage && !matches!(w, Error::Usage(_)))
    {
        *worst = Some(match error {
            Error::Usage(_) => Error::usage(message),
            Error::Failed(_) => Error::failed(message),
        });
    }
}

fn command_log(config: &Config, command: &str) -> Log {
    Log::open(
        &config.log,
        LogContext {
            plugin: command.into(),
            ..LogContext::default()
        },
    )
}

fn compile_all(config: &Config) -> Ended {
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(error) => return refuse(None, error),
    };
    let log = command_log(config, "compile");
    let engine = match runtime::engine() {
        Ok(engine) => engine,
        Err(error) => return refuse(Some(&log), error),
    };
    let mut worst = None;
    for name in names {
        let loaded = config
            .plugin(&name)
            .and_then(plugin::find)
            .and_then(|found| found.load(&engine, config, &log));
        match loaded {
            Ok((_, Source::Cache)) => println!("{name}: already cached"),
            Ok((_, Source::Compiled)) => println!("{name}: compiled"),
            Ok((_, Source::Uncached)) => note_problem(
                &mut worst,
                &log,
                &name,
                Error::failed("compiled, but not cached: cache_dir is not usable (see the log)"),
            ),
            Err(error) => note_problem(&mut worst, &log, &name, error),
        }
    }
    worst.map_or(Ended::Done, Ended::Failed)
}

fn list_plugins(config: &Config) -> Ended {
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(error) => return refuse(None, error),
    };
    let log = command_log(config, "plugins");
    let engine = match runtime::engine() {
        Ok(engine) => engine,
        Err(error) => return refuse(Some(&log), error),
    };
    let mut worst = None;
    println!(
        "{:<12} {:<7} {:>8} {:<40} {:<6} ABOUT",
        "NAME", "KIND", "TIMEOUT", "GRANTS", "STATUS"
    );
    for name in names {
        let loaded = config
            .plugin(&name)
            .and_then(plugin::find)
            .and_then(|found| found.load(&engine, config, &log));
        match loaded {
            Ok((plugin, _)) => {
                let spec = &plugin.spec;
                let grants: Vec<&str> = spec.grants.iter().map(|g| g.name()).collect();
                let grants = if grants.is_empty() {
                    "-".to_string()
                } else {
                    grants.join(",")
                };
                println!(
                    "{name:<12} {:<7} {:>6}ms {grants:<40} {:<6} {}",
                    spec.kind.word(),
                    spec.timeout.as_millis(),
                    "ok",
                    spec.about
                );
            }
            Err(error) => {
                println!(
                    "{name:<12} {:<7} {:>8} {:<40} {:<6} {}",
                    "-",
                    "-",
                    "-",
                    "error",
                    one_line(error.message())
                );
                note_problem(&mut worst, &log, &name, error);
            }
        }
    }
    worst.map_or(Ended::Done, Ended::Failed)
}

fn doctor(
    config: &Config,
    config_path: &Path,
    keepalived_conf: &Path,
    check_peer: bool,
    json: bool,
) -> Ended {
    let log = command_log(config, "doctor");
    let checks = crate::doctor::run(config, config_path, keepalived_conf, check_peer, &log);
    if json {
        println!(
            "{:#}",
            serde_json::to_value(&checks).expect("checks serialize to JSON")
        );
    } else {
        print!("{}", crate::doctor::render(&checks));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        Ended::Done
    } else {
        refuse(
            Some(&log),
            Error::failed(format!(
                "doctor: {failed} of {} checks failed",
                checks.len()
            )),
        )
    }
}

/// The state keys the role hooks keep for flap damping (see the role plugin's
/// `damping` module): the times of the node's role changes, and why promotion is
/// held back while it is.
pub const ROLE_CHANGES_KEY: &str = "role_changes";
pub const DAMPED_KEY: &str = "damped";

/// What flap damping keeps in the state: how many role changes are recorded, and why
/// promotion is held back, while it is.
pub fn damping(store: &crate::caps::state::StateStore) -> (usize, Option<String>) {
    let changes = store
        .get(ROLE_CHANGES_KEY)
        .map_or(0, |times| times.split_whitespace().count());
    (changes, store.get(DAMPED_KEY))
}

fn ack(config: &Config) -> Ended {
    let log = command_log(config, "ack");
    let forgotten = || -> crate::error::Result<(usize, Option<String>)> {
        let dir = crate::trust::open_dir(&config.state_dir, "state_dir", false)?;
        // Role hooks rewrite the state file under this lock.
        let _lock = crate::lock::acquire(&dir, Instant::now() + Duration::from_secs(10))?;
        let mut store = crate::caps::state::StateStore::load(Some(dir), &log);
        let (changes, damped) = damping(&store);
        for key in [ROLE_CHANGES_KEY, DAMPED_KEY] {
            store
                .set(key.into(), None)
                .map_err(|why| Error::failed(format!("state: {why}")))?;
        }
        if !store.commit(&log) {
            return Err(Error::failed(
                "the state file could not be written (see the log): nothing acknowledged",
            ));
        }
        Ok((changes, damped))
    };
    match forgotten() {
        Ok((changes, damped)) => {
            let report = match damped {
                Some(why) => format!(
                    "acknowledged: promotion allowed again; forgot {changes} recorded role changes (was: {why})"
                ),
                None => format!("nothing was held back; forgot {changes} recorded role changes"),
            };
            log.write(Level::Warn, &[("verdict", "pass"), ("msg", &report)]);
            println!("{report}");
            Ended::Done
        }
        Err(error) => refuse(Some(&log), error),
    }
}

/// Why flap damping holds this node's promotion back, if it does.
fn held_back(config: &Config, log: &Log) -> Option<String> {
    damping(&crate::caps::state::StateStore::read(
        &config.state_dir,
        log,
    ))
    .1
}

fn switchover(config: &Config) -> Ended {
    let log = command_log(config, "switchover");
    if config.guard.is_none() {
        return refuse(
            Some(&log),
            Error::usage(
                "switchover needs the guard ([guard] in the config); without it, raise the failover flag file",
            ),
        );
    }
    if let Some(why) = held_back(config, &log) {
        // Run here, the switch-over would move the VIP to a node that refuses it.
        return refuse(
            Some(&log),
            Error::failed(format!(
                "this node's promotion is held back ({why}): run `mmvip ack` first"
            )),
        );
    }
    let answer = crate::guard::control::ask(
        &config.state_dir,
        "SWITCHOVER",
        std::time::Duration::from_secs(60),
    );
    match answer
        .as_deref()
        .map(|line| line.split_once(' ').unwrap_or((line, "")))
    {
        Ok(("DONE", report)) => {
            log.write(Level::Info, &[("verdict", "pass"), ("msg", report)]);
            println!("switchover: {report}");
            Ended::Done
        }
        Ok((_, why)) => refuse(
            Some(&log),
            Error::failed(format!("switchover refused: {why}")),
        ),
        Err(why) => refuse(Some(&log), Error::failed(format!("switchover: {why}"))),
    }
}
