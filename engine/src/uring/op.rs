//! The lifecycle of one io_uring operation, and why dropping its future is safe.
//!
//! Each submitted SQE gets a slot in the core's op table; its `user_data` is the slot key. The
//! slot owns everything the kernel may touch (buffers, iovec and msghdr arrays, socket
//! addresses, the fd) from submission until the *final* completion (the one without
//! `IORING_CQE_F_MORE`). A future holds an [`Op`] handle:
//!
//! ```text
//!  submit ──► Waiting ──(final CQE)──► Completed ──(handle dropped / resources taken)──► freed
//!               │  ▲ multishot CQEs queue up in the slot
//!               │
//!        handle dropped
//!               ▼
//!           Cancelled ──(ASYNC_CANCEL submitted; final CQE)──► freed (resources dropped)
//! ```
//!
//! A cancel that cannot be queued (the SQ stays full) is never dropped: the core keeps it on a
//! pending list and queues it on a later turn (`Core::cancel`), so the op still ends.
//!
//! Completions that arrive for a cancelled op, or that were queued and never read, are
//! *discarded* properly: a provided buffer they name goes back to the buffer ring, an accepted
//! socket they carry is closed. So nothing the kernel touches is freed early and nothing leaks.

use std::any::Any;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, squeue};
use slab::Slab;

use super::ring::cqe_more;
use super::with_core;

/// What an op's completions carry that needs cleaning up if nobody reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Results are new socket fds.
    Accept,
    /// Results may name provided buffers.
    Recv,
    /// Nothing beyond the op's owned resources.
    Plain,
}

/// One completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cqe {
    /// `res`: a byte count, a new fd, or `-errno`.
    pub(crate) res: i32,
    /// `flags`: buffer id, `MORE`.
    pub(crate) flags: u32,
}

impl Cqe {
    /// The result as `io::Result`.
    pub(crate) fn result(self) -> io::Result<u32> {
        if self.res < 0 {
            Err(io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res.unsigned_abs())
        }
    }

    /// The provided buffer this completion filled, if any.
    pub(crate) fn buffer(self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

struct Slot {
    kind: OpKind,
    queue: VecDeque<Cqe>,
    waker: Option<Waker>,
    /// The final completion arrived.
    done: bool,
    /// The handle was dropped before `done`.
    cancelled: bool,
    resources: Option<Box<dyn Any>>,
}

/// The op table of one core.
#[derive(Default)]
pub(crate) struct Ops {
    slots: std::cell::RefCell<Slab<Slot>>,
}

/// What the core must do after recording a completion (outside any borrow).
pub(crate) struct Dispatched {
    /// Waker of the op's owner.
    pub(crate) waker: Option<Waker>,
    /// A completion nobody will read: clean it up.
    pub(crate) discard: Option<(OpKind, Cqe)>,
    /// Resources of a finished cancelled op, to drop.
    pub(crate) freed: Option<Box<dyn Any>>,
}

impl Ops {
    /// Operations whose final completion has not arrived (the ring may still use their memory).
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.borrow().iter().filter(|(_, s)| !s.done).count()
    }

    /// Keys of ops in flight whose owner is still alive (stopping cancels them too: their owner
    /// may live outside any task, e.g. in a thread-local, and would otherwise never complete).
    pub(crate) fn live_in_flight(&self) -> Vec<usize> {
        self.slots
            .borrow()
            .iter()
            .filter(|(_, s)| !s.done && !s.cancelled)
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether a pending cancel of op `key` is still wanted: its final completion has not
    /// arrived and its handle cancelled it, or the core is `exiting` (which cancels every op).
    /// Outside an exit, a key whose op ended and was reused by a live op is not cancelled.
    pub(crate) fn awaits_cancel(&self, key: usize, exiting: bool) -> bool {
        self.slots
            .borrow()
            .get(key)
            .is_some_and(|s| !s.done && (s.cancelled || exiting))
    }

    /// Takes every queued, unread completion (for cleanup when the core exits).
    pub(crate) fn drain_unread(&self) -> Vec<(OpKind, Cqe)> {
        let mut slots = self.slots.borrow_mut();
        let mut out = Vec::new();
        for (_, s) in slots.iter_mut() {
            let kind = s.kind;
            out.extend(s.queue.drain(..).map(|c| (kind, c)));
        }
        out
    }

    /// Records a completion for op `key`.
    pub(crate) fn complete(&self, key: usize, cqe: Cqe) -> Dispatched {
        let mut slots = self.slots.borrow_mut();
        let mut out = Dispatched {
            waker: None,
            discard: None,
            freed: None,
        };
        let Some(slot) = slots.get_mut(key) else {
            tracing::error!(key, "completion for an unknown op");
            return out;
        };
        let last = !cqe_more(cqe.flags);
        if slot.cancelled {
            out.discard = Some((slot.kind, cqe));
            if last {
                out.freed = slots.remove(key).resources;
            }
            return out;
        }
        slot.queue.push_back(cqe);
        slot.done |= last;
        out.waker = slot.waker.take();
        out
    }
}

/// A handle to one submitted operation; see the [module docs](self).
pub(crate) struct Op {
    key: usize,
    /// Ops belong to their core's thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Op {
    /// Queues `entry` (its `user_data` is set here) and records the op.
    ///
    /// # Safety
    /// Every pointer in `entry` must point into `resources` (heap memory that does not move when
    /// the box moves), into memory that outlives the core, or at an fd kept open by `resources`
    /// or by the caller until the op completes.
    pub(crate) unsafe fn submit(
        entry: squeue::Entry,
        kind: OpKind,
        resources: Option<Box<dyn Any>>,
    ) -> io::Result<Self> {
        with_core(|core| {
            let key = core.ops.slots.borrow_mut().insert(Slot {
                kind,
                queue: VecDeque::new(),
                waker: None,
                done: false,
                cancelled: false,
                resources,
            });
            let entry = entry.user_data(key as u64);
            // SAFETY: the slot now owns `resources` until the final completion (see `Drop`), and
            // the caller guarantees the entry only points into them or at longer-lived memory.
            match unsafe { core.push(&entry) } {
                Ok(()) => {
                    core.counters().add_submissions(1);
                    Ok(Self {
                        key,
                        _not_send: std::marker::PhantomData,
                    })
                }
                Err(e) => {
                    let slot = core.ops.slots.borrow_mut().remove(key);
                    drop(slot);
                    Err(e)
                }
            }
        })
    }

    /// The next completion; `None` once the op finished and every completion was read.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Cqe>> {
        with_core(|core| {
            let mut slots = core.ops.slots.borrow_mut();
            let slot = &mut slots[self.key];
            if let Some(c) = slot.queue.pop_front() {
                return Poll::Ready(Some(c));
            }
            if slot.done {
                return Poll::Ready(None);
            }
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }

    /// Waits for the next completion (for single-shot ops: the only one).
    pub(crate) async fn next(&mut self) -> Option<Cqe> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Whether the op finished and every completion was read.
    pub(crate) fn is_finished(&self) -> bool {
        with_core(|core| {
            let slots = core.ops.slots.borrow();
            let s = &slots[self.key];
            s.done && s.queue.is_empty()
        })
    }

    /// Takes the op's resources back once it finished. `None` if it is still in flight or owns
    /// no resources of type `T`.
    pub(crate) fn take_resources<T: 'static>(&mut self) -> Option<Box<T>> {
        with_core(|core| {
            let mut slots = core.ops.slots.borrow_mut();
            let s = &mut slots[self.key];
            if !s.done {
                return None;
            }
            s.resources.take()?.downcast::<T>().ok()
        })
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = super::try_with_core(|core| {
            let (unread, freed) = {
                let mut slots = core.ops.slots.borrow_mut();
                let slot = &mut slots[self.key];
                let kind = slot.kind;
                let unread: Vec<(OpKind, Cqe)> = slot.queue.drain(..).map(|c| (kind, c)).collect();
                if slot.done {
                    (unread, slots.remove(self.key).resources)
                } else {
                    slot.cancelled = true;
                    slot.waker = None;
                    (unread, None)
                }
            };
            let cancel = freed.is_none() && {
                let slots = core.ops.slots.borrow();
                slots.get(self.key).is_some_and(|s| s.cancelled)
            };
            drop(freed);
            for (kind, cqe) in unread {
                core.discard(kind, cqe);
            }
            if cancel {
                core.cancel(self.key as u64);
            }
        });
    }
}
