//! The per-core client pipeline, built once per client per core from the shared configuration.
//!
//! Outermost first (docs/governance.md):
//!
//! ```text
//! Obs? (span, tracer) ─▶ [Metrics?, Fallback?, Acl?, Breaker? (per method)] ─▶ Timeout ─▶ Backup? ─▶ Retry?
//!   ─▶ Balance [InstanceBreaker?] ─▶ Decode (frame → reply or typed error) ─▶ CorePool (transport)
//! ```
//!
//! `Timeout` holds the call's deadline (the RPC timeout) over every attempt; a method whose
//! `RetryConfig::attempt_timeout` is set also has each attempt bounded inside `Retry` (the
//! attempt's deadline, never past the call's, is the one sent to the server).
//!
//! Stages marked `?` are absent (not merely idle) when not configured; a configured stage's
//! future is boxed (see `Maybe`), so stages that are off cost neither time nor future size.
//! Those in brackets are synchronous hooks (`CallHook`) sharing one stage: no future and no
//! allocation of their own, and an unconfigured hook costs a branch.
//! Backup and retry, when on, cost one per-method lookup for methods they do not cover. Every
//! stage keeps its state on the core (breakers, balancer counters, retry budget), so no lock
//! is taken.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{parse_int_value, MessageType, TtHeader};
use ringrpc_engine::Engine;
use ringrpc_governance::acl::AclRules;
use ringrpc_governance::balance::{
    hash_key, Balance, BalanceError, BalanceLayer, ConsistentHash, Instance, LoadBalancer, PickKey,
    Picked, PowerOfTwo, WeightedRandom, WeightedRoundRobin,
};
use ringrpc_governance::breaker::{
    BreakerLayer, BreakerState, InstanceBreakerHook, InstanceBreakerLayer, InstanceBreakers,
    MethodBreakers,
};
use ringrpc_governance::clock::{SystemClock, TurnClock};
use ringrpc_governance::fallback::{FallbackHook, FallbackLayer};
use ringrpc_governance::obs::{MetricsHook, MetricsLayer, ObsLayer, Observed, Tracer};
use ringrpc_governance::retry::{Backup, BackupLayer, Retry, RetryBudget, RetryLayer};
use ringrpc_governance::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use ringrpc_governance::{Backward, CallDeadline, Hooked, Layer, Maybe, Service};

use crate::config::{ErrorFilter, HashKeyFn, LoadBalancerKind};
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
    fn new(kind: LoadBalancerKind, instances: Vec<Instance>) -> Self {
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

type Transport<E> = Decode<Rc<CorePool<E>>>;
type InstanceHook = Option<InstanceBreakerHook<TurnClock, FailFn>>;
type Balanced<E> = Balance<Transport<E>, Rc<AnyBalancer>, CallKey, InstanceHook>;
type Retried<E> = Maybe<Retry<Balanced<E>, E, ErrorFilter, SystemClock>, Balanced<E>>;
type Backed<E> = Maybe<Backup<Retried<E>, E, SystemClock>, Retried<E>>;
type Timed<E> = Timeout<Backed<E>, E>;
type FallbackBox = Box<dyn Fn(&mut ClientContext, ClientError) -> Result<Reply, ClientError>>;
type KindFn = fn(&ClientError) -> &'static str;
/// Metrics, fallback, ACL rules, the method's breaker: outermost first, one stage.
type CallHooks = (
    Option<MetricsHook<KindFn>>,
    (
        Option<FallbackHook<FallbackBox>>,
        (
            Option<AclRules<ClientContext, Bytes>>,
            Option<MethodBreakers<TurnClock, FailFn>>,
        ),
    ),
);
type Hooks<E> = Hooked<Timed<E>, CallHooks>;
type SharedTracer = std::sync::Arc<dyn Tracer<ClientContext> + Send + Sync>;

/// The whole pipeline of one core.
pub(crate) type Pipeline<E> = Maybe<Observed<Hooks<E>, SharedTracer>, Hooks<E>>;

/// One client's governance state on one core.
pub(crate) struct CoreClient<E: Engine> {
    pub(crate) pipeline: Pipeline<E>,
    balancer: Rc<AnyBalancer>,
    instance_breakers: Option<Rc<InstanceBreakers<TurnClock>>>,
    /// Generation of the last discovery snapshot applied on this core.
    applied: Cell<u64>,
}

impl<E: Engine> CoreClient<E> {
    /// Builds the pipeline around `pool` from `config` (on the core that will use it).
    pub(crate) fn new(config: &ClientConfig, pool: Rc<CorePool<E>>) -> Self {
        let transport = Decode(pool);
        let instance_breakers = config
            .instance_breaker
            .map(|c| Rc::new(InstanceBreakers::with_clock(c, TurnClock)));
        let balancer = Rc::new(AnyBalancer::new(
            config.balancer,
            config.effective_instances(),
        ));
        let mut balance = BalanceLayer::new(balancer.clone());
        if let Some(b) = &instance_breakers {
            let b = b.clone();
            balance = balance.filter(move |a| b.is_available(a));
        }
        // The instance breaker runs as the balancer's hook, around the call to the picked
        // instance, rather than as a stage of its own around the transport.
        let instance_hook: InstanceHook = instance_breakers.as_ref().map(|b| {
            InstanceBreakerLayer::new(b.clone())
                .failure_policy(instance_failure as FailFn)
                .into_hook()
        });
        let svc: Balanced<E> = balance
            .key(CallKey {
                consistent: config.balancer == LoadBalancerKind::ConsistentHash,
                key: config.hash_key.clone(),
            })
            .hook(instance_hook)
            .layer(transport);
        // Retry and backup share one budget; a stage no method uses is left out.
        let budget = Rc::new(RetryBudget::new(config.retry_budget));
        let svc: Retried<E> = if config.retry.is_none() {
            Maybe::Off(svc)
        } else {
            Maybe::On(
                RetryLayer::<E, _>::new(config.retry.clone(), config.retry_policy.clone())
                    .budget(budget.clone())
                    .layer(svc),
            )
        };
        let svc: Backed<E> = if config.backup.is_none() {
            Maybe::Off(svc)
        } else {
            Maybe::On(
                BackupLayer::<E>::new(config.backup.clone())
                    .budget(budget)
                    .layer(svc),
            )
        };
        // The deadline is set per call in the context; the layer enforces it.
        let svc: Timed<E> = TimeoutLayer::<E>::new(TimeoutConfig { timeout: None }).layer(svc);
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
        let acl = (!config.acl.is_empty()).then(|| config.acl.clone());
        let breakers = config.breaker.map(|c| {
            BreakerLayer::new(c)
                .clock(TurnClock)
                .failure_policy(method_failure as FailFn)
                .into_hook()
        });
        let pipeline: Hooks<E> = Hooked::new(svc, (metrics, (fallback, (acl, breakers))));
        // Observability outermost: trace span and tracer hooks.
        let pipeline: Pipeline<E> = ObsLayer::new("client")
            .span(config.tracing)
            .tracer(config.tracer.as_ref().map(|t| t.0.clone()))
            .layer_if_configured(pipeline);
        Self {
            pipeline,
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
