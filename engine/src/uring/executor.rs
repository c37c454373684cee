//! The per-core task executor: `!Send` tasks in a slab, a local run queue, and `Send + Sync`
//! wakers.
//!
//! A task's waker is an `Arc<TaskWaker>` created once at spawn. Waking it:
//! - on the task's own core: pushes the task id onto the thread-local run queue (a plain
//!   `VecDeque`; the `scheduled` flag is read and written with relaxed loads/stores, no
//!   read-modify-write);
//! - from any other thread: pushes the id onto the core's [`Remote`] queue and wakes the core
//!   through its eventfd, whose read is always armed in the core's ring. The eventfd is written
//!   only once until the core has seen it (`notified`), so a burst of remote wakes costs one
//!   write.
//!
//! The core drains the remote queue every turn and polls at most [`TASK_BUDGET`] tasks per turn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crossbeam::queue::SegQueue;
use slab::Slab;

/// Tasks polled per loop turn before the core goes back to the ring: one connection that is
/// always ready cannot keep completions, timers and the mailbox waiting longer than this.
pub(crate) const TASK_BUDGET: usize = 256;

thread_local! {
    /// Ready task ids of the core running on this thread.
    static RUN_QUEUE: RefCell<VecDeque<usize>> = const { RefCell::new(VecDeque::new()) };
    /// The `Remote` of the core running on this thread (as an address), null elsewhere.
    static LOCAL_REMOTE: Cell<*const Remote> = const { Cell::new(std::ptr::null()) };
}

/// The part of a core that other threads use to wake it: the remote wake queue and the eventfd.
pub(crate) struct Remote {
    queue: SegQueue<usize>,
    eventfd: OwnedFd,
    /// Set when the eventfd was written and the core has not consumed it yet.
    notified: AtomicBool,
}

impl Remote {
    /// Creates the queue and its eventfd.
    pub(crate) fn new() -> std::io::Result<Arc<Self>> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Self {
            queue: SegQueue::new(),
            // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            notified: AtomicBool::new(false),
        }))
    }

    /// The eventfd the core keeps a read armed on.
    pub(crate) fn eventfd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    /// Wakes the core (one eventfd write per burst).
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own (kept open by `self`).
            // A failure (counter overflow) still leaves the eventfd readable, which is all we need.
            let _ = unsafe {
                libc::write(self.eventfd.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8)
            };
        }
    }

    /// Called by the core after its eventfd read completed, before draining the queues.
    pub(crate) fn clear_notified(&self) {
        // A read-modify-write, not a store: it reads the latest `notify` swap and so
        // synchronizes with it, making that notifier's queue push visible to the drain that
        // follows. With a plain store, a notify that saw `true` (and wrote no eventfd) could push
        // an item the drain misses: a lost wake-up (tests/loom_bufs.rs finds it).
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Marks this thread as running the core that owns `remote` (or clears it).
    pub(crate) fn set_local(remote: Option<&Arc<Self>>) {
        LOCAL_REMOTE.with(|r| r.set(remote.map_or(std::ptr::null(), Arc::as_ptr)));
    }

    fn is_local(&self) -> bool {
        LOCAL_REMOTE.with(|r| std::ptr::eq(r.get(), self))
    }
}

/// The `Send + Sync` part of a task: its id and how to reach its core.
struct TaskWaker {
    id: usize,
    scheduled: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.remote.is_local() {
            // Only this thread schedules locally; a racing remote wake at worst queues the id
            // twice, which costs one spurious poll.
            if !self.scheduled.load(Ordering::Relaxed) {
                self.scheduled.store(true, Ordering::Relaxed);
                RUN_QUEUE.with(|q| q.borrow_mut().push_back(self.id));
            }
        } else if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.remote.queue.push(self.id);
            self.remote.notify();
        }
    }
}

struct Task {
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    state: Arc<TaskWaker>,
    waker: Waker,
}

/// One core's tasks.
pub(crate) struct Executor {
    tasks: RefCell<Slab<Task>>,
    remote: Arc<Remote>,
}

impl Executor {
    pub(crate) fn new(remote: Arc<Remote>) -> Self {
        Self {
            tasks: RefCell::new(Slab::new()),
            remote,
        }
    }

    /// Adds a task and schedules its first poll.
    pub(crate) fn spawn(&self, future: Pin<Box<dyn Future<Output = ()>>>) {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = entry.key();
        let state = Arc::new(TaskWaker {
            id,
            scheduled: AtomicBool::new(true),
            remote: self.remote.clone(),
        });
        let waker = Waker::from(state.clone());
        entry.insert(Task {
            future: Some(future),
            state,
            waker,
        });
        RUN_QUEUE.with(|q| q.borrow_mut().push_back(id));
    }

    /// Tasks alive (spawned and not finished).
    pub(crate) fn live(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Moves remotely woken task ids onto the local run queue.
    pub(crate) fn drain_remote(&self) {
        RUN_QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            while let Some(id) = self.remote.queue.pop() {
                q.push_back(id);
            }
        });
    }

    /// Whether tasks are ready to poll.
    pub(crate) fn has_ready(&self) -> bool {
        RUN_QUEUE.with(|q| !q.borrow().is_empty()) || !self.remote.queue.is_empty()
    }

    /// Polls up to `budget` ready tasks; returns how many were polled.
    pub(crate) fn run(&self, budget: usize) -> usize {
        let mut polled = 0;
        while polled < budget {
            let Some(id) = RUN_QUEUE.with(|q| q.borrow_mut().pop_front()) else {
                break;
            };
            let taken = {
                let mut tasks = self.tasks.borrow_mut();
                match tasks.get_mut(id) {
                    Some(t) => {
                        t.state.scheduled.store(false, Ordering::Relaxed);
                        t.future.take().map(|f| (f, t.waker.clone()))
                    }
                    None => None,
                }
            };
            let Some((mut future, waker)) = taken else {
                continue; // stale id: the task finished
            };
            polled += 1;
            let mut cx = Context::from_waker(&waker);
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(()) => {
                    let task = self.tasks.borrow_mut().remove(id);
                    drop(task);
                    drop(future);
                }
                Poll::Pending => {
                    if let Some(t) = self.tasks.borrow_mut().get_mut(id) {
                        t.future = Some(future);
                    }
                }
            }
        }
        polled
    }

    /// Drops every task (their sockets close, their in-flight operations are cancelled).
    pub(crate) fn drop_all(&self) {
        loop {
            let futures: Vec<_> = {
                let mut tasks = self.tasks.borrow_mut();
                tasks.drain().filter_map(|t| t.future).collect()
            };
            if futures.is_empty() {
                break;
            }
            // Dropped outside the borrow: a dropping future may spawn or wake.
            drop(futures);
        }
        RUN_QUEUE.with(|q| q.borrow_mut().clear());
    }
}
