//! Observability and discovery settings of a server: the tracer hook, the registration, and
//! the error kinds the call metrics label failures with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ringrpc_codec::ExceptionKind;
use ringrpc_governance::discovery::Registry;
use ringrpc_governance::obs::Tracer;

use crate::{CallContext, HandlerError, OVER_LIMIT_MESSAGE};

/// A [`Tracer`] shared by every core of a server (see [`crate::ServerBuilder::tracer`]).
#[derive(Clone)]
pub struct TracerHook(pub(crate) Arc<dyn Tracer<CallContext> + Send + Sync>);

impl TracerHook {
    /// Wraps `tracer`.
    pub fn new(tracer: impl Tracer<CallContext> + Send + Sync + 'static) -> Self {
        Self(Arc::new(tracer))
    }
}

impl std::fmt::Debug for TracerHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracerHook(..)")
    }
}

/// How a server announces itself to a service registry (see [`crate::ServerBuilder::register`]).
#[derive(Clone)]
pub struct RegisterConfig {
    /// The registry (e.g. `discovery::etcd::EtcdRegistry`).
    pub registry: Arc<dyn Registry>,
    /// The service name registered (one path segment: no `/`).
    pub service: String,
    /// The instance's weight. Default 10 (Kitex's default).
    pub weight: u32,
    /// The instance's tags. Default none.
    pub tags: HashMap<String, String>,
    /// The address clients should call. Default: the address the server listens on (set this
    /// when listening on `0.0.0.0` or behind a NAT).
    pub advertise: Option<SocketAddr>,
}

impl RegisterConfig {
    /// Registers `service` with `registry`, weight 10, no tags, the listen address.
    pub fn new(registry: Arc<dyn Registry>, service: impl Into<String>) -> Self {
        Self {
            registry,
            service: service.into(),
            weight: 10,
            tags: HashMap::new(),
            advertise: None,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the address registered.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }
}

impl std::fmt::Debug for RegisterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterConfig")
            .field("service", &self.service)
            .field("weight", &self.weight)
            .field("tags", &self.tags)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl HandlerError {
    /// A short, bounded name of the error, the `kind` label of the error counter:
    /// `biz`, `over_limit`, `timeout`, `acl`, `unknown_method`, `unknown_service`,
    /// `protocol`, or `exception` for any other exception.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Biz(_) => "biz",
            Self::Exception(e) => match e.kind {
                ExceptionKind::UnknownMethod => "unknown_method",
                ExceptionKind::UnknownService => "unknown_service",
                ExceptionKind::ProtocolError => "protocol",
                _ if e.message.starts_with(OVER_LIMIT_MESSAGE) => "over_limit",
                _ if e.message.starts_with("rpc deadline exceeded") => "timeout",
                _ if e.message.starts_with("rejected by access control") => "acl",
                _ => "exception",
            },
        }
    }
}

/// [`HandlerError::kind`] as a function pointer, for `MetricsLayer::error_kind`.
pub(crate) fn error_kind(e: &HandlerError) -> &'static str {
    e.kind()
}
