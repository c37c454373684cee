//! The io_uring engine: one thread per core, each with its own ring, executor, timers and
//! provided-buffer ring. Nothing on the I/O path is shared between cores.
//!
//! - [`ring`]: ring setup (`SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`, with fallback), the
//!   opcode probe, queuing SQEs and the one `io_uring_enter` per turn;
//! - [`executor`]: tasks, the local run queue, `Send` wakers and the remote wake queue;
//! - [`op`]: the lifecycle of an in-flight operation and why dropping its future is safe;
//! - [`buf_ring`]: the provided-buffer ring and the `Bytes` owner that returns buffers to it;
//! - [`timer`]: the timer heap and [`Sleep`];
//! - [`net`]: TCP: multishot accept, multishot receive, vectored sends, connect, shutdown.
//!
//! The core loop, each turn: run up to [`MAILBOX_BUDGET`] mailbox jobs, move remote wake-ups
//! and remotely returned buffers in, fire due timers, poll up to
//! [`executor::TASK_BUDGET`] ready tasks, then submit every SQE queued during the turn in ONE
//! `io_uring_enter` (which waits only if nothing is ready, with the nearest timer as timeout),
//! and reap up to [`CQE_BUDGET`] completions. See `docs/engine.md`.
//!
//! However a core ends (stopped, a fatal ring error, or a panic escaping its loop, which is
//! caught around the loop), it drops its tasks, cancels every in-flight operation, waits
//! (bounded by [`EXIT_WAIT_LIMIT`]) for their final completions and only then frees buffers and
//! the ring; past the bound it leaks them on purpose. `Runtime::join` reports the failure.

mod buf_return;
mod buf_ring;
mod executor;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod net;
mod op;
mod ring;
mod timer;

use std::cell::{Cell, RefCell, UnsafeCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue};

use crate::runtime::{env_setting, RunState, RuntimeShared};
use crate::{CoreId, Counters, Engine, EngineError, Runtime, RuntimeConfig};

use buf_ring::BufPool;
use executor::{Executor, Remote};
use op::{Cqe, OpKind, Ops};
use ring::{Ring, CANCEL_UD, WAKE_UD};

pub use net::{UringListener, UringReader, UringStream, UringWriter};
pub use ring::RingFeatures;
pub use timer::Sleep;
#[doc(hidden)]
pub use timer::{TimerKey, TimerQueue};

/// What the calling core's ring uses (`None` off an io_uring core thread).
pub fn ring_features() -> Option<RingFeatures> {
    try_with_core(|c| c.ring.features())
}

/// Mailbox jobs (cross-core closures) run per loop turn.
pub const MAILBOX_BUDGET: usize = 128;
/// Completions reaped and dispatched per loop turn; the rest wait for the next turn (the kernel
/// keeps them in the CQ, or losslessly in its overflow list).
pub const CQE_BUDGET: usize = 1024;
/// How long a stopping core waits for in-flight operations to complete after cancelling them.
/// Past it, the core leaks its ring and buffers rather than free memory the kernel may write.
pub const EXIT_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Consecutive failed `io_uring_enter` calls after which a core gives up (with
/// [`EngineError::CoreFailed`]); between them it backs off, 1 ms doubling up to 128 ms.
pub const ENTER_ERROR_LIMIT: u32 = 8;
/// Attempts `Core::push` makes to queue one SQE (each submitting, and reaping if the kernel took
/// nothing) before it reports the SQ as stuck.
const PUSH_ATTEMPTS: u32 = 64;

/// Default number of provided buffers per core (a power of two).
pub const DEFAULT_BUFFERS: u16 = 1024;
/// Default size of one provided buffer: 16 KiB minus the 2 KiB skew, so buffers pack into 16 KiB
/// strides.
pub const DEFAULT_BUFFER_SIZE: u32 = 16 * 1024 - buf_ring::BUF_SKEW as u32;

/// Per-core settings of the io_uring engine.
#[derive(Debug, Clone)]
pub struct UringConfig {
    /// Provided buffers per core, a power of two (rounded up), at most 32768. Default
    /// [`DEFAULT_BUFFERS`], or `RINGRPC_URING_BUFS` from the environment.
    pub buffers: u16,
    /// Bytes per provided buffer. Default [`DEFAULT_BUFFER_SIZE`], or `RINGRPC_URING_BUF_SIZE`
    /// from the environment.
    pub buffer_size: u32,
    /// Forces the fallback path: plain ring flags, single-shot accept, and single-shot receive
    /// into a per-operation buffer (no buffer ring). Default: `RINGRPC_URING_FALLBACK=1`.
    pub fallback: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        let buffers = env_setting("RINGRPC_URING_BUFS").unwrap_or(DEFAULT_BUFFERS);
        let buffer_size = env_setting("RINGRPC_URING_BUF_SIZE")
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_BUFFER_SIZE);
        Self {
            buffers,
            buffer_size,
            fallback: ring::fallback_forced_by_env(),
        }
    }
}

/// The io_uring engine. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Uring;

impl Uring {
    /// Like [`Engine::launch`], with explicit io_uring settings.
    ///
    /// # Errors
    /// [`EngineError::Setup`] when a core cannot set up its ring, eventfd or buffer ring.
    pub fn launch_with<F, Fut>(
        config: RuntimeConfig,
        uring: UringConfig,
        init: F,
    ) -> Result<Runtime, EngineError>
    where
        F: Fn(CoreId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        let tx = parking_lot::Mutex::new(tx);
        let cores = config.cores;
        let busy_poll = config.busy_poll;
        let rt = Runtime::start(&config, <Self as Engine>::NAME, move |id, shared| {
            let tx = tx.lock().clone();
            run_core(id, shared, &uring, busy_poll, &init, tx)
        })?;
        for _ in 0..cores {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    drop(rt);
                    return Err(EngineError::Setup(e));
                }
                Err(_) => {
                    drop(rt);
                    return Err(EngineError::Stopped);
                }
            }
        }
        Ok(rt)
    }
}

impl Engine for Uring {
    const NAME: &'static str = "uring";
    type Listener = UringListener;
    type Stream = UringStream;
    type Sleep = Sleep;

    fn launch<F, Fut>(config: RuntimeConfig, init: F) -> Result<Runtime, EngineError>
    where
        F: Fn(CoreId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Self::launch_with(config, UringConfig::default(), init)
    }

    fn spawn<F: Future<Output = ()> + 'static>(future: F) {
        with_core(|c| c.exec.spawn(future));
    }

    fn live_tasks() -> usize {
        try_with_core(|c| c.exec.live()).unwrap_or(0)
    }

    fn batches_sends() -> bool {
        true
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep::new(deadline)
    }
}

thread_local! {
    static CORE: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current core.
///
/// # Panics
/// Outside a core thread of the io_uring engine.
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    try_with_core(f).expect("not on an io_uring engine core thread")
}

/// Runs `f` with the current core, if the calling thread is one.
pub(crate) fn try_with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    CORE.try_with(|c| {
        let c = c.try_borrow().ok()?;
        c.as_ref().map(|core| f(core))
    })
    .ok()
    .flatten()
}

/// Everything one core owns.
pub(crate) struct Core {
    // Field order is drop order: the ring goes first (after every op completed), then the
    // buffer pool reference.
    pub(crate) ring: Ring,
    pub(crate) ops: Ops,
    pub(crate) exec: Executor,
    pub(crate) timers: timer::Timers,
    pub(crate) bufs: Option<Rc<BufPool>>,
    pub(crate) remote: Arc<Remote>,
    shared: Arc<RuntimeShared>,
    id: CoreId,
    /// Listeners waiting in `accept`, woken when draining begins.
    stop_waiters: RefCell<Vec<Waker>>,
    /// Whether accept may be multishot (cleared at runtime if the kernel refuses it).
    pub(crate) multishot_accept: Cell<bool>,
    /// Whether receive may be multishot into the buffer ring.
    pub(crate) multishot_recv: Cell<bool>,
    /// The eventfd read is in flight.
    wake_armed: Cell<bool>,
    /// Completions are being dispatched (`reap` does not nest).
    reaping: Cell<bool>,
    /// Targets of `ASYNC_CANCEL`s that could not be queued yet; flushed every turn. A cancel is
    /// never dropped: the op would otherwise run until its peer acts, holding up an exit.
    pending_cancels: RefCell<Vec<u64>>,
    /// Target of the eventfd read; the kernel writes it while `wake_armed`.
    wake_buf: Box<UnsafeCell<u64>>,
    scratch: RefCell<Vec<(u64, i32, u32)>>,
    exiting: Cell<bool>,
    /// [`RuntimeConfig::busy_poll`].
    busy_poll: Duration,
}

impl Core {
    fn new(
        id: CoreId,
        shared: Arc<RuntimeShared>,
        cfg: &UringConfig,
        busy_poll: Duration,
    ) -> io::Result<Self> {
        let ring = Ring::new(cfg.fallback)?;
        let remote = Remote::new()?;
        let multishot = ring.features().multishot;
        let mut bufs = None;
        if multishot {
            let count = cfg
                .buffers
                .max(1)
                .checked_next_power_of_two()
                .unwrap_or(32768);
            let pool = BufPool::new(0, count, cfg.buffer_size.max(1), remote.clone());
            let (addr, entries) = pool.ring_addr();
            // SAFETY: the ring memory belongs to `pool`, which the core keeps (and the `Arc`
            // keeps alive past that) until the ring is unregistered and destroyed.
            let r = ring.with_submitter(|s| unsafe {
                s.register_buf_ring_with_flags(addr, entries, pool.bgid(), 0)
            });
            match r {
                Ok(()) => bufs = Some(pool),
                Err(e) => tracing::warn!(
                    error = %e,
                    "no provided-buffer ring; falling back to single-shot receive"
                ),
            }
        }
        let has_bufs = bufs.is_some();
        Ok(Self {
            ring,
            ops: Ops::default(),
            exec: Executor::new(remote.clone()),
            timers: timer::Timers::default(),
            bufs,
            remote,
            shared,
            id,
            stop_waiters: RefCell::new(Vec::new()),
            multishot_accept: Cell::new(multishot),
            multishot_recv: Cell::new(multishot && has_bufs),
            wake_armed: Cell::new(false),
            reaping: Cell::new(false),
            pending_cancels: RefCell::new(Vec::new()),
            wake_buf: Box::new(UnsafeCell::new(0)),
            scratch: RefCell::new(Vec::with_capacity(CQE_BUDGET)),
            exiting: Cell::new(false),
            busy_poll,
        })
    }

    /// This core's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.cores[self.id.0].counters
    }

    /// Whether the runtime is stopping (listeners accept no more).
    pub(crate) fn stopping(&self) -> bool {
        self.shared.state() != RunState::Running
    }

    /// Wakes `waker` when draining begins.
    pub(crate) fn on_stop(&self, waker: &Waker) {
        let mut w = self.stop_waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    /// Queues one SQE. A full SQ is submitted; if the kernel takes nothing (its CQ is full,
    /// `EBUSY`) the core reaps completions to make room, then retries, at most
    /// [`PUSH_ATTEMPTS`] times.
    ///
    /// # Errors
    /// `enter` failing, or the SQ staying full (`WouldBlock`).
    ///
    /// # Safety
    /// As [`Ring::try_push`]: every resource `entry` points at outlives its final completion.
    pub(crate) unsafe fn push(&self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..PUSH_ATTEMPTS {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.try_push(entry) }.is_ok() {
                return Ok(());
            }
            let took = self.ring.enter(false, None)?;
            self.counters().add_enter();
            if took == 0 && !self.reaping.get() {
                self.reap(CQE_BUDGET);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "io_uring submission queue stays full",
        ))
    }

    /// Queues an `ASYNC_CANCEL` of op `target` (an op key or [`WAKE_UD`]), or keeps it on the
    /// pending list if it cannot be queued now.
    pub(crate) fn cancel(&self, target: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(CANCEL_UD);
        // SAFETY: ASYNC_CANCEL carries only the target's user_data, no pointers.
        match unsafe { self.push(&entry) } {
            Ok(()) => self.counters().add_submissions(1),
            Err(e) => {
                tracing::warn!(error = %e, target, "could not queue a cancel yet; retrying next turn");
                self.pending_cancels.borrow_mut().push(target);
            }
        }
    }

    /// Retries the cancels that could not be queued.
    fn flush_cancels(&self) {
        if self.pending_cancels.borrow().is_empty() {
            return;
        }
        let targets = std::mem::take(&mut *self.pending_cancels.borrow_mut());
        for target in targets {
            let wanted = if target == WAKE_UD {
                self.wake_armed.get()
            } else {
                usize::try_from(target).is_ok_and(|k| self.ops.awaits_cancel(k, self.exiting.get()))
            };
            if wanted {
                self.cancel(target);
            }
        }
    }

    fn arm_wake(&self) {
        let entry = opcode::Read::new(
            io_uring::types::Fd(self.remote.eventfd()),
            self.wake_buf.get().cast::<u8>(),
            8,
        )
        .build()
        .user_data(WAKE_UD);
        // SAFETY: `wake_buf` is a heap u64 owned by the core, which does not drop it before the
        // read completed (`wake_armed` is waited for at exit); the eventfd is kept open by
        // `remote`, which the core holds.
        match unsafe { self.push(&entry) } {
            Ok(()) => {
                self.wake_armed.set(true);
                self.counters().add_submissions(1);
            }
            // Retried at the next turn (the loop re-arms whenever it is not armed).
            Err(e) => tracing::warn!(error = %e, "could not arm the wake-up eventfd read yet"),
        }
    }

    /// Cleans up a completion nobody will read.
    pub(crate) fn discard(&self, kind: OpKind, cqe: Cqe) {
        if let (Some(bid), Some(pool)) = (cqe.buffer(), &self.bufs) {
            pool.recycle(bid);
        }
        if kind == OpKind::Accept && cqe.res >= 0 {
            // SAFETY: a successful accept completion's result is a new fd nobody else owns.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(cqe.res) });
        }
    }

    /// Reaps and dispatches up to `budget` completions; returns how many. Never nested (a push
    /// made while dispatching does not reap), so completions are dispatched in CQ order.
    fn reap(&self, budget: usize) -> usize {
        if self.reaping.replace(true) {
            return 0;
        }
        let mut batch = std::mem::take(&mut *self.scratch.borrow_mut());
        self.ring.reap(&mut batch, budget);
        let n = batch.len();
        self.counters().add_completions(n as u64);
        for &(ud, res, flags) in &batch {
            let cqe = Cqe { res, flags };
            if let (Some(_), Some(pool)) = (cqe.buffer(), &self.bufs) {
                pool.note_taken();
            }
            match ud {
                WAKE_UD => {
                    // Re-armed by the loop before its next enter.
                    self.wake_armed.set(false);
                    self.remote.clear_notified();
                }
                CANCEL_UD => {}
                key => {
                    let d = self.ops.complete(key as usize, cqe);
                    if let Some((kind, cqe)) = d.discard {
                        self.discard(kind, cqe);
                    }
                    drop(d.freed);
                    if let Some(w) = d.waker {
                        w.wake();
                    }
                }
            }
        }
        batch.clear();
        *self.scratch.borrow_mut() = batch;
        self.reaping.set(false);
        n
    }
}

/// One core's whole life: set up, signal readiness, loop, drain, tear down. The loop runs under
/// `catch_unwind`, so a panic escaping it (a mailbox job, say) still drains the core before the
/// thread ends; it is returned as [`EngineError::CorePanicked`].
fn run_core<F, Fut>(
    id: CoreId,
    shared: Arc<RuntimeShared>,
    cfg: &UringConfig,
    busy_poll: Duration,
    init: &F,
    ready: mpsc::Sender<io::Result<()>>,
) -> Result<(), EngineError>
where
    F: Fn(CoreId) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let core = match Core::new(id, shared.clone(), cfg, busy_poll) {
        Ok(c) => Rc::new(c),
        Err(e) => {
            tracing::error!(%id, error = %e, "io_uring core failed to start");
            // The launcher reports `e` itself; the thread's result carries a copy.
            let copy = io::Error::new(e.kind(), e.to_string());
            let _ = ready.send(Err(e));
            return Err(EngineError::Setup(copy));
        }
    };
    CORE.with(|c| *c.borrow_mut() = Some(core.clone()));
    Remote::set_local(Some(&core.remote));
    BufPool::set_local(core.bufs.as_ref());
    {
        let remote = core.remote.clone();
        shared.cores[id.0].set_unpark(Box::new(move || remote.notify()));
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Uring::spawn(init(id));
        core_loop(&core, &shared)
    }));
    crate::runtime::set_turn_now(None);
    let outcome = outcome.unwrap_or_else(|payload| {
        let message = crate::panics::panic_message(&*payload);
        tracing::error!(%id, panic = %message, "a panic escaped the core loop; draining the core");
        Err(EngineError::CorePanicked { core: id, message })
    });
    shutdown(&core);
    Remote::set_local(None);
    BufPool::set_local(None);
    let taken = CORE.with(|c| c.borrow_mut().take());
    drop(taken);
    if let Ok(core) = Rc::try_unwrap(core) {
        drop(core);
    }
    outcome
}

/// Records one failed enter: backs off, and after [`ENTER_ERROR_LIMIT`] in a row fails the core.
fn enter_failed(core: &Core, errors: &mut u32, e: io::Error) -> Result<(), EngineError> {
    core.counters().add_enter_error();
    *errors += 1;
    tracing::error!(error = %e, consecutive = *errors, "io_uring_enter failed");
    if *errors >= ENTER_ERROR_LIMIT {
        return Err(EngineError::CoreFailed {
            core: core.id,
            source: e,
        });
    }
    // The kernel refusing enters (ENOMEM, say) is not fixed by asking again at once.
    std::thread::sleep(Duration::from_millis(1 << (*errors - 1).min(7)));
    Ok(())
}

fn core_loop(core: &Core, shared: &RuntimeShared) -> Result<(), EngineError> {
    let me = &shared.cores[core.id.0];
    let mut enter_errors = 0u32;
    loop {
        me.run_mailbox(MAILBOX_BUDGET);
        core.exec.drain_remote();
        if let Some(pool) = &core.bufs {
            pool.drain_returns();
        }
        let now = Instant::now();
        crate::runtime::set_turn_now(Some(now));
        core.timers.fire(now, timer::TIMER_BUDGET);
        core.exec.run(executor::TASK_BUDGET);

        let mut wait_until = core.timers.next_deadline();
        match shared.state() {
            RunState::Running => {}
            RunState::Draining => {
                let waiters = std::mem::take(&mut *core.stop_waiters.borrow_mut());
                for w in waiters {
                    w.wake();
                }
                let deadline = shared.deadline().unwrap_or_else(Instant::now);
                if (core.exec.live() == 0 && !core.exec.has_ready()) || Instant::now() >= deadline {
                    return Ok(());
                }
                wait_until = Some(wait_until.map_or(deadline, |t| t.min(deadline)));
            }
            RunState::Stopped => return Ok(()),
        }

        core.flush_cancels();
        if !core.wake_armed.get() {
            core.arm_wake();
        }
        let busy = || core.exec.has_ready() || me.has_mail() || core.ring.has_completions();
        let mut timeout = wait_until.map(|t| t.saturating_duration_since(Instant::now()));
        // Without the eventfd read armed a sleeping core could miss remote wake-ups: poll.
        let mut wait = core.wake_armed.get() && !busy() && timeout != Some(Duration::ZERO);
        if wait && !core.busy_poll.is_zero() {
            // Poll before sleeping: each non-blocking enter submits and runs deferred completions.
            let spin_end = Instant::now() + core.busy_poll.min(timeout.unwrap_or(Duration::MAX));
            loop {
                core.counters().add_busy_poll_spin();
                match core.ring.enter(false, None) {
                    Ok(_) => enter_errors = 0,
                    Err(e) => enter_failed(core, &mut enter_errors, e)?,
                }
                if busy() {
                    wait = false;
                    break;
                }
                if Instant::now() >= spin_end {
                    timeout = wait_until.map(|t| t.saturating_duration_since(Instant::now()));
                    wait = timeout != Some(Duration::ZERO);
                    break;
                }
                std::hint::spin_loop();
            }
        }
        match core.ring.enter(wait, if wait { timeout } else { None }) {
            Ok(_) => enter_errors = 0,
            Err(e) => enter_failed(core, &mut enter_errors, e)?,
        }
        core.counters().add_enter();
        core.reap(CQE_BUDGET);
    }
}

/// Drops every task, cancels what is in flight and waits for the kernel to finish with every
/// buffer before the ring and the buffer memory go away. Runs however the loop ended (also after
/// a panic), so it must not rely on the loop's state: it resets what a panic may have left set.
fn shutdown(core: &Rc<Core>) {
    core.exiting.set(true);
    core.reaping.set(false);
    core.exec.drop_all();
    core.stop_waiters.borrow_mut().clear();
    if core.wake_armed.get() {
        core.cancel(WAKE_UD);
    }
    // Ops whose owner outlives the tasks (kept in a thread-local, say) are cancelled too; their
    // handles find the slot done (or the core gone) when they drop later.
    for key in core.ops.live_in_flight() {
        core.cancel(key as u64);
    }
    let start = Instant::now();
    let mut enter_errors = 0u32;
    while core.ops.in_flight() > 0 || core.wake_armed.get() || core.ring.pending() > 0 {
        if start.elapsed() > EXIT_WAIT_LIMIT {
            let in_flight = core.ops.in_flight();
            tracing::error!(
                in_flight,
                "operations did not complete after cancel; leaking the ring and its buffers on \
                 purpose (the kernel may still write them)"
            );
            core.counters()
                .add_leaked_at_exit(u64::try_from(in_flight).unwrap_or(u64::MAX));
            std::mem::forget(core.clone());
            return;
        }
        core.flush_cancels();
        match core.ring.enter(true, Some(Duration::from_millis(10))) {
            Ok(_) => enter_errors = 0,
            Err(e) => {
                core.counters().add_enter_error();
                enter_errors += 1;
                tracing::error!(error = %e, "io_uring_enter failed while stopping");
                std::thread::sleep(Duration::from_millis(1 << enter_errors.min(7)));
            }
        }
        core.reap(usize::MAX);
        core.exec.drop_all();
    }
    // Nobody runs after this: close sockets and return buffers that completions still carry.
    for (kind, cqe) in core.ops.drain_unread() {
        core.discard(kind, cqe);
    }
    if let Some(pool) = &core.bufs {
        if let Err(e) = core
            .ring
            .with_submitter(|s| s.unregister_buf_ring(pool.bgid()))
        {
            tracing::warn!(error = %e, "could not unregister the buffer ring");
        }
    }
}
