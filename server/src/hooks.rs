//! Observability and discovery settings of a server (the tracer hook, the registration, the
//! error kinds the call metrics label failures with) and the per-core governance stack they
//! configure ([`ServerStack`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_codec::ExceptionKind;
use ringrpc_engine::Engine;
use ringrpc_governance::acl::AclRules;
use ringrpc_governance::clock::TurnClock;
use ringrpc_governance::discovery::Registry;
use ringrpc_governance::fallback::{FallbackHook, FallbackLayer};
use ringrpc_governance::limit::CoreLimiter;
use ringrpc_governance::obs::{CoreMetrics, MetricsHook, MetricsLayer, ObsLayer, Tracer};
use ringrpc_governance::timeout::{TimeoutConfig, TimeoutLayer};
use ringrpc_governance::{CallHook, Service};

use crate::server::ServerConfig;
use crate::service::Router;
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
    /// The registry (e.g. `ringrpc_discovery_etcd::EtcdRegistry`).
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

type KindFn = fn(&HandlerError) -> &'static str;
type FallbackBox = Box<dyn Fn(&mut CallContext, HandlerError) -> Result<Bytes, HandlerError>>;
type SharedTracer = Arc<dyn Tracer<CallContext> + Send + Sync>;
/// What a call through the stack ends with.
type CallResult = Result<Bytes, HandlerError>;

/// A server's governance stack on one core: a field per module, `None` when not configured,
/// called in this fixed order, outermost first (docs/governance.md):
///
/// ```text
/// obs?       span and tracer hooks
/// metrics?   hooks: before in this order, after in reverse; metrics first, so rejections
/// limiter?   and timeouts are counted; the fallback last, so it answers for the handler
/// acl?       (errors and timeouts), not for the limiter's or the ACL's rejections
/// fallback?
/// timeout    the earlier of the caller's deadline and the handler timeout
/// router     service, method, typed handler
/// ```
pub(crate) struct ServerStack<E: Engine> {
    obs: Option<ObsLayer<SharedTracer>>,
    metrics: Option<MetricsHook<KindFn>>,
    limiter: Option<Rc<CoreLimiter<TurnClock>>>,
    acl: Option<AclRules<CallContext, Bytes>>,
    fallback: Option<FallbackHook<FallbackBox>>,
    timeout: TimeoutLayer<E>,
    router: Rc<Router>,
}

impl<E: Engine> ServerStack<E> {
    /// The stack `config` asks for around `router`, with this core's `limiter` and `metrics`.
    pub(crate) fn new(
        config: &ServerConfig,
        router: Rc<Router>,
        limiter: Option<Rc<CoreLimiter<TurnClock>>>,
        metrics: Option<Rc<CoreMetrics>>,
    ) -> Self {
        let fallback = config.fallback.as_ref().map(|f| {
            let f = f.0.clone();
            let f: FallbackBox = Box::new(move |cx, e| f(cx, e));
            FallbackLayer::new(f).into_hook()
        });
        let obs = (config.tracing || config.tracer.is_some()).then(|| {
            ObsLayer::new("server")
                .span(config.tracing)
                .tracer(config.tracer.as_ref().map(|t| t.0.clone()))
        });
        Self {
            obs,
            metrics: metrics.map(|m| {
                MetricsLayer::new(m)
                    .error_kind(error_kind as KindFn)
                    .into_hook()
            }),
            limiter,
            acl: (!config.acl.is_empty()).then(|| config.acl.clone()),
            fallback,
            timeout: TimeoutLayer::new(TimeoutConfig {
                timeout: config.handler_timeout,
            }),
            router,
        }
    }

    /// The hooks, then the timeout around the router. A hook's rejection ends the call there
    /// and goes back out through the hooks that already ran, in reverse, as a result does.
    async fn hooks(&self, cx: &mut CallContext, body: Bytes) -> CallResult {
        let metrics = match self.metrics.before(cx, &body) {
            ControlFlow::Continue(t) => t,
            ControlFlow::Break(result) => return result,
        };
        let result = match self.limiter.before(cx, &body) {
            ControlFlow::Break(result) => result,
            ControlFlow::Continue(limiter) => {
                let result = match self.acl.before(cx, &body) {
                    ControlFlow::Break(result) => result,
                    ControlFlow::Continue(acl) => {
                        let result = match self.fallback.before(cx, &body) {
                            ControlFlow::Break(result) => result,
                            ControlFlow::Continue(fallback) => {
                                let result = self.timeout.around(&self.router, cx, body).await;
                                after(&self.fallback, fallback, cx, result)
                            }
                        };
                        after(&self.acl, acl, cx, result)
                    }
                };
                after(&self.limiter, limiter, cx, result)
            }
        };
        after(&self.metrics, metrics, cx, result)
    }
}

/// `hook.after` for a call of the stack (`after` does not name the request type).
fn after<'h, H>(
    hook: &'h H,
    token: H::Token<'h>,
    cx: &mut CallContext,
    result: CallResult,
) -> CallResult
where
    H: CallHook<CallContext, Bytes, Bytes, HandlerError>,
{
    hook.after(token, cx, result)
}

/// The stack below the span and tracer, as the service they wrap.
struct Hooks<'a, E: Engine>(&'a ServerStack<E>);

impl<E: Engine> Service<CallContext, Bytes> for Hooks<'_, E> {
    type Response = Bytes;
    type Error = HandlerError;

    fn call(&self, cx: &mut CallContext, body: Bytes) -> impl Future<Output = CallResult> {
        self.0.hooks(cx, body)
    }
}

impl<E: Engine> Service<CallContext, Bytes> for ServerStack<E> {
    type Response = Bytes;
    type Error = HandlerError;

    async fn call(&self, cx: &mut CallContext, body: Bytes) -> CallResult {
        match &self.obs {
            Some(obs) => obs.around(&Hooks(self), cx, body).await,
            None => self.hooks(cx, body).await,
        }
    }
}
