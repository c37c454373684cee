//! Catching a call's panic as a value, so that one handler's bug fails only its own call.
//!
//! A panic in a handler would otherwise unwind through the connection task (killing every call
//! multiplexed on the connection) or the core's executor. [`CatchUnwind`] turns it into an
//! `Err` the connection answers with an `INTERNAL_ERROR` exception.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future that resolves to `Err(payload)` instead of unwinding when the future inside
    /// panics; see [`CatchUnwind::new`].
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> CatchUnwind<F> {
    /// Wraps `future`. After a panic the wrapped future is never polled again; it is dropped
    /// with the wrapper (a panicked async block has already dropped what it held).
    pub(crate) fn new(future: F) -> Self {
        Self { future }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        // AssertUnwindSafe: after a panic nothing observes the future's state again (it is
        // only dropped), and the call's shared state (its connection's counters) is updated
        // by the caller whatever the outcome.
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The message a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let n = 7;
        match poll_once(CatchUnwind::new(async move {
            if n == 7 {
                panic!("call {n} broke");
            }
            n
        })) {
            Poll::Ready(Err(p)) => assert_eq!(panic_message(&*p), "call 7 broke"),
            other => panic!(
                "expected a caught panic, got {:?}",
                other.map(|r| r.is_ok())
            ),
        }
        match poll_once(CatchUnwind::new(async { panic!("static") })) {
            Poll::Ready(Err::<(), _>(p)) => assert_eq!(panic_message(&*p), "static"),
            _ => panic!("expected a caught panic"),
        }
        assert!(matches!(
            poll_once(CatchUnwind::new(async { 5 })),
            Poll::Ready(Ok(5))
        ));
    }
}
