//! Loom model of a provided buffer going home from another thread: a `Bytes` over a ring buffer
//! dropped on a thread that is not its core's queues the buffer id and rings the core's doorbell
//! (engine/src/uring/buf_return.rs, included below by path: the model runs that same code); the
//! core, woken through its eventfd, acknowledges the wake-up and drains the queue, then the
//! kernel may fill the buffer again.
//!
//! Checked, in every interleaving loom explores (preemption bound 3):
//! - no lost wake-up: every id sent home is drained (a lost one leaves the core waiting on its
//!   eventfd forever, which loom reports as a model that never ends);
//! - no data race: the other thread's reads of the buffer happen before the kernel's next write
//!   of it (loom's `UnsafeCell` tracks every access);
//! - every buffer comes back exactly once, and the shared memory is freed once (loom's `Arc`).
//!
//! The doorbell flag is the engine's own `wake::Doorbell` (src/wake.rs, included with loom's
//! atomics, as the core's `Remote` uses it to coalesce eventfd writes) over a model eventfd; the
//! queue stands in for crossbeam's `SegQueue` on the paths taken here (a push publishes its slot
//! with a release; a pop that finds it empty does one acquire load, as `SegQueue::pop` does).
//!
//! `cargo test -p ringrpc-engine --release --test loom_bufs`

#[path = "../src/uring/buf_return.rs"]
#[allow(dead_code, unreachable_pub)]
mod buf_return;

mod atomics {
    pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
}

/// The core's real doorbell flag (`Remote` keeps one), with loom's atomics.
#[path = "../src/wake.rs"]
#[allow(dead_code, unreachable_pub)]
mod wake;

use buf_return::{Doorbell, HomeQueue, ReturnQueue};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Buffers (and other threads, one per buffer) in the model.
const BUFS: usize = 2;

/// A multi-producer, single-consumer queue shaped like `SegQueue` on these paths.
struct ModelQueue {
    slots: [AtomicU16; BUFS],
    written: [AtomicBool; BUFS],
    tail: AtomicUsize,
    /// Only the core pops.
    head: AtomicUsize,
}

impl ReturnQueue for ModelQueue {
    fn push(&self, bid: u16) {
        let i = self.tail.fetch_add(1, Ordering::AcqRel);
        self.slots[i].store(bid, Ordering::Relaxed);
        self.written[i].store(true, Ordering::Release);
    }

    fn pop(&self) -> Option<u16> {
        let h = self.head.load(Ordering::Relaxed);
        if h >= self.tail.load(Ordering::Acquire) {
            return None;
        }
        // Reserved but not written yet: wait for the writer, as SegQueue does.
        while !self.written[h].load(Ordering::Acquire) {
            thread::yield_now();
        }
        self.head.store(h + 1, Ordering::Relaxed);
        Some(self.slots[h].load(Ordering::Relaxed))
    }
}

/// The core's `Remote`: `notify` writes the eventfd once until the core has seen it.
struct ModelRemote {
    notified: wake::Doorbell,
    /// The eventfd's counter (the kernel updates it under a lock: acquire/release).
    eventfd: AtomicUsize,
}

impl ModelRemote {
    /// The core's eventfd read completing: whether there was a wake-up to read.
    fn read_eventfd(&self) -> bool {
        self.eventfd.swap(0, Ordering::AcqRel) > 0
    }

    /// `Remote::clear_notified`, called after the read completed and before the next drain
    /// (`Doorbell::answer`, a read-modify-write: with the plain `store(false, SeqCst)` it used to
    /// be, this model finds a lost wake-up — the core waits on its eventfd forever while an id
    /// sits in the queue).
    fn clear_notified(&self) {
        self.notified.answer();
    }
}

impl Doorbell for Arc<ModelRemote> {
    /// `Remote::notify`.
    fn ring(&self) {
        if self.notified.ring() {
            self.eventfd.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The shared part of a pool: buffer memory and the way home.
struct Pool {
    bufs: [UnsafeCell<u8>; BUFS],
    home: HomeQueue<ModelQueue, Arc<ModelRemote>>,
}

// SAFETY: (test model) each buffer cell is written by the core only while the buffer is in the
// ring and read by a holder only while it is out; loom checks exactly that these never race.
unsafe impl Sync for Pool {}

/// A held ring buffer (the `BufOwner` inside a `Bytes`).
struct Owner {
    pool: Arc<Pool>,
    bid: u16,
}

impl Owner {
    fn read(&self) -> u8 {
        // SAFETY: the buffer is out of the ring while an owner exists.
        self.pool.bufs[usize::from(self.bid)].with(|p| unsafe { *p })
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Not on the core: the id goes home through the queue.
        self.pool.home.send_home(self.bid);
    }
}

/// A fresh pool whose buffers the kernel filled, and its core's doorbell.
fn filled_pool() -> (Arc<Pool>, Arc<ModelRemote>) {
    let remote = Arc::new(ModelRemote {
        notified: wake::Doorbell::new(),
        eventfd: AtomicUsize::new(0),
    });
    let pool = Arc::new(Pool {
        bufs: std::array::from_fn(|_| UnsafeCell::new(0)),
        home: HomeQueue::new(
            ModelQueue {
                slots: std::array::from_fn(|_| AtomicU16::new(0)),
                written: std::array::from_fn(|_| AtomicBool::new(false)),
                tail: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
            },
            remote.clone(),
        ),
    });
    for bid in 0..BUFS {
        // SAFETY: the buffer is the kernel's (in the ring) until an owner exists.
        pool.bufs[bid].with_mut(|p| unsafe { *p = bid as u8 + 1 });
    }
    (pool, remote)
}

fn model() {
    let (pool, remote) = filled_pool();
    // The core hands each buffer up to a task on another thread.
    let mut holders = Vec::new();
    for bid in 0..BUFS as u16 {
        let owner = Owner {
            pool: pool.clone(),
            bid,
        };
        holders.push(thread::spawn(move || {
            assert_eq!(owner.read(), owner.bid as u8 + 1);
            drop(owner);
        }));
    }
    // The core's turns: drain what came home, else sleep until the eventfd read completes.
    let mut back = [false; BUFS];
    let mut n = 0;
    loop {
        n += pool.home.drain(|bid| {
            let bid = usize::from(bid);
            assert!(!back[bid], "buffer {bid} came home twice");
            back[bid] = true;
            // Back in the ring: the kernel may fill it again at once.
            // SAFETY: the id came home, so its owner is gone.
            pool.bufs[bid].with_mut(|p| unsafe { *p = 0xee });
        });
        if n == BUFS {
            break;
        }
        while !remote.read_eventfd() {
            thread::yield_now();
        }
        remote.clear_notified();
    }
    for h in holders {
        h.join().unwrap();
    }
}

/// The core goes away while other threads still hold its buffers: they read valid memory, send
/// the ids to a queue nobody drains, and the last of them frees the pool (loom's `Arc` reports a
/// leak or a double free).
fn model_core_gone_first() {
    let (pool, _remote) = filled_pool();
    let holders: Vec<_> = (0..BUFS as u16)
        .map(|bid| {
            let owner = Owner {
                pool: pool.clone(),
                bid,
            };
            thread::spawn(move || {
                assert_eq!(owner.read(), owner.bid as u8 + 1);
                drop(owner);
            })
        })
        .collect();
    drop(pool);
    for h in holders {
        h.join().unwrap();
    }
}

fn builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}

#[test]
fn buffers_sent_home_from_other_threads_all_come_back() {
    builder().check(model);
}

#[test]
fn buffers_outliving_their_core_free_the_pool_once() {
    builder().check(model_core_gone_first);
}
