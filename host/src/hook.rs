//! One hook run, from keepalived's command line to an exit status, as a pipeline of
//! short steps, each returning a `Result`:
//!
//! resolve the plugin → arm the deadline → open the log → find the plugin (its file
//! and manifest) → parse keepalived's arguments → take the node lock → open SQL
//! ahead → load (cache, link) → run → report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bindings::types::{Call, Transition, VrrpInstance};
use crate::caps::{Backends, failover_flag, lease, peer, sql, state::StateStore, vip};
use crate::cli::{Ended, Exit, refuse};
use crate::config::{Config, PluginSpec};
use crate::error::Result;
use crate::keepalived;
use crate::lock::HookLock;
use crate::log::{Level, Log, LogContext, MAX_VALUE_BYTES, cut, one_line};
use crate::manifest::Kind;
use crate::mariadb::MariaDb;
use crate::plugin::{self, Plugin};
use crate::runtime::{self, Bounds, Instance, OVERRUN_GRACE, Report, Verdict, Watchdog};
use crate::trust::{self, TrustedDir};

/// At most this much of a hook's budget is spent waiting for the node lock; the
/// rest is left for the hook itself (a demotion that waited in vain still runs).
const MAX_LOCK_RESERVE: Duration = Duration::from_secs(2);

/// Runs hook `name` and reports how it ended.
/// `timeout`: the run's bound instead of the configured one.
pub fn run(
    config: &Config,
    name: &str,
    raw_args: &[String],
    started: Instant,
    timeout: Option<Duration>,
    exit: Exit,
) -> Ended {
    let context = LogContext {
        plugin: name.to_string(),
        ..LogContext::default()
    };
    let engine = match runtime::engine() {
        Ok(engine) => engine,
        Err(error) => return refuse(Some(&Log::open(&config.log, context)), error),
    };
    let mut site = match config.plugin(name) {
        Ok(site) => site,
        Err(error) => return refuse(Some(&Log::open(&config.log, context)), error),
    };
    if timeout.is_some() {
        site.table.timeout = timeout;
    }
    // Armed before any file is opened, so nothing the run opens (a FIFO, a wedged
    // socket) can keep keepalived waiting past the bound.
    let overrun_log = Arc::new(Mutex::new(None::<Log>));
    let watchdog = Watchdog::arm(
        &engine,
        started + site.load_bound(),
        Some(stop_overrun(
            Arc::clone(&overrun_log),
            name.to_string(),
            exit,
        )),
    );
    let log = Log::open(&config.log, context);
    let mut run = Run {
        config,
        engine: &engine,
        started,
        watchdog: &watchdog,
        overrun_log,
        log,
    };
    run.remember_log();
    match run.steps(site, raw_args) {
        Ok((report, instance)) => {
            run.report(name, &report);
            Ended::Hook(report.verdict, Some(instance))
        }
        Err(error) => refuse(Some(&run.log), error),
    }
}

struct Run<'a> {
    config: &'a Config,
    engine: &'a wasmtime::Engine,
    started: Instant,
    watchdog: &'a Watchdog,
    /// The log the overrun stop writes its line to (the latest context).
    overrun_log: Arc<Mutex<Option<Log>>>,
    log: Log,
}

impl Run<'_> {
    fn steps(
        &mut self,
        site: crate::config::PluginSite,
        raw_args: &[String],
    ) -> Result<(Report, Instance)> {
        let found = plugin::find(site)?;
        let deadline = self.started + found.spec.timeout;
        self.watchdog.set_deadline(deadline);
        let (args, event) = self.keepalived_arguments(&found.spec, raw_args)?;
        let (lock, state_dir) = self.lock(&found.spec, deadline);
        let sql = self.open_sql_ahead(&found.spec, deadline)?;
        let peer = self.peer(&found.spec, deadline)?;
        let (plugin, _) = found.load(self.engine, self.config, &self.log)?;
        let granted = lease::Granted::default();
        let caps = self.backends(&plugin, sql, peer, state_dir, deadline, &granted);
        let call = Call {
            args,
            settings: plugin.spec.settings.clone(),
            time_left_ms: millis(deadline.saturating_duration_since(Instant::now())),
            event,
            instances: match plugin.spec.kind {
                Kind::Notify => self.instances(),
                Kind::Check => Vec::new(),
            },
            exclusive: lock.is_some(),
        };
        let bounds = Bounds {
            deadline,
            timeout: plugin.spec.timeout,
            memory_bytes: plugin.spec.memory_bytes,
        };
        let ran = runtime::run(self.engine, &plugin.linked, caps, &call, bounds);
        // Under the node lock still: no demotion gives the lease back in between.
        if ran.0.verdict == Verdict::Pass {
            lease::serve(&self.config.state_dir, &granted, &self.log);
        }
        drop(lock);
        Ok(ran)
    }

    fn remember_log(&self) {
        *self
            .overrun_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(self.log.clone());
    }

    /// A notify hook's own words and the transition keepalived appended; a check
    /// takes its words as they are.
    fn keepalived_arguments(
        &mut self,
        spec: &PluginSpec,
        raw_args: &[String],
    ) -> Result<(Vec<String>, Option<Transition>)> {
        if spec.kind == Kind::Check {
            return Ok((raw_args.to_vec(), None));
        }
        let (args, event) = keepalived::split_transition(raw_args)?;
        if let Some(event) = &event {
            self.log = self.log.with_context(LogContext {
                plugin: spec.name.clone(),
                instance: Some(event.name.clone()),
                state: Some(keepalived::state_word(event.state).to_string()),
            });
            self.remember_log();
        }
        Ok((args, event))
    }

    /// The node lock, for plugins that can change the node. Waiting is bounded so
    /// that the hook keeps time to act; a run that could not get the lock goes on
    /// without it (`exclusive` tells the plugin), since a demotion must happen
    /// whatever else is broken.
    fn lock(&self, spec: &PluginSpec, deadline: Instant) -> (Option<HookLock>, Option<TrustedDir>) {
        if !spec.exclusive() {
            return (None, None);
        }
        let dir = match trust::open_dir(&self.config.state_dir, "state_dir", true) {
            Ok(dir) => dir,
            Err(error) => {
                self.log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!("running without the node lock and state: {error}"),
                    )],
                );
                return (None, None);
            }
        };
        let reserve = (spec.timeout / 4).min(MAX_LOCK_RESERVE);
        match crate::lock::acquire(&dir, deadline - reserve) {
            Ok(lock) => (Some(lock), Some(dir)),
            Err(error) => {
                self.log.write(
                    Level::Error,
                    &[("msg", &format!("running without the node lock: {error}"))],
                );
                (None, Some(dir))
            }
        }
    }

    /// The SQL back-end; when SQL is granted, its connection starts opening now, so
    /// the handshake overlaps loading the plugin.
    fn open_sql_ahead(
        &self,
        spec: &PluginSpec,
        deadline: Instant,
    ) -> Result<Box<dyn sql::SqlBackend>> {
        let granted = ["sql-read", "sql-admin", "sql-raw"]
            .iter()
            .any(|grant| spec.granted(grant));
        let password = match &self.config.mariadb.password_file {
            Some(path) if granted => Some(trust::read_secret(path, "[mariadb] password_file")?),
            _ => None,
        };
        let mut backend = MariaDb::new(
            self.config.mariadb.clone(),
            password,
            deadline,
            self.log.clone(),
            spec.memory_bytes,
        );
        if granted {
            backend.connect_ahead();
        }
        Ok(Box::new(backend))
    }

    /// The peer back-end (its password is read only when `peer` is granted).
    fn peer(&self, spec: &PluginSpec, deadline: Instant) -> Result<Box<dyn peer::Peer>> {
        let config = self.config.peer.as_ref();
        let password = match config.and_then(|p| p.password_file.as_ref()) {
            Some(path) if spec.granted("peer") => {
                Some(trust::read_secret(path, "[peer] password_file")?)
            }
            _ => None,
        };
        Ok(peer::backend(config, password, deadline, &self.log))
    }

    fn backends(
        &self,
        plugin: &Plugin,
        sql: Box<dyn sql::SqlBackend>,
        peer: Box<dyn peer::Peer>,
        state_dir: Option<TrustedDir>,
        deadline: Instant,
        granted: &lease::Granted,
    ) -> Backends {
        let state_dir = state_dir.filter(|_| plugin.spec.granted("state"));
        Backends {
            log: self.log.clone(),
            failover_flag: failover_flag::backend(&self.config.failover_file),
            sql,
            vip: vip::backend(),
            state: StateStore::load(state_dir, &self.log),
            peer,
            lease: lease::backend(
                self.config.state_dir.clone(),
                self.config.guard.is_some(),
                deadline,
                std::sync::Arc::clone(granted),
            ),
        }
    }

    fn instances(&self) -> Vec<VrrpInstance> {
        self.config
            .instances
            .iter()
            .map(|(name, instance)| VrrpInstance {
                name: name.clone(),
                vip: instance.vip.to_string(),
                role: instance.role,
            })
            .collect()
    }

    /// The run's last log line and its one line on stdout (pass) or stderr.
    fn report(&self, name: &str, report: &Report) {
        for line in report.stderr.lines().filter(|l| !l.trim().is_empty()) {
            self.log.write_for_plugin(Level::Warn, &[("stderr", line)]);
        }
        let duration = format!("{:.1}", self.started.elapsed().as_secs_f64() * 1000.0);
        let level = if report.verdict == Verdict::Pass {
            Level::Info
        } else {
            Level::Error
        };
        self.log.write(
            level,
            &[
                ("verdict", report.verdict.word()),
                ("duration_ms", &duration),
                ("msg", &report.message),
            ],
        );
        let message = one_line(&cut(&report.message, MAX_VALUE_BYTES)).into_owned();
        if report.verdict == Verdict::Pass {
            println!("{name}: {message}");
        } else {
            eprintln!("mmvip: {name}: {}: {message}", report.verdict.word());
        }
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Ends a hook still running past its deadline (blocked in a host call, or in
/// opening what it needs): keepalived must get its verdict in time, and a failure is
/// the safe one.
fn stop_overrun(
    log: Arc<Mutex<Option<Log>>>,
    name: String,
    exit: Exit,
) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        let message = format!(
            "still running {} ms after its deadline (blocked in a call or an open); stopped",
            OVERRUN_GRACE.as_millis(),
        );
        // A held lock must not keep the stop from happening.
        if let Ok(guard) = log.try_lock()
            && let Some(log) = guard.as_ref()
        {
            log.write(Level::Error, &[("verdict", "timeout"), ("msg", &message)]);
        }
        eprintln!("mmvip: {}: timeout: {message}", one_line(&name));
        exit(Ended::Hook(Verdict::Timeout, None))
    })
}
