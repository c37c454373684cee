//! Timers: an indexed 4-ary min-heap of deadlines per core ([`TimerQueue`]), and the [`Sleep`]
//! future.
//!
//! A `Sleep` arms `(deadline, sequence)` on its first pending poll: one slab slot (its waker, and
//! where its heap entry sits now) and one heap entry, O(log n). Every move inside the heap updates
//! the slot's position, so a dropped `Sleep` takes its heap entry out at once (O(log n)): the
//! structure holds exactly the live timers, never entries of `Sleep`s that are gone. (It used to
//! skip dead entries only when they reached the top, so one long-lived timer in front kept every
//! dead one behind it: a server arming a 600 s idle timer per receive grew by 48 MiB in 20 s.)
//!
//! The core loop fires due entries in `(deadline, sequence)` order, up to [`TIMER_BUDGET`] per
//! turn, so timers with the same deadline fire in the order they were armed and the woken tasks
//! run in that order. The nearest deadline (the heap's root, O(1)) becomes the timeout of the
//! core's one `io_uring_enter` (`IORING_ENTER_EXT_ARG`), so no timeout SQE is needed.
//!
//! Why a heap and not a timing wheel: deadlines here are RPC timeouts in milliseconds and
//! sub-millisecond sleeps; a heap is exact at any precision, and with 4 children per node its
//! depth at 100k live timers is 9.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

use super::with_core;

/// Timers fired per loop turn (the rest fire next turn, right away).
pub(crate) const TIMER_BUDGET: usize = 1024;

/// Children per heap node: a shallower tree than a binary heap, and a node's children share a
/// cache line or two.
const ARITY: usize = 4;

/// `Slot::pos` of a timer that fired (it has no heap entry any more).
const FIRED: usize = usize::MAX;

/// One armed deadline in the heap.
#[derive(Debug, Clone, Copy)]
struct HeapEntry {
    deadline: Instant,
    /// Arming order: breaks ties between equal deadlines.
    seq: u64,
    /// The timer's slab slot.
    key: usize,
}

impl HeapEntry {
    /// Whether `self` fires before `other`.
    fn before(&self, other: &Self) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

/// A timer's slab slot.
#[derive(Debug)]
struct Slot {
    waker: Option<Waker>,
    /// Index of the timer's heap entry, or [`FIRED`].
    pos: usize,
    /// The sequence number it was (re-)armed with; a handle naming another one is stale.
    seq: u64,
}

/// A handle to an armed timer: its slab slot and arming sequence (slots are reused, sequences
/// are not).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    key: usize,
    seq: u64,
}

/// The timers of one core: an indexed 4-ary min-heap ordered by `(deadline, arming order)` over
/// a slab of slots that know their heap position. Its size is the number of live timers.
///
/// Public (hidden) for the benchmark and the Miri run; the engine uses it through [`Sleep`].
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: Vec<HeapEntry>,
    slots: Slab<Slot>,
    seq: u64,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Timers armed and not yet fired (heap entries).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Timers known to the queue: armed, or fired and not yet collected by their owner.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.deadline)
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    /// Arms a timer for `deadline` that wakes `waker`. O(log n).
    pub fn arm(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let seq = self.next_seq();
        let pos = self.heap.len();
        let key = self.slots.insert(Slot {
            waker: Some(waker),
            pos,
            seq,
        });
        self.heap.push(HeapEntry { deadline, seq, key });
        self.sift_up(pos);
        TimerKey { key, seq }
    }

    /// The slot `timer` names, if it is still the same timer.
    fn slot_mut(&mut self, timer: TimerKey) -> Option<&mut Slot> {
        self.slots.get_mut(timer.key).filter(|s| s.seq == timer.seq)
    }

    /// Forgets `timer` (fired or not): its slot and heap entry go at once. O(log n). A stale key
    /// is ignored.
    pub fn cancel(&mut self, timer: TimerKey) -> Option<Waker> {
        let pos = self.slot_mut(timer)?.pos;
        let slot = self.slots.remove(timer.key);
        if pos != FIRED {
            self.remove_at(pos);
        }
        slot.waker
    }

    /// Checks `timer` from its owner's poll: `Ok(())` when it fired (its slot is freed then),
    /// otherwise its waker becomes `waker` (unless it already wakes the same task) and the
    /// replaced waker comes back to be dropped by the caller. A stale key counts as fired.
    pub fn poll(&mut self, timer: TimerKey, waker: &Waker) -> Result<(), Option<Waker>> {
        let Some(slot) = self.slot_mut(timer) else {
            return Ok(());
        };
        if slot.pos == FIRED {
            self.slots.remove(timer.key);
            return Ok(());
        }
        match &slot.waker {
            Some(w) if w.will_wake(waker) => Err(None),
            _ => Err(slot.waker.replace(waker.clone())),
        }
    }

    /// Moves `timer` to `deadline`, as if armed anew now (it fires after timers already armed for
    /// the same deadline), whether or not it fired. O(log n). Returns `false` for a stale key.
    pub fn reset(&mut self, timer: &mut TimerKey, deadline: Instant) -> bool {
        if self.slot_mut(*timer).is_none() {
            return false;
        }
        let seq = self.next_seq();
        let slot = &mut self.slots[timer.key];
        slot.seq = seq;
        timer.seq = seq;
        let pos = slot.pos;
        if pos == FIRED {
            let pos = self.heap.len();
            self.slots[timer.key].pos = pos;
            self.heap.push(HeapEntry {
                deadline,
                seq,
                key: timer.key,
            });
            self.sift_up(pos);
        } else {
            self.heap[pos].deadline = deadline;
            self.heap[pos].seq = seq;
            self.restore(pos);
        }
        true
    }

    /// Fires every timer due at `now`, earliest first, up to `budget`: their wakers are appended
    /// to `woken` (the caller wakes them after releasing the queue). Returns how many fired.
    pub fn fire(&mut self, now: Instant, budget: usize, woken: &mut Vec<Waker>) -> usize {
        let mut fired = 0;
        while fired < budget {
            match self.heap.first() {
                Some(e) if e.deadline <= now => {}
                _ => break,
            }
            let key = self.remove_at(0).key;
            let slot = &mut self.slots[key];
            slot.pos = FIRED;
            if let Some(w) = slot.waker.take() {
                woken.push(w);
            }
            fired += 1;
        }
        fired
    }

    /// Takes the heap entry at `pos` out, keeping the heap ordered; returns it.
    fn remove_at(&mut self, pos: usize) -> HeapEntry {
        let last = self.heap.pop().expect("remove_at on an empty heap");
        if pos == self.heap.len() {
            return last;
        }
        let removed = std::mem::replace(&mut self.heap[pos], last);
        self.slots[last.key].pos = pos;
        self.restore(pos);
        removed
    }

    /// Moves the entry at `pos` up or down to where it belongs.
    fn restore(&mut self, pos: usize) {
        if pos > 0 && self.heap[pos].before(&self.heap[(pos - 1) / ARITY]) {
            self.sift_up(pos);
        } else {
            self.sift_down(pos);
        }
    }

    fn place(&mut self, pos: usize, entry: HeapEntry) {
        self.slots[entry.key].pos = pos;
        self.heap[pos] = entry;
    }

    fn sift_up(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if !entry.before(&self.heap[parent]) {
                break;
            }
            self.place(pos, self.heap[parent]);
            pos = parent;
        }
        self.place(pos, entry);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        let len = self.heap.len();
        loop {
            let first = pos * ARITY + 1;
            if first >= len {
                break;
            }
            let mut best = first;
            for child in first + 1..(first + ARITY).min(len) {
                if self.heap[child].before(&self.heap[best]) {
                    best = child;
                }
            }
            if !self.heap[best].before(&entry) {
                break;
            }
            self.place(pos, self.heap[best]);
            pos = best;
        }
        self.place(pos, entry);
    }
}

/// One core's timers: the queue, and the reused list of wakers a turn fires.
#[derive(Default)]
pub(crate) struct Timers {
    queue: RefCell<TimerQueue>,
    woken: RefCell<Vec<Waker>>,
}

impl Timers {
    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.borrow().next_deadline()
    }

    /// Fires due timers in order, up to `budget`; returns how many fired.
    pub(crate) fn fire(&self, now: Instant, budget: usize) -> usize {
        let mut woken = std::mem::take(&mut *self.woken.borrow_mut());
        let n = self.queue.borrow_mut().fire(now, budget, &mut woken);
        // Woken with the queue released: a waker may run code that arms or drops timers.
        for w in woken.drain(..) {
            w.wake();
        }
        *self.woken.borrow_mut() = woken;
        n
    }
}

/// A future completing at a deadline, on the io_uring engine's current core.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// The armed timer, while there is one.
    timer: Option<TimerKey>,
    /// Completed: polled again, it stays complete.
    done: bool,
    /// Sleeps belong to their core's thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Sleep {
    pub(crate) fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            timer: None,
            done: false,
            _not_send: std::marker::PhantomData,
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline to `deadline` (earlier or later, even after the sleep completed): the
    /// next poll waits for the new deadline. An armed timer is moved in place, O(log n), with no
    /// allocation; it then fires after timers armed earlier for the same deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.done = false;
        if let Some(timer) = &mut self.timer {
            let moved =
                super::try_with_core(|c| c.timers.queue.borrow_mut().reset(timer, deadline));
            if moved != Some(true) {
                self.timer = None;
            }
        }
    }

    /// Timers armed on the calling core and not fired yet (for tests). Outside a core: 0.
    #[doc(hidden)]
    pub fn timers_armed() -> usize {
        super::try_with_core(|c| c.timers.queue.borrow().len()).unwrap_or(0)
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let Some(timer) = self.timer else {
            // The turn's time is never ahead of the clock: when it says the deadline passed,
            // it did; otherwise the timer decides, on a fresh reading.
            if crate::runtime::turn_now() >= self.deadline {
                self.done = true;
                return Poll::Ready(());
            }
            let waker = cx.waker().clone();
            let deadline = self.deadline;
            self.timer = Some(with_core(|c| {
                c.timers.queue.borrow_mut().arm(deadline, waker)
            }));
            return Poll::Pending;
        };
        let polled = with_core(|c| c.timers.queue.borrow_mut().poll(timer, cx.waker()));
        match polled {
            Ok(()) => {
                self.timer = None;
                self.done = true;
                Poll::Ready(())
            }
            // The replaced waker drops here, with the queue released.
            Err(_replaced) => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            let waker = super::try_with_core(|c| c.timers.queue.borrow_mut().cancel(timer));
            drop(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The queue alone (no core, no ring): also what the Miri run checks.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    /// A waker that records its label in a shared log when woken.
    struct Labelled(usize, Arc<std::sync::Mutex<Vec<usize>>>, Arc<AtomicUsize>);

    impl Wake for Labelled {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
            self.2.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fire_all(q: &mut TimerQueue, now: Instant) -> usize {
        let mut woken = Vec::new();
        let n = q.fire(now, usize::MAX, &mut woken);
        for w in woken {
            w.wake();
        }
        n
    }

    /// Checks that every slot's position points at its own heap entry and the heap is ordered.
    fn check_invariants(q: &TimerQueue) {
        for (i, e) in q.heap.iter().enumerate() {
            assert_eq!(q.slots[e.key].pos, i);
            if i > 0 {
                assert!(!e.before(&q.heap[(i - 1) / ARITY]), "heap order at {i}");
            }
        }
    }

    #[test]
    fn fires_in_deadline_then_arming_order() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let base = Instant::now();
        let mut q = TimerQueue::new();
        // (label, offset ms), armed out of order; 3 and 4 share a deadline.
        let plan = [(5, 25), (1, 5), (3, 15), (0, 0), (4, 15), (2, 10), (6, 40)];
        for (label, ms) in plan {
            let w = Waker::from(Arc::new(Labelled(label, log.clone(), count.clone())));
            q.arm(base + Duration::from_millis(ms), w);
            check_invariants(&q);
        }
        assert_eq!(q.next_deadline(), Some(base));
        assert_eq!(fire_all(&mut q, base + Duration::from_millis(15)), 5);
        assert_eq!(q.next_deadline(), Some(base + Duration::from_millis(25)));
        assert_eq!(fire_all(&mut q, base + Duration::from_millis(100)), 2);
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(q.is_empty());
        assert_eq!(q.slots(), 7, "fired slots wait for their owner's poll");
    }

    #[test]
    fn cancel_leaves_nothing_and_keeps_order() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let base = Instant::now();
        let mut q = TimerQueue::new();
        let mut keys = Vec::new();
        // A pseudo-random order of deadlines, with repeats.
        for i in 0..200usize {
            let ms = (i * 37) % 50;
            let w = Waker::from(Arc::new(Labelled(i, log.clone(), count.clone())));
            keys.push((q.arm(base + Duration::from_millis(ms as u64), w), ms, i));
        }
        // Cancel every third, from the middle of the heap as well as its top.
        for (k, _, _) in keys.iter().step_by(3) {
            assert!(q.cancel(*k).is_some());
            check_invariants(&q);
        }
        assert_eq!(q.len(), 200 - 67);
        assert_eq!(q.slots(), 200 - 67);
        assert!(q.cancel(keys[0].0).is_none(), "a cancelled key is stale");
        assert_eq!(fire_all(&mut q, base + Duration::from_secs(1)), 133);
        let mut expected: Vec<(usize, usize)> = keys
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 3 != 0)
            .map(|(_, (_, ms, i))| (*ms, *i))
            .collect();
        expected.sort();
        let expected: Vec<usize> = expected.into_iter().map(|(_, i)| i).collect();
        assert_eq!(*log.lock().unwrap(), expected);
    }

    #[test]
    fn poll_after_fire_and_stale_keys() {
        let base = Instant::now();
        let mut q = TimerQueue::new();
        let noop = Waker::noop();
        let a = q.arm(base, noop.clone());
        assert!(matches!(q.poll(a, noop), Err(None)), "same waker: kept");
        assert_eq!(fire_all(&mut q, base), 1);
        assert!(q.poll(a, noop).is_ok());
        assert_eq!(q.slots(), 0, "the owner's poll frees a fired slot");
        // The slot is reused by the next timer; the old key must not touch it.
        let b = q.arm(base + Duration::from_secs(1), noop.clone());
        assert!(q.cancel(a).is_none());
        assert!(q.poll(a, noop).is_ok());
        assert_eq!(q.len(), 1);
        assert!(q.cancel(b).is_some());
        assert!(q.is_empty());
    }

    #[test]
    fn reset_moves_armed_and_fired_timers() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let base = Instant::now();
        let mut q = TimerQueue::new();
        let w = |l| Waker::from(Arc::new(Labelled(l, log.clone(), count.clone())));
        let mut a = q.arm(base + Duration::from_millis(10), w(0));
        let _b = q.arm(base + Duration::from_millis(20), w(1));
        let stale = a;
        // Later than b, then earlier: an armed timer moves in place.
        assert!(q.reset(&mut a, base + Duration::from_millis(30)));
        check_invariants(&q);
        assert!(!q.reset(&mut stale.clone(), base), "the old key is stale");
        assert_eq!(q.next_deadline(), Some(base + Duration::from_millis(20)));
        assert!(q.reset(&mut a, base + Duration::from_millis(20)));
        assert_eq!(fire_all(&mut q, base + Duration::from_millis(20)), 2);
        // Same deadline: b was armed first, a was reset after it.
        assert_eq!(*log.lock().unwrap(), vec![1, 0]);
        // A fired timer re-arms (it needs a waker again: the owner's next poll gives one).
        assert!(q.reset(&mut a, base + Duration::from_millis(50)));
        assert!(matches!(q.poll(a, &w(2)), Err(None)));
        assert_eq!(q.len(), 1);
        assert_eq!(fire_all(&mut q, base + Duration::from_millis(50)), 1);
        assert_eq!(*log.lock().unwrap(), vec![1, 0, 2]);
    }

    #[test]
    fn budget_limits_one_turn() {
        let base = Instant::now();
        let mut q = TimerQueue::new();
        for _ in 0..10 {
            q.arm(base, Waker::noop().clone());
        }
        let mut woken = Vec::new();
        assert_eq!(q.fire(base, 4, &mut woken), 4);
        assert_eq!(q.len(), 6);
        assert_eq!(q.fire(base, 100, &mut woken), 6);
        assert_eq!(woken.len(), 10);
    }
}
