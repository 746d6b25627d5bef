//! Runs one hook: checks a plugin's imports against its grants, links exactly the
//! granted capabilities, and calls its export under a wall-clock deadline (epoch
//! interruption) and a memory limit.

use std::sync::mpsc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, CheckPlugin, NotifyPlugin, Transition};
use crate::caps::{FailoverFlag, Sql, SqlError, Vip};
use crate::config::Grant;
use crate::error::{Error, Result};
use crate::log::Log;

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
const MAX_LOG_CALLS: u32 = 1_000;
const MAX_LOG_MESSAGE: usize = 4 << 10;

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

/// Reads a component's exports and imports and refuses it, fail closed, when it is
/// not an mmvip hook of this WIT track or imports something it was not granted.
pub fn inspect(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    grants: &[Grant],
) -> Result<Shape> {
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
    Ok(Shape {
        kind,
        version,
        imports,
    })
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
    limits: StoreLimits,
    caps: Capabilities,
    log_calls: u32,
}

impl WasiView for HookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// The finished instance of a run. Dropping it tears the instance down; a process
/// about to exit can skip that (`std::process::exit` while holding it), since the
/// kernel reclaims the memory faster than unmapping it piece by piece.
pub struct Instance {
    _store: Store<HookState>,
}

/// Instantiates `component` with exactly the granted capabilities and runs its hook.
/// Load problems (refused imports, link errors) are `Err`; everything the plugin
/// does once running is in the `Report`.
pub fn run(
    engine: &Engine,
    component: &Component,
    shape: &Shape,
    grants: &[Grant],
    caps: Capabilities,
    invocation: &Invocation,
    bounds: Bounds,
) -> Result<(Report, Instance)> {
    let linker = linker(engine, shape, grants)?;
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
    let limits = StoreLimitsBuilder::new()
        .memory_size(bounds.memory_bytes)
        .trap_on_grow_failure(true)
        .instances(64)
        .tables(64)
        .memories(4)
        .build();
    let state = HookState {
        wasi,
        table: ResourceTable::new(),
        limits,
        caps,
        log_calls: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();

    let _deadline = Deadline::arm(engine, bounds.timeout);
    let settings: Vec<bindings::types::Setting> = invocation
        .settings
        .iter()
        .map(|(key, value)| bindings::types::Setting {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    let outcome = match shape.kind {
        HookKind::Check => {
            CheckPlugin::instantiate(&mut store, component, &linker).and_then(|plugin| {
                plugin
                    .mmvip_hooks_check()
                    .call_run(&mut store, &invocation.args, &settings)
            })
        }
        HookKind::Notify => {
            NotifyPlugin::instantiate(&mut store, component, &linker).and_then(|plugin| {
                plugin.mmvip_hooks_notify().call_run(
                    &mut store,
                    invocation.transition.as_ref(),
                    &invocation.args,
                    &settings,
                )
            })
        }
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
        Err(error) => describe_trap(&error, bounds),
    };
    Ok((
        Report {
            verdict,
            message,
            stderr,
        },
        Instance { _store: store },
    ))
}

fn describe_trap(error: &wasmtime::Error, bounds: Bounds) -> (Verdict, String) {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            Verdict::Timeout,
            format!(
                "interrupted at its {} ms deadline",
                bounds.timeout.as_millis()
            ),
        ),
        Some(trap) => (Verdict::Crash, format!("plugin trapped: {trap}")),
        None => {
            let text = format!("{error:#}");
            let text = if text.contains("forcing trap when growing memory") {
                format!(
                    "exceeded its {} MiB memory limit",
                    bounds.memory_bytes >> 20
                )
            } else {
                crate::cache::first_line(&text)
            };
            (Verdict::Crash, format!("plugin failed: {text}"))
        }
    }
}

/// Interrupts the store's wasm at the deadline by bumping the engine epoch, unless
/// the run ends first (dropping the guard cancels the timer).
struct Deadline {
    _cancel: mpsc::Sender<()>,
}

impl Deadline {
    fn arm(engine: &Engine, timeout: Duration) -> Deadline {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let engine = engine.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(timeout) {
                engine.increment_epoch();
            }
        });
        Deadline { _cancel: cancel }
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
        use bindings::log::Level;
        self.log_calls += 1;
        if self.log_calls > MAX_LOG_CALLS {
            if self.log_calls == MAX_LOG_CALLS + 1 {
                self.caps.log.write(
                    "warn",
                    &[(
                        "msg",
                        "plugin exceeded its log budget; further lines dropped",
                    )],
                );
            }
            return Ok(());
        }
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        self.caps.log.write(level, &[("msg", &message)]);
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
        state.set(key, value);
        Ok(())
    }
}
