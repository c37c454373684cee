//! The interface both engines implement.
//!
//! Server and client code is generic over [`Engine`]; each engine supplies its listener, stream
//! and timer types. Futures here are `!Send`: they run on the core that created them.
//! Buffers passed to the engine are owned (`Bytes`, `Vec<Bytes>`), because on io_uring the kernel
//! may still read them after the future that submitted them was dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::runtime::{EngineError, Runtime, RuntimeConfig};
use crate::CoreId;

/// An I/O engine: how cores run, and TCP and timers on the current core.
pub trait Engine: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// Short name used in logs and benchmark tables (`"uring"`, `"baseline"`).
    const NAME: &'static str;
    /// A per-core TCP listener.
    type Listener: Listener<Stream = Self::Stream>;
    /// A TCP connection owned by the current core.
    type Stream: Stream;
    /// The future returned by [`Engine::sleep_until`].
    type Sleep: Future<Output = ()> + 'static;

    /// Starts one OS thread per core and runs `init(core)` on each as that core's first task.
    ///
    /// The runtime runs until [`Runtime::stop`] (or [`RuntimeHandle::stop`]) is called.
    ///
    /// [`RuntimeHandle::stop`]: crate::RuntimeHandle::stop
    fn launch<F, Fut>(config: RuntimeConfig, init: F) -> Result<Runtime, EngineError>
    where
        F: Fn(CoreId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static;

    /// Spawns a task on the current core.
    ///
    /// # Panics
    /// Outside a core thread of this engine.
    fn spawn<F: Future<Output = ()> + 'static>(future: F);

    /// Tasks alive on the calling core (spawned and not yet finished or dropped); 0 off a core
    /// of this engine. For leak checks: what a component spawned must end when it is dropped.
    fn live_tasks() -> usize;

    /// Whether a connection's [`Outbox`](crate::outbox::Outbox) hands everything queued to one
    /// send (`true`: replies finished in the same loop turn leave in one vectored send) or
    /// sends each message on its own (`false`: a write per reply, as a Go server does with
    /// `net.Conn.Write`). Batching is part of what an engine is, so it is the engine's answer.
    fn batches_sends() -> bool;

    /// A future that completes at `deadline`.
    fn sleep_until(deadline: Instant) -> Self::Sleep;

    /// A future that completes after `duration`.
    fn sleep(duration: Duration) -> Self::Sleep {
        Self::sleep_until(Instant::now() + duration)
    }
}

/// A TCP listener bound on the current core.
///
/// Each core binds its own listener on the same port (`SO_REUSEPORT`); the kernel spreads
/// incoming connections over them.
pub trait Listener: Sized + 'static {
    /// The connections this listener yields.
    type Stream: Stream;

    /// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` and starts listening.
    fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Self>;

    /// The bound address (with the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Waits for the next connection. `Ok(None)` means the runtime is stopping: accept no more.
    fn accept(&mut self) -> impl Future<Output = io::Result<Option<(Self::Stream, SocketAddr)>>>;
}

/// A TCP connection owned by the current core, with `TCP_NODELAY` set.
pub trait Stream: Sized + 'static {
    /// The receiving half.
    type Reader: StreamReader;
    /// The sending half.
    type Writer: StreamWriter;

    /// Connects to `addr`. Wrap in [`crate::time::timeout`] for a connect timeout; dropping the
    /// future mid-connect is safe and leaks no descriptor.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self>>;

    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// Splits into halves that can be used from two tasks at once. The socket closes when both
    /// halves are dropped (and, on io_uring, every operation on it has completed).
    fn into_split(self) -> (Self::Reader, Self::Writer);
}

/// The receiving half of a [`Stream`].
pub trait StreamReader: 'static {
    /// The next chunk of received bytes, as the engine got it (no copy on io_uring).
    /// `Ok(None)` at end of stream: the peer shut down its sending side.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>>;
}

/// The sending half of a [`Stream`].
pub trait StreamWriter: 'static {
    /// Sends every chunk, in order, as few vectored writes as the engine can, continuing after
    /// partial writes. Returns `chunks` emptied, so the caller can reuse its allocation.
    fn send(&mut self, chunks: Vec<Bytes>) -> impl Future<Output = (io::Result<()>, Vec<Bytes>)>;

    /// Shuts down the sending side (`SHUT_WR`): the peer reads end of stream.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
}
