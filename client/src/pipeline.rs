//! The per-core client stack, built once per client per core from the shared configuration:
//! one struct, [`ClientStack`], with a field per governance module (`None` when not
//! configured), called in this fixed order, outermost first (docs/governance.md):
//!
//! ```text
//! obs?        span and tracer hooks
//! metrics?    hooks: run before the call in this order and after it in reverse; a
//! fallback?          rejection goes back out through the hooks that already ran
//! acl?
//! user hooks  (ClientConfig::hook, in the order added)
//! breaker?    per method
//! timeout     the call's deadline (the RPC timeout) over every attempt
//! backup?     per method
//! retry?      per method; each attempt re-balances
//! balance     picks the instance; the instance breaker? runs around the call to it
//! transport   Decode (frame → reply or typed error) over the core's pool
//! ```
//!
//! A stage that wraps the rest of the call (obs, timeout, backup, retry, balance) is the
//! module's layer called with `around(next, cx, req)`, `next` being the stack below it as a
//! borrowed service (`Hooks`, `Attempts`, `Retried`, `Balanced`: one type per level, so
//! nothing recurses and nothing is boxed). The call's future holds every stage inline: a call
//! with nothing configured allocates nothing for the stack (test: `crate::stack_alloc`).
//! A method whose `RetryConfig::attempt_timeout` is set also has each attempt bounded inside
//! retry (the attempt's deadline, never past the call's, is the one sent to the server).
//! Backup and retry, when on, cost one per-method lookup for methods they do not cover. Every
//! stage keeps its state on the core (breakers, balancer counters, retry budget), so no lock
//! is taken.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{parse_int_value, MessageType, TtHeader};
use ringrpc_engine::Engine;
use ringrpc_governance::acl::AclRules;
use ringrpc_governance::balance::{
    hash_key, BalanceError, BalanceLayer, ConsistentHash, Instance, LoadBalancer, PickKey, Picked,
    PowerOfTwo, WeightedRandom, WeightedRoundRobin,
};
use ringrpc_governance::breaker::{
    BreakerLayer, BreakerState, InstanceBreakerHook, InstanceBreakerLayer, InstanceBreakers,
    MethodBreakers,
};
use ringrpc_governance::clock::{SystemClock, TurnClock};
use ringrpc_governance::fallback::{FallbackHook, FallbackLayer};
use ringrpc_governance::obs::{MetricsHook, MetricsLayer, ObsLayer, Tracer};
use ringrpc_governance::retry::{BackupLayer, RetryBudget, RetryLayer};
use ringrpc_governance::timeout::{TimeoutConfig, TimeoutLayer};
use ringrpc_governance::{Backward, CallDeadline, CallHook, Service};

use crate::config::{ErrorFilter, HashKeyFn, LoadBalancerKind, SharedHook};
use crate::error::BizError;
use crate::pool::{CorePool, TransportReply};
use crate::{ClientConfig, ClientContext, ClientError, Reply};

/// Turns the transport's reply frame into a [`Reply`] or a typed error, inside the pipeline,
/// so that breakers and retries see remote exceptions and business errors.
pub(crate) struct Decode<S>(S);

impl<S> Service<ClientContext, Bytes> for Decode<S>
where
    S: Service<ClientContext, Bytes, Response = TransportReply, Error = ClientError>,
{
    type Response = Reply;
    type Error = ClientError;

    async fn call(&self, cx: &mut ClientContext, body: Bytes) -> Result<Reply, ClientError> {
        let frame = self.0.call(cx, body).await?;
        let Some(frame) = frame else {
            return Ok(Reply {
                body: Bytes::new(),
                header: None,
                backward: Backward::default(),
            });
        };
        match frame.head.message_type {
            MessageType::Exception => {
                // The server enforces the deadline we sent and answers an exception when it
                // passes; if that beats our own timer, the call still ends as a timeout.
                if let (Some(deadline), Some(t)) = (cx.deadline(), cx.timeout) {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout(t));
                    }
                }
                let e = frame.exception()?;
                Err(ClientError::Remote {
                    kind: e.kind,
                    message: e.message,
                })
            }
            _ => {
                if let Some(biz) = frame.head.header().and_then(biz_error) {
                    return Err(ClientError::Biz(biz));
                }
                let backward = frame
                    .head
                    .header()
                    .map(Backward::read_reply)
                    .unwrap_or_default();
                Ok(Reply {
                    body: frame.body,
                    header: frame.head.header,
                    backward,
                })
            }
        }
    }
}

/// The business error a reply header carries, if its `biz-status` is non-zero.
fn biz_error(h: &TtHeader) -> Option<BizError> {
    let status = h
        .str_kv(skeys::BIZ_STATUS.as_bytes())
        .and_then(parse_int_value)?;
    if status == 0 {
        return None;
    }
    let text = |k: &str| {
        h.str_kv(k.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(BizError {
        status: i32::try_from(status).unwrap_or(i32::MAX),
        message: text(skeys::BIZ_MESSAGE).unwrap_or_default(),
        extra: text(skeys::BIZ_EXTRA),
    })
}

/// The configured balancer, one per client per core.
#[derive(Debug)]
pub(crate) enum AnyBalancer {
    RoundRobin(WeightedRoundRobin),
    Random(WeightedRandom),
    PowerOfTwo(PowerOfTwo),
    ConsistentHash(ConsistentHash),
}

impl AnyBalancer {
    pub(crate) fn new(kind: LoadBalancerKind, instances: Vec<Instance>) -> Self {
        match kind {
            LoadBalancerKind::RoundRobin => Self::RoundRobin(WeightedRoundRobin::new(instances)),
            LoadBalancerKind::Random => Self::Random(WeightedRandom::new(instances)),
            LoadBalancerKind::PowerOfTwo => Self::PowerOfTwo(PowerOfTwo::new(instances)),
            LoadBalancerKind::ConsistentHash => {
                Self::ConsistentHash(ConsistentHash::new(instances))
            }
        }
    }

    fn inner(&self) -> &dyn LoadBalancer {
        match self {
            Self::RoundRobin(b) => b,
            Self::Random(b) => b,
            Self::PowerOfTwo(b) => b,
            Self::ConsistentHash(b) => b,
        }
    }
}

impl LoadBalancer for AnyBalancer {
    fn pick(
        &self,
        key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        match self {
            Self::RoundRobin(b) => b.pick(key, available),
            Self::Random(b) => b.pick(key, available),
            Self::PowerOfTwo(b) => b.pick(key, available),
            Self::ConsistentHash(b) => b.pick(key, available),
        }
    }

    fn update(&self, instances: Vec<Instance>) {
        self.inner().update(instances);
    }

    fn instances(&self) -> Vec<Instance> {
        self.inner().instances()
    }
}

/// The hash key of a call: only computed for consistent hashing.
pub(crate) struct CallKey {
    consistent: bool,
    key: Option<HashKeyFn>,
}

impl PickKey<ClientContext, Bytes> for CallKey {
    fn key(&self, cx: &ClientContext, body: &Bytes) -> u64 {
        if !self.consistent {
            return 0;
        }
        match &self.key {
            Some(f) => (f.0)(cx, body),
            None => hash_key(body),
        }
    }
}

type FailFn = fn(&ClientError) -> bool;

/// What a method breaker counts: everything but business errors and this client's own
/// rejections (an open breaker, an ACL rule).
fn method_failure(e: &ClientError) -> bool {
    !matches!(
        e,
        ClientError::Biz(_) | ClientError::AclRejected(_) | ClientError::CircuitOpen(_)
    )
}

/// What an instance breaker counts: what the instance did (connection errors, timeouts,
/// exceptions), not business errors or local rejections.
fn instance_failure(e: &ClientError) -> bool {
    !matches!(e, ClientError::Biz(_)) && !e.is_local_rejection()
}

type KindFn = fn(&ClientError) -> &'static str;
type FallbackBox = Box<dyn Fn(&mut ClientContext, ClientError) -> Result<Reply, ClientError>>;
type SharedTracer = Arc<dyn Tracer<ClientContext> + Send + Sync>;
type InstanceHook = Option<InstanceBreakerHook<TurnClock, FailFn>>;
/// The real transport: the core's pool, its reply frames decoded.
pub(crate) type Transport<E> = Decode<Rc<CorePool<E>>>;

/// One client's governance stack on one core: a field per module, `None` when it is not
/// configured, called in the fixed order of the [module docs](self). `T` is the transport
/// (the core's pool; a stub in the allocation test).
pub(crate) struct ClientStack<E: Engine, T> {
    /// The `tracing` span and the tracer hooks, outermost.
    obs: Option<ObsLayer<SharedTracer>>,
    /// Call metrics: they see what the caller gets.
    metrics: Option<MetricsHook<KindFn>>,
    /// Errors into replies: sees every error, the rejections below included.
    fallback: Option<FallbackHook<FallbackBox>>,
    /// Reject rules, before any work.
    acl: Option<AclRules<ClientContext, Bytes>>,
    /// The user's hooks ([`ClientConfig::hook`]), in the order added.
    hooks: Arc<[SharedHook]>,
    /// Breakers per method: outside retries, so an open breaker also stops them.
    breaker: Option<MethodBreakers<TurnClock, FailFn>>,
    /// Enforces the call's deadline (set in the context per call) over everything below.
    timeout: TimeoutLayer<E>,
    /// Backup requests of the methods covered.
    backup: Option<BackupLayer<E, SystemClock>>,
    /// Failure retry of the methods covered; each attempt re-balances.
    retry: Option<RetryLayer<E, ErrorFilter, SystemClock>>,
    /// Picks the instance, skipping open instance breakers, and runs the instance breaker
    /// around the call to it.
    balance: BalanceLayer<Rc<AnyBalancer>, CallKey, InstanceHook>,
    transport: T,
}

/// What a call through the stack ends with.
type CallResult = Result<Reply, ClientError>;

impl<E, T> ClientStack<E, T>
where
    E: Engine,
    T: Service<ClientContext, Bytes, Response = Reply, Error = ClientError>,
{
    /// Builds the stack `config` asks for around `transport`, balancing with `balancer` and
    /// the instance breakers given (on the core that will use it).
    pub(crate) fn new(
        config: &ClientConfig,
        transport: T,
        balancer: Rc<AnyBalancer>,
        instance_breakers: Option<&Rc<InstanceBreakers<TurnClock>>>,
    ) -> Self {
        let mut balance = BalanceLayer::new(balancer);
        if let Some(b) = instance_breakers {
            let b = b.clone();
            balance = balance.filter(move |a| b.is_available(a));
        }
        let instance_hook: InstanceHook = instance_breakers.map(|b| {
            InstanceBreakerLayer::new(b.clone())
                .failure_policy(instance_failure as FailFn)
                .into_hook()
        });
        let balance = balance
            .key(CallKey {
                consistent: config.balancer == LoadBalancerKind::ConsistentHash,
                key: config.hash_key.clone(),
            })
            .hook(instance_hook);
        // Retry and backup share one budget.
        let budget = Rc::new(RetryBudget::new(config.retry_budget));
        let retry = (!config.retry.is_none()).then(|| {
            RetryLayer::<E, _>::new(config.retry.clone(), config.retry_policy.clone())
                .budget(budget.clone())
        });
        let backup = (!config.backup.is_none())
            .then(|| BackupLayer::<E>::new(config.backup.clone()).budget(budget));
        let metrics = config.metrics.as_ref().map(|registry| {
            registry.attach_current_runtime();
            MetricsLayer::new(registry.core_metrics())
                .error_kind(ClientError::kind as KindFn)
                .into_hook()
        });
        let fallback = config.fallback.as_ref().map(|f| {
            let f = f.0.clone();
            let f: FallbackBox = Box::new(move |cx, e| f(cx, e));
            FallbackLayer::new(f).into_hook()
        });
        let breaker = config.breaker.map(|c| {
            BreakerLayer::new(c)
                .clock(TurnClock)
                .failure_policy(method_failure as FailFn)
                .into_hook()
        });
        let obs = (config.tracing || config.tracer.is_some()).then(|| {
            ObsLayer::new("client")
                .span(config.tracing)
                .tracer(config.tracer.as_ref().map(|t| t.0.clone()))
        });
        Self {
            obs,
            metrics,
            fallback,
            acl: (!config.acl.is_empty()).then(|| config.acl.clone()),
            hooks: config.hooks.iter().map(|h| h.0.clone()).collect(),
            breaker,
            // The deadline is set per call in the context; the layer enforces it.
            timeout: TimeoutLayer::new(TimeoutConfig { timeout: None }),
            backup,
            retry,
            balance,
            transport,
        }
    }

    /// One call through the whole stack.
    pub(crate) async fn call(&self, cx: &mut ClientContext, body: Bytes) -> CallResult {
        match &self.obs {
            Some(obs) => obs.around(&Hooks(self), cx, body).await,
            None => self.hooks(cx, body).await,
        }
    }

    /// The hooks, then the timeout around the attempts. Before the call the hooks run
    /// outermost first; a hook's rejection ends the call there and goes back out through the
    /// hooks that already ran, in reverse, as a result does.
    async fn hooks(&self, cx: &mut ClientContext, body: Bytes) -> CallResult {
        let metrics = match self.metrics.before(cx, &body) {
            ControlFlow::Continue(t) => t,
            ControlFlow::Break(result) => return result,
        };
        let result = match self.fallback.before(cx, &body) {
            ControlFlow::Break(result) => result,
            ControlFlow::Continue(fallback) => {
                let result = match self.acl.before(cx, &body) {
                    ControlFlow::Break(result) => result,
                    ControlFlow::Continue(acl) => {
                        let result = self.user_hooks(cx, body).await;
                        after(&self.acl, acl, cx, result)
                    }
                };
                after(&self.fallback, fallback, cx, result)
            }
        };
        after(&self.metrics, metrics, cx, result)
    }

    /// The user's hooks, then the method breaker around the timed attempts.
    async fn user_hooks(&self, cx: &mut ClientContext, body: Bytes) -> CallResult {
        let mut ran = 0;
        let mut rejected = None;
        for hook in self.hooks.iter() {
            if let Err(e) = hook.before(cx, &body) {
                rejected = Some(e);
                break;
            }
            ran += 1;
        }
        let mut result = match rejected {
            Some(e) => Err(e),
            None => match self.breaker.before(cx, &body) {
                ControlFlow::Break(result) => result,
                ControlFlow::Continue(breaker) => {
                    let result = self.timeout.around(&Attempts(self), cx, body).await;
                    after(&self.breaker, breaker, cx, result)
                }
            },
        };
        for hook in self.hooks[..ran].iter().rev() {
            result = hook.after(cx, result);
        }
        result
    }
}

/// `hook.after` for a call of the stack (`after` does not name the request type, so it is
/// fixed here).
fn after<'h, H>(
    hook: &'h H,
    token: H::Token<'h>,
    cx: &mut ClientContext,
    result: CallResult,
) -> CallResult
where
    H: CallHook<ClientContext, Bytes, Reply, ClientError>,
{
    hook.after(token, cx, result)
}

/// The stack below the span and tracer, as the service they wrap.
struct Hooks<'a, E: Engine, T>(&'a ClientStack<E, T>);

impl<E, T> Service<ClientContext, Bytes> for Hooks<'_, E, T>
where
    E: Engine,
    T: Service<ClientContext, Bytes, Response = Reply, Error = ClientError>,
{
    type Response = Reply;
    type Error = ClientError;

    fn call(&self, cx: &mut ClientContext, body: Bytes) -> impl Future<Output = CallResult> {
        self.0.hooks(cx, body)
    }
}

/// Backup (if configured) around the rest: what the timeout wraps.
struct Attempts<'a, E: Engine, T>(&'a ClientStack<E, T>);

impl<E, T> Service<ClientContext, Bytes> for Attempts<'_, E, T>
where
    E: Engine,
    T: Service<ClientContext, Bytes, Response = Reply, Error = ClientError>,
{
    type Response = Reply;
    type Error = ClientError;

    async fn call(&self, cx: &mut ClientContext, body: Bytes) -> CallResult {
        let below = Retried(self.0);
        match &self.0.backup {
            Some(backup) => backup.around(&below, cx, body).await,
            None => below.call(cx, body).await,
        }
    }
}

/// Retry (if configured) around the balancer: what a backup races.
struct Retried<'a, E: Engine, T>(&'a ClientStack<E, T>);

impl<E, T> Service<ClientContext, Bytes> for Retried<'_, E, T>
where
    E: Engine,
    T: Service<ClientContext, Bytes, Response = Reply, Error = ClientError>,
{
    type Response = Reply;
    type Error = ClientError;

    async fn call(&self, cx: &mut ClientContext, body: Bytes) -> CallResult {
        let s = self.0;
        match &s.retry {
            Some(retry) => retry.around(&Balanced(s), cx, body).await,
            None => s.balance.around(&s.transport, cx, body).await,
        }
    }
}

/// The balancer around the transport: one attempt, what a retry repeats.
struct Balanced<'a, E: Engine, T>(&'a ClientStack<E, T>);

impl<E, T> Service<ClientContext, Bytes> for Balanced<'_, E, T>
where
    E: Engine,
    T: Service<ClientContext, Bytes, Response = Reply, Error = ClientError>,
{
    type Response = Reply;
    type Error = ClientError;

    fn call(&self, cx: &mut ClientContext, body: Bytes) -> impl Future<Output = CallResult> {
        self.0.balance.around(&self.0.transport, cx, body)
    }
}

/// One client's governance state on one core.
pub(crate) struct CoreClient<E: Engine> {
    pub(crate) stack: ClientStack<E, Transport<E>>,
    balancer: Rc<AnyBalancer>,
    instance_breakers: Option<Rc<InstanceBreakers<TurnClock>>>,
    /// Generation of the last discovery snapshot applied on this core.
    applied: Cell<u64>,
}

impl<E: Engine> CoreClient<E> {
    /// Builds the stack around `pool` from `config` (on the core that will use it).
    pub(crate) fn new(config: &ClientConfig, pool: Rc<CorePool<E>>) -> Self {
        let instance_breakers = config
            .instance_breaker
            .map(|c| Rc::new(InstanceBreakers::with_clock(c, TurnClock)));
        let balancer = Rc::new(AnyBalancer::new(
            config.balancer,
            config.effective_instances(),
        ));
        let stack = ClientStack::new(
            config,
            Decode(pool),
            balancer.clone(),
            instance_breakers.as_ref(),
        );
        Self {
            stack,
            balancer,
            instance_breakers,
            applied: Cell::new(0),
        }
    }

    /// The state of `addr`'s instance breaker on this core (`None`: instance breakers off).
    pub(crate) fn instance_state(&self, addr: SocketAddr) -> Option<BreakerState> {
        self.instance_breakers.as_ref().map(|b| b.state(addr))
    }

    /// This core's instance list.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.balancer.instances()
    }

    /// Applies discovery snapshot number `generation` unless a newer one is applied already.
    pub(crate) fn apply_snapshot(&self, generation: u64, instances: &[Instance]) {
        if generation > self.applied.get() {
            self.applied.set(generation);
            self.set_instances(instances.to_vec());
        }
    }

    /// Replaces this core's instance list; breakers of instances that left are forgotten.
    pub(crate) fn set_instances(&self, instances: Vec<Instance>) {
        if let Some(b) = &self.instance_breakers {
            b.retain(|a| instances.iter().any(|i| i.addr == a));
        }
        self.balancer.update(instances);
    }
}
