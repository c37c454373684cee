//! Criterion benches of the governance hooks: the cost one call pays for metrics, a method
//! breaker, an instance breaker (with the balancer's availability filter), the limiter, and
//! the client's and server's sets of them, over a service that answers at once.
//!
//! The benches run on an io_uring core, as the pipelines do, so the turn clock is what the
//! hooks read (no `clock_gettime` per call). Absolute times depend on the machine; compare each
//! with `bare_client` (the balancer alone) or `bare_server` (the service alone) from the same
//! run. `scripts/bench.sh` does not run these; `cargo bench -p ringrpc-governance` does.

use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, RuntimeConfig};
use ringrpc_governance::acl::{AclError, AclRules};
use ringrpc_governance::balance::{BalanceError, BalanceLayer, Instance, WeightedRoundRobin};
use ringrpc_governance::breaker::{
    BreakerConfig, BreakerError, BreakerLayer, InstanceBreakerLayer, InstanceBreakers,
};
use ringrpc_governance::clock::{ManualClock, TurnClock};
use ringrpc_governance::limit::{GlobalLimit, LimitConfig, LimitError};
use ringrpc_governance::obs::{CoreMetrics, MetricsLayer};
use ringrpc_governance::{
    service_fn, CallDeadline, CallMethod, CallTarget, Hooked, Layer, Service,
};

#[derive(Clone)]
struct Cx {
    method: String,
    target: Option<SocketAddr>,
    deadline: Option<Instant>,
}

impl CallMethod for Cx {
    fn method(&self) -> &str {
        &self.method
    }
}

impl CallTarget for Cx {
    fn target(&self) -> Option<SocketAddr> {
        self.target
    }
    fn set_target(&mut self, target: Option<SocketAddr>) {
        self.target = target;
    }
}

impl CallDeadline for Cx {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

#[derive(Debug)]
#[allow(dead_code)] // the variants are there for the `From`s; errors never happen here
enum Error {
    Breaker(BreakerError),
    Balance(BalanceError),
    Acl(AclError),
    Limit(LimitError),
}

impl From<BreakerError> for Error {
    fn from(e: BreakerError) -> Self {
        Self::Breaker(e)
    }
}
impl From<BalanceError> for Error {
    fn from(e: BalanceError) -> Self {
        Self::Balance(e)
    }
}
impl From<AclError> for Error {
    fn from(e: AclError) -> Self {
        Self::Acl(e)
    }
}
impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        Self::Limit(e)
    }
}

/// One call, polled once: every service here answers on the first poll.
fn call<S: Service<Cx, u32, Response = u32, Error = Error>>(svc: &S, cx: &mut Cx, req: u32) -> u32 {
    let fut = pin!(svc.call(cx, req));
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r.expect("no governance rejection in these benches"),
        Poll::Pending => unreachable!("the inner service answers at once"),
    }
}

fn bench<S: Service<Cx, u32, Response = u32, Error = Error>>(
    c: &mut Criterion,
    name: &str,
    svc: S,
) {
    bench_ticking(c, name, svc, |_| {});
}

/// [`bench`], calling `tick` with the call number before each call.
fn bench_ticking<S: Service<Cx, u32, Response = u32, Error = Error>>(
    c: &mut Criterion,
    name: &str,
    svc: S,
    mut tick: impl FnMut(u32),
) {
    let mut cx = Cx {
        method: "Echo".to_owned(),
        target: None,
        deadline: Some(Instant::now() + Duration::from_secs(5)),
    };
    c.bench_function(&format!("governance_hooks/{name}"), |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            tick(i);
            black_box(call(&svc, &mut cx, black_box(i)))
        });
    });
}

fn bench_hooks(c: &mut Criterion) {
    let addr: SocketAddr = "10.0.0.1:9000".parse().expect("an address");
    let echo = || service_fn(|_: &mut Cx, req: u32| async move { Ok::<u32, Error>(req) });
    let balancer = || Rc::new(WeightedRoundRobin::new(vec![Instance::new(addr, 10)]));
    let metrics = || {
        MetricsLayer::new(Rc::new(CoreMetrics::new(
            ringrpc_governance::obs::DEFAULT_BUCKETS,
        )))
        .into_hook()
    };
    let method_breakers = || {
        BreakerLayer::new(BreakerConfig::default())
            .clock(TurnClock)
            .into_hook()
    };
    // The balancer skips instances whose breaker is open, and its hook records into them: the
    // client's shape (client/src/pipeline.rs).
    let balanced_with_instance_breakers = || {
        let breakers = Rc::new(InstanceBreakers::with_clock(
            BreakerConfig::default(),
            TurnClock,
        ));
        let filter = breakers.clone();
        BalanceLayer::new(balancer())
            .filter(move |a| filter.is_available(a))
            .hook(Some(InstanceBreakerLayer::new(breakers).into_hook()))
            .layer(echo())
    };

    bench(
        c,
        "bare_client",
        BalanceLayer::new(balancer()).layer(echo()),
    );
    bench(
        c,
        "metrics",
        Hooked::new(BalanceLayer::new(balancer()).layer(echo()), Some(metrics())),
    );
    bench(
        c,
        "method_breaker",
        Hooked::new(
            BalanceLayer::new(balancer()).layer(echo()),
            Some(method_breakers()),
        ),
    );
    bench(c, "instance_breaker", balanced_with_instance_breakers());
    // The client's hooks as `--governance` configures them: metrics outermost, the method
    // breaker (after an ACL slot left empty), the instance breaker under the balancer.
    bench(
        c,
        "client",
        Hooked::new(
            Hooked::new(
                balanced_with_instance_breakers(),
                (None::<AclRules<Cx, u32>>, Some(method_breakers())),
            ),
            Some(metrics()),
        ),
    );
    bench(c, "bare_server", echo());
    // The server's: metrics, then a limiter far above the load, then an ACL slot left empty.
    // The turn clock stands still while a bench runs, so the limiter reads a clock of its own
    // that moves 10 µs every 256 calls, like loop turns of a busy core: its token bucket
    // refills once a "turn", as on a server.
    let limit = LimitConfig {
        max_qps: Some(100_000_000),
        max_concurrency: Some(1_000_000),
        ..LimitConfig::default()
    };
    let clock = ManualClock::new();
    let limiter = GlobalLimit::new(limit, 1)
        .core(0, clock.clone())
        .map(Rc::new)
        .expect("core 0 of a one-core limit");
    bench_ticking(
        c,
        "server",
        Hooked::new(
            echo(),
            (Some(metrics()), (Some(limiter), None::<AclRules<Cx, u32>>)),
        ),
        |i| {
            if i % 256 == 0 {
                clock.advance(Duration::from_micros(10));
            }
        },
    );
}

fn main() {
    let (tx, rx) = mpsc::channel();
    let runtime = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let mut c = Criterion::default().configure_from_args();
            bench_hooks(&mut c);
            c.final_summary();
            let _ = tx.send(());
        }
    })
    .expect("an io_uring core");
    rx.recv().expect("the benches ran");
    runtime.stop(Duration::ZERO);
}
