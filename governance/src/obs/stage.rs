//! Span and tracer hooks as one pipeline stage ([`ObsLayer`]).
//!
//! One future does both, span outermost, then the tracer, each part optional (a span and a
//! tracer as two stages would nest two futures around every call). Metrics are not part of it: they are a [`CallHook`](crate::CallHook)
//! ([`MetricsHook`](super::MetricsHook)) that shares a stage with the other synchronous hooks,
//! just inside this one.

use std::fmt::Display;
use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use super::trace::{CallInfo, CallOutcome, CallStatus, Tracer};
use crate::{Layer, Service};

/// A tracer that does nothing: the type of [`ObsLayer`] without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTracer;

impl<Cx> Tracer<Cx> for NoTracer {
    fn start(&self, _: &Cx) {}
    fn finish(&self, _: &Cx, _: &CallOutcome<'_>) {}
}

/// Builds [`Observed`] services: an optional `tracing` span and optional tracer hooks around
/// each call.
#[derive(Debug, Clone)]
pub struct ObsLayer<T = NoTracer> {
    side: &'static str,
    span: bool,
    tracer: Option<T>,
}

impl ObsLayer {
    /// Nothing on yet; `side` (`"server"`, `"client"`) names the span's side.
    pub fn new(side: &'static str) -> Self {
        Self {
            side,
            span: false,
            tracer: None,
        }
    }
}

impl<T> ObsLayer<T> {
    /// Runs each call inside an `info`-level `rpc` span with fields `side`, `method`, `peer`,
    /// `seq_id` (recorded at the start, or at the end when only known then), and, at the end,
    /// `status`, `error` and `elapsed_us`. The span is entered on every poll, so events logged
    /// by inner stages and the handler nest in it.
    pub fn span(mut self, on: bool) -> Self {
        self.span = on;
        self
    }

    /// Calls `tracer` around each call: `start` before, `finish` after, `cancelled` if the
    /// call's future is dropped first.
    pub fn tracer<T2>(self, tracer: Option<T2>) -> ObsLayer<T2> {
        ObsLayer {
            side: self.side,
            span: self.span,
            tracer,
        }
    }
}

impl<S, T> Layer<S> for ObsLayer<T> {
    type Service = Observed<S, T>;

    fn layer(self, inner: S) -> Self::Service {
        Observed { inner, layer: self }
    }
}

/// A service adding a span and tracer hooks to its inner service's calls.
#[derive(Debug)]
pub struct Observed<S, T> {
    inner: S,
    layer: ObsLayer<T>,
}

/// What a call records when it ends, or when it is dropped before.
struct Guard<'a, Cx, T: Tracer<Cx>> {
    start: Instant,
    tracer: Option<&'a T>,
    done: bool,
    _cx: std::marker::PhantomData<fn(&Cx)>,
}

impl<Cx, T: Tracer<Cx>> Drop for Guard<'_, Cx, T> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(t) = self.tracer {
                t.cancelled(self.start.elapsed());
            }
        }
    }
}

impl<T> ObsLayer<T> {
    /// Runs `inner`'s call of `req` inside this stage's span and tracer hooks: what an
    /// [`Observed`] service does, for a pipeline that holds its stages side by side.
    pub fn around<'s, 'c, Cx, Req, S>(
        &'s self,
        inner: &'s S,
        cx: &'c mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, S::Error>> + use<'s, 'c, Cx, Req, S, T>
    where
        Cx: CallInfo,
        S: Service<Cx, Req>,
        S::Error: Display,
        T: Tracer<Cx>,
    {
        let l = self;
        let span = if l.span {
            let span = tracing::info_span!(
                "rpc",
                side = l.side,
                method = cx.method(),
                peer = tracing::field::Empty,
                seq_id = tracing::field::Empty,
                status = tracing::field::Empty,
                error = tracing::field::Empty,
                elapsed_us = tracing::field::Empty,
            );
            if let Some(peer) = cx.peer() {
                span.record("peer", tracing::field::display(peer));
            }
            if let Some(seq) = cx.seq_id() {
                span.record("seq_id", seq);
            }
            span
        } else {
            tracing::Span::none()
        };
        let record = span.clone();
        async move {
            if let Some(t) = &l.tracer {
                t.start(cx);
            }
            let mut guard = Guard {
                start: Instant::now(),
                tracer: l.tracer.as_ref(),
                done: false,
                _cx: std::marker::PhantomData,
            };
            let r = inner.call(cx, req).await;
            guard.done = true;
            let elapsed = guard.start.elapsed();
            if let Some(t) = &l.tracer {
                let outcome = CallOutcome {
                    status: if r.is_ok() {
                        CallStatus::Ok
                    } else {
                        CallStatus::Error
                    },
                    error: r.as_ref().err().map(|e| e as &dyn Display),
                    elapsed,
                };
                t.finish(cx, &outcome);
            }
            if l.span {
                // A client learns the instance and the seq id during the call.
                if let Some(p) = cx.peer() {
                    record.record("peer", tracing::field::display(p));
                }
                if let Some(s) = cx.seq_id() {
                    record.record("seq_id", s);
                }
                let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                record.record("elapsed_us", us);
                match &r {
                    Ok(_) => {
                        record.record("status", "ok");
                    }
                    Err(e) => {
                        record.record("status", "error");
                        record.record("error", tracing::field::display(e));
                    }
                }
            }
            r
        }
        .instrument(span)
    }
}

impl<Cx, Req, S, T> Service<Cx, Req> for Observed<S, T>
where
    Cx: CallInfo,
    S: Service<Cx, Req>,
    S::Error: Display,
    T: Tracer<Cx>,
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
