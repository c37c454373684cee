//! Timers: a binary heap of deadlines per core, and the [`Sleep`] future.
//!
//! A `Sleep` registers `(deadline, sequence)` in the heap on its first pending poll (O(log n)) and
//! parks its waker in a slab. The core loop fires every due entry in `(deadline, sequence)` order,
//! so timers with the same deadline fire in the order they were armed and the woken tasks run in
//! that order. The nearest deadline becomes the timeout of the core's one `io_uring_enter`
//! (`IORING_ENTER_EXT_ARG`), so no timeout SQE is needed. A dropped `Sleep` removes its slab entry;
//! its heap entry is skipped when it comes up (lazy deletion).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

use super::with_core;

/// Timers fired per loop turn (the rest fire next turn, right away).
pub(crate) const TIMER_BUDGET: usize = 1024;

struct Entry {
    waker: Option<Waker>,
    /// Set when the entry fired; the `Sleep` then completes.
    fired: bool,
    /// Sequence number of the heap entry that belongs to this slot (keys are reused).
    seq: u64,
}

/// One core's timers.
#[derive(Default)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, u64, usize)>>>,
    entries: RefCell<Slab<Entry>>,
    seq: std::cell::Cell<u64>,
}

impl Timers {
    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut heap = self.heap.borrow_mut();
        let entries = self.entries.borrow();
        // Pop entries whose Sleep was dropped so they do not shorten the wait.
        while let Some(Reverse((when, seq, key))) = heap.peek().copied() {
            if entries.get(key).is_some_and(|e| !e.fired && e.seq == seq) {
                return Some(when);
            }
            heap.pop();
        }
        None
    }

    /// Fires due timers in order, up to `budget`; returns how many fired.
    pub(crate) fn fire(&self, now: Instant, budget: usize) -> usize {
        let mut wakers = Vec::new();
        {
            let mut heap = self.heap.borrow_mut();
            let mut entries = self.entries.borrow_mut();
            while wakers.len() < budget {
                match heap.peek() {
                    Some(Reverse((when, _, _))) if *when <= now => {}
                    _ => break,
                }
                let Some(Reverse((_, seq, key))) = heap.pop() else {
                    break;
                };
                if let Some(e) = entries.get_mut(key) {
                    if !e.fired && e.seq == seq {
                        e.fired = true;
                        if let Some(w) = e.waker.take() {
                            wakers.push(w);
                        }
                    }
                }
            }
        }
        let n = wakers.len();
        for w in wakers {
            w.wake();
        }
        n
    }

    fn arm(&self, deadline: Instant, waker: Waker) -> usize {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let key = self.entries.borrow_mut().insert(Entry {
            waker: Some(waker),
            fired: false,
            seq,
        });
        self.heap.borrow_mut().push(Reverse((deadline, seq, key)));
        key
    }
}

/// A future completing at a deadline, on the io_uring engine's current core.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    key: Option<usize>,
    /// Sleeps belong to their core's thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Sleep {
    pub(crate) fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            key: None,
            _not_send: std::marker::PhantomData,
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        match self.key {
            None => {
                // The turn's time is never ahead of the clock: when it says the deadline passed,
                // it did; otherwise the timer decides, on a fresh reading.
                if crate::runtime::turn_now() >= deadline {
                    return Poll::Ready(());
                }
                let key = with_core(|c| c.timers.arm(deadline, cx.waker().clone()));
                self.key = Some(key);
                Poll::Pending
            }
            Some(key) => with_core(|c| {
                let mut entries = c.timers.entries.borrow_mut();
                let e = &mut entries[key];
                if e.fired {
                    entries.remove(key);
                    drop(entries);
                    self.key = None;
                    // A fired Sleep stays complete if polled again: the deadline passed.
                    return Poll::Ready(());
                }
                match &e.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => e.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = super::try_with_core(|c| {
                let entry = c.timers.entries.borrow_mut().try_remove(key);
                drop(entry);
            });
        }
    }
}
