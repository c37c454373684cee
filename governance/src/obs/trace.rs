//! What per-call tracing reads and reports: [`CallInfo`] (the method, and where the context
//! knows them the peer — the caller on a server, the chosen instance on a client — and the
//! sequence id), Kitex-style [`Tracer`] hooks and the [`CallOutcome`] they get. The stage that
//! runs the `tracing` span and the tracer around a call is [`ObsLayer`](super::ObsLayer).

use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::time::Duration;

use crate::CallMethod;

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
