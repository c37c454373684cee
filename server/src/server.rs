//! The server builder, its configuration, start-up on either engine, and shutdown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::local::Notify;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{CoreId, Engine, Listener, Runtime, RuntimeConfig, RuntimeHandle};
use ringrpc_governance::acl::AclRules;
use ringrpc_governance::balance::Instance;
use ringrpc_governance::clock::TurnClock;
use ringrpc_governance::discovery::{Registration, Registry};
use ringrpc_governance::limit::{GlobalLimit, LimitConfig};
use ringrpc_governance::obs::{CoreMetrics, MetricsConfig, MetricsRegistry, Tracer};
use ringrpc_governance::Service;
use ringrpc_metrics_http::MetricsServer;

use crate::conn::{serve, CoreServer};
use crate::hooks::{RegisterConfig, ServerStack, TracerHook};
use crate::service::Router;
use crate::stats::ServerStats;
use crate::{CallContext, HandlerError, ServerError, ServiceDef};

/// Which I/O engine runs the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// The thread-per-core io_uring engine (default).
    #[default]
    Uring,
    /// The gonet-style epoll baseline (tokio).
    Baseline,
}

impl EngineKind {
    /// The engine's short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uring => Uring::NAME,
            Self::Baseline => Baseline::NAME,
        }
    }
}

/// Server settings; every field has a default (see [`ServerConfig::default`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address. Default `127.0.0.1:8888`; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Cores (threads) serving. Default: every CPU.
    pub cores: usize,
    /// CPUs to pin the cores to. Default: no pinning.
    pub pin: Option<Vec<usize>>,
    /// The engine. Default io_uring.
    pub engine: EngineKind,
    /// Listen backlog per core. Default 1024.
    pub backlog: u32,
    /// Connections open at once over all cores; more are closed on accept. Default 10,000.
    pub max_connections: usize,
    /// Largest frame accepted, counting every byte; larger frames are refused as soon as their
    /// length is read, before the payload is buffered. Default 16 MiB.
    pub max_frame_size: usize,
    /// Calls running at once on one connection; past it the connection stops reading until
    /// one finishes. Default 1,024.
    pub max_in_flight_per_conn: usize,
    /// Reply bytes waiting for a slow reader before the connection stops reading. Default 4 MiB.
    pub max_queued_bytes: usize,
    /// A connection with no frame in progress and no call running for this long is closed; it
    /// counts from the last byte received or the end of the last call, whichever is later.
    /// Default 10 minutes (Kitex's `MaxConnectionIdleTime`).
    pub idle_timeout: Duration,
    /// A frame must be received whole within this of its first byte, however its bytes are
    /// spread over time (a peer trickling a byte at a time cannot hold the connection);
    /// otherwise the connection is closed. Time the server itself stops reading
    /// (backpressure) does not count. Default 30 s.
    pub read_timeout: Duration,
    /// A send of replies that has not completed this long after it began to wait for the
    /// socket (the client stopped reading) closes the connection. Default 30 s.
    pub write_timeout: Duration,
    /// Longest a handler may run (the caller's deadline applies too, whichever is first).
    /// Default: none.
    pub handler_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight calls. Default 5 s (Kitex's `ExitWaitTime`).
    pub shutdown_grace: Duration,
    /// Calls per second and calls in flight admitted by the whole server (all cores together;
    /// each core enforces a share that follows its demand, rebalanced every `sync_period` off
    /// the request path). A call over the limit is answered at once with an `INTERNAL_ERROR`
    /// exception whose message starts with `request over limit`; nothing queues. Default `None`:
    /// no limit.
    pub rate_limit: Option<LimitConfig>,
    /// Reject rules over the caller (peer, method, service, metainfo), run after the rate limit
    /// and before the handler; a rejected call is answered with an `INTERNAL_ERROR` exception
    /// carrying the rule's reason. Default: no rules.
    pub acl: AclRules<CallContext, Bytes>,
    /// Call metrics (calls, errors by kind and latency per method, calls in flight,
    /// connections) recorded on every core, outermost in the pipeline so rejections and
    /// timeouts count too; the server attaches its runtime, so scrapes also list the engine's
    /// per-core counters. Default `None`: off (created when `metrics_addr` is set).
    pub metrics: Option<MetricsRegistry>,
    /// Serves the metrics for Prometheus at `GET /metrics` on this address (a plain thread,
    /// never a core). Default `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// A `tracing` span (`rpc`, `side = "server"`, method, peer, seq id, status, elapsed) around
    /// every call. Default `false`.
    pub tracing: bool,
    /// Hooks called at the start and end of every call (Kitex's `stats.Tracer`). Default none.
    pub tracer: Option<TracerHook>,
    /// Registers the server with a service registry once it listens, and deregisters it when
    /// shutdown begins (before draining). Default `None`.
    pub register: Option<RegisterConfig>,
    /// Turns a handler's error into a reply, or passes it on (see [`ServerBuilder::fallback`]).
    /// It sees what the router, the handler and the handler timeout produce, not the rate
    /// limiter's or the ACL's rejections. Default `None`: the stage is left out.
    pub fallback: Option<ServerFallback>,
}

/// A server fallback: `f(cx, error)` answers the call with `Ok(body)` (an encoded reply body,
/// e.g. from [`crate::thrift_body`]) or passes `Err(error)` on; see [`ServerBuilder::fallback`].
pub type ServerFallbackFn =
    Arc<dyn Fn(&mut CallContext, HandlerError) -> Result<Bytes, HandlerError> + Send + Sync>;

/// [`ServerFallbackFn`] with a `Debug` impl, shared by every core.
#[derive(Clone)]
pub struct ServerFallback(pub(crate) ServerFallbackFn);

impl ServerFallback {
    /// Wraps `f`.
    pub fn new(
        f: impl Fn(&mut CallContext, HandlerError) -> Result<Bytes, HandlerError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for ServerFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerFallback(..)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8888)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: None,
            engine: EngineKind::Uring,
            backlog: 1024,
            max_connections: 10_000,
            max_frame_size: ringrpc_codec::DEFAULT_MAX_FRAME_SIZE,
            max_in_flight_per_conn: 1024,
            max_queued_bytes: 4 << 20,
            idle_timeout: Duration::from_secs(600),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            handler_timeout: None,
            shutdown_grace: Duration::from_secs(5),
            rate_limit: None,
            acl: AclRules::new(),
            metrics: None,
            metrics_addr: None,
            tracing: false,
            tracer: None,
            register: None,
            fallback: None,
        }
    }
}

type ServiceFactory = Arc<dyn Fn() -> ServiceDef + Send + Sync>;

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            factories: Vec::new(),
        }
    }
}

/// Builds and starts a server.
pub struct ServerBuilder {
    config: ServerConfig,
    factories: Vec<ServiceFactory>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("services", &self.factories.len())
            .finish()
    }
}

impl ServerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Listen address.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// Number of cores.
    pub fn cores(mut self, cores: usize) -> Self {
        self.config.cores = cores;
        self
    }

    /// Pins cores to these CPUs.
    pub fn pin(mut self, cpus: Vec<usize>) -> Self {
        self.config.pin = Some(cpus);
        self
    }

    /// The engine.
    pub fn engine(mut self, engine: EngineKind) -> Self {
        self.config.engine = engine;
        self
    }

    /// Maximum open connections.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Maximum frame size in bytes.
    pub fn max_frame_size(mut self, n: usize) -> Self {
        self.config.max_frame_size = n;
        self
    }

    /// Maximum calls in flight per connection.
    pub fn max_in_flight_per_conn(mut self, n: usize) -> Self {
        self.config.max_in_flight_per_conn = n.max(1);
        self
    }

    /// Idle timeout: a connection with no frame in progress and no call running for `d` is
    /// closed (see [`ServerConfig::idle_timeout`]).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// Write timeout: a reply send stuck this long (the client stopped reading) closes the
    /// connection.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.config.write_timeout = d;
        self
    }

    /// Read timeout: a frame must be received whole within `d` of its first byte (see
    /// [`ServerConfig::read_timeout`]).
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.config.read_timeout = d;
        self
    }

    /// Longest a handler may run.
    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.config.handler_timeout = Some(d);
        self
    }

    /// Grace period for in-flight calls at shutdown.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// Limits the whole server's QPS and/or concurrency (see [`ServerConfig::rate_limit`]), e.g.
    /// `LimitConfig { max_qps: Some(2_000), ..Default::default() }`.
    pub fn rate_limit(mut self, limit: LimitConfig) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// Sets the reject rules (see [`ServerConfig::acl`]).
    pub fn acl(mut self, rules: AclRules<CallContext, Bytes>) -> Self {
        self.config.acl = rules;
        self
    }

    /// Records call metrics into `registry` (see [`ServerConfig::metrics`]); scrape it with
    /// [`MetricsRegistry::render`] or serve it with [`Self::metrics_addr`].
    pub fn metrics(mut self, registry: MetricsRegistry) -> Self {
        self.config.metrics = Some(registry);
        self
    }

    /// Serves `GET /metrics` on `addr` (port 0 picks one: [`RunningServer::metrics_addr`]),
    /// creating a registry (`ringrpc_server_*`) unless [`Self::metrics`] gave one.
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.config.metrics_addr = Some(addr);
        self
    }

    /// Runs every call in a `tracing` span (see [`ServerConfig::tracing`]).
    pub fn tracing(mut self, on: bool) -> Self {
        self.config.tracing = on;
        self
    }

    /// Calls `tracer` at the start and end of every call, on the core running it.
    pub fn tracer(mut self, tracer: impl Tracer<CallContext> + Send + Sync + 'static) -> Self {
        self.config.tracer = Some(TracerHook::new(tracer));
        self
    }

    /// Registers the server as an instance of `service` in `registry` once it listens (weight
    /// 10, the listen address; see [`Self::register_with`]) and deregisters it when shutdown
    /// begins.
    pub fn register(self, registry: Arc<dyn Registry>, service: impl Into<String>) -> Self {
        self.register_with(RegisterConfig::new(registry, service))
    }

    /// [`Self::register`] with a weight, tags, or an advertised address, e.g.
    /// `RegisterConfig::new(registry, "echo").weight(20).tag("zone", "a")`.
    pub fn register_with(mut self, register: RegisterConfig) -> Self {
        self.config.register = Some(register);
        self
    }

    /// Sets a fallback for handler errors (Kitex offers `WithFallback` on its client; on a Kitex
    /// server the same is a middleware around the handler). `f(cx, error)` runs on the core of
    /// the call for every error of the router, the handler and the handler timeout
    /// ([`HandlerError::kind`] tells them apart: `biz`, `timeout`, `unknown_method`, ...), and
    /// answers with `Ok(body)`, an encoded reply body sent as a normal reply (build it with
    /// [`crate::thrift_body`] or [`crate::protobuf_body`] for the method called), or with
    /// `Err(e)` to send `e` as it would have been. Rate-limit and ACL rejections do not reach
    /// it: they protect the server and must stay visible to the caller (a client retries an
    /// over-limit rejection elsewhere).
    ///
    /// ```ignore
    /// .fallback(|cx, e| match (cx.method(), e.kind()) {
    ///     ("GetUser", "timeout") => thrift_body(&SuccessResult(User::anonymous())),
    ///     _ => Err(e),
    /// })
    /// ```
    pub fn fallback(
        mut self,
        f: impl Fn(&mut CallContext, HandlerError) -> Result<Bytes, HandlerError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.config.fallback = Some(ServerFallback::new(f));
        self
    }

    /// Adds a service. `factory` runs once on every core, so each core has its own handlers.
    pub fn service<F>(mut self, factory: F) -> Self
    where
        F: Fn() -> ServiceDef + Send + Sync + 'static,
    {
        self.factories.push(Arc::new(factory));
        self
    }

    /// Binds on every core and starts serving.
    ///
    /// # Errors
    /// [`ServerError::NoService`], [`ServerError::Bind`] if any core cannot listen, or
    /// [`ServerError::Engine`] if the engine cannot start.
    pub fn start(self) -> Result<RunningServer, ServerError> {
        if self.factories.is_empty() {
            return Err(ServerError::NoService);
        }
        match self.config.engine {
            EngineKind::Uring => start_on::<Uring>(self.config, self.factories),
            EngineKind::Baseline => start_on::<Baseline>(self.config, self.factories),
        }
    }
}

/// Identifies a server's per-core state in the core's registry.
static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Shutdown hooks of the servers running on this core, by server id.
    static SHUTDOWN_HOOKS: RefCell<HashMap<u64, Rc<dyn Fn()>>> = RefCell::new(HashMap::new());
}

/// The first core's bound address, shared with the other cores so they bind the same port.
#[derive(Default)]
struct BoundAddr {
    addr: Mutex<Option<Option<SocketAddr>>>,
    ready: Condvar,
}

fn start_on<E: Engine>(
    mut config: ServerConfig,
    factories: Vec<ServiceFactory>,
) -> Result<RunningServer, ServerError> {
    if config.metrics.is_none() && config.metrics_addr.is_some() {
        config.metrics = Some(MetricsRegistry::new(MetricsConfig::subsystem("server")));
    }
    let config = Arc::new(config);
    let id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
    let stats = ServerStats::default();
    let (runtime, local_addr) = launch_cores::<E>(&config, factories, id, &stats)?;
    // Past this point a failure must stop the cores it started.
    let announced = serve_metrics(&config, &runtime)
        .and_then(|metrics_server| Ok((metrics_server, register(&config, local_addr)?)));
    let (metrics_server, registered) = match announced {
        Ok(a) => a,
        Err(e) => {
            runtime.stop(Duration::ZERO);
            return Err(e);
        }
    };
    let handle = ServerHandle {
        id,
        runtime: runtime.handle(),
        stats,
        grace: config.shutdown_grace,
        registered: Arc::new(Mutex::new(registered)),
    };
    Ok(RunningServer {
        runtime: Some(runtime),
        handle,
        local_addr,
        engine: config.engine,
        metrics: config.metrics.clone(),
        metrics_server,
    })
}

/// What each core reports once it tried to bind: the address it listens on, or why not.
type BindReport = (CoreId, Result<SocketAddr, ServerError>);

/// Starts the cores, each binding its listener and serving; returns once every core has bound
/// (with the address they listen on), or the first core's failure (the cores stopped).
fn launch_cores<E: Engine>(
    config: &Arc<ServerConfig>,
    factories: Vec<ServiceFactory>,
    id: u64,
    stats: &ServerStats,
) -> Result<(Runtime, SocketAddr), ServerError> {
    let bound = Arc::new(BoundAddr::default());
    let (report, reports) = mpsc::channel::<BindReport>();
    let report = Mutex::new(report);
    let rt_config = RuntimeConfig {
        cores: config.cores,
        pin: config.pin.clone(),
        name: format!("ringrpc-{}", E::NAME),
        ..RuntimeConfig::default()
    };
    // One set of server-wide limits; each core takes its limiter from it in `accept_loop`.
    let global = config
        .rate_limit
        .map(|l| GlobalLimit::new(l, config.cores.max(1)));
    let cfg = config.clone();
    let stats = stats.clone();
    let runtime = E::launch(rt_config, move |core| {
        let listener = bind_core::<E>(core, &cfg, &bound, &report);
        let services: Vec<ServiceDef> = factories.iter().map(|f| f()).collect();
        let cfg = cfg.clone();
        let stats = stats.clone();
        let global = global.clone();
        async move {
            let Some(listener) = listener else { return };
            accept_loop::<E>(id, core, listener, services, cfg, stats, global).await;
        }
    })?;
    match await_bound(&reports, config.cores) {
        Ok(local_addr) => Ok((runtime, local_addr.unwrap_or(config.addr))),
        Err(e) => {
            runtime.stop(Duration::ZERO);
            Err(e)
        }
    }
}

/// Binds core `core`'s listener and reports the outcome. Core 0 binds the configured address
/// first; the others bind the port it got, so port 0 means one port for all cores.
fn bind_core<E: Engine>(
    core: CoreId,
    cfg: &ServerConfig,
    bound: &BoundAddr,
    report: &Mutex<mpsc::Sender<BindReport>>,
) -> Option<E::Listener> {
    let addr = if core.0 == 0 {
        cfg.addr
    } else {
        let mut slot = bound.addr.lock().unwrap_or_else(|p| p.into_inner());
        while slot.is_none() {
            slot = bound.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
        slot.flatten().unwrap_or(cfg.addr)
    };
    let listener = E::Listener::bind(addr, cfg.backlog).and_then(|l| {
        let local = l.local_addr()?;
        Ok((l, local))
    });
    if core.0 == 0 {
        *bound.addr.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(listener.as_ref().ok().map(|(_, a)| *a));
        bound.ready.notify_all();
    }
    let result = listener
        .as_ref()
        .map(|(_, a)| *a)
        .map_err(|e| ServerError::Bind {
            addr,
            source: std::io::Error::new(e.kind(), e.to_string()),
        });
    let _ = report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((core, result));
    listener.ok().map(|(l, _)| l)
}

/// Waits for every core's bind report; the address the first one listens on, or the first
/// failure.
fn await_bound(
    reports: &mpsc::Receiver<BindReport>,
    cores: usize,
) -> Result<Option<SocketAddr>, ServerError> {
    let mut local_addr = None;
    for _ in 0..cores {
        match reports.recv_timeout(Duration::from_secs(10)) {
            Ok((_, Ok(a))) => local_addr = local_addr.or(Some(a)),
            Ok((_, Err(e))) => return Err(e),
            Err(_) => return Err(ServerError::Engine(ringrpc_engine::EngineError::Stopped)),
        }
    }
    Ok(local_addr)
}

/// Attaches the runtime to the metrics registry and serves `/metrics`, as configured.
fn serve_metrics(
    config: &ServerConfig,
    runtime: &Runtime,
) -> Result<Option<MetricsServer>, ServerError> {
    let Some(registry) = &config.metrics else {
        return Ok(None);
    };
    registry.attach_runtime(runtime.handle());
    config
        .metrics_addr
        .map(|addr| MetricsServer::serve(addr, registry.clone()).map_err(ServerError::Metrics))
        .transpose()
}

/// Registers the server with its registry, as configured; returns what to withdraw later.
fn register(
    config: &ServerConfig,
    local_addr: SocketAddr,
) -> Result<Option<Registered>, ServerError> {
    let Some(r) = &config.register else {
        return Ok(None);
    };
    let mut instance = Instance::new(r.advertise.unwrap_or(local_addr), r.weight);
    instance.tags = r.tags.clone();
    let registration = Registration::new(r.service.clone(), instance);
    r.registry
        .register(&registration)
        .map_err(ServerError::Register)?;
    Ok(Some((r.registry.clone(), registration)))
}

async fn accept_loop<E: Engine>(
    id: u64,
    core: CoreId,
    mut listener: E::Listener,
    services: Vec<ServiceDef>,
    config: Arc<ServerConfig>,
    stats: ServerStats,
    global: Option<Arc<GlobalLimit>>,
) {
    // The per-core pipeline (hooks.rs `ServerStack`, order documented there).
    let limiter = global.and_then(|g| g.core(core.0, TurnClock)).map(Rc::new);
    if let Some(limiter) = &limiter {
        limiter.spawn_sync::<E>(); // core 0's task also rebalances the shares
    }
    let metrics: Option<Rc<CoreMetrics>> = config.metrics.as_ref().map(|r| r.core_metrics());
    let pipeline = ServerStack::<E>::new(&config, Router::new(services), limiter, metrics.clone());
    let state = Rc::new(CoreServer {
        pipeline,
        metrics,
        config: config.clone(),
        core,
        shutting_down: Cell::new(false),
        shutdown: Notify::new(),
        stats,
    });
    {
        let state = state.clone();
        SHUTDOWN_HOOKS.with(|h| {
            h.borrow_mut()
                .insert(id, Rc::new(move || state.begin_shutdown()))
        });
    }
    accept_connections::<E, _>(&mut listener, &state).await;
    SHUTDOWN_HOOKS.with(|h| h.borrow_mut().remove(&id));
}

/// Accepts connections on `listener` and spawns their `serve` tasks until the runtime stops.
async fn accept_connections<E, S>(listener: &mut E::Listener, state: &Rc<CoreServer<S>>)
where
    E: Engine,
    S: Service<CallContext, Bytes, Response = Bytes, Error = HandlerError> + 'static,
{
    let mut backoff = AcceptBackoff::default();
    loop {
        match listener.accept().await {
            Ok(Some((stream, peer))) => {
                backoff.reset();
                let open = state.stats.connection_opened();
                if open >= state.config.max_connections || state.shutting_down.get() {
                    state.stats.connection_closed();
                    tracing::warn!(%peer, open, "connection limit reached; closing");
                    drop(stream);
                    continue;
                }
                E::spawn(serve::<E, _>(stream, peer, state.clone()));
            }
            Ok(None) => break,
            Err(e) => match backoff.after(&e) {
                // The connection being accepted failed (reset, aborted, a socket option
                // refused): it is gone, the next one may be fine.
                None => {
                    state.stats.count_accept_error();
                    tracing::debug!(error = %e, "accepting a connection failed; dropped it");
                }
                // Out of descriptors or memory: every accept would fail until some are freed.
                Some(pause) => {
                    state.stats.count_accept_backoff();
                    tracing::warn!(error = %e, ?pause, "accept failed; pausing accepts");
                    E::sleep(pause).await;
                }
            },
        }
    }
}

/// How long to pause accepting after a failed accept: not at all when only that connection
/// failed; when the process or system is out of a resource (descriptors, buffers, memory),
/// 1 ms doubling up to [`AcceptBackoff::MAX`], so a core never spins on an accept that cannot
/// succeed and still resumes soon after descriptors free.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(100);

    /// The pause after `error`, if any.
    fn after(&mut self, error: &std::io::Error) -> Option<Duration> {
        let exhausted = matches!(
            error.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        ) || error.kind() == std::io::ErrorKind::OutOfMemory;
        if !exhausted {
            return None;
        }
        let pause = self.next;
        self.next = (pause * 2).min(Self::MAX);
        Some(pause)
    }

    /// A connection was accepted: the next shortage starts from the shortest pause again.
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A cloneable, `Send` handle that shuts the server down.
#[derive(Clone)]
pub struct ServerHandle {
    id: u64,
    runtime: RuntimeHandle,
    stats: ServerStats,
    grace: Duration,
    /// The registration to withdraw when shutdown begins (taken by the first shutdown).
    registered: Arc<Mutex<Option<Registered>>>,
}

/// A registration to withdraw, and where.
type Registered = (Arc<dyn Registry>, Registration);

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("id", &self.id)
            .field("runtime", &self.runtime)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Begins a graceful shutdown: deregisters the server from its registry (if it registered;
    /// this may block briefly), then returns while the rest goes on: listeners close, every
    /// later reply carries `crrst=1`, connections stop reading, in-flight calls get the grace
    /// period to finish and send their replies, then everything closes. Called on a core, the
    /// deregistration and the rest run on a helper thread so the core is not blocked.
    pub fn shutdown(&self) {
        let registered = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((registry, registration)) = registered {
            if ringrpc_engine::current_core().is_some() {
                let this = self.clone();
                std::thread::spawn(move || {
                    deregister(&*registry, &registration);
                    this.shutdown();
                });
                return;
            }
            deregister(&*registry, &registration);
        }
        let id = self.id;
        for core in 0..self.runtime.cores() {
            let _ = self.runtime.post(CoreId(core), move || {
                let hook = SHUTDOWN_HOOKS.with(|h| h.borrow().get(&id).cloned());
                if let Some(hook) = hook {
                    hook();
                }
            });
        }
        self.runtime.stop(self.grace);
    }

    /// The runtime serving this server (counters, cross-core calls).
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.runtime
    }

    /// The server's counters (open connections, handler panics, accept errors).
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }
}

fn deregister(registry: &dyn Registry, registration: &Registration) {
    if let Err(e) = registry.deregister(registration) {
        tracing::warn!(error = %e, service = %registration.service, "deregistration failed");
    }
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    runtime: Option<Runtime>,
    handle: ServerHandle,
    local_addr: SocketAddr,
    engine: EngineKind,
    metrics: Option<MetricsRegistry>,
    /// Stops serving `/metrics` when dropped.
    metrics_server: Option<MetricsServer>,
}

impl RunningServer {
    /// The call metrics, when on ([`ServerBuilder::metrics`] or [`ServerBuilder::metrics_addr`]).
    pub fn metrics(&self) -> Option<&MetricsRegistry> {
        self.metrics.as_ref()
    }

    /// Where `GET /metrics` is served, when [`ServerBuilder::metrics_addr`] was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The address the server listens on (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine serving.
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// A handle for shutting down from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's counters; the value returned stays readable after shutdown.
    pub fn stats(&self) -> ServerStats {
        self.handle.stats.clone()
    }

    /// Shuts down gracefully and waits until every core has stopped.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(rt) = self.runtime.take() {
            if let Err(e) = rt.join() {
                tracing::error!(error = %e, "a server core died");
            }
        }
    }

    /// Waits until the server stops (a [`ServerHandle::shutdown`] elsewhere).
    pub fn wait(mut self) {
        if let Some(rt) = self.runtime.take() {
            if let Err(e) = rt.join() {
                tracing::error!(error = %e, "a server core died");
            }
        }
    }

    /// Installs a SIGINT/SIGTERM handler that shuts the server down gracefully, and returns.
    /// Call it before announcing that the server is ready, so a signal sent right after the
    /// announcement finds the handler in place.
    ///
    /// # Errors
    /// [`ServerError::Signal`] if the signal handler cannot be installed.
    pub fn shutdown_on_signal(&self) -> Result<(), ServerError> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(ServerError::Signal)?;
        let handle = self.handle();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                handle.shutdown();
            }
        });
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully and returns.
    ///
    /// # Errors
    /// [`ServerError::Signal`] if the signal handler cannot be installed.
    pub fn wait_for_signal(self) -> Result<(), ServerError> {
        self.shutdown_on_signal()?;
        self.wait();
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            self.handle.shutdown();
            if let Err(e) = rt.join() {
                tracing::error!(error = %e, "a server core died");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(code: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(code)
    }

    #[test]
    fn only_resource_exhaustion_pauses_accepting_and_the_pause_is_bounded() {
        let mut backoff = AcceptBackoff::default();
        for code in [
            libc::ECONNABORTED,
            libc::ECONNRESET,
            libc::EPERM,
            libc::ENOTCONN,
        ] {
            assert_eq!(backoff.after(&os_error(code)), None, "errno {code}");
        }
        let pauses: Vec<Duration> = (0..10)
            .map(|_| backoff.after(&os_error(libc::EMFILE)).unwrap())
            .collect();
        assert_eq!(pauses[0], AcceptBackoff::FIRST);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), AcceptBackoff::MAX);
        for code in [libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(backoff.after(&os_error(code)), Some(AcceptBackoff::MAX));
        }
        backoff.reset();
        assert_eq!(
            backoff.after(&os_error(libc::EMFILE)),
            Some(AcceptBackoff::FIRST)
        );
    }
}
