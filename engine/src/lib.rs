//! ringrpc's I/O engines: a thread-per-core io_uring reactor ([`uring`]) and, beside it, a
//! gonet-style epoll baseline on tokio ([`baseline`]).
//!
//! Both implement the same small interface ([`Engine`], [`Listener`], [`Stream`],
//! [`StreamReader`], [`StreamWriter`]) so that `ringrpc-server` and `ringrpc-client` are written
//! once and benchmarks compare the two with everything above the I/O layer equal.
//!
//! The engine knows nothing of frames: it moves `bytes::Bytes` chunks in and chunk chains out.
//! Everything a core needs is on that core: tasks are `!Send`, spawned with [`Engine::spawn`] on
//! the current core; the only cross-core paths are [`run_on`] (a closure shipped to another core's
//! mailbox) and wakers, which are `Send` and may be woken from any thread.
//!
//! See `docs/engine.md` for the design and what each engine pays for the interface.

/// The atomics [`wake`] is written against: std's here; the loom model test
/// (`tests/loom_wake.rs`) includes `wake.rs` beside an `atomics` module of loom's.
mod atomics {
    pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
}
pub mod baseline;
mod counters;
pub mod deadline;
mod interface;
pub mod local;
pub mod oneshot;
pub mod outbox;
mod panics;
mod runtime;
mod socket;
pub mod time;
pub mod uring;
mod wake;

pub use counters::{CounterSnapshot, Counters};
pub use interface::{Engine, Listener, Stream, StreamReader, StreamWriter};
pub use runtime::{
    current_core, current_runtime, run_on, turn_now, CoreId, EngineError, Runtime, RuntimeConfig,
    RuntimeHandle,
};
