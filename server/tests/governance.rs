//! Governance end to end (issue 6, item 9): ringrpc servers and clients over loopback with the
//! governance stages wired in through the builders. Each test runs once per engine; the tests of
//! this file take a lock so their timings do not disturb each other.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use ringrpc_client::governance::acl::{AclError, AclRules};
use ringrpc_client::governance::balance::Instance;
use ringrpc_client::governance::breaker::{BreakerConfig, BreakerError, BreakerState};
use ringrpc_client::governance::retry::{Backoff, BudgetConfig, PerMethod, RetryConfig};
use ringrpc_client::{
    CallOptions, Client, ClientConfig, ClientContext, ClientError, LoadBalancerKind, Reply,
};
use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_engine::Engine;
use ringrpc_example_echo::{Request, Response};
use ringrpc_governance::limit::LimitConfig;
use ringrpc_governance::Metainfo;
use ringrpc_server::{
    thrift_body, BizError, CallContext, HandlerError, RunningServer, ServerBuilder, ServiceDef,
};

engine_tests!(
    instance_breaker_trips_at_60pct_errors_moves_traffic_and_recovers,
    method_breaker_fails_fast_with_a_typed_error,
    rate_limit_2000_qps_two_clients_offering_10000,
    weighted_round_robin_within_5pct_over_10000_calls,
    balancers_spread_and_consistent_hash_sticks,
    retry_hides_a_killed_instance_from_idempotent_calls,
    acl_fallback_and_metainfo_along_a_chain,
    attempt_timeout_retries_a_stalled_instance_well_before_the_deadline,
    server_fallback_answers_for_one_method_and_passes_the_other_on,
);

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: the rate and timing checks must not share the CPUs with another test.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// One server instance's switches and counters.
#[derive(Default)]
struct InstanceState {
    /// Calls that reached the handler.
    calls: AtomicUsize,
    /// Answer 3 calls in 5 with an exception (60% errors).
    failing: AtomicBool,
    /// Record the time of every call in `admitted`.
    record: AtomicBool,
    admitted: Mutex<Vec<Instant>>,
}

/// The echo IDL's `Echo`: `rand-sleep` sleeps 0–2 ms; `chain` calls `downstream` (if set) with
/// the forwarded metainfo and answers what it saw; anything else echoes.
fn instance_service<E: Engine>(
    st: Arc<InstanceState>,
    downstream: Option<Client<E>>,
) -> ServiceDef {
    ServiceDef::new(SERVICE).thrift_method(
        "Echo",
        async move |cx: &mut CallContext,
                    Args1(req): Args1<Request>|
                    -> Result<SuccessResult<Response>, HandlerError> {
            let n = st.calls.fetch_add(1, Ordering::SeqCst);
            if st.record.load(Ordering::Relaxed) {
                st.admitted.lock().unwrap().push(Instant::now());
            }
            if st.failing.load(Ordering::SeqCst) && n % 5 < 3 {
                return Err(HandlerError::internal("injected failure"));
            }
            match req.action.as_str() {
                "rand-sleep" => {
                    let us = rand::thread_rng().gen_range(0..=2000);
                    E::sleep(Duration::from_micros(us)).await;
                }
                "chain" => {
                    let m = cx.metainfo();
                    let here = format!(
                        "{}/{}",
                        m.transient("t").unwrap_or("-"),
                        m.persistent("p").unwrap_or("-")
                    );
                    let below = match &downstream {
                        Some(c) => {
                            let opts = CallOptions::default().metainfo(m.forward());
                            match c
                                .call_thrift::<_, SuccessResult<Response>>(
                                    "Echo",
                                    &Args1(req.clone()),
                                    opts,
                                )
                                .await
                            {
                                Ok(SuccessResult(r)) => r.msg,
                                Err(e) => format!("error {e}"),
                            }
                        }
                        None => String::new(),
                    };
                    return Ok(SuccessResult(Response::new(
                        req.action,
                        format!("{here} {below}").trim().to_owned(),
                    )));
                }
                _ => {}
            }
            Ok(SuccessResult(Response::new(req.action, req.msg)))
        },
    )
}

fn start_instance<E: TestEngine>(
    st: &Arc<InstanceState>,
    tune: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    start_chained::<E>(st, None, tune)
}

fn start_chained<E: TestEngine>(
    st: &Arc<InstanceState>,
    downstream: Option<Client<E>>,
    tune: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    let st = st.clone();
    tune(builder::<E>())
        .service(move || instance_service::<E>(st.clone(), downstream.clone()))
        .start()
        .expect("server starts")
}

async fn echo<E: Engine>(c: &Client<E>, action: &str) -> Result<(), ClientError> {
    c.call_thrift::<_, SuccessResult<Response>>("Echo", &req(action, "x"), CallOptions::default())
        .await
        .map(|_| ())
}

/// `callers` tasks making `each` calls in turn; returns the errors.
async fn run_calls<E: Engine>(
    c: &Rc<Client<E>>,
    action: &'static str,
    callers: usize,
    each: usize,
) -> Vec<ClientError> {
    let tasks = (0..callers).map(|_| {
        let c = c.clone();
        async move {
            let mut errors = Vec::new();
            for _ in 0..each {
                if let Err(e) = echo(&c, action).await {
                    errors.push(e);
                }
            }
            errors
        }
    });
    join_all::<E, _>(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn base_config(instances: Vec<Instance>) -> ClientConfig {
    ClientConfig::default()
        .service_name(SERVICE)
        .instances(instances)
}

fn calls(st: &InstanceState) -> usize {
    st.calls.load(Ordering::SeqCst)
}

/// Item 9: an instance answering 60% errors trips its breaker and traffic moves to the healthy
/// one; once it heals, the half-open probes succeed and the breaker closes.
fn instance_breaker_trips_at_60pct_errors_moves_traffic_and_recovers<E: TestEngine>() {
    let _serial = serial();
    let bad = Arc::new(InstanceState::default());
    bad.failing.store(true, Ordering::SeqCst);
    let good = Arc::new(InstanceState::default());
    let bad_server = start_instance::<E>(&bad, |b| b);
    let good_server = start_instance::<E>(&good, |b| b);
    let (ab, ag) = (bad_server.local_addr(), good_server.local_addr());
    let config = base_config(vec![Instance::new(ab, 1), Instance::new(ag, 1)]).instance_breaker(
        BreakerConfig {
            window: Duration::from_secs(2),
            buckets: 10,
            error_rate: 0.5,
            min_samples: 20,
            cool_down: Duration::from_secs(1),
            half_open_probes: 3,
        },
    );
    let client = Client::<E>::new(config);
    let (b, g) = (bad.clone(), good.clone());
    let r = on_core::<E, _, _>(Duration::from_secs(30), move || async move {
        let c = Rc::new(client);
        let t = Instant::now();
        let errors1 = run_calls(&c, "echo", 4, 100).await;
        let state1 = c.instance_breaker_state(ab);
        let (b1, g1) = (calls(&b), calls(&g));
        let errors2 = run_calls(&c, "echo", 4, 50).await;
        let (b2, g2) = (calls(&b), calls(&g));
        let tripped_phase = t.elapsed();
        b.failing.store(false, Ordering::SeqCst);
        E::sleep(Duration::from_millis(1100)).await;
        let errors3 = run_calls(&c, "echo", 4, 100).await;
        let (b3, g3) = (calls(&b), calls(&g));
        let state3 = c.instance_breaker_state(ab);
        (
            errors1,
            state1,
            b1,
            g1,
            errors2,
            b2,
            g2,
            tripped_phase,
            errors3,
            b3,
            g3,
            state3,
        )
    });
    let (errors1, state1, b1, g1, errors2, b2, g2, tripped_phase, errors3, b3, g3, state3) = r;
    eprintln!(
        "phase 1: {} errors, bad {b1} good {g1}, {state1:?}; phase 2: bad +{} good +{} \
         ({tripped_phase:?}); recovered: bad +{} good +{}, {state3:?}",
        errors1.len(),
        b2 - b1,
        g2 - g1,
        b3 - b2,
        g3 - g2
    );
    assert!(
        matches!(state1, Some(BreakerState::Open { .. })),
        "breaker of the 60%-errors instance: {state1:?}"
    );
    // It trips after min_samples (20) calls to the bad instance, 60% of them failed.
    assert!(
        (1..=20).contains(&errors1.len()),
        "{} errors before it tripped",
        errors1.len()
    );
    assert!(errors1
        .iter()
        .all(|e| matches!(e, ClientError::Remote { message, .. } if message.contains("injected"))));
    assert!(b1 <= 30, "the bad instance got {b1} calls");
    assert!(
        tripped_phase < Duration::from_secs(1),
        "phases 1-2 took {tripped_phase:?}"
    );
    assert!(errors2.is_empty(), "{:?}", errors2.first());
    assert_eq!(b2, b1, "no call reaches the open instance");
    assert_eq!(g2 - g1, 200);
    assert!(errors3.is_empty(), "{:?}", errors3.first());
    assert_eq!(state3, Some(BreakerState::Closed));
    assert!(
        b3 - b2 >= 150,
        "after recovery the healed instance gets its share again: {} of 400",
        b3 - b2
    );
    drop((bad_server, good_server));
}

/// Item 3: the method breaker opens on errors and then fails fast with a typed error, sending
/// nothing.
fn method_breaker_fails_fast_with_a_typed_error<E: TestEngine>() {
    let _serial = serial();
    let st = Arc::new(InstanceState::default());
    st.failing.store(true, Ordering::SeqCst);
    let server = start_instance::<E>(&st, |b| b);
    let config = ClientConfig::new(vec![server.local_addr()])
        .service_name(SERVICE)
        .breaker(BreakerConfig {
            min_samples: 10,
            ..BreakerConfig::default()
        });
    let client = Client::<E>::new(config);
    let st2 = st.clone();
    let (results, reached, fast) =
        on_core::<E, _, _>(Duration::from_secs(20), move || async move {
            let mut results = Vec::new();
            for _ in 0..20 {
                results.push(echo(&client, "echo").await);
            }
            let reached = calls(&st2);
            let t = Instant::now();
            let r = echo(&client, "echo").await;
            let fast = t.elapsed();
            results.push(r);
            (results, reached, fast)
        });
    let open: Vec<_> = results
        .iter()
        .filter(|r| matches!(r, Err(ClientError::CircuitOpen(BreakerError::Open))))
        .collect();
    // It may open on the 10th result or be judged at the 11th admission.
    assert!(
        (10..=11).contains(&reached),
        "{reached} calls reached the server before it opened"
    );
    assert_eq!(open.len(), 21 - reached, "{results:?}");
    assert_eq!(calls(&st), reached, "an open breaker sends nothing");
    assert!(
        fast < Duration::from_millis(5),
        "open breaker took {fast:?}"
    );
    drop(server);
}

/// Item 9: a server limited to 2,000 QPS (two cores) offered 10,000 per second by two clients
/// serves 2,000 ± 5% in every measured second and rejects the rest at once with a typed
/// exception.
fn rate_limit_2000_qps_two_clients_offering_10000<E: TestEngine>() {
    let _serial = serial();
    const QPS: usize = 2_000;
    const PER_CLIENT: usize = 5_000;
    const TICK: Duration = Duration::from_millis(10);
    const RUN: Duration = Duration::from_millis(3_300);
    let st = Arc::new(InstanceState::default());
    st.record.store(true, Ordering::SeqCst);
    let server = start_instance::<E>(&st, |b| {
        b.cores(2).rate_limit(LimitConfig {
            max_qps: Some(QPS as u64),
            ..LimitConfig::default()
        })
    });
    let addr = server.local_addr();
    let t0 = Instant::now() + Duration::from_millis(200);

    #[derive(Default, Debug)]
    struct Stats {
        ok: usize,
        over_limit: usize,
        other: Vec<String>,
        reject_latencies: Vec<Duration>,
    }
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let client = Client::<E>::new(ClientConfig::new(vec![addr]).service_name(SERVICE));
                on_core::<E, _, _>(Duration::from_secs(30), move || async move {
                    // Connect before the clock starts.
                    let _ = echo(&client, "echo").await;
                    let stats = Rc::new(RefCell::new(Stats::default()));
                    let left = Rc::new(std::cell::Cell::new(0usize));
                    let client = Rc::new(client);
                    let per_tick = PER_CLIENT * TICK.as_millis() as usize / 1000;
                    let ticks = RUN.as_millis() / TICK.as_millis();
                    for i in 0..ticks as u32 {
                        E::sleep_until(t0 + TICK * i).await;
                        for _ in 0..per_tick {
                            let (c, stats, left) = (client.clone(), stats.clone(), left.clone());
                            left.set(left.get() + 1);
                            E::spawn(async move {
                                let t = Instant::now();
                                let r = echo(&c, "echo").await;
                                let mut s = stats.borrow_mut();
                                match r {
                                    Ok(()) => s.ok += 1,
                                    Err(e) if e.is_over_limit() => {
                                        s.over_limit += 1;
                                        s.reject_latencies.push(t.elapsed());
                                    }
                                    Err(e) => s.other.push(e.to_string()),
                                }
                                left.set(left.get() - 1);
                            });
                        }
                    }
                    let until = Instant::now() + Duration::from_secs(5);
                    while left.get() > 0 && Instant::now() < until {
                        E::sleep(Duration::from_millis(5)).await;
                    }
                    let out = std::mem::take(&mut *stats.borrow_mut());
                    out
                })
            })
        })
        .collect();
    let stats: Vec<Stats> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    drop(server);
    let admitted = std::mem::take(&mut *st.admitted.lock().unwrap());
    // Seconds 1 and 2 after the start (the first second includes the bucket's initial burst
    // and the first rebalance).
    let per_second: Vec<usize> = (1..3)
        .map(|s| {
            let from = t0 + Duration::from_secs(s);
            let to = from + Duration::from_secs(1);
            admitted.iter().filter(|t| **t >= from && **t < to).count()
        })
        .collect();
    let ok: usize = stats.iter().map(|s| s.ok).sum();
    let rejected: usize = stats.iter().map(|s| s.over_limit).sum();
    let mut lat: Vec<Duration> = stats
        .iter()
        .flat_map(|s| s.reject_latencies.iter().copied())
        .collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    eprintln!(
        "served per second {per_second:?}; ok {ok}, rejected {rejected}, rejection p50 {:?} \
         p99 {p99:?} max {:?}",
        lat[lat.len() / 2],
        lat.last().unwrap()
    );
    for s in &stats {
        assert!(s.other.is_empty(), "unexpected errors: {:?}", &s.other[..1]);
    }
    let offered = 2 * PER_CLIENT * RUN.as_millis() as usize / 1000;
    assert_eq!(ok + rejected, offered, "every call answered");
    for n in &per_second {
        let err = (*n as f64 - QPS as f64).abs() / QPS as f64;
        assert!(err <= 0.05, "served {n} in a second, want {QPS} ± 5%");
    }
    assert!(
        rejected as f64 >= offered as f64 * 0.7,
        "{rejected} of {offered} rejected"
    );
    assert!(p99 < Duration::from_millis(50), "rejections p99 {p99:?}");
}

/// Item 9: weighted round-robin over 10,000 calls lands within ±5% of the weights.
fn weighted_round_robin_within_5pct_over_10000_calls<E: TestEngine>() {
    let _serial = serial();
    let weights = [1u32, 3, 6];
    let states: Vec<_> = weights
        .iter()
        .map(|_| Arc::new(InstanceState::default()))
        .collect();
    let servers: Vec<_> = states
        .iter()
        .map(|s| start_instance::<E>(s, |b| b))
        .collect();
    let instances = servers
        .iter()
        .zip(weights)
        .map(|(s, w)| Instance::new(s.local_addr(), w))
        .collect();
    let client = Client::<E>::new(base_config(instances));
    let errors = on_core::<E, _, _>(Duration::from_secs(30), move || async move {
        run_calls(&Rc::new(client), "echo", 16, 625).await
    });
    assert!(errors.is_empty(), "{:?}", errors.first());
    let total: u32 = weights.iter().sum();
    for (st, w) in states.iter().zip(weights) {
        let want = 10_000.0 * f64::from(w) / f64::from(total);
        let got = calls(st) as f64;
        assert!(
            (got - want).abs() <= want * 0.05,
            "weight {w}: {got} calls, want {want} ± 5%"
        );
    }
    drop(servers);
}

/// Item 5: random, power of two and consistent hashing spread calls; consistent hashing sends
/// one key to one instance.
fn balancers_spread_and_consistent_hash_sticks<E: TestEngine>() {
    let _serial = serial();
    let states: Vec<_> = (0..3).map(|_| Arc::new(InstanceState::default())).collect();
    let servers: Vec<_> = states
        .iter()
        .map(|s| start_instance::<E>(s, |b| b))
        .collect();
    let instances: Vec<Instance> = servers
        .iter()
        .map(|s| Instance::new(s.local_addr(), 10))
        .collect();
    for kind in [LoadBalancerKind::Random, LoadBalancerKind::PowerOfTwo] {
        let before: Vec<usize> = states.iter().map(|s| calls(s)).collect();
        let client = Client::<E>::new(base_config(instances.clone()).balancer(kind));
        let errors = on_core::<E, _, _>(Duration::from_secs(20), move || async move {
            run_calls(&Rc::new(client), "echo", 8, 75).await
        });
        assert!(errors.is_empty(), "{kind:?}: {:?}", errors.first());
        for (s, b) in states.iter().zip(before) {
            let n = calls(s) - b;
            assert!((100..=350).contains(&n), "{kind:?}: {n} of 600 calls");
        }
    }
    let client = Client::<E>::new(
        base_config(instances)
            .balancer(LoadBalancerKind::ConsistentHash)
            .hash_key(|cx: &ClientContext, _| {
                ringrpc_client::governance::balance::hash_key(
                    cx.metainfo.persistent("uid").unwrap_or("").as_bytes(),
                )
            }),
    );
    let before: Vec<usize> = states.iter().map(|s| calls(s)).collect();
    let st = states.clone();
    let landed = on_core::<E, _, _>(Duration::from_secs(20), move || async move {
        let mut landed = Vec::new();
        for uid in 0..20 {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let b: Vec<usize> = st.iter().map(|s| calls(s)).collect();
                let m = Metainfo::new().with_persistent("uid", format!("user-{uid}"));
                client
                    .call_thrift::<_, SuccessResult<Response>>(
                        "Echo",
                        &req("echo", "x"),
                        CallOptions::default().metainfo(m),
                    )
                    .await
                    .expect("call");
                let i = (0..st.len()).find(|i| calls(&st[*i]) > b[*i]).unwrap();
                seen.push(i);
            }
            landed.push(seen);
        }
        landed
    });
    for seen in &landed {
        assert!(
            seen.iter().all(|i| *i == seen[0]),
            "one key, one instance: {seen:?}"
        );
    }
    let used: std::collections::HashSet<usize> = landed.iter().map(|s| s[0]).collect();
    assert!(used.len() >= 2, "20 keys all on one instance");
    let after: usize =
        states.iter().map(|s| calls(s)).sum::<usize>() - before.iter().sum::<usize>();
    assert_eq!(after, 100);
    drop(servers);
}

/// Item 9: with failure retry on an idempotent method, killing one of two instances under load
/// shows the caller no error: calls cut off on the killed instance, and connects refused by it,
/// are retried on the other; its instance breaker opens and keeps the traffic away.
fn retry_hides_a_killed_instance_from_idempotent_calls<E: TestEngine>() {
    let _serial = serial();
    let (a, b) = (
        Arc::new(InstanceState::default()),
        Arc::new(InstanceState::default()),
    );
    // No grace: the killed server drops its calls and connections at once.
    let kill = |x: ServerBuilder| x.shutdown_grace(Duration::ZERO);
    let sa = start_instance::<E>(&a, kill);
    let sb = start_instance::<E>(&b, kill);
    let (aa, ab) = (sa.local_addr(), sb.local_addr());
    let config = base_config(vec![Instance::new(aa, 1), Instance::new(ab, 1)])
        .rpc_timeout(Some(Duration::from_secs(2)))
        .retry(PerMethod::none().method(
            "Echo",
            RetryConfig {
                max_attempts: 4,
                max_duration: None,
                backoff: Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(10),
                    multiplier: 2.0,
                    jitter: 0.5,
                },
                attempt_timeout: None,
            },
        ))
        // With two instances, losing one needs a retry for up to half the calls until its
        // breaker opens: a budget of 60% of calls covers that (the default 20% would not).
        .retry_budget(BudgetConfig {
            retry_ratio: 0.6,
            ..BudgetConfig::default()
        })
        .instance_breaker(BreakerConfig {
            window: Duration::from_secs(1),
            min_samples: 10,
            cool_down: Duration::from_secs(10),
            ..BreakerConfig::default()
        });
    let client = Client::<E>::new(config);
    let start = Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let at = Instant::now();
        sb.shutdown();
        at
    });
    let end = start + Duration::from_millis(1200);
    let (ok, errors, state) = on_core::<E, _, _>(Duration::from_secs(30), move || async move {
        let c = Rc::new(client);
        let tasks = (0..32).map(|_| {
            let c = c.clone();
            async move {
                let (mut ok, mut errors) = (0usize, Vec::new());
                while Instant::now() < end {
                    match echo(&c, "rand-sleep").await {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, errors)
            }
        });
        let results = join_all::<E, _>(tasks).await;
        let ok = results.iter().map(|r| r.0).sum::<usize>();
        let errors: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
        (ok, errors, c.instance_breaker_state(ab))
    });
    let killed_at = killer.join().unwrap();
    let (on_a, on_b) = (calls(&a), calls(&b));
    eprintln!(
        "ok {ok}, errors {}, calls a {on_a} b {on_b}, killed at {:?}, breaker of b {state:?}",
        errors.len(),
        killed_at - start
    );
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    assert!(on_b > 100, "the killed instance served {on_b} calls before");
    assert!(ok > 1_000, "{ok} calls");
    assert!(
        matches!(state, Some(BreakerState::Open { .. })),
        "{state:?}"
    );
    drop(sa);
}

/// Item 7: client and server ACL rules reject with typed errors, a fallback turns an error into
/// a reply, and metainfo crosses one hop (transient) or the whole chain (persistent).
fn acl_fallback_and_metainfo_along_a_chain<E: TestEngine>() {
    let _serial = serial();
    let tail_state = Arc::new(InstanceState::default());
    let tail = start_instance::<E>(&tail_state, |b| b);
    let mid_state = Arc::new(InstanceState::default());
    let downstream =
        Client::<E>::new(ClientConfig::new(vec![tail.local_addr()]).service_name(SERVICE));
    let mid = start_chained::<E>(&mid_state, Some(downstream), |b| {
        b.acl(AclRules::new().rule(|cx: &CallContext, _| {
            if cx.metainfo().persistent("role") == Some("banned") {
                Err(AclError::rejected("banned role"))
            } else {
                Ok(())
            }
        }))
    });
    let addr = mid.local_addr();
    let client = Client::<E>::new(ClientConfig::new(vec![addr]).service_name(SERVICE).acl(
        AclRules::new().rule(|cx: &ClientContext, _| {
            if cx.method == "Forbidden" {
                Err(AclError::rejected("method not allowed here"))
            } else {
                Ok(())
            }
        }),
    ));
    let with_fallback = Client::<E>::new(
        ClientConfig::new(vec![addr])
            .service_name(SERVICE)
            .fallback(|cx: &mut ClientContext, e: ClientError| match e {
                ClientError::Remote { .. } => {
                    let mut body = bytes::BytesMut::new();
                    ringrpc_codec::apache::write_body(
                        &SuccessResult(Response::new("fallback".into(), cx.method.clone())),
                        &mut body,
                    )
                    .unwrap();
                    Ok(Reply {
                        body: body.freeze(),
                        header: None,
                        backward: Default::default(),
                    })
                }
                e => Err(e),
            }),
    );
    let out = on_core::<E, _, _>(Duration::from_secs(20), move || async move {
        let before = calls(&mid_state);
        let forbidden = client
            .call_raw("Forbidden", bytes::Bytes::new(), CallOptions::default())
            .await;
        let sent = calls(&mid_state) - before;
        let m = Metainfo::new()
            .with_transient("t", "one-hop")
            .with_persistent("p", "all-hops");
        let chain = client
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("chain", ""),
                CallOptions::default().metainfo(m),
            )
            .await
            .map(|r| r.0.msg);
        let banned = Metainfo::new().with_persistent("role", "banned");
        let rejected = client
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("echo", "x"),
                CallOptions::default().metainfo(banned.clone()),
            )
            .await
            .map(|r| r.0.msg);
        let fell_back = with_fallback
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("echo", "x"),
                CallOptions::default().metainfo(banned),
            )
            .await
            .map(|r| (r.0.action, r.0.msg));
        (forbidden.map(|_| ()), sent, chain, rejected, fell_back)
    });
    let (forbidden, sent, chain, rejected, fell_back) = out;
    assert!(
        matches!(&forbidden, Err(ClientError::AclRejected(AclError::Rejected(r))) if r.contains("not allowed")),
        "{forbidden:?}"
    );
    assert_eq!(sent, 0, "a client ACL rejection sends nothing");
    // The middle server saw both; the tail saw only the persistent value.
    assert_eq!(chain.unwrap(), "one-hop/all-hops -/all-hops");
    assert!(
        matches!(&rejected, Err(ClientError::Remote { message, .. }) if message.contains("banned role")),
        "{rejected:?}"
    );
    assert_eq!(
        fell_back.unwrap(),
        ("fallback".to_owned(), "Echo".to_owned())
    );
    drop((mid, tail));
}

/// Issue 6, item 2: a per-attempt timeout. One instance accepts connections and never answers
/// (a listener nobody accepts from: the kernel completes the handshake, nothing replies); the
/// other is healthy. With 100 ms per attempt under a 2 s RPC timeout, every call that tries
/// the stalled instance first is cut at 100 ms and succeeds on the retry, long before 2 s.
fn attempt_timeout_retries_a_stalled_instance_well_before_the_deadline<E: TestEngine>() {
    let _serial = serial();
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good = Arc::new(InstanceState::default());
    let server = start_instance::<E>(&good, |b| b);
    let config = base_config(vec![
        Instance::new(stalled.local_addr().unwrap(), 1),
        Instance::new(server.local_addr(), 1),
    ])
    .rpc_timeout(Some(Duration::from_secs(2)))
    .retry(
        PerMethod::none().method(
            "Echo",
            RetryConfig {
                max_attempts: 3,
                backoff: Backoff::NONE,
                ..RetryConfig::default()
            }
            .attempt_timeout(Duration::from_millis(100)),
        ),
    );
    let client = Client::<E>::new(config);
    let took = on_core::<E, _, _>(Duration::from_secs(30), move || async move {
        let mut took = Vec::new();
        for _ in 0..6 {
            let start = Instant::now();
            let r = echo(&client, "echo").await;
            took.push((r.map_err(|e| e.to_string()), start.elapsed()));
        }
        took
    });
    eprintln!("{took:?}");
    for (r, t) in &took {
        assert!(r.is_ok(), "{r:?} after {t:?}");
        assert!(*t < Duration::from_secs(1), "a call took {t:?}");
    }
    // Round-robin sends at least every other call's first attempt to the stalled instance:
    // those waited for the attempt timeout, then the healthy instance answered.
    let cut = took
        .iter()
        .filter(|(_, t)| *t >= Duration::from_millis(100))
        .count();
    assert!(cut >= 3, "{cut} of 6 calls met the stalled instance");
    assert_eq!(calls(&good), 6);
    drop((server, stalled));
}

/// Issue 6, item 7: a server fallback. Two methods with the same handler (`biz` answers a
/// business error, `sleep` outlives the 100 ms handler timeout); the fallback answers for
/// `Covered` with a fixed body naming the error kind and passes `Uncovered`'s errors on. An
/// ACL rejection never reaches the fallback.
fn server_fallback_answers_for_one_method_and_passes_the_other_on<E: TestEngine>() {
    let _serial = serial();
    async fn handler<E: Engine>(
        _: &mut CallContext,
        Args1(req): Args1<Request>,
    ) -> Result<SuccessResult<Response>, HandlerError> {
        match req.action.as_str() {
            "biz" => Err(BizError::new(1234, "out of stock").into()),
            "sleep" => {
                E::sleep(Duration::from_secs(10)).await;
                Ok(SuccessResult(Response::new(req.action, req.msg)))
            }
            _ => Ok(SuccessResult(Response::new(req.action, req.msg))),
        }
    }
    let server = builder::<E>()
        .handler_timeout(Duration::from_millis(100))
        .acl(AclRules::new().rule(|cx: &CallContext, _| {
            if cx.metainfo().persistent("role") == Some("banned") {
                Err(AclError::rejected("banned role"))
            } else {
                Ok(())
            }
        }))
        .fallback(|cx, e| {
            if cx.method() == "Covered" {
                thrift_body(&SuccessResult(Response::new(
                    "fallback".into(),
                    e.kind().into(),
                )))
            } else {
                Err(e)
            }
        })
        .service(|| {
            ServiceDef::new(SERVICE)
                .thrift_method("Covered", handler::<E>)
                .thrift_method("Uncovered", handler::<E>)
        })
        .start()
        .expect("server starts");
    let client =
        Client::<E>::new(ClientConfig::new(vec![server.local_addr()]).service_name(SERVICE));
    type Got = Result<(String, String), ClientError>;
    let (covered, uncovered, banned, took) =
        on_core::<E, _, _>(Duration::from_secs(20), move || async move {
            let call = |method: &'static str, action: &'static str, opts: CallOptions| {
                let c = &client;
                async move {
                    c.call_thrift::<_, SuccessResult<Response>>(method, &req(action, "x"), opts)
                        .await
                        .map(|r| (r.0.action, r.0.msg))
                }
            };
            let mut covered: Vec<Got> = Vec::new();
            let mut uncovered: Vec<Got> = Vec::new();
            let start = Instant::now();
            for action in ["echo", "biz", "sleep"] {
                covered.push(call("Covered", action, CallOptions::default()).await);
                uncovered.push(call("Uncovered", action, CallOptions::default()).await);
            }
            let took = start.elapsed();
            let banned = Metainfo::new().with_persistent("role", "banned");
            let banned = call("Covered", "biz", CallOptions::default().metainfo(banned)).await;
            (covered, uncovered, banned, took)
        });
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    // Covered: successes untouched, the business error and the timeout answered.
    assert_eq!(covered[0].as_ref().unwrap(), &pair("echo", "x"));
    assert_eq!(covered[1].as_ref().unwrap(), &pair("fallback", "biz"));
    assert_eq!(covered[2].as_ref().unwrap(), &pair("fallback", "timeout"));
    // Uncovered: the same errors reach the client as the handler left them.
    assert_eq!(uncovered[0].as_ref().unwrap(), &pair("echo", "x"));
    assert!(
        matches!(&uncovered[1], Err(ClientError::Biz(b)) if b.status == 1234 && b.message == "out of stock"),
        "{:?}",
        uncovered[1]
    );
    assert!(
        matches!(&uncovered[2], Err(ClientError::Remote { message, .. }) if message.contains("deadline exceeded")),
        "{:?}",
        uncovered[2]
    );
    // Two handler timeouts of 100 ms, not the handler's 10 s sleep.
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The ACL rejects before the fallback: the caller sees the rejection.
    assert!(
        matches!(&banned, Err(ClientError::Remote { message, .. }) if message.contains("banned role")),
        "{banned:?}"
    );
    drop(server);
}
