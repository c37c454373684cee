//! The gonet-style baseline engine: epoll through tokio, one current-thread runtime per core.
//!
//! This is what a tokio user would write: per-core `SO_REUSEPORT` listeners, a task per
//! connection, a plain `read` into a per-connection buffer, and a vectored `write` loop for
//! replies. No io_uring-style batching tricks: each reply is written with its own `writev` (as a
//! goroutine per connection writing each reply to its `net.Conn` does, see
//! [`Engine::batches_sends`]; [`BATCH_SENDS_VAR`] turns batching on for comparison) and each
//! `recv` is its own `read`. It exists as the comparison point for [`crate::uring`]; the
//! code above the engine is the same for both.

mod net;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::panics::Isolated;
use crate::runtime::{RunState, RuntimeShared};
use crate::{CoreId, Engine, EngineError, Runtime, RuntimeConfig};

pub use net::{BaselineListener, BaselineReader, BaselineStream, BaselineWriter};

/// Mailbox jobs run per loop turn before the core yields to its tasks again.
const MAILBOX_BUDGET: usize = 128;

/// Environment variable that, set to `1`, makes the baseline batch its sends like the io_uring
/// engine (everything a connection queued in one `writev`) instead of writing each reply on its
/// own. Not the gonet-style baseline any more: it is there to measure the io_uring engine against
/// a batching epoll server as well (docs/benchmarks.md).
pub const BATCH_SENDS_VAR: &str = "RINGRPC_BASELINE_BATCH_SENDS";

/// How often a draining core checks whether its tasks finished.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// The epoll (tokio) engine. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline;

thread_local! {
    /// Tasks alive on this core (spawned and not yet finished or dropped).
    static LIVE_TASKS: Cell<usize> = const { Cell::new(0) };
    /// Ids given to this core's tasks (for the log line of a panicking one).
    static NEXT_TASK_ID: Cell<u64> = const { Cell::new(0) };
    /// Woken when this core starts draining, so listeners stop accepting.
    static STOP: Rc<Notify> = Rc::new(Notify::new());
    static SHARED: std::cell::RefCell<Option<(CoreId, Arc<RuntimeShared>)>> = const { std::cell::RefCell::new(None) };
}

/// Decrements the live-task count when the task finishes or is dropped.
struct TaskGuard;

impl TaskGuard {
    fn new() -> Self {
        LIVE_TASKS.with(|n| n.set(n.get() + 1));
        Self
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        LIVE_TASKS.with(|n| n.set(n.get() - 1));
    }
}

/// Whether the runtime of the calling core is stopping.
pub(crate) fn stopping() -> bool {
    SHARED.with(|s| {
        s.borrow()
            .as_ref()
            .is_none_or(|(_, shared)| shared.state() != RunState::Running)
    })
}

/// Runs `f` with this core's counters, if on a core.
pub(crate) fn with_counters(f: impl FnOnce(&crate::Counters)) {
    SHARED.with(|s| {
        if let Some((id, shared)) = s.borrow().as_ref() {
            f(&shared.cores[id.0].counters);
        }
    });
}

/// A future resolving when this core begins to drain.
pub(crate) fn stop_notify() -> Rc<Notify> {
    STOP.with(Rc::clone)
}

impl Engine for Baseline {
    const NAME: &'static str = "baseline";
    type Listener = BaselineListener;
    type Stream = BaselineStream;
    type Sleep = tokio::time::Sleep;

    fn launch<F, Fut>(config: RuntimeConfig, init: F) -> Result<Runtime, EngineError>
    where
        F: Fn(CoreId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Runtime::start(&config, Self::NAME, move |core, shared| {
            run_core(core, shared, &init).map_err(|e| {
                tracing::error!(%core, error = %e, "baseline core failed to start");
                EngineError::Setup(e)
            })
        })
    }

    fn spawn<F: Future<Output = ()> + 'static>(future: F) {
        let guard = TaskGuard::new();
        let id = NEXT_TASK_ID.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1));
            id
        });
        // Isolated catches, logs and counts a panic (tokio would catch it too, silently).
        tokio::task::spawn_local(Isolated::new(id, async move {
            let _guard = guard;
            future.await;
        }));
    }

    fn live_tasks() -> usize {
        LIVE_TASKS.with(Cell::get)
    }

    fn batches_sends() -> bool {
        static BATCHED: OnceLock<bool> = OnceLock::new();
        *BATCHED.get_or_init(|| crate::runtime::env_flag(BATCH_SENDS_VAR))
    }

    fn sleep_until(deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }
}

fn run_core<F, Fut>(core: CoreId, shared: Arc<RuntimeShared>, init: &F) -> std::io::Result<()>
where
    F: Fn(CoreId) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let wake = Arc::new(Notify::new());
    let me = &shared.cores[core.0];
    {
        let wake = wake.clone();
        me.set_unpark(Box::new(move || wake.notify_one()));
    }
    SHARED.with(|s| *s.borrow_mut() = Some((core, shared.clone())));
    local.block_on(&rt, async {
        Baseline::spawn(init(core));
        let mut draining = false;
        loop {
            me.run_mailbox(MAILBOX_BUDGET);
            match shared.state() {
                RunState::Running => {
                    if !me.has_mail() {
                        wake.notified().await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
                RunState::Draining => {
                    if !draining {
                        draining = true;
                        STOP.with(|s| s.notify_waiters());
                    }
                    let deadline = shared.deadline().unwrap_or_else(Instant::now);
                    if LIVE_TASKS.with(Cell::get) == 0 || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                RunState::Stopped => break,
            }
        }
    });
    // Dropping the LocalSet drops every task left: their sockets close here.
    drop(local);
    SHARED.with(|s| s.borrow_mut().take());
    Ok(())
}
