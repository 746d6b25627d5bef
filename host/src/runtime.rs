//! Runs one hook: checks a plugin's imports against its grants, links exactly the
//! granted capabilities, and calls its export under a wall-clock deadline (epoch
//! interruption) and a memory limit.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, CheckPluginPre, NotifyPluginPre, Transition};
use crate::caps::{FailoverFlag, Sql, SqlError, Vip};
use crate::config::Grant;
use crate::error::{Error, Result};
use crate::log::{Level, Log};

/// WASI interfaces a plugin may import. They expose nothing of the host: no
/// preopened directories, no environment, no arguments; stdout is discarded and
/// stderr is captured into the log. Sockets and HTTP are never linked.
const ALLOWED_WASI: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
];
/// Interfaces that only carry types; importing them needs no grant.
const TYPE_ONLY: &[&str] = &["types", "sql-types"];
const STDERR_CAPACITY: usize = 64 << 10;

/// One engine configuration for compiling and loading, so cached code always fits.
pub fn engine() -> Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A hook process lives a few milliseconds and its plugin's memory is small:
    // copying the initial image beats creating a copy-on-write memfd for it, and
    // wasm backtraces do not need native (.eh_frame) unwind tables. Both measured.
    config.memory_init_cow(false);
    config.native_unwind_info(false);
    crate::cache::configure(&mut config);
    Engine::new(&config).map_err(|e| Error::failed(format!("cannot start the wasm engine: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Check,
    Notify,
}

impl HookKind {
    pub fn interface(self) -> &'static str {
        match self {
            HookKind::Check => "check",
            HookKind::Notify => "notify",
        }
    }
}

/// What a component is: its hook kind and the WIT version it was built against.
#[derive(Debug, Clone)]
pub struct Shape {
    pub kind: HookKind,
    pub version: String,
    pub imports: Vec<String>,
}

/// A plugin accepted by [`inspect`]: its shape, and the component linked to exactly
/// its granted capabilities, ready to instantiate.
pub struct Plugin {
    pub shape: Shape,
    linked: InstancePre<HookState>,
}

/// Reads a component's exports and imports and refuses it, fail closed, when it is
/// not an mmvip hook of this WIT track, imports something it was not granted, or
/// calls a function this host does not have; links it to its capabilities.
pub fn inspect(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    grants: &[Grant],
) -> Result<Plugin> {
    let ty = component.component_type();
    let mut kind = None;
    let mut version = None;
    for (name, _) in ty.exports(engine) {
        if let Some((interface, found)) = hooks_interface(name) {
            check_version(plugin, found)?;
            kind = match interface {
                "check" => Some(HookKind::Check),
                "notify" => Some(HookKind::Notify),
                _ => kind,
            };
            version = Some(found.to_string());
        }
    }
    let (Some(kind), Some(version)) = (kind, version) else {
        return Err(Error::usage(format!(
            "plugin `{plugin}` exports no {}/check or {}/notify hook (built for another host?)",
            bindings::PACKAGE,
            bindings::PACKAGE
        )));
    };
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        imports.push(name.to_string());
        if let Some((interface, found)) = hooks_interface(name) {
            check_version(plugin, found)?;
            if TYPE_ONLY.contains(&interface) {
                continue;
            }
            match Grant::from_name(interface) {
                Some(grant) if grants.contains(&grant) => {}
                Some(grant) => {
                    return Err(Error::usage(format!(
                        "plugin `{plugin}` imports {name} but is not granted `{}`; refused (grant it in [plugins.{plugin}] grants)",
                        grant.name()
                    )));
                }
                None => {
                    return Err(Error::usage(format!(
                        "plugin `{plugin}` imports unknown interface {name}; refused"
                    )));
                }
            }
        } else if !ALLOWED_WASI.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(Error::usage(format!(
                "plugin `{plugin}` imports {name}, which mmvip never provides; refused"
            )));
        }
    }
    let shape = Shape {
        kind,
        version,
        imports,
    };
    // Type-checks every import against what this host provides, so a plugin from a
    // later 0.1.x release that calls something new is refused like any load problem.
    let linked = linker(engine, &shape, grants)?
        .instantiate_pre(component)
        .map_err(|e| {
            Error::usage(format!(
                "plugin `{plugin}` needs what this mmvip ({}@{}) does not provide: {}; rebuild it with a matching mmvip-sdk",
                bindings::PACKAGE,
                bindings::VERSION,
                crate::error::describe_wasmtime(&e)
            ))
        })?;
    Ok(Plugin { shape, linked })
}

/// `mmvip:hooks/log@0.1.0` → `("log", "0.1.0")`.
fn hooks_interface(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(bindings::PACKAGE)?.strip_prefix('/')?;
    rest.split_once('@').or(Some((rest, "")))
}

fn check_version(plugin: &str, found: &str) -> Result<()> {
    let track = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if found.is_empty() || track(found) != track(bindings::VERSION) {
        let found = if found.is_empty() {
            "an unversioned package"
        } else {
            found
        };
        return Err(Error::usage(format!(
            "plugin `{plugin}` was built against {}@{found}; this mmvip provides {}@{} (0.1.x); rebuild it with a matching mmvip-sdk",
            bindings::PACKAGE,
            bindings::PACKAGE,
            bindings::VERSION
        )));
    }
    Ok(())
}

/// The capability back-ends of one run. Only granted ones are set.
pub struct Capabilities {
    pub log: Log,
    pub failover_flag: Option<Box<dyn FailoverFlag>>,
    pub sql: Option<Box<dyn Sql>>,
    pub vip: Option<Box<dyn Vip>>,
    pub state: Option<crate::caps::StateStore>,
}

impl Capabilities {
    pub fn new(log: Log) -> Capabilities {
        Capabilities {
            log,
            failover_flag: None,
            sql: None,
            vip: None,
            state: None,
        }
    }
}

/// Everything a hook receives.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub args: Vec<String>,
    pub transition: Option<Transition>,
    pub settings: Vec<(String, String)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The check passed or the hook did its job.
    Pass,
    /// The check failed or the hook could not do its job.
    Fail,
    /// The plugin rejected its arguments or settings.
    Usage,
    /// The plugin trapped (panic, memory limit, ...).
    Crash,
    /// The plugin ran past its deadline.
    Timeout,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Usage => "usage",
            Verdict::Crash => "crash",
            Verdict::Timeout => "timeout",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Usage => 2,
            Verdict::Fail | Verdict::Crash | Verdict::Timeout => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    pub message: String,
    /// What the plugin wrote to stderr (a panic message, for example).
    pub stderr: String,
}

/// Store data of one run.
pub struct HookState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryBudget,
    caps: Capabilities,
}

impl WasiView for HookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Limits of one run. The deadline itself is enforced by a [`Watchdog`] the caller
/// arms, ideally before opening any file the run needs.
pub struct Bounds {
    pub deadline: Instant,
    /// The hook's configured bound, for messages.
    pub timeout: Duration,
    /// All linear memories and tables of the instance together.
    pub memory_bytes: usize,
}

/// How long past its deadline a hook may still be inside a host call before it is
/// stopped. A statement's socket timeout is fixed when its connection opens, so one
/// started near the deadline can run past it; so can a `connect` to a wedged socket.
pub const OVERRUN_GRACE: Duration = Duration::from_millis(100);

/// Table elements are charged against the memory budget at the size of a pointer.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();
/// Counts of instances, tables and memories a component may create; ours have a few.
const MAX_OBJECTS: usize = 64;

/// Charges every memory and table the instance creates or grows against one budget,
/// so neither extra memories nor a large table can get around the limit. Going over
/// traps the plugin with [`OverBudget`]. A growth the system itself then fails (out
/// of address space) stays charged: the limit only ever gets stricter.
struct MemoryBudget {
    left: usize,
}

/// The trap cause when a plugin exceeds its memory budget.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory limit reached")
    }
}

impl std::error::Error for OverBudget {}

impl MemoryBudget {
    /// Charges growing a memory or table from `current` to `desired` units of
    /// `unit_bytes` each.
    fn grow(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
        unit_bytes: usize,
    ) -> wasmtime::Result<bool> {
        // Growth past the object's own maximum fails after this call without telling
        // us what it was charged: refuse it here (`memory.grow` returns -1) instead.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let bytes = desired.saturating_sub(current).saturating_mul(unit_bytes);
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(true)
            }
            None => Err(OverBudget.into()),
        }
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired, maximum, 1)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired, maximum, TABLE_ELEMENT_BYTES)
    }

    fn instances(&self) -> usize {
        MAX_OBJECTS
    }

    fn tables(&self) -> usize {
        MAX_OBJECTS
    }

    fn memories(&self) -> usize {
        MAX_OBJECTS
    }
}

/// The finished instance of a run. Dropping it tears the instance down; a process
/// about to exit can skip that (`std::process::exit` while holding it), since the
/// kernel reclaims the memory faster than unmapping it piece by piece.
pub struct Instance {
    _store: Store<HookState>,
}

/// Instantiates the plugin with its capability back-ends and runs its hook. Load
/// problems were refused by [`inspect`]; everything the plugin does is in the
/// `Report`.
pub fn run(
    engine: &Engine,
    plugin: &Plugin,
    caps: Capabilities,
    invocation: &Invocation,
    bounds: Bounds,
) -> (Report, Instance) {
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
    let Bounds {
        deadline,
        timeout,
        memory_bytes,
    } = bounds;
    let limits = MemoryBudget { left: memory_bytes };
    let state = HookState {
        wasi,
        table: ResourceTable::new(),
        limits,
        caps,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let settings: Vec<bindings::types::Setting> = invocation
        .settings
        .iter()
        .map(|(key, value)| bindings::types::Setting {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    // The watchdog bumps the epoch once, at the deadline: a run starting after that
    // would never see it.
    let outcome = if Instant::now() >= deadline {
        Err(wasmtime::Error::from(Trap::Interrupt))
    } else {
        call(&mut store, plugin, invocation, &settings)
    };
    let stderr = String::from_utf8_lossy(&stderr.contents())
        .trim_end()
        .to_string();
    if outcome.is_ok() {
        // Only a hook that returned has a consistent view to keep.
        let caps = &mut store.data_mut().caps;
        if let Some(state) = caps.state.as_mut() {
            state.commit(&caps.log);
        }
    }
    let (verdict, message) = match outcome {
        Ok(Ok(summary)) => (Verdict::Pass, summary),
        Ok(Err(bindings::types::HookError::Failed(why))) => (Verdict::Fail, why),
        Ok(Err(bindings::types::HookError::Usage(why))) => (Verdict::Usage, why),
        Err(error) => describe_trap(&error, timeout, memory_bytes),
    };
    (
        Report {
            verdict,
            message,
            stderr,
        },
        Instance { _store: store },
    )
}

type HookOutcome = wasmtime::Result<std::result::Result<String, bindings::types::HookError>>;

fn call(
    store: &mut Store<HookState>,
    plugin: &Plugin,
    invocation: &Invocation,
    settings: &[bindings::types::Setting],
) -> HookOutcome {
    match plugin.shape.kind {
        HookKind::Check => CheckPluginPre::new(plugin.linked.clone())
            .and_then(|pre| pre.instantiate(&mut *store))
            .and_then(|hook| {
                hook.mmvip_hooks_check()
                    .call_run(&mut *store, &invocation.args, settings)
            }),
        HookKind::Notify => NotifyPluginPre::new(plugin.linked.clone())
            .and_then(|pre| pre.instantiate(&mut *store))
            .and_then(|hook| {
                hook.mmvip_hooks_notify().call_run(
                    &mut *store,
                    invocation.transition.as_ref(),
                    &invocation.args,
                    settings,
                )
            }),
    }
}

fn describe_trap(
    error: &wasmtime::Error,
    timeout: Duration,
    memory_bytes: usize,
) -> (Verdict, String) {
    if error.chain().any(|cause| cause.is::<OverBudget>()) {
        return (
            Verdict::Crash,
            format!(
                "plugin failed: exceeded its {} MiB memory limit",
                memory_bytes >> 20
            ),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            Verdict::Timeout,
            format!("interrupted at its {} ms deadline", timeout.as_millis()),
        ),
        Some(trap) => (Verdict::Crash, format!("plugin trapped: {trap}")),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => (
                Verdict::Crash,
                format!(
                    "plugin called exit({}) instead of returning a verdict",
                    exit.0
                ),
            ),
            None => (
                Verdict::Crash,
                format!("plugin failed: {}", crate::error::describe_wasmtime(error)),
            ),
        },
    }
}

/// Enforces a run's deadline: bumps the engine epoch at the deadline (wasm running
/// then traps), then calls `on_overrun` if the run is still going [`OVERRUN_GRACE`]
/// later: it is then blocked in a host call the epoch cannot reach, or in a file or
/// connection opened before the plugin ran. Dropping the watchdog ends the run: it
/// cancels both, or, if `on_overrun` has begun, waits for it (it ends the process),
/// so a run never reports a verdict of its own as well.
pub struct Watchdog {
    run: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    pub fn arm(
        engine: &Engine,
        deadline: Instant,
        on_overrun: Option<Box<dyn FnOnce() + Send>>,
    ) -> Watchdog {
        let run = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = Arc::clone(&run);
        let engine = engine.clone();
        std::thread::spawn(move || {
            let (ended, changed) = &*watched;
            let still_running = |guard, until: Instant| {
                let wait = until.saturating_duration_since(Instant::now());
                let (guard, _) = changed
                    .wait_timeout_while(guard, wait, |ended: &mut bool| !*ended)
                    .unwrap_or_else(PoisonError::into_inner);
                (!*guard).then_some(guard)
            };
            let ended = ended.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(ended) = still_running(ended, deadline) else {
                return;
            };
            engine.increment_epoch();
            if let Some(on_overrun) = on_overrun
                && let Some(_holding_the_run) = still_running(ended, deadline + OVERRUN_GRACE)
            {
                on_overrun();
            }
        });
        Watchdog { run }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (ended, changed) = &*self.run;
        *ended.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }
}

fn linker(engine: &Engine, shape: &Shape, grants: &[Grant]) -> Result<Linker<HookState>> {
    let mut linker = Linker::new(engine);
    let link_error = |e: wasmtime::Error| Error::failed(format!("linking capabilities: {e}"));
    for import in &shape.imports {
        link_wasi(&mut linker, import).map_err(link_error)?;
    }
    bindings::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_error)?;
    bindings::sql_types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_error)?;
    for grant in grants {
        match grant {
            Grant::Log => bindings::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
            Grant::FailoverFlag => {
                bindings::failover_flag::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            }
            Grant::SqlRead => {
                bindings::sql_read::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            }
            Grant::SqlAdmin => {
                bindings::sql_admin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            }
            Grant::SqlRaw => bindings::sql_raw::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
            Grant::Vip => bindings::vip::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
            Grant::State => bindings::state::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
        }
        .map_err(link_error)?;
    }
    Ok(linker)
}

/// The resource table, for the `wasi:io` interfaces.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links one WASI interface the component imports (`inspect` already refused any
/// outside `ALLOWED_WASI`). Only what a plugin imports is linked: it costs time at
/// every hook run, and sockets are never linked at all.
fn link_wasi(linker: &mut Linker<HookState>, import: &str) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
    use wasmtime_wasi::random::WasiRandom;
    fn table(state: &mut HookState) -> &mut ResourceTable {
        &mut state.table
    }
    fn rng(state: &mut HookState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        state.wasi.random()
    }
    let interface = import.split('@').next().unwrap_or(import);
    let l = linker;
    match interface {
        "wasi:io/error" => sync::io::error::add_to_linker::<_, IoTable>(l, table),
        "wasi:io/poll" => sync::io::poll::add_to_linker::<_, IoTable>(l, table),
        "wasi:io/streams" => sync::io::streams::add_to_linker::<_, IoTable>(l, table),
        "wasi:clocks/wall-clock" => {
            clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, HookState::clocks)
        }
        "wasi:clocks/monotonic-clock" => {
            clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, HookState::clocks)
        }
        "wasi:random/random" => random::random::add_to_linker::<_, WasiRandom>(l, rng),
        "wasi:random/insecure" => random::insecure::add_to_linker::<_, WasiRandom>(l, rng),
        "wasi:random/insecure-seed" => {
            random::insecure_seed::add_to_linker::<_, WasiRandom>(l, rng)
        }
        "wasi:filesystem/types" => {
            sync::filesystem::types::add_to_linker::<_, WasiFilesystem>(l, HookState::filesystem)
        }
        "wasi:filesystem/preopens" => {
            filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, HookState::filesystem)
        }
        "wasi:cli/environment" => cli::environment::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/exit" => cli::exit::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stdin" => cli::stdin::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stdout" => cli::stdout::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stderr" => cli::stderr::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/terminal-input" => {
            cli::terminal_input::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-output" => {
            cli::terminal_output::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stdin" => {
            cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stdout" => {
            cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stderr" => {
            cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        // mmvip's own interfaces are linked by grant; anything else fails to
        // instantiate with wasmtime's message naming the import.
        _ => Ok(()),
    }
}

fn missing(capability: &str) -> wasmtime::Error {
    wasmtime::format_err!("capability `{capability}` has no back-end in this run")
}

impl HookState {
    fn sql(&mut self) -> wasmtime::Result<&mut Box<dyn Sql>> {
        self.caps.sql.as_mut().ok_or_else(|| missing("sql"))
    }
}

impl bindings::types::Host for HookState {}
impl bindings::sql_types::Host for HookState {}

impl bindings::log::Host for HookState {
    fn write(&mut self, level: bindings::log::Level, message: String) -> wasmtime::Result<()> {
        use bindings::log::Level as Wit;
        let level = match level {
            Wit::Debug => Level::Debug,
            Wit::Info => Level::Info,
            Wit::Warn => Level::Warn,
            Wit::Error => Level::Error,
        };
        self.caps.log.write_for_plugin(level, &[("msg", &message)]);
        Ok(())
    }
}

impl bindings::failover_flag::Host for HookState {
    fn is_raised(&mut self) -> wasmtime::Result<std::result::Result<bool, String>> {
        let flag = self
            .caps
            .failover_flag
            .as_mut()
            .ok_or_else(|| missing("failover-flag"))?;
        Ok(flag.is_raised())
    }
}

type SqlResult<T> = wasmtime::Result<std::result::Result<T, SqlError>>;

impl bindings::sql_read::Host for HookState {
    fn ping(&mut self) -> SqlResult<()> {
        Ok(self.sql()?.ping())
    }

    fn global_variable(&mut self, name: String) -> SqlResult<Option<String>> {
        Ok(self.sql()?.global_variable(&name))
    }

    fn replicas(&mut self) -> SqlResult<Vec<crate::caps::ReplicaStatus>> {
        Ok(self.sql()?.replicas())
    }

    fn connections(&mut self) -> SqlResult<Vec<crate::caps::ClientConnection>> {
        Ok(self.sql()?.connections())
    }

    fn events(&mut self) -> SqlResult<Vec<crate::caps::EventInfo>> {
        Ok(self.sql()?.events())
    }
}

impl bindings::sql_admin::Host for HookState {
    fn set_global_variable(&mut self, name: String, value: String) -> SqlResult<()> {
        Ok(self.sql()?.set_global_variable(&name, &value))
    }

    fn wait_for_gtid(&mut self, position: String, timeout_ms: u32) -> SqlResult<bool> {
        Ok(self.sql()?.wait_for_gtid(&position, timeout_ms))
    }

    fn kill_connection(&mut self, id: u64) -> SqlResult<bool> {
        Ok(self.sql()?.kill_connection(id))
    }

    fn set_event_enabled(
        &mut self,
        schema: String,
        name: String,
        enabled: bool,
        comment: String,
    ) -> SqlResult<()> {
        Ok(self
            .sql()?
            .set_event_enabled(&schema, &name, enabled, &comment))
    }
}

impl bindings::sql_raw::Host for HookState {
    fn query(&mut self, statement: String) -> SqlResult<Vec<Vec<Option<String>>>> {
        Ok(self.sql()?.query(&statement))
    }
}

impl bindings::vip::Host for HookState {
    fn holds(&mut self, address: String) -> wasmtime::Result<std::result::Result<bool, String>> {
        let vip = self.caps.vip.as_mut().ok_or_else(|| missing("vip"))?;
        Ok(vip.holds(&address))
    }
}

impl bindings::state::Host for HookState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let state = self.caps.state.as_ref().ok_or_else(|| missing("state"))?;
        Ok(state.get(&key))
    }

    fn set(&mut self, key: String, value: Option<String>) -> wasmtime::Result<()> {
        let state = self.caps.state.as_mut().ok_or_else(|| missing("state"))?;
        // Contract 0.1 gives `set` no error to return: refusing it stops the plugin.
        state
            .set(key, value)
            .map_err(|why| wasmtime::format_err!("state refused: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn every_memory_draws_on_one_budget() {
        let mut budget = MemoryBudget { left: 64 * MIB };
        assert!(budget.memory_growing(0, 40 * MIB, None).unwrap());
        // A second memory cannot take what the first already holds.
        let refused = budget.memory_growing(0, 40 * MIB, None).unwrap_err();
        assert!(refused.is::<OverBudget>());
        assert!(budget.memory_growing(0, 24 * MIB, None).unwrap());
        assert!(budget.memory_growing(24 * MIB, 24 * MIB + 1, None).is_err());
    }

    #[test]
    fn growth_past_a_memorys_own_maximum_is_refused_without_a_charge() {
        let mut budget = MemoryBudget { left: 64 * MIB };
        for _ in 0..100 {
            assert!(!budget.memory_growing(MIB, 2 * MIB, Some(MIB)).unwrap());
        }
        assert!(budget.memory_growing(0, 64 * MIB, None).unwrap());
    }

    #[test]
    fn table_elements_are_charged_against_the_memory_budget() {
        let mut budget = MemoryBudget { left: 64 * MIB };
        let elements_in_budget = 64 * MIB / TABLE_ELEMENT_BYTES;
        assert!(
            budget
                .table_growing(0, elements_in_budget / 2, None)
                .unwrap()
        );
        assert!(
            budget
                .table_growing(elements_in_budget / 2, elements_in_budget + 1, None)
                .is_err()
        );
        assert!(budget.memory_growing(0, 32 * MIB + 1, None).is_err());
    }

    #[test]
    fn over_budget_is_reported_as_the_memory_limit() {
        let error = wasmtime::Error::from(OverBudget).context("instantiating");
        let (verdict, message) = describe_trap(&error, Duration::from_secs(1), 16 * MIB);
        assert_eq!(verdict, Verdict::Crash);
        assert_eq!(message, "plugin failed: exceeded its 16 MiB memory limit");
    }
}
