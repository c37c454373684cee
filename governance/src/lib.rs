//! Service governance for ringrpc: the [`Service`]/[`Layer`] pipeline and its modules.
//!
//! A pipeline wraps the user's handler on the server and the transport call on the client. It is
//! built once per core from one shared configuration, so every stage keeps its state on its core
//! and the request path takes no locks. Services take `&self` and an explicit context, and their
//! futures need not be `Send` (they run on the core that called them), as in CloudWeGo's motore.
//!
//! Modules, one folder per policy: [`timeout`] (more arrive with the governance issue).

#![forbid(unsafe_code)]

mod context;
pub mod metainfo;
mod service;
pub mod timeout;

pub use context::CallDeadline;
pub use metainfo::{Backward, Metainfo};
pub use service::{layer_fn, service_fn, Identity, Layer, LayerFn, Service, ServiceFn, Stack};
