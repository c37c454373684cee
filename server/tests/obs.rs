//! Observability end to end (issue 6, item 6): a server and a client with metrics, tracing and
//! tracer hooks turned on through their builders. The server's `/metrics` endpoint is read over
//! a raw TCP socket; the client's registry is rendered from outside its runtime. Each test runs
//! once per engine.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringrpc_client::governance::obs::{
    CallInfo, CallOutcome, CallStatus, MetricsConfig, MetricsRegistry, Tracer,
};
use ringrpc_client::{CallOptions, Client, ClientConfig};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_engine::RuntimeConfig;
use ringrpc_example_echo::Response;

engine_tests!(metrics_endpoint_and_tracer_hooks_on_both_sides);

/// Counts a side's tracer hooks and keeps the seq ids and peers seen when calls finish.
#[derive(Default)]
struct Hooks {
    starts: AtomicUsize,
    finishes: AtomicUsize,
    errors: AtomicUsize,
    seqs: Mutex<Vec<i32>>,
    peers: Mutex<Vec<Option<SocketAddr>>>,
}

impl<Cx: CallInfo> Tracer<Cx> for Hooks {
    fn start(&self, cx: &Cx) {
        assert_eq!(cx.method(), "Echo");
        self.starts.fetch_add(1, Ordering::SeqCst);
    }

    fn finish(&self, cx: &Cx, outcome: &CallOutcome<'_>) {
        if outcome.status == CallStatus::Error {
            assert!(outcome.error.is_some());
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
        self.seqs
            .lock()
            .unwrap()
            .push(cx.seq_id().expect("seq id known"));
        self.peers.lock().unwrap().push(cx.peer());
        self.finishes.fetch_add(1, Ordering::SeqCst);
    }
}

/// `GET /metrics` over a raw socket; returns the body after checking the status line.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().expect("a number"))
    })
}

fn expect(body: &str, series: &str, want: f64) {
    assert_eq!(value(body, series), Some(want), "{series} in\n{body}");
}

/// Polls `scrape` until `series` has `want`, for up to 2 s; returns the last body.
fn wait_for(scrape: impl Fn() -> String, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let body = scrape();
        if value(&body, series) == Some(want) || Instant::now() > deadline {
            expect(&body, series, want);
            return body;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_endpoint_and_tracer_hooks_on_both_sides<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server_hooks = Arc::new(Hooks::default());
    let hooks = server_hooks.clone();
    let server = start_test_server::<E>(&probe, move |b| {
        b.metrics_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .tracing(true)
            .tracer(hooks)
    });
    let metrics_addr = server.metrics_addr().expect("metrics endpoint");
    let addr = server.local_addr();
    let engine = E::NAME;

    let client_hooks = Arc::new(Hooks::default());
    let client_metrics = MetricsRegistry::new(MetricsConfig::subsystem("client"));
    let client = Client::<E>::new(
        ClientConfig::new(vec![addr])
            .metrics(client_metrics.clone())
            .tracing(true)
            .tracer(client_hooks.clone()),
    );

    // The client's runtime: 25 quick calls (3 business errors, 2 exceptions), then one call
    // sleeping 1.5 s on the server, held in flight while the test scrapes.
    let (step_tx, step_rx) = mpsc::channel::<&'static str>();
    let task = Mutex::new(Some((client, step_tx)));
    let runtime = E::launch(RuntimeConfig::with_cores(1), move |_| {
        let (client, step) = task.lock().unwrap().take().expect("one core");
        async move {
            let call = |action: &'static str, msg: &'static str| {
                let c = client.clone();
                async move {
                    c.call_thrift::<_, SuccessResult<Response>>(
                        "Echo",
                        &req(action, msg),
                        CallOptions::default(),
                    )
                    .await
                }
            };
            for _ in 0..20 {
                call("echo", "x").await.expect("echo");
            }
            for _ in 0..3 {
                call("biz", "no").await.expect_err("biz error");
            }
            for _ in 0..2 {
                call("exception", "boom").await.expect_err("exception");
            }
            let slow = join_all::<E, _>([call("sleep", "1500")]);
            let _ = step.send("quick calls done");
            slow.await.remove(0).expect("slow call");
            let _ = step.send("slow call done");
        }
    })
    .expect("client runtime");
    assert_eq!(
        step_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "quick calls done"
    );

    // While the slow call runs: 25 finished calls, 1 in flight, 1 connection.
    let body = wait_for(|| scrape(metrics_addr), "ringrpc_server_in_flight", 1.0);
    expect(&body, r#"ringrpc_server_calls_total{method="Echo"}"#, 25.0);
    expect(
        &body,
        r#"ringrpc_server_errors_total{method="Echo",kind="biz"}"#,
        3.0,
    );
    expect(
        &body,
        r#"ringrpc_server_errors_total{method="Echo",kind="exception"}"#,
        2.0,
    );
    expect(
        &body,
        r#"ringrpc_server_call_duration_seconds_count{method="Echo"}"#,
        25.0,
    );
    expect(
        &body,
        r#"ringrpc_server_call_duration_seconds_bucket{method="Echo",le="+Inf"}"#,
        25.0,
    );
    expect(&body, "ringrpc_server_connections", 1.0);
    let core0 = format!(r#"{{engine="{engine}",core="0"}}"#);
    expect(&body, &format!("ringrpc_engine_accepted_total{core0}"), 1.0);
    for counter in ["received_bytes", "sent_bytes"] {
        let v = value(&body, &format!("ringrpc_engine_{counter}_total{core0}"));
        assert!(v.is_some_and(|v| v > 0.0), "{counter}: {v:?}\n{body}");
    }
    assert!(body.contains("# TYPE ringrpc_server_call_duration_seconds histogram"));

    // The client's registry, rendered from outside its runtime (the scrape asks its core).
    let cbody = client_metrics.render();
    expect(&cbody, r#"ringrpc_client_calls_total{method="Echo"}"#, 25.0);
    expect(
        &cbody,
        r#"ringrpc_client_errors_total{method="Echo",kind="biz"}"#,
        3.0,
    );
    expect(
        &cbody,
        r#"ringrpc_client_errors_total{method="Echo",kind="remote"}"#,
        2.0,
    );
    expect(&cbody, "ringrpc_client_in_flight", 1.0);
    // One multiplexed connection from the client's side, counted by its pool.
    expect(&cbody, "ringrpc_client_connections", 1.0);
    assert!(
        value(&cbody, &format!("ringrpc_engine_sent_bytes_total{core0}")).is_some_and(|v| v > 0.0),
        "client engine counters\n{cbody}"
    );
    assert_eq!(server_hooks.starts.load(Ordering::SeqCst), 26);
    assert_eq!(server_hooks.finishes.load(Ordering::SeqCst), 25);
    assert_eq!(client_hooks.starts.load(Ordering::SeqCst), 26);
    assert_eq!(client_hooks.finishes.load(Ordering::SeqCst), 25);

    // The slow call finishes: it lands in the (1, 2.5] s bucket; nothing is in flight.
    assert_eq!(
        step_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "slow call done"
    );
    let body = wait_for(
        || scrape(metrics_addr),
        r#"ringrpc_server_calls_total{method="Echo"}"#,
        26.0,
    );
    expect(&body, "ringrpc_server_in_flight", 0.0);
    expect(
        &body,
        r#"ringrpc_server_call_duration_seconds_bucket{method="Echo",le="1"}"#,
        25.0,
    );
    expect(
        &body,
        r#"ringrpc_server_call_duration_seconds_bucket{method="Echo",le="2.5"}"#,
        26.0,
    );
    let sum = value(
        &body,
        r#"ringrpc_server_call_duration_seconds_sum{method="Echo"}"#,
    )
    .unwrap();
    assert!((1.5..2.5).contains(&sum), "latency sum {sum}");
    let cbody = client_metrics.render();
    expect(&cbody, r#"ringrpc_client_calls_total{method="Echo"}"#, 26.0);
    expect(&cbody, "ringrpc_client_in_flight", 0.0);

    // Tracer hooks: start and finish once per call on each side, errors seen as errors, the
    // same seq ids on both sides, the peer known at the end.
    for (side, h) in [("server", &server_hooks), ("client", &client_hooks)] {
        assert_eq!(h.starts.load(Ordering::SeqCst), 26, "{side}");
        assert_eq!(h.finishes.load(Ordering::SeqCst), 26, "{side}");
        assert_eq!(h.errors.load(Ordering::SeqCst), 5, "{side}");
    }
    let mut s_seqs = server_hooks.seqs.lock().unwrap().clone();
    let mut c_seqs = client_hooks.seqs.lock().unwrap().clone();
    s_seqs.sort_unstable();
    c_seqs.sort_unstable();
    assert_eq!(s_seqs, c_seqs);
    assert_eq!(c_seqs.len(), 26);
    assert!(client_hooks
        .peers
        .lock()
        .unwrap()
        .iter()
        .all(|p| *p == Some(addr)));
    assert!(server_hooks
        .peers
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.is_some()));

    // The client leaves: the server's connection gauge goes back to 0.
    runtime.stop(Duration::from_millis(50));
    wait_for(|| scrape(metrics_addr), "ringrpc_server_connections", 0.0);
    // Anything but GET /metrics is not found.
    let mut s = TcpStream::connect(metrics_addr).unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    server.shutdown();
    assert!(probe.started.load(Ordering::SeqCst) >= 1);
}
