//! Client configuration and per-call options.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringrpc_codec::{Framing, PayloadProtocol};
use ringrpc_governance::acl::AclRules;
use ringrpc_governance::balance::Instance;
use ringrpc_governance::breaker::BreakerConfig;
use ringrpc_governance::discovery::Resolver;
use ringrpc_governance::obs::{MetricsRegistry, Tracer};
use ringrpc_governance::retry::{BackupConfig, BudgetConfig, PerMethod, RetryConfig, RetryPolicy};
use ringrpc_governance::Metainfo;

use crate::{ClientContext, ClientError, Reply};

/// How requests are framed on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TTHeader then a framed Thrift message (Volo's default; Kitex mux). Default.
    #[default]
    TtHeaderFramed,
    /// TTHeader then an unframed Thrift message.
    TtHeader,
    /// A u32 length then the Thrift message (Kitex's default since v0.13).
    Framed,
    /// The Thrift message alone (Kitex's old default, "PurePayload").
    Buffered,
    /// Kitex Protobuf inside TTHeaderFramed, as Kitex clients send it.
    KitexProtobuf,
}

impl Protocol {
    /// The framing this protocol writes.
    pub fn framing(self) -> Framing {
        match self {
            Self::TtHeaderFramed | Self::KitexProtobuf => Framing::TtHeaderFramed,
            Self::TtHeader => Framing::TtHeader,
            Self::Framed => Framing::Framed,
            Self::Buffered => Framing::Buffered,
        }
    }

    /// The payload codec this protocol writes.
    pub fn payload(self) -> PayloadProtocol {
        match self {
            Self::KitexProtobuf => PayloadProtocol::KitexProtobuf,
            _ => PayloadProtocol::ThriftBinary,
        }
    }
}

/// How a core's connections are shared by calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// One call per connection at a time; idle connections are kept for reuse.
    Pooled {
        /// Idle connections kept per address per core. Kitex's default is 10.
        max_idle_per_addr: usize,
        /// An idle connection older than this is closed instead of reused. Kitex: 1 min.
        idle_timeout: Duration,
    },
    /// `conns_per_addr` connections per address per core, each carrying any number of calls
    /// at once, replies matched by seq id.
    Multiplexed {
        /// Connections per address per core (Kitex's benchmark uses 2).
        conns_per_addr: usize,
    },
}

impl Default for ConnMode {
    fn default() -> Self {
        Self::Multiplexed { conns_per_addr: 1 }
    }
}

impl ConnMode {
    /// Pooled mode with Kitex's defaults.
    pub fn pooled() -> Self {
        Self::Pooled {
            max_idle_per_addr: 10,
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Multiplexed mode with `n` connections per address per core.
    pub fn multiplexed(n: usize) -> Self {
        Self::Multiplexed {
            conns_per_addr: n.max(1),
        }
    }
}

/// Which load balancer picks the instance of each call (per core, over
/// [`ClientConfig::instances`] or [`ClientConfig::targets`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadBalancerKind {
    /// Smooth weighted round-robin (nginx): exact shares, interleaved. Default.
    #[default]
    RoundRobin,
    /// A weighted random draw per call.
    Random,
    /// Power of two choices: two random instances, the one with fewer calls in flight on this
    /// core (per weight) wins.
    PowerOfTwo,
    /// Consistent hashing on [`ClientConfig::hash_key`] (by default a hash of the request
    /// body): the same key goes to the same instance while it is available.
    ConsistentHash,
}

/// Which errors a retry may follow; see [`ClientConfig::retry_policy`].
#[derive(Clone)]
pub struct ErrorFilter(Arc<dyn Fn(&ClientError) -> bool + Send + Sync>);

impl ErrorFilter {
    /// A filter from a closure.
    pub fn new(f: impl Fn(&ClientError) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The default: connection errors ([`ClientError::is_connection_error`]), timeouts, and
    /// server over-limit rejections ([`ClientError::is_over_limit`], the server ran nothing).
    pub fn connection_and_timeout() -> Self {
        Self::new(|e| {
            e.is_connection_error() || e.is_over_limit() || matches!(e, ClientError::Timeout(_))
        })
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &ClientError) -> bool {
        (self.0)(e)
    }
}

impl Default for ErrorFilter {
    fn default() -> Self {
        Self::connection_and_timeout()
    }
}

impl std::fmt::Debug for ErrorFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorFilter(..)")
    }
}

impl RetryPolicy<ClientError> for ErrorFilter {
    fn is_retryable(&self, error: &ClientError) -> bool {
        self.matches(error)
    }
}

/// The hash key of a call for [`LoadBalancerKind::ConsistentHash`]; see
/// [`ClientConfig::hash_key`].
#[derive(Clone)]
pub struct HashKeyFn(pub(crate) KeyFn);

/// A closure computing a call's hash key from its context and request body.
pub(crate) type KeyFn = Arc<dyn Fn(&ClientContext, &Bytes) -> u64 + Send + Sync>;

impl std::fmt::Debug for HashKeyFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKeyFn(..)")
    }
}

/// A fallback: turns a failed call's error into a reply, or passes it on; see
/// [`ClientConfig::fallback`].
pub type FallbackFn =
    Arc<dyn Fn(&mut ClientContext, ClientError) -> Result<Reply, ClientError> + Send + Sync>;

/// [`FallbackFn`] with a `Debug` impl.
#[derive(Clone)]
pub struct Fallback(pub(crate) FallbackFn);

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fallback(..)")
    }
}

/// A hook of the user's, run around every call of a client (see [`ClientConfig::hook`]):
/// `before` when the call starts (an `Err` ends the call with that error before anything is
/// sent), `after` when it ends, with its result (return it, or what the hook makes of it).
/// Hooks run on the core of the call: keep them short and non-blocking.
pub trait ClientHook: Send + Sync + 'static {
    /// The call is starting. Default: let it go on.
    ///
    /// # Errors
    /// The error the call fails with instead.
    fn before(&self, cx: &mut ClientContext, body: &Bytes) -> Result<(), ClientError> {
        let _ = (cx, body);
        Ok(())
    }

    /// The call ended with `result`; the call's result is what this returns. Default: `result`.
    ///
    /// # Errors
    /// The call's error, changed or not.
    fn after(
        &self,
        cx: &mut ClientContext,
        result: Result<Reply, ClientError>,
    ) -> Result<Reply, ClientError> {
        let _ = cx;
        result
    }
}

/// A [`ClientHook`] shared by every core of a client.
pub(crate) type SharedHook = Arc<dyn ClientHook>;

/// A [`ClientHook`] in a configuration, with a `Debug` impl.
#[derive(Clone)]
pub struct UserHook(pub(crate) SharedHook);

impl std::fmt::Debug for UserHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserHook(..)")
    }
}

/// Client settings.
///
/// Governance (all off by default except round-robin balancing): each core builds its own
/// pipeline from this configuration on its first call, so breakers, balancer counters and the
/// retry budget live on that core and the request path takes no lock. The order, outermost
/// first: span and tracer, metrics, fallback, ACL, user hooks, method breaker, timeout
/// ([`ClientConfig::rpc_timeout`]), backup, retry, load balancer with the instance breaker,
/// transport.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server addresses, all of weight 1; used when [`ClientConfig::instances`] is empty.
    pub targets: Vec<SocketAddr>,
    /// Weighted server instances. When non-empty they replace `targets`. Default empty.
    pub instances: Vec<Instance>,
    /// The load balancer. Default [`LoadBalancerKind::RoundRobin`].
    pub balancer: LoadBalancerKind,
    /// The key for consistent hashing. Default `None`: a hash of the request body.
    pub hash_key: Option<HashKeyFn>,
    /// Failure retry per method. Default: no method. **Retry only idempotent methods**: a
    /// timed-out or dropped call may have run on the server. `rpc_timeout` bounds all attempts
    /// together; `RetryConfig::attempt_timeout` bounds each one (Kitex's per-attempt RPC
    /// timeout).
    pub retry: PerMethod<RetryConfig>,
    /// Which errors are retried. Default [`ErrorFilter::connection_and_timeout`].
    pub retry_policy: ErrorFilter,
    /// Backup requests per method (idempotent reads). Default: no method. A method should have
    /// either a backup or a retry configuration, not both.
    pub backup: PerMethod<BackupConfig>,
    /// The budget shared by retries and backups on each core. Default [`BudgetConfig::default`]
    /// (20% of calls plus 10 per second per core, over 10 s).
    pub retry_budget: BudgetConfig,
    /// A circuit breaker per method (per core). Default `None`: off. Business errors and this
    /// client's own rejections do not count as failures.
    pub breaker: Option<BreakerConfig>,
    /// A circuit breaker per instance (per core); the balancer skips open instances. Default
    /// `None`: off.
    pub instance_breaker: Option<BreakerConfig>,
    /// Reject rules run before each call. Default: none.
    pub acl: AclRules<ClientContext, Bytes>,
    /// Turns errors into replies. Default `None`.
    pub fallback: Option<Fallback>,
    /// The user's hooks, run in this order after the ACL and before the method breaker.
    /// Default none.
    pub hooks: Vec<UserHook>,
    /// Call metrics (calls, errors by kind and latency per method, calls in flight), recorded
    /// outermost in each core's pipeline (a call answered by the fallback counts as a success).
    /// The first call on a runtime attaches that runtime to the registry, so scrapes reach
    /// every core it ran on and list the engine's counters. Default `None`: off.
    pub metrics: Option<MetricsRegistry>,
    /// A `tracing` span (`rpc`, `side = "client"`) around every call. Default `false`.
    pub tracing: bool,
    /// Hooks called at the start and end of every call. Default none.
    pub tracer: Option<ClientTracer>,
    /// Service discovery: the balancers of every core follow the resolver's instance list of
    /// the service (replacing `targets`/`instances` once the first list arrives). Default
    /// `None`.
    pub resolver: Option<ResolverConfig>,
    /// Wire protocol. Default TTHeaderFramed.
    pub protocol: Protocol,
    /// Connection sharing. Default multiplexed, one connection per address per core.
    pub conn_mode: ConnMode,
    /// Longest wait for a TCP connection. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest a call may take, also sent to the server (TTHeader int key 12). Default 3 s.
    pub rpc_timeout: Option<Duration>,
    /// Read/write timeout of a connection (Kitex's ReadWriteTimeout): a send that makes no
    /// progress for this long, or a connection with calls waiting that receives nothing for
    /// this long, fails that connection and its pending calls with `ClientError::Timeout`.
    /// Keep it above the slowest expected reply. Default: off (the RPC timeout bounds each call).
    pub read_write_timeout: Option<Duration>,
    /// Largest reply accepted. Default 16 MiB.
    pub max_frame_size: usize,
    /// The IDL service name of the callee, sent as `isn` and ToService for routing.
    pub service_name: Option<String>,
    /// This caller's service name, sent as FromService.
    pub caller_name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            instances: Vec::new(),
            balancer: LoadBalancerKind::default(),
            hash_key: None,
            retry: PerMethod::none(),
            retry_policy: ErrorFilter::default(),
            backup: PerMethod::none(),
            retry_budget: BudgetConfig::default(),
            breaker: None,
            instance_breaker: None,
            acl: AclRules::new(),
            fallback: None,
            hooks: Vec::new(),
            metrics: None,
            tracing: false,
            tracer: None,
            resolver: None,
            protocol: Protocol::default(),
            conn_mode: ConnMode::default(),
            connect_timeout: Duration::from_secs(1),
            read_write_timeout: None,
            rpc_timeout: Some(Duration::from_secs(3)),
            max_frame_size: ringrpc_codec::DEFAULT_MAX_FRAME_SIZE,
            service_name: None,
            caller_name: None,
        }
    }
}

impl ClientConfig {
    /// A config calling `targets` with default settings.
    pub fn new(targets: Vec<SocketAddr>) -> Self {
        Self {
            targets,
            ..Self::default()
        }
    }

    /// Sets the protocol.
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocol = p;
        self
    }

    /// Sets the connection mode.
    pub fn conn_mode(mut self, m: ConnMode) -> Self {
        self.conn_mode = m;
        self
    }

    /// Sets the RPC timeout (`None`: calls wait as long as it takes).
    pub fn rpc_timeout(mut self, t: Option<Duration>) -> Self {
        self.rpc_timeout = t;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the connection read/write timeout (see [`ClientConfig::read_write_timeout`]).
    pub fn read_write_timeout(mut self, t: Duration) -> Self {
        self.read_write_timeout = Some(t);
        self
    }

    /// Sets the callee's IDL service name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Calls these weighted instances instead of `targets`.
    pub fn instances(mut self, instances: Vec<Instance>) -> Self {
        self.instances = instances;
        self
    }

    /// Sets the load balancer.
    pub fn balancer(mut self, kind: LoadBalancerKind) -> Self {
        self.balancer = kind;
        self
    }

    /// Sets the consistent-hashing key of a call, e.g.
    /// `|cx, _| hash_key(cx.metainfo.persistent("uid").unwrap_or("").as_bytes())`.
    pub fn hash_key(
        mut self,
        key: impl Fn(&ClientContext, &Bytes) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.hash_key = Some(HashKeyFn(Arc::new(key)));
        self
    }

    /// Retries the methods `retry` covers (`PerMethod::all(RetryConfig::default())` for every
    /// method, `PerMethod::none().method("Get", cfg)` for one). Only idempotent methods should
    /// be retried. With `RetryConfig::default().attempt_timeout(Duration::from_millis(100))`,
    /// an attempt that has not answered after 100 ms is cut and retried (timeouts are retryable
    /// under the default policy) while the RPC timeout still bounds the whole call.
    pub fn retry(mut self, retry: PerMethod<RetryConfig>) -> Self {
        self.retry = retry;
        self
    }

    /// Retries only errors `policy` accepts (default: connection errors, timeouts, server
    /// over-limit rejections).
    pub fn retry_policy(
        mut self,
        policy: impl Fn(&ClientError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_policy = ErrorFilter::new(policy);
        self
    }

    /// Sets the per-core retry budget.
    pub fn retry_budget(mut self, budget: BudgetConfig) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sends backup requests for the methods `backup` covers.
    pub fn backup(mut self, backup: PerMethod<BackupConfig>) -> Self {
        self.backup = backup;
        self
    }

    /// Turns on a circuit breaker per method.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Turns on a circuit breaker per instance; open instances get no calls.
    pub fn instance_breaker(mut self, config: BreakerConfig) -> Self {
        self.instance_breaker = Some(config);
        self
    }

    /// Sets the reject rules.
    pub fn acl(mut self, rules: AclRules<ClientContext, Bytes>) -> Self {
        self.acl = rules;
        self
    }

    /// Adds a hook run around every call, after the ACL and before the method breaker (after
    /// the hooks added before it).
    pub fn hook(mut self, hook: impl ClientHook) -> Self {
        self.hooks.push(UserHook(Arc::new(hook)));
        self
    }

    /// Sets a fallback: `f(cx, error)` returns `Ok(reply)` to answer instead, `Err(e)` to fail.
    /// It sees every error, timeouts and rejections included.
    pub fn fallback(
        mut self,
        f: impl Fn(&mut ClientContext, ClientError) -> Result<Reply, ClientError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.fallback = Some(Fallback(Arc::new(f)));
        self
    }

    /// Records call metrics into `registry` (see [`ClientConfig::metrics`]). Serve them with
    /// `ringrpc_metrics_http::MetricsServer::serve(addr, registry)` or read `registry.render()`.
    pub fn metrics(mut self, registry: MetricsRegistry) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// Runs every call in a `tracing` span.
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Calls `tracer` at the start and end of every call, on the calling core.
    pub fn tracer(mut self, tracer: impl Tracer<ClientContext> + Send + Sync + 'static) -> Self {
        self.tracer = Some(ClientTracer(Arc::new(tracer)));
        self
    }

    /// Follows `service`'s instances as `resolver` reports them (e.g. an
    /// `EtcdResolver`, or a `StaticResolver`). The watch starts in [`crate::Client::new`].
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>, service: impl Into<String>) -> Self {
        self.resolver = Some(ResolverConfig {
            resolver,
            service: service.into(),
        });
        self
    }

    /// The instances the balancer picks from: `instances`, or `targets` with weight 1.
    pub fn effective_instances(&self) -> Vec<Instance> {
        if self.instances.is_empty() {
            self.targets.iter().map(|a| Instance::new(*a, 1)).collect()
        } else {
            self.instances.clone()
        }
    }
}

/// A [`Tracer`] shared by every core of a client; see [`ClientConfig::tracer`].
#[derive(Clone)]
pub struct ClientTracer(pub(crate) Arc<dyn Tracer<ClientContext> + Send + Sync>);

impl std::fmt::Debug for ClientTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTracer(..)")
    }
}

/// Which service a client follows, and through which resolver; see
/// [`ClientConfig::resolver`].
#[derive(Clone)]
pub struct ResolverConfig {
    /// The resolver.
    pub resolver: Arc<dyn Resolver>,
    /// The service name resolved.
    pub service: String,
}

impl std::fmt::Debug for ResolverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolverConfig")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Options of one call, overriding the client's.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// RPC timeout for this call.
    pub timeout: Option<Duration>,
    /// Metainfo sent with this call (TTHeader protocols only).
    pub metainfo: Metainfo,
    /// Call this address instead of picking one.
    pub address: Option<SocketAddr>,
    /// A oneway call: sent as ONEWAY, no reply awaited.
    pub oneway: bool,
}

impl CallOptions {
    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets the metainfo.
    pub fn metainfo(mut self, m: Metainfo) -> Self {
        self.metainfo = m;
        self
    }

    /// Calls `addr`, bypassing the load balancer (its instance breaker still applies).
    pub fn address(mut self, addr: SocketAddr) -> Self {
        self.address = Some(addr);
        self
    }
}
