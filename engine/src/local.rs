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
#[derive(Debug, Default)]
pub struct Notify {
    permit: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A notification with no permit and no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters, or stores a permit for the next one.
    pub fn notify(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        if waiters.is_empty() {
            self.permit.set(true);
        } else {
            for w in waiters {
                w.wake();
            }
        }
    }

    /// Resolves at the next notification (or at once, consuming a stored permit).
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            registered: false,
        }
    }
}

/// The future returned by [`Notify::notified`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Notified<'a> {
    notify: &'a Notify,
    registered: bool,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.permit.replace(false) {
            return Poll::Ready(());
        }
        if self.registered {
            // Woken by notify (which emptied the list) or polled spuriously: ready only if our
            // waker is no longer registered.
            let still_waiting = self
                .notify
                .waiters
                .borrow()
                .iter()
                .any(|w| w.will_wake(cx.waker()));
            if !still_waiting {
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        self.notify.waiters.borrow_mut().push(cx.waker().clone());
        self.registered = true;
        Poll::Pending
    }
}
