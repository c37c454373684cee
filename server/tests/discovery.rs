//! Service discovery end to end (issue 6, item 8): servers register through their builder, a
//! client follows the service through its resolver. The etcd test starts a private etcd (the
//! `etcd` binary, installed by scripts/install-test-deps.sh) on free ports and fails if it is
//! missing. Each test runs once per engine.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringrpc_client::governance::balance::Instance;
use ringrpc_client::governance::discovery::{Registry, Resolver, StaticResolver};
use ringrpc_client::governance::retry::{PerMethod, RetryConfig};
use ringrpc_client::{CallOptions, Client, ClientConfig};
use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_discovery_etcd::{EtcdRegistry, EtcdResolver, LocalEtcd};
use ringrpc_engine::{Engine, RuntimeConfig};
use ringrpc_example_echo::{Request, Response};
use ringrpc_server::{CallContext, HandlerError, RegisterConfig, RunningServer, ServiceDef};

engine_tests!(
    etcd_two_servers_register_and_a_stopped_one_is_dropped_within_2s,
    static_resolver_feeds_the_balancer,
    a_server_registered_the_kitex_way_is_resolved_and_called,
    what_our_server_registers_is_kitex_registry_etcd_format,
);

/// An echo server counting the calls it answers.
fn counting_server<E: TestEngine>(
    calls: &Arc<AtomicUsize>,
    tune: impl FnOnce(ringrpc_server::ServerBuilder) -> ringrpc_server::ServerBuilder,
) -> RunningServer {
    let calls = calls.clone();
    tune(builder::<E>().shutdown_grace(Duration::from_millis(500)))
        .service(move || {
            let calls = calls.clone();
            ServiceDef::new(SERVICE).thrift_method(
                "Echo",
                async move |_: &mut CallContext,
                            Args1(req): Args1<Request>|
                            -> Result<SuccessResult<Response>, HandlerError> {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(SuccessResult(Response::new(req.action, req.msg)))
                },
            )
        })
        .start()
        .expect("server starts")
}

/// What the client task reports.
#[derive(Default)]
struct Report {
    ok: AtomicUsize,
    failed: AtomicUsize,
    /// When the balancer's list first lacked `gone` (after `gone` was set).
    dropped_at: Mutex<Option<Instant>>,
    gone: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
}

/// Calls `Echo` in a loop (about one call per ms) on a one-core runtime until `stop`.
fn calling<E: Engine>(client: Client<E>, report: Arc<Report>) -> ringrpc_engine::Runtime {
    let task = Mutex::new(Some((client, report)));
    E::launch(RuntimeConfig::with_cores(1), move |_| {
        let (client, report) = task.lock().unwrap().take().expect("one core");
        async move {
            while !report.stop.load(Ordering::SeqCst) {
                let r = client
                    .call_thrift::<_, SuccessResult<Response>>(
                        "Echo",
                        &req("echo", "x"),
                        CallOptions::default(),
                    )
                    .await;
                match r {
                    Ok(_) => report.ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        report.failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                let gone = *report.gone.lock().unwrap();
                if let Some(gone) = gone {
                    let list = client.instances_on_this_core().expect("on a core");
                    let mut dropped = report.dropped_at.lock().unwrap();
                    if dropped.is_none() && list.iter().all(|i| i.addr != gone) {
                        *dropped = Some(Instant::now());
                    }
                }
                E::sleep(Duration::from_millis(1)).await;
            }
        }
    })
    .expect("client runtime")
}

/// `n` echo calls through `client`, each expected to succeed.
async fn echo_calls<E: Engine>(client: &Client<E>, n: usize) {
    for _ in 0..n {
        client
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("echo", "x"),
                CallOptions::default(),
            )
            .await
            .expect("call");
    }
}

fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn etcd_two_servers_register_and_a_stopped_one_is_dropped_within_2s<E: TestEngine>() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let service = "echo";
    let (calls_a, calls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let registry_a: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(etcd.config()).unwrap());
    let registry_b: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(etcd.config()).unwrap());
    let server_a = counting_server::<E>(&calls_a, |b| b.register(registry_a, service));
    let server_b = counting_server::<E>(&calls_b, |b| b.register(registry_b, service));
    let (addr_a, addr_b) = (server_a.local_addr(), server_b.local_addr());

    // Both are registered before start returns.
    let resolver: Arc<dyn Resolver> = Arc::new(EtcdResolver::connect(etcd.config()).unwrap());
    let mut listed: Vec<SocketAddr> = resolver
        .resolve(service)
        .unwrap()
        .iter()
        .map(|i| i.addr)
        .collect();
    listed.sort();
    let mut want = vec![addr_a, addr_b];
    want.sort();
    assert_eq!(listed, want);

    // A resolver-driven client (no targets) spreads its calls over both.
    let client = Client::<E>::try_new(
        ClientConfig::default()
            .resolver(resolver, service)
            .retry(PerMethod::all(RetryConfig::default())),
    )
    .expect("watch starts");
    let report = Arc::new(Report::default());
    let runtime = calling(client, report.clone());
    wait_until("calls on both servers", Duration::from_secs(5), || {
        calls_a.load(Ordering::SeqCst) >= 20 && calls_b.load(Ordering::SeqCst) >= 20
    });

    // B shuts down gracefully: it deregisters first, then drains.
    *report.gone.lock().unwrap() = Some(addr_b);
    let t0 = Instant::now();
    server_b.shutdown();
    let b_final = calls_b.load(Ordering::SeqCst);
    wait_until("B left the balancer", Duration::from_secs(2), || {
        report.dropped_at.lock().unwrap().is_some()
    });
    let dropped = report.dropped_at.lock().unwrap().unwrap();
    assert!(
        dropped.duration_since(t0) <= Duration::from_secs(2),
        "B dropped after {:?}",
        dropped.duration_since(t0)
    );
    // After that, every call goes to A and succeeds.
    let (ok_then, a_then) = (
        report.ok.load(Ordering::SeqCst),
        calls_a.load(Ordering::SeqCst),
    );
    wait_until("100 more calls", Duration::from_secs(5), || {
        report.ok.load(Ordering::SeqCst) >= ok_then + 100
    });
    report.stop.store(true, Ordering::SeqCst);
    runtime.stop(Duration::from_millis(100));
    let ok_after = report.ok.load(Ordering::SeqCst) - ok_then;
    // The one caller may have a call in flight across the two snapshots above: served by A
    // before `a_then`, counted ok after `ok_then`.
    assert!(calls_a.load(Ordering::SeqCst) - a_then + 1 >= ok_after);
    assert_eq!(calls_b.load(Ordering::SeqCst), b_final);
    assert_eq!(
        report.failed.load(Ordering::SeqCst),
        0,
        "calls failed while B left"
    );
    // A deregisters on shutdown too.
    server_a.shutdown();
    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    assert!(resolver.resolve(service).unwrap().is_empty());
}

fn static_resolver_feeds_the_balancer<E: TestEngine>() {
    let (calls_a, calls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let server_a = counting_server::<E>(&calls_a, |b| b);
    let server_b = counting_server::<E>(&calls_b, |b| b);
    let resolver = StaticResolver::new().service(
        "echo",
        vec![
            Instance::new(server_a.local_addr(), 10),
            Instance::new(server_b.local_addr(), 10),
        ],
    );
    let client = Client::<E>::try_new(ClientConfig::default().resolver(Arc::new(resolver), "echo"))
        .expect("watch starts");
    let (tx, rx) = mpsc::channel();
    let listed = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        echo_calls(&client, 100).await;
        let _ = tx.send(());
        client.instances_on_this_core().unwrap().len()
    });
    rx.recv().unwrap();
    assert_eq!(listed, 2);
    // Round-robin over equal weights: an even split.
    assert_eq!(calls_a.load(Ordering::SeqCst), 50);
    assert_eq!(calls_b.load(Ordering::SeqCst), 50);
    // A resolver that knows nothing of the service leaves the client with no instance.
    let client = Client::<E>::try_new(
        ClientConfig::default().resolver(Arc::new(StaticResolver::new()), "x"),
    )
    .unwrap();
    let err = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        client
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("echo", "x"),
                CallOptions::default(),
            )
            .await
            .expect_err("no instance")
            .kind()
    });
    assert_eq!(err, "no_instance");
}

/// Kitex interop: an entry written exactly as a Kitex server registers through
/// kitex-contrib/registry-etcd (key `kitex/registry-etcd/<service>/<host:port>`, value
/// `{"network":"tcp","address":..,"weight":10,"tags":null}`: a Kitex server without tags writes
/// a nil map as `null`) is found by our resolver, and our client calls the server it names.
fn a_server_registered_the_kitex_way_is_resolved_and_called<E: TestEngine>() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let calls = Arc::new(AtomicUsize::new(0));
    let server = counting_server::<E>(&calls, |b| b);
    let addr = server.local_addr();
    etcd.put(
        &format!("kitex/registry-etcd/echo.kitex/{addr}"),
        &format!(r#"{{"network":"tcp","address":"{addr}","weight":10,"tags":null}}"#),
    )
    .unwrap();
    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    assert_eq!(
        resolver.resolve("echo.kitex").unwrap(),
        vec![Instance::new(addr, 10)]
    );
    let client =
        Client::<E>::try_new(ClientConfig::default().resolver(Arc::new(resolver), "echo.kitex"))
            .expect("watch starts");
    let served = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        echo_calls(&client, 10).await;
        client.instances_on_this_core().unwrap()
    });
    assert_eq!(served, vec![Instance::new(addr, 10)]);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

/// Kitex interop: what our server registers is what a Kitex client's resolver
/// (kitex-contrib/registry-etcd) reads: one key `kitex/registry-etcd/<service>/<addr>`, whose
/// value has exactly the fields of its `instanceInfo`, in its order, with Go's types.
fn what_our_server_registers_is_kitex_registry_etcd_format<E: TestEngine>() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let calls = Arc::new(AtomicUsize::new(0));
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(etcd.config()).unwrap());
    let server = counting_server::<E>(&calls, |b| {
        b.register_with(
            RegisterConfig::new(registry, "echo")
                .weight(20)
                .tag("zone", "a"),
        )
    });
    let addr = server.local_addr();
    let entries = etcd.get_prefix("kitex/registry-etcd/").unwrap();
    assert_eq!(
        entries,
        vec![(
            format!("kitex/registry-etcd/echo/{addr}"),
            format!(r#"{{"network":"tcp","address":"{addr}","weight":20,"tags":{{"zone":"a"}}}}"#),
        )]
    );
    server.shutdown();
    assert!(etcd.get_prefix("kitex/registry-etcd/").unwrap().is_empty());
}
