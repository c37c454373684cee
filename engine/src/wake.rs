//! The cross-thread wake-up protocol of a core, written once against `crate::atomics` so that
//! the loom model test (`engine/tests/loom_wake.rs`) can include this very file with loom's
//! atomics in place of std's.
//!
//! Three flags, each the "someone already told the core" bit of one handshake:
//!
//! - [`Scheduled`]: a task's "is in a run queue" bit. A waker on another thread sets it and, if
//!   it was clear, queues the task id on the core's remote queue; the core clears it just before
//!   polling the task.
//! - [`Doorbell`]: the core's "eventfd was written and not yet consumed" bit. Whoever queues
//!   work for a sleeping core (a remote wake, a mailbox job, a returned buffer) rings it after
//!   queueing and writes the eventfd only if it was clear; the core answers it (clears it) when
//!   its eventfd read completes, before it looks at the queues again.
//! - [`Gate`]: a core mailbox's "closed" bit. A poster checks it after pushing its job; whoever
//!   closes the mailbox (the exiting core, or `Runtime::join`) closes it before draining.
//!
//! Each handshake is the store-buffering pattern: one side writes data (the task's state, a
//! queue entry) then reads the flag, the other writes the flag then reads the data. With a plain
//! store on one side both may read the old values, and a wake-up is lost. The cure used
//! throughout: BOTH sides use a read-modify-write on the flag. The flag's modification order
//! then decides: whichever RMW comes second reads the first one's value, and since both are
//! `AcqRel` it synchronizes with it, so it sees the data written before the first. (A `SeqCst`
//! store on one side would not be enough in the C++ model unless every access to the data were
//! `SeqCst` too; loom, which models `SeqCst` as `AcqRel`, would rightly flag it.)

use crate::atomics::{AtomicBool, Ordering};

/// A task's "is in a run queue" bit. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Scheduled(AtomicBool);

impl Scheduled {
    /// A flag for a task that is queued already (a new task is queued at spawn).
    pub(crate) fn new_queued() -> Self {
        Self(AtomicBool::new(true))
    }

    /// A wake from the task's own core thread: whether the caller must push the id on the local
    /// run queue. A plain load and store: only the core thread clears the flag, and a racing
    /// remote wake at worst queues the id twice (one spurious poll).
    pub(crate) fn schedule_local(&self) -> bool {
        if self.0.load(Ordering::Relaxed) {
            return false;
        }
        self.0.store(true, Ordering::Relaxed);
        true
    }

    /// A wake from any other thread: whether the caller must queue the id remotely.
    pub(crate) fn schedule_remote(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// Called by the core just before it polls the task. A swap, not a store: a waker that made
    /// the task ready and found the flag still set (so did not queue it) must have its writes
    /// visible to this poll, which the swap's acquire half gives (it reads that waker's swap).
    pub(crate) fn begin_poll(&self) {
        self.0.swap(false, Ordering::AcqRel);
    }
}

/// The "eventfd written, not yet consumed" bit of a core. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Doorbell(AtomicBool);

impl Doorbell {
    /// A clear doorbell.
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Rung after queueing work for the core: whether the caller must write the eventfd (the
    /// first ring since the core last answered).
    pub(crate) fn ring(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// Called by the core when its eventfd read completed, before it drains the queues. A swap:
    /// a ringer that found the bell still rung (so did not write the eventfd) must have its
    /// queue push visible to the drain that follows.
    pub(crate) fn answer(&self) {
        self.0.swap(false, Ordering::AcqRel);
    }
}

/// A mailbox's "closed" bit. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Gate(AtomicBool);

impl Gate {
    /// An open gate.
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Checked by a poster AFTER pushing its job: whether the mailbox is closed, in which case
    /// the poster must drain the mailbox itself (the closer may have drained before the push).
    /// An RMW (that writes nothing new) so that it orders against [`Gate::close`].
    pub(crate) fn closed_after_push(&self) -> bool {
        self.0.fetch_or(false, Ordering::AcqRel)
    }

    /// Closes the gate; the caller drains the mailbox afterwards. Every poster either sees the
    /// gate closed, or pushed before this and its job is found by the drain.
    pub(crate) fn close(&self) {
        self.0.swap(true, Ordering::AcqRel);
    }

    /// Whether the gate is closed (a cheap early check; not a substitute for
    /// [`Gate::closed_after_push`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
