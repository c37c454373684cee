//! What both engines share about running cores: configuration, the runtime handle, per-core
//! mailboxes for cross-core calls, the stop protocol, and CPU pinning.
//!
//! Each engine owns its core loop; this module owns what crosses threads. A core registers an
//! `unpark` function when it starts (an eventfd write on io_uring, a channel send on tokio); a
//! closure posted to its mailbox is followed by one `unpark`, and the core runs it on its next turn.
//! A mailbox closes (its [`Gate`]) when its core exits, however it exits: later posts fail with
//! [`EngineError::Stopped`] instead of waiting forever, and jobs still queued are dropped (which
//! resolves their `run_on` callers). A core that dies (a panic escaping its loop, a fatal ring
//! error) is reported by [`Runtime::join`].

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::queue::SegQueue;
use parking_lot::Mutex;

use crate::counters::{CounterSnapshot, Counters};
use crate::oneshot;
use crate::panics::panic_message;
use crate::wake::Gate;

/// Index of a core in a runtime, `0..cores`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "core-{}", self.0)
    }
}

/// How a runtime lays out its cores.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of cores (OS threads), each with its own executor. Default: every CPU the process
    /// may run on.
    pub cores: usize,
    /// CPU ids to pin the cores to, core `i` to `pin[i % pin.len()]`. `None` (default): no pinning.
    pub pin: Option<Vec<usize>>,
    /// Thread name prefix; threads are called `{name}-{core}`. Default `"ringrpc"`.
    pub name: String,
    /// How long an idle io_uring core keeps polling its ring (non-blocking enters) before it
    /// sleeps in the kernel; zero sleeps at once. A few tens of microseconds take the sleep and
    /// wake-up off a ping-pong call's latency (on a VM about half of a lone call's server CPU is
    /// the wake-up) at the price of up to that much CPU per idle period. The baseline engine
    /// (tokio) has no polling phase and ignores it. Default: `RINGRPC_URING_BUSY_POLL_US` from
    /// the environment, in microseconds, else zero.
    pub busy_poll: Duration,
}

/// A default taken from the environment: variable `name` parsed as `T`; `None` when it is unset
/// or does not parse.
pub(crate) fn env_setting<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Whether environment variable `name` is set to `1`.
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: None,
            name: "ringrpc".to_owned(),
            busy_poll: Duration::from_micros(
                env_setting("RINGRPC_URING_BUSY_POLL_US").unwrap_or(0),
            ),
        }
    }
}

impl RuntimeConfig {
    /// A config with `cores` cores and no pinning.
    pub fn with_cores(cores: usize) -> Self {
        Self {
            cores,
            ..Self::default()
        }
    }

    /// Pins the cores to these CPUs.
    pub fn pinned(mut self, cpus: Vec<usize>) -> Self {
        self.pin = Some(cpus);
        self
    }
}

/// Errors from starting or talking to a runtime.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The OS refused a resource the runtime needs (ring, thread, eventfd, ...).
    #[error("engine setup failed: {0}")]
    Setup(#[from] std::io::Error),
    /// A runtime needs at least one core.
    #[error("a runtime needs at least one core")]
    NoCores,
    /// The target core does not exist in this runtime.
    #[error("no such core: {0}")]
    NoSuchCore(CoreId),
    /// The runtime (or the target core) stopped before the call ran or finished.
    #[error("the runtime is stopped")]
    Stopped,
    /// A panic escaped a core's loop (a mailbox job, say; a panicking task only loses that
    /// task). The core cancelled and drained its in-flight operations and exited.
    #[error("{core} panicked: {message}")]
    CorePanicked {
        /// The core that died.
        core: CoreId,
        /// The panic message.
        message: String,
    },
    /// A core failed for good: its ring kept refusing `io_uring_enter`. It drained what it
    /// could and exited.
    #[error("{core} failed: {source}")]
    CoreFailed {
        /// The core that died.
        core: CoreId,
        /// The last error.
        source: std::io::Error,
    },
}

/// Lifecycle of a runtime, shared by all its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RunState {
    Running = 0,
    /// Stop accepting; tasks may finish until the deadline.
    Draining = 1,
    /// Exit now, dropping whatever tasks remain.
    Stopped = 2,
}

type Job = Box<dyn FnOnce() + Send>;

/// The part of one core that other threads may touch.
pub(crate) struct CoreShared {
    mailbox: SegQueue<Job>,
    /// Closed when the core exits; see `wake::Gate` for the post/close handshake.
    gate: Gate,
    unpark: OnceLock<Box<dyn Fn() + Send + Sync>>,
    pub(crate) counters: Counters,
}

impl CoreShared {
    fn new() -> Self {
        Self {
            mailbox: SegQueue::new(),
            gate: Gate::new(),
            unpark: OnceLock::new(),
            counters: Counters::default(),
        }
    }

    /// Posts a job and wakes the core; `Err(())` (the job dropped) once the mailbox is closed.
    fn post(&self, job: Job) -> Result<(), ()> {
        if self.gate.is_closed() {
            return Err(());
        }
        self.mailbox.push(job);
        if self.gate.closed_after_push() {
            // The core exited and may have drained before our push: nobody else will run or
            // drop the job, so drop it (and whatever raced in with it) here.
            self.discard_mail();
            return Err(());
        }
        self.unpark();
        Ok(())
    }

    /// Closes the mailbox for good and drops whatever waits in it (the core has exited).
    pub(crate) fn close_mailbox(&self) {
        self.gate.close();
        self.discard_mail();
    }

    /// Wakes the core's loop (no-op before the core registered its unpark function; it drains
    /// its mailbox once right after registering, so nothing posted earlier is missed).
    pub(crate) fn unpark(&self) {
        if let Some(unpark) = self.unpark.get() {
            unpark();
        }
    }

    /// Registers how to wake this core. Called once by the core thread at start.
    pub(crate) fn set_unpark(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.unpark.set(f);
    }

    /// Runs at most `budget` posted jobs; returns how many ran.
    pub(crate) fn run_mailbox(&self, budget: usize) -> usize {
        let mut ran = 0;
        while ran < budget {
            match self.mailbox.pop() {
                Some(job) => {
                    job();
                    ran += 1;
                }
                None => break,
            }
        }
        ran
    }

    /// Drops every waiting job unrun.
    fn discard_mail(&self) {
        while self.mailbox.pop().is_some() {}
    }

    /// Whether jobs are waiting.
    pub(crate) fn has_mail(&self) -> bool {
        !self.mailbox.is_empty()
    }
}

/// State shared by every core of one runtime and by its handles.
pub(crate) struct RuntimeShared {
    pub(crate) cores: Vec<CoreShared>,
    state: AtomicU8,
    deadline: Mutex<Option<Instant>>,
    pub(crate) engine: &'static str,
}

impl RuntimeShared {
    pub(crate) fn new(cores: usize, engine: &'static str) -> Arc<Self> {
        Arc::new(Self {
            cores: (0..cores).map(|_| CoreShared::new()).collect(),
            state: AtomicU8::new(RunState::Running as u8),
            deadline: Mutex::new(None),
            engine,
        })
    }

    pub(crate) fn state(&self) -> RunState {
        match self.state.load(Ordering::Acquire) {
            0 => RunState::Running,
            1 => RunState::Draining,
            _ => RunState::Stopped,
        }
    }

    /// The drain deadline, once a stop began.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    /// Begins a graceful stop: no new connections; tasks get until `now + grace`.
    fn begin_stop(&self, grace: Duration) {
        {
            let mut d = self.deadline.lock();
            let new = Instant::now() + grace;
            *d = Some(d.map_or(new, |old| old.min(new)));
        }
        let _ = self.state.compare_exchange(
            RunState::Running as u8,
            RunState::Draining as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        for core in &self.cores {
            core.unpark();
        }
    }

    /// Tells every core to exit now.
    pub(crate) fn force_stop(&self) {
        self.state.store(RunState::Stopped as u8, Ordering::Release);
        for core in &self.cores {
            core.unpark();
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<(CoreId, Arc<RuntimeShared>)>> = const { RefCell::new(None) };
}

/// Marks the calling thread as core `id` of `shared` for the guard's lifetime.
pub(crate) struct CoreGuard;

impl CoreGuard {
    pub(crate) fn enter(id: CoreId, shared: Arc<RuntimeShared>) -> Self {
        CURRENT.with(|c| *c.borrow_mut() = Some((id, shared)));
        Self
    }
}

impl Drop for CoreGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

thread_local! {
    /// When the current loop turn of this core began (engines that refresh it per turn).
    static TURN_NOW: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The time at the start of the calling core's current loop turn: a clock read that costs a
/// thread-local load instead of a `clock_gettime`, at most one turn stale (the io_uring engine
/// refreshes it every turn, after waiting). For policies whose windows are seconds (breakers,
/// budgets) and for call metrics, whose latency it gives to within one turn; not for a single
/// precise measurement. Outside an io_uring core it is `Instant::now()`.
pub fn turn_now() -> Instant {
    TURN_NOW
        .with(std::cell::Cell::get)
        .unwrap_or_else(Instant::now)
}

/// Runs `f` with the calling core's counters, if the calling thread is a core.
pub(crate) fn with_current_counters(f: impl FnOnce(&Counters)) {
    CURRENT.with(|c| {
        if let Some((id, shared)) = c.borrow().as_ref() {
            f(&shared.cores[id.0].counters);
        }
    });
}

/// Sets (or, with `None`, clears) the calling core's turn time.
pub(crate) fn set_turn_now(now: Option<Instant>) {
    TURN_NOW.with(|t| t.set(now));
}

/// The core the calling thread runs, or `None` outside a runtime.
pub fn current_core() -> Option<CoreId> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(id, _)| *id))
}

/// A handle to the runtime the calling thread belongs to, or `None` outside a runtime.
pub fn current_runtime() -> Option<RuntimeHandle> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|(_, shared)| RuntimeHandle {
            shared: shared.clone(),
        })
    })
}

/// Runs `f` on core `target` of the current runtime and resolves to its result.
///
/// # Errors
/// [`EngineError::NoSuchCore`], or [`EngineError::Stopped`] outside a runtime or when the runtime
/// stops before `f` ran.
pub async fn run_on<R, F>(target: CoreId, f: F) -> Result<R, EngineError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let handle = current_runtime().ok_or(EngineError::Stopped)?;
    handle.run_on(target, f).await
}

/// A cloneable, `Send` handle to a running runtime: post work to a core, read counters, stop.
#[derive(Clone)]
pub struct RuntimeHandle {
    pub(crate) shared: Arc<RuntimeShared>,
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("engine", &self.shared.engine)
            .field("cores", &self.shared.cores.len())
            .finish()
    }
}

impl RuntimeHandle {
    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.shared.cores.len()
    }

    /// Name of the engine running these cores.
    pub fn engine_name(&self) -> &'static str {
        self.shared.engine
    }

    /// Posts `f` to core `target` without waiting for it. `f` runs on that core's thread and may
    /// spawn tasks there.
    ///
    /// # Errors
    /// [`EngineError::NoSuchCore`], or [`EngineError::Stopped`] once the runtime stopped.
    pub fn post<F>(&self, target: CoreId, f: F) -> Result<(), EngineError>
    where
        F: FnOnce() + Send + 'static,
    {
        let core = self
            .shared
            .cores
            .get(target.0)
            .ok_or(EngineError::NoSuchCore(target))?;
        if self.shared.state() == RunState::Stopped {
            return Err(EngineError::Stopped);
        }
        // A closed mailbox (the core exited) drops the job: its one-shot sender, if any, tells
        // the waiter.
        core.post(Box::new(f)).map_err(|()| EngineError::Stopped)
    }

    /// Runs `f` on core `target` and resolves to its result. Usable from any thread or runtime.
    ///
    /// # Errors
    /// As [`RuntimeHandle::post`]; [`EngineError::Stopped`] also when the core exits before `f` ran.
    pub async fn run_on<R, F>(&self, target: CoreId, f: F) -> Result<R, EngineError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.post(target, move || tx.send(f()))?;
        rx.await.ok_or(EngineError::Stopped)
    }

    /// A snapshot of core `core`'s counters.
    pub fn counters(&self, core: CoreId) -> Option<CounterSnapshot> {
        self.shared.cores.get(core.0).map(|c| c.counters.snapshot())
    }

    /// Begins a graceful stop: listeners stop accepting (`accept` yields `None`), running tasks
    /// get `grace` to finish, then each core drops what is left and exits. Returns at once.
    pub fn stop(&self, grace: Duration) {
        self.shared.begin_stop(grace);
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.state() != RunState::Running
    }
}

/// A running runtime: its threads and a handle. Dropping it stops the runtime (no grace) and
/// joins the threads.
pub struct Runtime {
    handle: RuntimeHandle,
    /// Core `i`'s thread at index `i`; each returns how its core ended.
    threads: Vec<JoinHandle<Result<(), EngineError>>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.fmt(f)
    }
}

impl Runtime {
    /// Starts `cores` threads; `run_core(id, shared)` is each core's whole life. Used by engines.
    /// A panic out of `run_core` becomes [`EngineError::CorePanicked`]; either way the core's
    /// mailbox is closed when it returns.
    pub(crate) fn start<F>(
        config: &RuntimeConfig,
        engine: &'static str,
        run_core: F,
    ) -> Result<Self, EngineError>
    where
        F: Fn(CoreId, Arc<RuntimeShared>) -> Result<(), EngineError> + Send + Sync + 'static,
    {
        if config.cores == 0 {
            return Err(EngineError::NoCores);
        }
        let shared = RuntimeShared::new(config.cores, engine);
        let run_core = Arc::new(run_core);
        let mut threads = Vec::with_capacity(config.cores);
        for i in 0..config.cores {
            let cpu = config
                .pin
                .as_ref()
                .filter(|p| !p.is_empty())
                .map(|p| p[i % p.len()]);
            let shared2 = shared.clone();
            let run_core = run_core.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", config.name))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = pin_to_cpu(cpu) {
                            tracing::warn!(cpu, error = %e, "could not pin core thread");
                        }
                    }
                    let core = CoreId(i);
                    let _guard = CoreGuard::enter(core, shared2.clone());
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_core(core, shared2.clone())
                    }));
                    let result = outcome.unwrap_or_else(|payload| {
                        Err(EngineError::CorePanicked {
                            core,
                            message: panic_message(&*payload),
                        })
                    });
                    shared2.cores[i].close_mailbox();
                    if let Err(e) = &result {
                        tracing::error!(%core, error = %e, "core exited with an error");
                    }
                    result
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.force_stop();
                    for t in threads {
                        let _ = t.join();
                    }
                    for core in &shared.cores {
                        core.close_mailbox();
                    }
                    return Err(EngineError::Setup(e));
                }
            }
        }
        Ok(Self {
            handle: RuntimeHandle { shared },
            threads,
        })
    }

    /// A handle to this runtime.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Stops gracefully (see [`RuntimeHandle::stop`]) and waits for every core to exit. A core
    /// that died is logged; use `handle().stop(grace)` and [`Runtime::join`] to get its error.
    pub fn stop(mut self, grace: Duration) {
        self.handle.stop(grace);
        let _ = self.join_threads();
    }

    /// Waits until every core has exited (someone called [`RuntimeHandle::stop`], or the cores
    /// died).
    ///
    /// # Errors
    /// How the first core that died ended: [`EngineError::CorePanicked`] (with the panic
    /// message) or [`EngineError::CoreFailed`]. Other cores keep serving while one is dead;
    /// its mailbox refuses posts.
    pub fn join(mut self) -> Result<(), EngineError> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), EngineError> {
        let mut first = None;
        for (i, t) in self.threads.drain(..).enumerate() {
            let ended = t.join().unwrap_or_else(|payload| {
                Err(EngineError::CorePanicked {
                    core: CoreId(i),
                    message: panic_message(&*payload),
                })
            });
            if let Err(e) = ended {
                first.get_or_insert(e);
            }
        }
        // Every core has exited (and closed its mailbox): later posts fail at once.
        self.handle.shared.force_stop();
        for core in &self.handle.shared.cores {
            core.close_mailbox();
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.handle.shared.force_stop();
            let _ = self.join_threads();
        }
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data for which all-zero is the empty set; CPU_SET writes inside
    // it (it checks the index against the set size), and sched_setaffinity reads exactly
    // size_of::<cpu_set_t>() bytes from the pointer we pass.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Baseline;
    use crate::Engine;

    #[test]
    fn posting_to_a_stopped_runtime_fails_instead_of_hanging() {
        let rt = Baseline::launch(RuntimeConfig::with_cores(1), |_| async {}).unwrap();
        let handle = rt.handle();
        assert_eq!(
            oneshot::block_on(handle.run_on(CoreId(0), || 5)).ok(),
            Some(5)
        );
        rt.stop(Duration::from_millis(50));
        assert!(matches!(
            handle.post(CoreId(0), || ()),
            Err(EngineError::Stopped)
        ));
        assert!(matches!(
            oneshot::block_on(handle.run_on(CoreId(0), || 5)),
            Err(EngineError::Stopped)
        ));
    }
}
