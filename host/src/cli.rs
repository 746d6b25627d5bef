//! The command line: `mmvip [--config FILE] <plugin> [ARGS...]`, `compile`, `plugins`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::cache::{self, Source};
use crate::caps::StateStore;
use crate::caps::failover_flag::FlagFile;
use crate::caps::mariadb::MariaDb;
use crate::caps::vip::LocalAddresses;
use crate::config::{Config, Grant, PluginSpec};
use crate::error::{Error, Result};
use crate::keepalived;
use crate::log::{Level, Log, LogContext, MAX_VALUE_BYTES, cut, one_line};
use crate::runtime::{self, Bounds, Capabilities, HookKind, Invocation, Plugin, Watchdog};

#[derive(Parser, Debug)]
#[command(
    name = "mmvip",
    version,
    about = "keepalived hooks for a MariaDB master/master pair, run as sandboxed WebAssembly plugins",
    after_help = "Exit status: 0 the hook succeeded or the check passed; 1 the check failed or the hook could not do its job; 2 usage or configuration error.\nConfig: --config, else $MMVIP_CONFIG, else /etc/mmvip/mmvip.toml."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Precompile every configured plugin into the cache.
    Compile,
    /// List plugins: name, file, hook and WIT version, grants.
    Plugins,
    /// Run one hook: `mmvip <plugin> [ARGS...]`; the exit status is its verdict.
    #[command(external_subcommand)]
    Hook(Vec<OsString>),
}

/// Runs the command line and returns the process exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let started = Instant::now();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => return clap_exit(error),
    };
    let config_path = Config::locate(cli.config);
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => return report_error(None, &error),
    };
    match cli.command {
        Command::Compile => compile_all(&config),
        Command::Plugins => list_plugins(&config),
        Command::Hook(words) => {
            let words: Vec<String> = words
                .into_iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            let (name, args) = words
                .split_first()
                .expect("clap yields the subcommand name");
            run_hook(&config, name, args, started)
        }
    }
}

/// Help and version go to stdout with status 0; anything else is one line, status 2.
fn clap_exit(error: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{error}");
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!(
                "mmvip: no plugin given; usage: mmvip [--config FILE] <plugin> [ARGS...] (see mmvip --help)"
            );
            2
        }
        _ => {
            let text = error.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            eprintln!("mmvip: {line} (see mmvip --help)");
            2
        }
    }
}

fn report_error(log: Option<&Log>, error: &Error) -> u8 {
    if let Some(log) = log {
        log.write(
            Level::Error,
            &[("verdict", "error"), ("msg", error.message())],
        );
    }
    eprintln!("mmvip: {}", one_line(error.message()));
    error.exit_code()
}

fn run_hook(config: &Config, name: &str, raw_args: &[String], started: Instant) -> u8 {
    let context = LogContext {
        plugin: name.to_string(),
        ..LogContext::default()
    };
    let spec = match config.plugin(name) {
        Ok(spec) => spec,
        Err(error) => return report_error(Some(&Log::open(&config.log_file, context)), &error),
    };
    let deadline = started + spec.timeout;
    // Armed before any file is opened, so nothing the run opens (a FIFO, a wedged
    // socket) can keep keepalived waiting past the bound.
    let overrun_log = Arc::new(Mutex::new(None::<Log>));
    let _watchdog = Watchdog::arm(
        cache_engine(),
        deadline,
        Some(stop_overrun(
            Arc::clone(&overrun_log),
            name.to_string(),
            spec.timeout,
        )),
    );
    let mut log = Log::open(&config.log_file, context);
    let remember = |log: &Log| {
        *overrun_log.lock().unwrap_or_else(PoisonError::into_inner) = Some(log.clone());
    };
    remember(&log);
    // The MariaDB handshake overlaps loading the plugin.
    let mut sql = match sql_backend(config, &spec, &log, deadline) {
        Ok(sql) => sql,
        Err(error) => return report_error(Some(&log), &error),
    };
    if let Some(sql) = sql.as_mut() {
        sql.connect_ahead();
    }
    let (plugin, _) = match load_plugin(config, &spec, &log) {
        Ok(loaded) => loaded,
        Err(error) => return report_error(Some(&log), &error),
    };
    let (args, transition) = match plugin.shape.kind {
        HookKind::Check => (raw_args.to_vec(), None),
        HookKind::Notify => match keepalived::split_transition(raw_args) {
            Ok(split) => split,
            Err(error) => return report_error(Some(&log), &error),
        },
    };
    if let Some(transition) = &transition {
        log = log.with_context(LogContext {
            plugin: name.to_string(),
            instance: Some(transition.name.clone()),
            state: Some(keepalived::state_word(transition.state).to_string()),
        });
        remember(&log);
        if let Some(sql) = sql.as_mut() {
            sql.set_log(log.clone());
        }
    }
    let uses_state = spec.grants.contains(&Grant::State);
    let state_dir = if plugin.shape.kind == HookKind::Notify || uses_state {
        match crate::trust::open_dir(&config.state_dir, "state_dir", true) {
            Ok(dir) => Some(dir),
            Err(error) => {
                log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!("running without the node lock and state: {error}"),
                    )],
                );
                None
            }
        }
    } else {
        None
    };
    // Role changes run one at a time, in arrival order; so does every user of the
    // state file, so no update is lost.
    let _lock = match &state_dir {
        Some(dir) => match crate::lock::acquire(dir, deadline) {
            Ok(lock) => {
                if let Some(sql) = sql.as_mut() {
                    sql.forget_connection();
                }
                Some(lock)
            }
            Err(error) => return report_error(Some(&log), &error),
        },
        None => None,
    };
    let caps = capabilities(config, &spec, &log, sql, state_dir);
    let mut settings = spec.settings.clone();
    if plugin.shape.kind == HookKind::Notify {
        settings.extend(config.instance_settings());
    }
    let invocation = Invocation {
        args,
        transition,
        settings,
    };
    let bounds = Bounds {
        deadline,
        timeout: spec.timeout,
        memory_bytes: spec.memory_bytes,
    };
    let (report, _instance) = runtime::run(cache_engine(), &plugin, caps, &invocation, bounds);
    for line in report.stderr.lines().filter(|l| !l.trim().is_empty()) {
        log.write_for_plugin(Level::Warn, &[("stderr", line)]);
    }
    let duration = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    let level = if report.verdict == runtime::Verdict::Pass {
        Level::Info
    } else {
        Level::Error
    };
    log.write(
        level,
        &[
            ("verdict", report.verdict.word()),
            ("duration_ms", &duration),
            ("msg", &report.message),
        ],
    );
    let message = one_line(&cut(&report.message, MAX_VALUE_BYTES)).into_owned();
    if report.verdict == runtime::Verdict::Pass {
        println!("{name}: {message}");
    } else {
        eprintln!("mmvip: {name}: {}: {message}", report.verdict.word());
    }
    // Everything is logged and the state committed: the process ends here, without
    // tearing the wasm instance down first (the kernel reclaims it in one go).
    std::process::exit(i32::from(report.verdict.exit_code()))
}

/// Ends a hook still running past its deadline (blocked in a host call, or in
/// opening what it needs): keepalived must get its verdict in time, and a failure is
/// the safe one.
fn stop_overrun(
    log: Arc<Mutex<Option<Log>>>,
    name: String,
    timeout: Duration,
) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        let message = format!(
            "still running {} ms after its {} ms deadline (blocked in a call or an open); stopped",
            runtime::OVERRUN_GRACE.as_millis(),
            timeout.as_millis()
        );
        // A poisoned or held lock must not keep the stop from happening.
        if let Ok(guard) = log.try_lock()
            && let Some(log) = guard.as_ref()
        {
            log.write(Level::Error, &[("verdict", "timeout"), ("msg", &message)]);
        }
        eprintln!("mmvip: {}: timeout: {message}", one_line(&name));
        std::process::exit(1);
    })
}

/// The engine is built once per process; every command uses the same configuration.
fn cache_engine() -> &'static wasmtime::Engine {
    static ENGINE: std::sync::OnceLock<wasmtime::Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| match runtime::engine() {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("mmvip: {}", one_line(error.message()));
            std::process::exit(1);
        }
    })
}

/// Checks, loads (through the cache), inspects and links a plugin; also says where
/// its compiled code came from.
fn load_plugin(config: &Config, spec: &PluginSpec, log: &Log) -> Result<(Plugin, Source)> {
    let bytes = cache::read_plugin(&spec.path)?;
    let (component, source) =
        cache::load(cache_engine(), &bytes, &spec.path, &config.cache_dir, log)?;
    let plugin = runtime::inspect(cache_engine(), &component, &spec.name, &spec.grants)?;
    Ok((plugin, source))
}

/// The MariaDB back-end, when any SQL capability is granted.
fn sql_backend(
    config: &Config,
    spec: &PluginSpec,
    log: &Log,
    deadline: Instant,
) -> Result<Option<MariaDb>> {
    let granted = [Grant::SqlRead, Grant::SqlAdmin, Grant::SqlRaw]
        .iter()
        .any(|g| spec.grants.contains(g));
    if !granted {
        return Ok(None);
    }
    let password = match &config.mariadb.password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    Ok(Some(MariaDb::new(
        config.mariadb.clone(),
        password,
        deadline,
        log.clone(),
        spec.memory_bytes,
    )))
}

/// Back-ends for exactly the granted capabilities.
fn capabilities(
    config: &Config,
    spec: &PluginSpec,
    log: &Log,
    sql: Option<MariaDb>,
    state_dir: Option<crate::trust::TrustedDir>,
) -> Capabilities {
    let mut caps = Capabilities::new(log.clone());
    let granted = |grant| spec.grants.contains(&grant);
    if granted(Grant::FailoverFlag) {
        caps.failover_flag = Some(Box::new(FlagFile::new(&config.failover_file)));
    }
    if let Some(sql) = sql {
        caps.sql = Some(Box::new(sql));
    }
    if granted(Grant::Vip) {
        caps.vip = Some(Box::new(LocalAddresses));
    }
    if granted(Grant::State) {
        caps.state = Some(StateStore::load(state_dir, log));
    }
    caps
}

fn read_password(path: &std::path::Path) -> Result<String> {
    use std::io::Read as _;
    let file = crate::trust::open_secret(path, "password file")?;
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Error::usage(format!("password file {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn compile_all(config: &Config) -> u8 {
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(error) => return report_error(None, &error),
    };
    let log = Log::open(
        &config.log_file,
        LogContext {
            plugin: "compile".into(),
            ..LogContext::default()
        },
    );
    let mut status = 0;
    for name in names {
        let result = config
            .plugin(&name)
            .and_then(|spec| load_plugin(config, &spec, &log))
            .map(|(_, source)| source);
        match result {
            Ok(Source::Cache) => println!("{name}: already cached"),
            Ok(Source::Compiled) => println!("{name}: compiled"),
            Ok(Source::Uncached) => {
                eprintln!(
                    "mmvip: {name}: compiled, but not cached: cache_dir is not usable (see the log)"
                );
                status = status.max(1);
            }
            Err(error) => {
                let message = format!("{name}: {}", one_line(error.message()));
                log.write(Level::Error, &[("verdict", "error"), ("msg", &message)]);
                eprintln!("mmvip: {message}");
                status = status.max(error.exit_code());
            }
        }
    }
    status
}

fn list_plugins(config: &Config) -> u8 {
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(error) => return report_error(None, &error),
    };
    let log = Log::open(
        &config.log_file,
        LogContext {
            plugin: "plugins".into(),
            ..LogContext::default()
        },
    );
    let mut status = 0;
    println!(
        "{:<12} {:<40} {:<16} {:<40} STATUS",
        "NAME", "FILE", "HOOK", "GRANTS"
    );
    for name in names {
        let spec = match config.plugin(&name) {
            Ok(spec) => spec,
            Err(error) => {
                eprintln!("mmvip: {}", one_line(error.message()));
                status = 2;
                continue;
            }
        };
        let grants: Vec<&str> = spec.grants.iter().map(|g| g.name()).collect();
        let grants = if grants.is_empty() {
            "-".to_string()
        } else {
            grants.join(",")
        };
        let (hook, outcome) = match load_plugin(config, &spec, &log) {
            Ok((plugin, _)) => (
                format!("{}@{}", plugin.shape.kind.interface(), plugin.shape.version),
                "ok".to_string(),
            ),
            Err(error) => {
                status = 2;
                ("-".to_string(), one_line(error.message()).into_owned())
            }
        };
        println!(
            "{name:<12} {:<40} {hook:<16} {grants:<40} {outcome}",
            spec.path.display()
        );
    }
    status
}
