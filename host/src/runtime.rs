//! Runs one hook: instantiates a linked plugin with its capability back-ends and
//! calls its export under a wall-clock deadline (epoch interruption, enforced by a
//! [`Watchdog`]) and a memory limit.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, PluginPre};
use crate::caps::Backends;
use crate::error::{Error, Result};

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
    pub(crate) caps: Backends,
}

impl HookState {
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    pub(crate) fn random(&mut self) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        self.wasi.random()
    }
}

impl WasiView for HookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::types::Host for HookState {}
impl bindings::sql_types::Host for HookState {}

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

/// Instantiates a linked plugin with its capability back-ends and runs its hook. Load
/// problems were refused when it was linked; everything the plugin does is in the
/// `Report`. The caller arms a [`Watchdog`] for `bounds.deadline`.
pub fn run(
    engine: &Engine,
    plugin: &InstancePre<HookState>,
    caps: Backends,
    call: &bindings::types::Call,
    bounds: Bounds,
) -> (Report, Instance) {
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
    let Bounds {
        deadline,
        timeout,
        memory_bytes,
    } = bounds;
    let state = HookState {
        wasi,
        table: ResourceTable::new(),
        limits: MemoryBudget { left: memory_bytes },
        caps,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    // The watchdog bumps the epoch once, at the deadline: a run starting after that
    // would never see it.
    let outcome = if Instant::now() >= deadline {
        Err(wasmtime::Error::from(Trap::Interrupt))
    } else {
        call_hook(&mut store, plugin, call)
    };
    let stderr = String::from_utf8_lossy(&stderr.contents())
        .trim_end()
        .to_string();
    if outcome.is_ok() {
        // Only a hook that returned has a consistent view to keep.
        let caps = &mut store.data_mut().caps;
        caps.state.commit(&caps.log);
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

fn call_hook(
    store: &mut Store<HookState>,
    plugin: &InstancePre<HookState>,
    call: &bindings::types::Call,
) -> HookOutcome {
    let hook = PluginPre::new(plugin.clone())?.instantiate(&mut *store)?;
    hook.mmvip_hooks_hook().call_run(&mut *store, call)
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
    shared: Arc<(Mutex<Watched>, Condvar)>,
}

struct Watched {
    deadline: Instant,
    ended: bool,
}

impl Watchdog {
    pub fn arm(
        engine: &Engine,
        deadline: Instant,
        on_overrun: Option<Box<dyn FnOnce() + Send>>,
    ) -> Watchdog {
        let shared = Arc::new((
            Mutex::new(Watched {
                deadline,
                ended: false,
            }),
            Condvar::new(),
        ));
        let watched = Arc::clone(&shared);
        let engine = engine.clone();
        std::thread::spawn(move || {
            let (state, changed) = &*watched;
            let guard = state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(guard) = wait_past(guard, changed, Duration::ZERO) else {
                return;
            };
            engine.increment_epoch();
            if let Some(on_overrun) = on_overrun
                && let Some(_holding_the_run) = wait_past(guard, changed, OVERRUN_GRACE)
            {
                on_overrun();
            }
        });
        Watchdog { shared }
    }

    /// Moves the deadline (once a plugin's own bound is known).
    pub fn set_deadline(&self, deadline: Instant) {
        let (state, changed) = &*self.shared;
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadline = deadline;
        changed.notify_all();
    }
}

/// Waits until `offset` past the (possibly moved) deadline; the guard back while the
/// run is still going, `None` once it has ended.
fn wait_past<'a>(
    mut guard: MutexGuard<'a, Watched>,
    changed: &Condvar,
    offset: Duration,
) -> Option<MutexGuard<'a, Watched>> {
    loop {
        if guard.ended {
            return None;
        }
        let due = guard.deadline + offset;
        let now = Instant::now();
        if now >= due {
            return Some(guard);
        }
        guard = changed
            .wait_timeout(guard, due - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (state, changed) = &*self.shared;
        state.lock().unwrap_or_else(PoisonError::into_inner).ended = true;
        changed.notify_all();
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
