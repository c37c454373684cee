//! Single-core synchronisation: a one-shot channel and a notification, both `!Send`.
//!
//! Everything on a core runs on one thread, so these need no atomics: an `Rc<RefCell<_>>` and a
//! stored `Waker` are enough. They work on any engine (they only use the waker they are polled
//! with). Cross-core code uses [`crate::RuntimeHandle::run_on`] instead.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A one-shot channel on one core.
pub mod oneshot {
    use super::*;

    struct Inner<T> {
        value: Option<T>,
        waker: Option<Waker>,
        closed: bool,
    }

    /// Creates a channel carrying one value.
    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let inner = Rc::new(RefCell::new(Inner {
            value: None,
            waker: None,
            closed: false,
        }));
        (
            Sender {
                inner: inner.clone(),
            },
            Receiver { inner },
        )
    }

    /// The sending side; dropping it unsent resolves the receiver to `None`.
    pub struct Sender<T> {
        inner: Rc<RefCell<Inner<T>>>,
    }

    impl<T> std::fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("oneshot::Sender")
        }
    }

    impl<T> Sender<T> {
        /// Sends the value. Returns it back if the receiver is gone.
        pub fn send(self, value: T) -> Result<(), T> {
            let mut inner = self.inner.borrow_mut();
            if Rc::strong_count(&self.inner) == 1 {
                return Err(value);
            }
            inner.value = Some(value);
            Ok(())
            // Drop wakes the receiver.
        }

        /// Whether the receiver was dropped.
        pub fn is_closed(&self) -> bool {
            Rc::strong_count(&self.inner) == 1
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let waker = {
                let mut inner = self.inner.borrow_mut();
                inner.closed = true;
                inner.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// The receiving side: resolves to the value, or `None` if the sender was dropped unsent.
    pub struct Receiver<T> {
        inner: Rc<RefCell<Inner<T>>>,
    }

    impl<T> std::fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("oneshot::Receiver")
        }
    }

    impl<T> Future for Receiver<T> {
        type Output = Option<T>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut inner = self.inner.borrow_mut();
            if let Some(v) = inner.value.take() {
                return Poll::Ready(Some(v));
            }
            if inner.closed {
                return Poll::Ready(None);
            }
            match &inner.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
    }
}

/// Wakes every task waiting on it; a notification sent while nobody waits is kept (one permit),
/// so a waiter that checks state, then waits, never misses a change made in between.
///
/// Waiters live in a slab and a dropped [`Notified`] removes its entry, so a waiter that is
/// raced against something else and dropped (a connection's `recv` against shutdown, once per
/// read) leaves nothing behind.
#[derive(Debug, Default)]
pub struct Notify {
    permit: Cell<bool>,
    /// Bumped by every [`Notify::notify`] that woke waiters; a waiter registered under an older
    /// generation has been notified.
    generation: Cell<u64>,
    waiters: RefCell<slab::Slab<Waker>>,
}

impl Notify {
    /// A notification with no permit and no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters, or stores a permit for the next one.
    pub fn notify(&self) {
        if self.waiters.borrow().is_empty() {
            self.permit.set(true);
            return;
        }
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Resolves at the next notification (or at once, consuming a stored permit).
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            registered: None,
        }
    }
}

/// The future returned by [`Notify::notified`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Notified<'a> {
    notify: &'a Notify,
    /// Slab key and generation, once registered.
    registered: Option<(usize, u64)>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let notify = self.notify;
        match self.registered {
            Some((key, generation)) => {
                if notify.generation.get() != generation {
                    self.registered = None;
                    return Poll::Ready(());
                }
                let mut waiters = notify.waiters.borrow_mut();
                if let Some(w) = waiters.get_mut(key) {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
                Poll::Pending
            }
            None => {
                if notify.permit.replace(false) {
                    return Poll::Ready(());
                }
                let key = notify.waiters.borrow_mut().insert(cx.waker().clone());
                self.registered = Some((key, notify.generation.get()));
                Poll::Pending
            }
        }
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some((key, generation)) = self.registered {
            if self.notify.generation.get() == generation {
                self.notify.waiters.borrow_mut().try_remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let n = Notify::new();
        for _ in 0..1000 {
            let mut w = n.notified();
            assert!(poll_once(&mut w).is_pending());
        }
        assert!(n.waiters.borrow().is_empty());
    }

    #[test]
    fn notify_wakes_registered_waiters_and_keeps_a_permit_otherwise() {
        let n = Notify::new();
        let mut a = n.notified();
        let mut b = n.notified();
        assert!(poll_once(&mut a).is_pending());
        assert!(poll_once(&mut b).is_pending());
        n.notify();
        assert!(poll_once(&mut a).is_ready());
        assert!(poll_once(&mut b).is_ready());
        n.notify();
        let mut c = n.notified();
        assert!(poll_once(&mut c).is_ready());
        let mut d = n.notified();
        assert!(poll_once(&mut d).is_pending());
    }

    #[test]
    fn oneshot_delivers_or_reports_a_dropped_sender() {
        let (tx, mut rx) = oneshot::channel::<u8>();
        assert!(poll_once(&mut rx).is_pending());
        tx.send(7).unwrap();
        assert_eq!(poll_once(&mut rx), Poll::Ready(Some(7)));
        let (tx, mut rx) = oneshot::channel::<u8>();
        drop(tx);
        assert_eq!(poll_once(&mut rx), Poll::Ready(None));
    }
}
