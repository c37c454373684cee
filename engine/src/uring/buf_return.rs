//! The cross-thread half of giving a provided buffer back: a `Bytes` over a ring buffer dropped
//! on a thread other than its core's queues the buffer id and rings the core's doorbell; the
//! core, woken, drains the queue into its ring on its next turn.
//!
//! Kept apart from `buf_ring.rs` and generic over the queue and the doorbell so that the loom
//! model (`engine/tests/loom_bufs.rs`, which includes this file by path) checks this same code
//! with loom's types; the engine instantiates it with crossbeam's `SegQueue` and the core's
//! `Remote` (eventfd). No `unsafe` here.
//!
//! The order is the protocol: the id is queued *before* the doorbell rings, and the core drains
//! *after* it acknowledged the doorbell, so a drain that follows a ring sees the id (or an earlier
//! drain took it). A doorbell that coalesces rings (rings only once until acknowledged) keeps
//! that property as long as its acknowledgment is ordered before the drain's reads.

/// A multi-producer queue of buffer ids (lock-free in the engine).
pub(crate) trait ReturnQueue {
    /// Queues `bid` (any thread).
    fn push(&self, bid: u16);
    /// Takes the oldest id (the owning core only).
    fn pop(&self) -> Option<u16>;
}

/// Wakes the owning core (any thread).
pub(crate) trait Doorbell {
    /// Makes the core run a turn soon (its next turn drains the queue).
    fn ring(&self);
}

/// Buffer ids on their way home to the owning core. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct HomeQueue<Q, D> {
    queue: Q,
    doorbell: D,
}

impl<Q: ReturnQueue, D: Doorbell> HomeQueue<Q, D> {
    /// A queue whose pushes ring `doorbell`.
    pub(crate) fn new(queue: Q, doorbell: D) -> Self {
        Self { queue, doorbell }
    }

    /// Sends `bid` home from a thread that is not its core: queue, then ring.
    pub(crate) fn send_home(&self, bid: u16) {
        self.queue.push(bid);
        self.doorbell.ring();
    }

    /// On the owning core, after its doorbell was acknowledged: hands every queued id to
    /// `put_back`; returns how many.
    pub(crate) fn drain(&self, mut put_back: impl FnMut(u16)) -> usize {
        let mut n = 0;
        while let Some(bid) = self.queue.pop() {
            put_back(bid);
            n += 1;
        }
        n
    }
}
