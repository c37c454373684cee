//! The ringrpc server: host Thrift and Kitex-Protobuf services on either engine, speaking
//! every framing Kitex and Volo use.
//!
//! ```text
//! socket ─▶ engine recv (Bytes) ─▶ LinkBuf ─▶ FrameDecoder ─▶ CallContext + body
//!        ─▶ pipeline ([metrics, rate limit, ACL, fallback] ─▶ timeout ─▶ Router ─▶ your handler) ─▶ encoded reply body
//!        ─▶ FrameEncoder (request's framing, seq id, TTHeader keys) ─▶ Outbox ─▶ one send per turn
//! ```
//!
//! - A [`Server`] is built with [`Server::builder`]: address, cores, engine, limits, and
//!   services. Each core builds its own services from a factory, so handler state is per core
//!   and needs no locks; handler futures need not be `Send`.
//! - Each connection is multiplexed: requests run concurrently and replies leave in completion
//!   order, matched by seq id; ping-pong peers (Kitex and Volo pooled clients) work unchanged.
//! - [`ServerHandle::shutdown`] (or SIGINT/SIGTERM with [`RunningServer::wait_for_signal`]) stops
//!   accepting, marks every later reply with `crrst=1`, lets in-flight calls finish within a
//!   deadline, then closes.

mod conn;
mod context;
mod error;
mod hooks;
mod server;
mod service;
mod stats;
mod unwind;

pub use context::CallContext;
pub use error::{BizError, HandlerError, ServerError, OVER_LIMIT_MESSAGE};
pub use hooks::{RegisterConfig, TracerHook};
/// The governance crate, for its configuration types (`limit::LimitConfig`, `acl::AclRules`).
pub use ringrpc_governance as governance;
pub use server::{
    EngineKind, RunningServer, Server, ServerBuilder, ServerConfig, ServerFallback,
    ServerFallbackFn, ServerHandle,
};
pub use service::{protobuf_body, thrift_body, ServiceDef, SCRATCH_RESERVE};
pub use stats::ServerStats;
