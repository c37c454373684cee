//! The ringrpc client: call Kitex-, Volo- and ringrpc services from any core of a runtime.
//!
//! ```text
//! call_thrift / call_protobuf / call_raw
//!   ─▶ per-core stack (span, tracer, metrics, fallback, ACL, user hooks, breaker, timeout, backup, retry, balancer, instance breaker)
//!   ─▶ per-core pool ─▶ encode (FrameEncoder) ─▶ connection
//!   ◀─ reply matched by seq id (multiplexed) or read in turn (pooled) ◀─ FrameDecoder ◀─ recv
//! ```
//!
//! A [`Client`] is `Send + Sync` and cheap to clone; every call runs on the core that makes it
//! and uses that core's own connections, so no lock is taken on the request path. Two pool
//! modes ([`ConnMode`]): *pooled* (one call per connection at a time, like Kitex's long
//! connections) and *multiplexed* (N connections per address per core, calls matched by seq id).
//! Code outside the runtime calls through an [`OutsideClient`], at the cost of one cross-thread
//! hand-off each way.

mod client;
mod config;
mod context;
mod discovery;
mod error;
mod kind;
mod outside;
mod pipeline;
mod pool;
#[cfg(test)]
mod stack_alloc;

pub use client::{clients_on_this_core, Client, Reply};
pub use config::{
    CallOptions, ClientConfig, ClientHook, ClientTracer, ConnMode, ErrorFilter, Fallback,
    FallbackFn, HashKeyFn, LoadBalancerKind, Protocol, ResolverConfig, UserHook,
};
pub use context::ClientContext;
pub use error::{BizError, ClientError, OVER_LIMIT_MESSAGE};
pub use outside::OutsideClient;
/// The governance crate, for its configuration types (`retry::RetryConfig`, `breaker::BreakerConfig`, ...).
pub use ringrpc_governance as governance;
