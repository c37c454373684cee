//! Service governance for ringrpc: the [`Service`]/[`Layer`] pipeline and its modules.
//!
//! A pipeline wraps the user's handler on the server and the transport call on the client. It is
//! built once per core from one shared configuration, so every stage keeps its state on its core
//! and the request path takes no locks. Services take `&self` and an explicit context, and their
//! futures need not be `Send` (they run on the core that called them), as in CloudWeGo's motore.
//!
//! Modules, one folder per policy: [`timeout`], [`retry`] (failure retry, backup requests, retry
//! budget), [`breaker`] (circuit breakers per method and per instance), [`limit`] (server QPS
//! and concurrency limits shared across cores), [`balance`] (load balancers), [`acl`] (reject
//! functions), [`fallback`] (errors turned into replies). Time-dependent state reads a
//! [`clock::Clock`]. `docs/governance.md` shows how they compose.
//!
//! Beside the pipeline: [`discovery`] (resolvers and registries; etcd is crate
//! `ringrpc-discovery-etcd`) and [`obs`] (per-core metrics, Prometheus text, tracing; the HTTP
//! endpoint is crate `ringrpc-metrics-http`). No sockets here: the I/O adapters are those crates.

#![forbid(unsafe_code)]

pub mod acl;
pub mod balance;
pub mod breaker;
pub mod clock;
mod context;
pub mod discovery;
pub mod fallback;
pub mod hook;
pub mod limit;
pub mod metainfo;
pub mod obs;
pub mod retry;
mod service;
pub mod timeout;

pub use balance::CallTarget;
pub use context::CallDeadline;
pub use hook::{CallHook, HookLayer, Hooked};
pub use metainfo::{Backward, Metainfo};
pub use retry::CallMethod;
pub use service::{layer_fn, service_fn, Identity, Layer, LayerFn, Service, ServiceFn, Stack};
