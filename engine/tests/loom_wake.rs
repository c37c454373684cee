//! Loom model checks of the cross-thread wake-up protocol (`src/wake.rs`, included here with
//! loom's atomics): a task woken from another thread is polled again, a core sleeping on its
//! eventfd is woken for every queued wake-up, and a mailbox post racing with the mailbox being
//! closed is either run, or dropped by one of the two sides (never stranded).
//!
//! The core, its eventfd and the lock-free queues are small models of the real ones written in
//! the same order as `uring/executor.rs`, `uring/mod.rs` (core loop) and `runtime.rs`. Runs in the
//! normal test build (no `--cfg loom`: only this file uses loom); the search is bounded by
//! `LOOM_MAX_PREEMPTIONS` (default 4 here) so the whole file takes seconds.

use loom::sync::atomic::AtomicUsize;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

mod atomics {
    pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
}

#[path = "../src/wake.rs"]
#[allow(dead_code)]
mod wake;

use atomics::{AtomicBool, Ordering};
use wake::{Doorbell, Gate, Scheduled};

/// A bounded multi-producer, single-consumer lock-free queue shaped like crossbeam's
/// `SegQueue` as the protocol uses it: a push claims a slot with an RMW on the tail and then
/// publishes the value with a release store; `is_empty` and `pop` read the tail with acquire.
struct Queue {
    slots: [AtomicUsize; 4],
    tail: AtomicUsize,
    /// Consumer-only.
    head: AtomicUsize,
}

impl Queue {
    fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicUsize::new(0)),
            tail: AtomicUsize::new(0),
            head: AtomicUsize::new(0),
        }
    }
    fn push(&self, v: usize) {
        let i = self.tail.fetch_add(1, Ordering::AcqRel);
        self.slots[i].store(v + 1, Ordering::Release);
    }
    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == self.tail.load(Ordering::Acquire)
    }
    fn pop(&self) -> Option<usize> {
        let h = self.head.load(Ordering::Relaxed);
        if h == self.tail.load(Ordering::Acquire) {
            return None;
        }
        // A claimed slot is being written: wait for it, as SegQueue's pop does.
        loop {
            let v = self.slots[h].load(Ordering::Acquire);
            if v != 0 {
                self.head.store(h + 1, Ordering::Relaxed);
                return Some(v - 1);
            }
            thread::yield_now();
        }
    }
}

/// The core's eventfd: a counter; reading blocks until it is non-zero and consumes it.
struct EventFd {
    count: Mutex<u64>,
    readable: Condvar,
}

impl EventFd {
    fn new() -> Self {
        Self {
            count: Mutex::new(0),
            readable: Condvar::new(),
        }
    }
    fn write(&self) {
        *self.count.lock().unwrap() += 1;
        self.readable.notify_one();
    }
    /// The core's blocking enter, woken only by the eventfd read completing.
    fn read(&self) {
        let mut c = self.count.lock().unwrap();
        while *c == 0 {
            c = self.readable.wait(c).unwrap();
        }
        *c = 0;
    }
}

/// One task: its flag and the state its future polls.
struct Task {
    scheduled: Scheduled,
    ready: AtomicBool,
}

struct Core {
    remote: Queue,
    doorbell: Doorbell,
    eventfd: EventFd,
    tasks: [Task; 2],
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    b
}

/// `TaskWaker::wake_by_ref` from another thread, then `Remote::notify`.
fn wake_remote(core: &Core, id: usize) {
    if core.tasks[id].scheduled.schedule_remote() {
        core.remote.push(id);
        if core.doorbell.ring() {
            core.eventfd.write();
        }
    }
}

/// Two tasks, both queued on the core (just spawned), are made ready and woken by another
/// thread one after the other while the core polls them and sleeps in between. The core must
/// see both ready; a lost wake-up leaves it asleep on its eventfd (loom reports a deadlock).
#[test]
fn remote_wakes_are_never_lost() {
    builder().check(|| {
        let core = Arc::new(Core {
            remote: Queue::new(),
            doorbell: Doorbell::new(),
            eventfd: EventFd::new(),
            tasks: std::array::from_fn(|_| Task {
                scheduled: Scheduled::new_queued(),
                ready: AtomicBool::new(false),
            }),
        });
        let waker = {
            let core = core.clone();
            thread::spawn(move || {
                for id in 0..2 {
                    core.tasks[id].ready.store(true, Ordering::Release);
                    wake_remote(&core, id);
                }
            })
        };
        // The core loop: poll the run queue, then sleep on the eventfd unless work is queued.
        let mut run_queue = vec![0usize, 1];
        let mut done = [false; 2];
        loop {
            for id in run_queue.drain(..) {
                // Executor::run: clear the flag, then poll.
                core.tasks[id].scheduled.begin_poll();
                if core.tasks[id].ready.load(Ordering::Acquire) {
                    done[id] = true;
                }
            }
            if done == [true, true] {
                break;
            }
            // Executor::has_ready before the waiting enter.
            if core.remote.is_empty() {
                core.eventfd.read();
                // Core::reap on the eventfd read's completion.
                core.doorbell.answer();
            }
            // Executor::drain_remote at the start of the next turn.
            while let Some(id) = core.remote.pop() {
                run_queue.push(id);
            }
        }
        waker.join().unwrap();
    });
}

/// A mailbox job posted while the mailbox is being closed: either the poster learns the mailbox
/// is closed, or its job is run or dropped by the closer's drain. Nothing stays in the mailbox
/// (a job stranded there would leave its `run_on` caller waiting forever).
#[test]
fn mailbox_post_racing_close_is_never_stranded() {
    builder().check(|| {
        let gate = Arc::new(Gate::new());
        let mailbox = Arc::new(Queue::new());
        let drained = Arc::new(Mutex::new(0usize));
        let poster = {
            let (gate, mailbox, drained) = (gate.clone(), mailbox.clone(), drained.clone());
            thread::spawn(move || {
                // CoreShared::post.
                if gate.is_closed() {
                    return false;
                }
                mailbox.push(7);
                if gate.closed_after_push() {
                    // Drain it ourselves; the lock stands for the mailbox's pop side being
                    // shared by poster and closer (SegQueue allows concurrent pops).
                    let _g = drained.lock().unwrap();
                    while mailbox.pop().is_some() {}
                    return false;
                }
                true
            })
        };
        // The closing side (a core exiting, or `Runtime::join`).
        gate.close();
        {
            let _g = drained.lock().unwrap();
            while mailbox.pop().is_some() {}
        }
        poster.join().unwrap();
        let _g = drained.lock().unwrap();
        assert!(
            mailbox.is_empty(),
            "a posted job was stranded in a closed mailbox"
        );
    });
}
