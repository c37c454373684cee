//! Span, tracer hooks and metrics as one pipeline stage ([`ObsLayer`]).
//!
//! Stacking [`TraceLayer`](super::TraceLayer), [`TracerLayer`](super::TracerLayer) and
//! [`MetricsLayer`](super::MetricsLayer) nests three futures (three more with optional
//! wrappers) around every call; deep client pipelines then make the future of code awaiting a
//! call exceed the compiler's default query depth. This stage does the same work in one future,
//! in the same order (span outermost, then the tracer, then the metrics), with every part
//! optional.

use std::fmt::Display;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::metrics::{CoreMetrics, ErrorKind, InFlight, MethodMetrics, OneKind, CANCELLED};
use super::trace::{CallInfo, CallOutcome, CallStatus, Tracer};
use crate::{Layer, Service};

/// A tracer that does nothing: the type of [`ObsLayer`] without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTracer;

impl<Cx> Tracer<Cx> for NoTracer {
    fn start(&self, _: &Cx) {}
    fn finish(&self, _: &Cx, _: &CallOutcome<'_>) {}
}

/// Builds [`Observed`] services: an optional `tracing` span, optional tracer hooks and
/// optional metrics around each call.
#[derive(Debug, Clone)]
pub struct ObsLayer<T = NoTracer, K = OneKind> {
    side: &'static str,
    span: bool,
    tracer: Option<T>,
    metrics: Option<Rc<CoreMetrics>>,
    kind: K,
}

impl ObsLayer {
    /// Nothing on yet; `side` (`"server"`, `"client"`) names the span's side.
    pub fn new(side: &'static str) -> Self {
        Self {
            side,
            span: false,
            tracer: None,
            metrics: None,
            kind: OneKind,
        }
    }
}

impl<T, K> ObsLayer<T, K> {
    /// Runs each call in an `rpc` span, as [`super::Trace`] does.
    pub fn span(mut self, on: bool) -> Self {
        self.span = on;
        self
    }

    /// Calls `tracer` around each call, as [`super::TracerService`] does.
    pub fn tracer<T2>(self, tracer: Option<T2>) -> ObsLayer<T2, K> {
        ObsLayer {
            side: self.side,
            span: self.span,
            tracer,
            metrics: self.metrics,
            kind: self.kind,
        }
    }

    /// Records into this core's `metrics`, as [`super::Metrics`] does.
    pub fn metrics(mut self, metrics: Option<Rc<CoreMetrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Labels errors with `kind` in the metrics.
    pub fn error_kind<K2>(self, kind: K2) -> ObsLayer<T, K2> {
        ObsLayer {
            side: self.side,
            span: self.span,
            tracer: self.tracer,
            metrics: self.metrics,
            kind,
        }
    }
}

impl<S, T, K> Layer<S> for ObsLayer<T, K> {
    type Service = Observed<S, T, K>;

    fn layer(self, inner: S) -> Self::Service {
        Observed { inner, layer: self }
    }
}

/// A service adding a span, tracer hooks and metrics to its inner service's calls.
#[derive(Debug)]
pub struct Observed<S, T, K> {
    inner: S,
    layer: ObsLayer<T, K>,
}

/// What a call records when it ends, or when it is dropped before.
struct Guard<'a, Cx, T: Tracer<Cx>> {
    start: Instant,
    method: Option<Rc<MethodMetrics>>,
    _in_flight: Option<InFlight>,
    tracer: Option<&'a T>,
    done: bool,
    _cx: std::marker::PhantomData<fn(&Cx)>,
}

impl<Cx, T: Tracer<Cx>> Drop for Guard<'_, Cx, T> {
    fn drop(&mut self) {
        if !self.done {
            let elapsed: Duration = self.start.elapsed();
            if let Some(m) = &self.method {
                m.record(elapsed, Some(CANCELLED));
            }
            if let Some(t) = self.tracer {
                t.cancelled(elapsed);
            }
        }
    }
}

impl<Cx, Req, S, T, K> Service<Cx, Req> for Observed<S, T, K>
where
    Cx: CallInfo,
    S: Service<Cx, Req>,
    S::Error: Display,
    T: Tracer<Cx>,
    K: ErrorKind<S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        let l = &self.layer;
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
                // The turn's clock: latency counts from the start of the loop turn in which the
                // call began (at most a turn early), one clock read per call instead of two.
                start: ringrpc_engine::turn_now(),
                method: l.metrics.as_ref().map(|m| m.method(cx.method())),
                _in_flight: l.metrics.as_ref().map(CoreMetrics::in_flight_guard),
                tracer: l.tracer.as_ref(),
                done: false,
                _cx: std::marker::PhantomData,
            };
            let r = self.inner.call(cx, req).await;
            guard.done = true;
            let elapsed = guard.start.elapsed();
            if let Some(m) = &guard.method {
                m.record(elapsed, r.as_ref().err().map(|e| l.kind.kind(e)));
            }
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
