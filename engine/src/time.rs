//! Timers above the engine: a timeout around any future, on any [`Engine`].

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
    pub struct Timeout<F, S> {
        #[pin]
        future: F,
        #[pin]
        sleep: S,
    }
}

impl<F: Future, S: Future<Output = ()>> Future for Timeout<F, S> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `future` until it completes or `duration` passes. Dropping `future` on expiry is how it
/// is cancelled, so it must be cancel-safe (every engine operation is).
pub fn timeout<E: Engine, F: Future>(duration: Duration, future: F) -> Timeout<F, E::Sleep> {
    timeout_at::<E, F>(Instant::now() + duration, future)
}

/// Runs `future` until it completes or `deadline` arrives.
pub fn timeout_at<E: Engine, F: Future>(deadline: Instant, future: F) -> Timeout<F, E::Sleep> {
    Timeout {
        future,
        sleep: E::sleep_until(deadline),
    }
}
