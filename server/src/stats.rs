//! Counters of one running server, shared by its cores and readable from any thread.
//!
//! They count what the call metrics cannot see because no call exists yet or any more: a
//! connection dropped while being accepted, the accept loop backing off on resource
//! exhaustion, a handler that panicked (its call is answered with an exception, not finished by
//! the pipeline), and the connections open right now.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct Counters {
    open_connections: AtomicUsize,
    handler_panics: AtomicU64,
    accept_errors: AtomicU64,
    accept_backoffs: AtomicU64,
}

/// A running server's counters; cheap to clone, and still readable after the server stopped
/// (see [`crate::RunningServer::stats`]).
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    counters: Arc<Counters>,
}

impl ServerStats {
    /// Connections open on every core right now.
    pub fn open_connections(&self) -> usize {
        self.counters.open_connections.load(Ordering::Relaxed)
    }

    /// Calls whose handler (or pipeline) panicked; each was answered with an `INTERNAL_ERROR`
    /// exception and its connection kept.
    pub fn handler_panics(&self) -> u64 {
        self.counters.handler_panics.load(Ordering::Relaxed)
    }

    /// Connections that failed while being accepted (reset or aborted by the peer, a failed
    /// socket option) and were dropped; the listener went on accepting at once.
    pub fn accept_errors(&self) -> u64 {
        self.counters.accept_errors.load(Ordering::Relaxed)
    }

    /// Times a core paused accepting because the process or system ran out of descriptors or
    /// memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`).
    pub fn accept_backoffs(&self) -> u64 {
        self.counters.accept_backoffs.load(Ordering::Relaxed)
    }

    /// Counts a connection opened and returns the count before it.
    pub(crate) fn connection_opened(&self) -> usize {
        self.counters
            .open_connections
            .fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection closed (or refused right after [`Self::connection_opened`]).
    pub(crate) fn connection_closed(&self) {
        self.counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn count_handler_panic(&self) {
        self.counters.handler_panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_accept_error(&self) {
        self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_accept_backoff(&self) {
        self.counters
            .accept_backoffs
            .fetch_add(1, Ordering::Relaxed);
    }
}
