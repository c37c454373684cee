//! Timers above the engine: a timeout around any future, on any [`Engine`].
//!
//! The timer is armed lazily: a [`Timeout`] polls its future first and only creates the
//! engine's sleep when the future is not ready. Most RPC handlers answer on their first poll,
//! so most deadlines cost no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::Engine;

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// A future with a deadline; see [`timeout`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F, E: Engine> {
        #[pin]
        future: F,
        deadline: Instant,
        // Boxed so it can be created after the first poll without pinning gymnastics; only
        // futures that wait pay for it.
        sleep: Option<Pin<Box<E::Sleep>>>,
    }
}

impl<F: Future, E: Engine> Future for Timeout<F, E> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(E::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `future` until it completes or `duration` passes. Dropping `future` on expiry is how it
/// is cancelled, so it must be cancel-safe (every engine operation is).
pub fn timeout<E: Engine, F: Future>(duration: Duration, future: F) -> Timeout<F, E> {
    timeout_at::<E, F>(Instant::now() + duration, future)
}

/// Runs `future` until it completes or `deadline` arrives.
pub fn timeout_at<E: Engine, F: Future>(deadline: Instant, future: F) -> Timeout<F, E> {
    Timeout {
        future,
        deadline,
        sleep: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Baseline;
    use crate::uring::Uring;
    use std::task::Waker;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_ready_future_arms_no_timer() {
        // Outside any runtime creating either engine's sleep would panic: a ready future must
        // complete without one.
        let r = poll_once(timeout::<Uring, _>(Duration::from_secs(1), async { 7 }));
        assert_eq!(r, Poll::Ready(Ok(7)));
        let r = poll_once(timeout::<Baseline, _>(Duration::from_secs(1), async { 8 }));
        assert_eq!(r, Poll::Ready(Ok(8)));
    }
}
