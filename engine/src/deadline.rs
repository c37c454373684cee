//! A deadline that only moves later, watched by one long-lived timer.
//!
//! A connection's idle, read and write deadlines move forward with every receive or send.
//! Arming a fresh timer for each I/O (a heap push and pop per receive) costs more than the
//! I/O's bookkeeping itself, for a timer that almost never fires. Instead the owner keeps the
//! real deadline in its own state (an `Instant` in a `Cell`, updated for free) and asks
//! [`LazyDeadline::poll_expired`] whether it has passed; the timer stays armed at the deadline
//! it was created for and, when it fires and the deadline has moved on, is re-armed once for the
//! new one. Netty's `IdleStateHandler` works the same way. A deadline that moves forward on
//! every I/O thus costs at most one timer per timeout period instead of one per I/O.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::Engine;

/// One lazily re-armed timer for a deadline that never moves earlier while it is armed.
pub struct LazyDeadline<E: Engine> {
    /// The armed timer and the deadline it was armed for.
    armed: Option<(Instant, Pin<Box<E::Sleep>>)>,
    /// Timers armed so far (for tests and diagnostics).
    arms: u64,
}

impl<E: Engine> std::fmt::Debug for LazyDeadline<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyDeadline")
            .field("armed_for", &self.armed.as_ref().map(|(at, _)| *at))
            .field("arms", &self.arms)
            .finish()
    }
}

impl<E: Engine> Default for LazyDeadline<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Engine> LazyDeadline<E> {
    /// No timer armed yet.
    pub fn new() -> Self {
        Self {
            armed: None,
            arms: 0,
        }
    }

    /// Ready once the deadline has passed; otherwise registers `cx` to be woken by the timer.
    ///
    /// `deadline()` is the real deadline now (`None`: none at the moment). It is read only when
    /// no timer is armed and when the armed one fires, so it must never move earlier than the
    /// deadline of a timer already armed: an earlier one would be noticed only when that timer
    /// fires. A timer that fires for a deadline that is gone (`None`) is dropped.
    pub fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        mut deadline: impl FnMut() -> Option<Instant>,
    ) -> Poll<()> {
        loop {
            let fired_for = match &mut self.armed {
                Some((at, sleep)) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let at = *at;
                    self.armed = None;
                    Some(at)
                }
                None => None,
            };
            let Some(due) = deadline() else {
                return Poll::Pending;
            };
            if fired_for.is_some_and(|at| due <= at) {
                return Poll::Ready(());
            }
            // First look, or the deadline moved on since the timer was armed: arm it once for
            // the deadline as it is now (a deadline already past fires on the first poll).
            self.armed = Some((due, Box::pin(E::sleep_until(due))));
            self.arms += 1;
        }
    }

    /// Timers armed so far: one per period in which the deadline moved, not one per move.
    pub fn arms(&self) -> u64 {
        self.arms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Baseline;
    use crate::uring::Uring;
    use crate::RuntimeConfig;
    use std::cell::Cell;
    use std::future::poll_fn;
    use std::rc::Rc;
    use std::time::Duration;

    /// A deadline pushed 2 ms later every millisecond for 200 ms never expires and costs a
    /// handful of timers; once it stops moving it expires at its last value.
    fn moving_deadline<E: Engine>() -> (u64, Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = E::launch(RuntimeConfig::with_cores(1), move |_| {
            let tx = tx.clone();
            async move {
                const TIMEOUT: Duration = Duration::from_millis(20);
                let start = Instant::now();
                let last_activity = Rc::new(Cell::new(start));
                let mover = last_activity.clone();
                E::spawn(async move {
                    while start.elapsed() < Duration::from_millis(200) {
                        E::sleep(Duration::from_millis(1)).await;
                        mover.set(Instant::now());
                    }
                });
                let mut deadline = LazyDeadline::<E>::new();
                poll_fn(|cx| deadline.poll_expired(cx, || Some(last_activity.get() + TIMEOUT)))
                    .await;
                let expired_after_last_move = last_activity.get().elapsed();
                let _ = tx.send((deadline.arms(), expired_after_last_move));
            }
        })
        .unwrap();
        let out = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        runtime.stop(Duration::ZERO);
        out
    }

    #[test]
    fn a_moving_deadline_rearms_per_period_not_per_move() {
        for (name, (arms, after)) in [
            ("uring", moving_deadline::<Uring>()),
            ("baseline", moving_deadline::<Baseline>()),
        ] {
            // ~200 moves; one timer per 20 ms period at most (10), plus the first and last.
            assert!((2..=15).contains(&arms), "{name}: {arms} timers armed");
            assert!(
                after >= Duration::from_millis(19),
                "{name}: expired {after:?} after the last move"
            );
        }
    }

    #[test]
    fn a_deadline_that_goes_away_disarms_and_never_fires() {
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = Baseline::launch(RuntimeConfig::with_cores(1), move |_| {
            let tx = tx.clone();
            async move {
                let due = Rc::new(Cell::new(Some(Instant::now() + Duration::from_millis(10))));
                let gone = due.clone();
                Baseline::spawn(async move {
                    Baseline::sleep(Duration::from_millis(5)).await;
                    gone.set(None);
                });
                let mut deadline = LazyDeadline::<Baseline>::new();
                let waited = crate::time::timeout::<Baseline, _>(
                    Duration::from_millis(100),
                    poll_fn(|cx| deadline.poll_expired(cx, || due.get())),
                )
                .await;
                let _ = tx.send((waited.is_err(), deadline.armed.is_none()));
            }
        })
        .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            (true, true)
        );
        runtime.stop(Duration::ZERO);
    }
}
