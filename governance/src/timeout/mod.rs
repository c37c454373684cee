//! The timeout layer: a call fails with a timeout error when its deadline passes.
//!
//! The deadline is the earlier of the context's deadline (the caller's, on a server) and
//! `now + timeout` from this layer's configuration. It is written back into the context, so inner
//! layers and the handler see the deadline that will actually be enforced. On expiry the inner
//! future is dropped, which cancels it.

use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use ringrpc_engine::time::timeout_at;
use ringrpc_engine::Engine;

use crate::{CallDeadline, Layer, Service};

/// The call did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rpc deadline exceeded after {after:?}")]
pub struct TimeoutError {
    /// The time from the call's start to its deadline.
    pub after: Duration,
}

impl TimeoutError {
    /// The timeout of a call that started at `start` and had `deadline`.
    pub fn between(start: Instant, deadline: Instant) -> Self {
        Self {
            after: deadline.saturating_duration_since(start),
        }
    }
}

/// The deadline of a call that starts at `start` and may take `limit` at most, under the
/// caller's `deadline` if it has one: the earlier of the two.
pub fn deadline_within(start: Instant, limit: Duration, deadline: Option<Instant>) -> Instant {
    let own = start + limit;
    deadline.map_or(own, |d| d.min(own))
}

/// Configuration of the timeout layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutConfig {
    /// Longest time a call may take. `None`: only the context's deadline applies.
    pub timeout: Option<Duration>,
}

/// Builds [`Timeout`] services on engine `E`.
#[derive(Debug)]
pub struct TimeoutLayer<E> {
    config: TimeoutConfig,
    _engine: PhantomData<E>,
}

impl<E> Clone for TimeoutLayer<E> {
    fn clone(&self) -> Self {
        Self {
            config: self.config,
            _engine: PhantomData,
        }
    }
}

impl<E> TimeoutLayer<E> {
    /// A layer enforcing `config`.
    pub fn new(config: TimeoutConfig) -> Self {
        Self {
            config,
            _engine: PhantomData,
        }
    }
}

impl<E: Engine> TimeoutLayer<E> {
    /// Runs `inner`'s call of `req` under this layer's deadline: the earlier of the context's
    /// and `now + timeout`, written back into the context; at the deadline the call is dropped
    /// and fails with [`TimeoutError`]. What a [`Timeout`] service does, for a pipeline that
    /// holds its stages side by side.
    pub fn around<'s, 'c, Cx, Req, S>(
        &'s self,
        inner: &'s S,
        cx: &'c mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, S::Error>> + use<'s, 'c, Cx, Req, S, E>
    where
        Cx: CallDeadline,
        S: Service<Cx, Req>,
        S::Error: From<TimeoutError>,
    {
        // The turn's clock: a deadline at most one loop turn early, without a clock read per call.
        let start = ringrpc_engine::turn_now();
        let deadline = match self.config.timeout {
            Some(limit) => Some(deadline_within(start, limit, cx.deadline())),
            None => cx.deadline(),
        };
        cx.set_deadline(deadline);
        let fut = inner.call(cx, req);
        async move {
            let Some(deadline) = deadline else {
                return fut.await;
            };
            match timeout_at::<E, _>(deadline, fut).await {
                Ok(r) => r,
                Err(_) => Err(TimeoutError::between(start, deadline).into()),
            }
        }
    }
}

impl<E, S> Layer<S> for TimeoutLayer<E> {
    type Service = Timeout<S, E>;

    fn layer(self, inner: S) -> Timeout<S, E> {
        Timeout { inner, layer: self }
    }
}

/// A service whose calls fail with [`TimeoutError`] (converted into `S::Error`) at the deadline.
#[derive(Debug)]
pub struct Timeout<S, E> {
    inner: S,
    layer: TimeoutLayer<E>,
}

impl<Cx, Req, S, E> Service<Cx, Req> for Timeout<S, E>
where
    Cx: CallDeadline,
    S: Service<Cx, Req>,
    S::Error: From<TimeoutError>,
    E: Engine,
{
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        self.layer.around(&self.inner, cx, req)
    }
}
