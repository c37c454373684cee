//! Tracing per call: a `tracing` span per call ([`TraceLayer`]) and Kitex-style tracer hooks
//! ([`Tracer`], [`TracerLayer`]).
//!
//! Both read the call through [`CallInfo`]: the method, and where the context knows them the
//! peer (the caller on a server, the chosen instance on a client) and the sequence id.

use std::fmt::{self, Display};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::{CallMethod, Layer, Service};

/// What tracing reads from a call's context. Only the method is required.
pub trait CallInfo: CallMethod {
    /// The other end: the caller on a server, the instance called on a client.
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
    /// The frame's sequence id, once known.
    fn seq_id(&self) -> Option<i32> {
        None
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// It returned a response.
    Ok,
    /// It returned an error.
    Error,
}

impl CallStatus {
    /// `"ok"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// The outcome handed to [`Tracer::finish`].
pub struct CallOutcome<'a> {
    /// Ok or error.
    pub status: CallStatus,
    /// The error, if any.
    pub error: Option<&'a dyn Display>,
    /// Time from `start` to the end of the call.
    pub elapsed: Duration,
}

impl fmt::Debug for CallOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOutcome")
            .field("status", &self.status)
            .field("error", &self.error.map(ToString::to_string))
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// Hooks around every call, like Kitex's `stats.Tracer`: `start` before the call goes in,
/// `finish` when it comes back. A call whose future is dropped first (a timeout outside, a
/// losing backup request, shutdown) gets [`Tracer::cancelled`] instead of `finish`, since its
/// context is no longer reachable then.
pub trait Tracer<Cx> {
    /// The call is about to start.
    fn start(&self, cx: &Cx);
    /// The call finished.
    fn finish(&self, cx: &Cx, outcome: &CallOutcome<'_>);
    /// The call was dropped before finishing, `elapsed` after `start`. Default: nothing.
    fn cancelled(&self, elapsed: Duration) {
        let _ = elapsed;
    }
}

impl<Cx, T: Tracer<Cx> + ?Sized> Tracer<Cx> for std::rc::Rc<T> {
    fn start(&self, cx: &Cx) {
        (**self).start(cx);
    }
    fn finish(&self, cx: &Cx, outcome: &CallOutcome<'_>) {
        (**self).finish(cx, outcome);
    }
    fn cancelled(&self, elapsed: Duration) {
        (**self).cancelled(elapsed);
    }
}

impl<Cx, T: Tracer<Cx> + ?Sized> Tracer<Cx> for std::sync::Arc<T> {
    fn start(&self, cx: &Cx) {
        (**self).start(cx);
    }
    fn finish(&self, cx: &Cx, outcome: &CallOutcome<'_>) {
        (**self).finish(cx, outcome);
    }
    fn cancelled(&self, elapsed: Duration) {
        (**self).cancelled(elapsed);
    }
}

/// Builds [`TracerService`]s calling one tracer.
#[derive(Debug, Clone)]
pub struct TracerLayer<T> {
    tracer: T,
}

impl<T> TracerLayer<T> {
    /// A layer calling `tracer` around every call.
    pub fn new(tracer: T) -> Self {
        Self { tracer }
    }
}

impl<S, T> Layer<S> for TracerLayer<T> {
    type Service = TracerService<S, T>;

    fn layer(self, inner: S) -> Self::Service {
        TracerService {
            inner,
            tracer: self.tracer,
        }
    }
}

/// A service calling a [`Tracer`] around its inner service's calls.
#[derive(Debug)]
pub struct TracerService<S, T> {
    inner: S,
    tracer: T,
}

/// Calls `cancelled` unless disarmed.
struct CancelGuard<'a, Cx, T: Tracer<Cx>> {
    tracer: &'a T,
    start: Instant,
    armed: bool,
    _cx: std::marker::PhantomData<fn(&Cx)>,
}

impl<Cx, T: Tracer<Cx>> Drop for CancelGuard<'_, Cx, T> {
    fn drop(&mut self) {
        if self.armed {
            self.tracer.cancelled(self.start.elapsed());
        }
    }
}

impl<Cx, Req, S, T> Service<Cx, Req> for TracerService<S, T>
where
    S: Service<Cx, Req>,
    S::Error: Display,
    T: Tracer<Cx>,
{
    type Response = S::Response;
    type Error = S::Error;

    async fn call(&self, cx: &mut Cx, req: Req) -> Result<Self::Response, Self::Error> {
        self.tracer.start(cx);
        let mut guard = CancelGuard {
            tracer: &self.tracer,
            start: Instant::now(),
            armed: true,
            _cx: std::marker::PhantomData,
        };
        let r = self.inner.call(cx, req).await;
        guard.armed = false;
        let outcome = CallOutcome {
            status: if r.is_ok() {
                CallStatus::Ok
            } else {
                CallStatus::Error
            },
            error: r.as_ref().err().map(|e| e as &dyn Display),
            elapsed: guard.start.elapsed(),
        };
        self.tracer.finish(cx, &outcome);
        r
    }
}

/// Builds [`Trace`] services: one `tracing` span per call.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    side: &'static str,
}

impl TraceLayer {
    /// Spans named `rpc` with `side` (`"server"` or `"client"`) as a field.
    pub fn new(side: &'static str) -> Self {
        Self { side }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(self, inner: S) -> Self::Service {
        Trace {
            inner,
            side: self.side,
        }
    }
}

/// A service running each call inside an `info`-level `rpc` span with fields `side`,
/// `method`, `peer`, `seq_id` (recorded at the start, or at the end when only known then), and, at the end, `status`, `error` and `elapsed_us`. The span
/// is entered on every poll, so events logged by inner layers and the handler nest in it.
#[derive(Debug)]
pub struct Trace<S> {
    inner: S,
    side: &'static str,
}

impl<Cx, Req, S> Service<Cx, Req> for Trace<S>
where
    Cx: CallInfo,
    S: Service<Cx, Req>,
    S::Error: Display,
{
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        let span = tracing::info_span!(
            "rpc",
            side = self.side,
            method = cx.method(),
            peer = tracing::field::Empty,
            seq_id = tracing::field::Empty,
            status = tracing::field::Empty,
            error = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let (peer, seq) = (cx.peer(), cx.seq_id());
        if let Some(peer) = peer {
            span.record("peer", tracing::field::display(peer));
        }
        if let Some(seq) = seq {
            span.record("seq_id", seq);
        }
        let start = Instant::now();
        let record = span.clone();
        async move {
            let r = self.inner.call(cx, req).await;
            // A client learns the instance and the seq id during the call.
            if peer.is_none() {
                if let Some(p) = cx.peer() {
                    record.record("peer", tracing::field::display(p));
                }
            }
            if seq.is_none() {
                if let Some(s) = cx.seq_id() {
                    record.record("seq_id", s);
                }
            }
            let elapsed = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            record.record("elapsed_us", elapsed);
            match &r {
                Ok(_) => {
                    record.record("status", "ok");
                }
                Err(e) => {
                    record.record("status", "error");
                    record.record("error", tracing::field::display(e));
                }
            }
            r
        }
        .instrument(span)
    }
}
