//! Observability: Prometheus rendering (parsed back), the metrics layer's counts, merging across engine cores, tracer hook order, and the `tracing` span.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::oneshot::block_on;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{CoreId, Engine, RuntimeConfig};
use ringrpc_governance::obs::prometheus::{self, Family, MetricKind, Sample};
use ringrpc_governance::obs::{
    CallInfo, CallOutcome, CoreMetrics, MetricsConfig, MetricsLayer, MetricsRegistry, ObsLayer,
    Tracer,
};
use ringrpc_governance::{service_fn, CallMethod, Layer, Service};

/// A minimal call context.
#[derive(Debug, Default)]
struct Cx {
    method: String,
    peer: Option<SocketAddr>,
    seq: Option<i32>,
}

impl Cx {
    fn new(method: &str) -> Self {
        Self {
            method: method.to_owned(),
            ..Self::default()
        }
    }
}

impl CallMethod for Cx {
    fn method(&self) -> &str {
        &self.method
    }
}

impl CallInfo for Cx {
    fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
    fn seq_id(&self) -> Option<i32> {
        self.seq
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` once and drops it (a call cancelled while pending).
fn poll_once_and_drop<F: Future>(fut: F) {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(fut);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
}

/// A parsed exposition: families by name with type, help, and samples as
/// `(series name, labels, value)`.
#[derive(Debug, Default)]
struct Parsed {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Parsed {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    }
}

/// Parses the text format strictly enough to catch malformed output: every sample belongs to
/// a family declared before it by `# HELP` and `# TYPE`.
fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            p.helps.insert(name.to_owned(), help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("type");
            assert!(p.helps.contains_key(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type {kind}"
            );
            p.types.insert(name.to_owned(), kind.to_owned());
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    (name.to_owned(), parse_labels(body))
                }
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| p.types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&name)
                .to_owned();
            assert!(p.types.contains_key(&family), "sample {name} without TYPE");
            p.samples.push((name, labels, value));
        }
    }
    p
}

/// Parses `k="v",k2="v2"` with the format's escapes.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value must be quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

#[test]
fn rendering_parses_back_with_cumulative_histograms() {
    let metrics = CoreMetrics::new(&[0.001, 0.01, 0.1]);
    let m = metrics.method("Echo");
    m.record(Duration::from_micros(500), None);
    m.record(Duration::from_millis(5), None);
    m.record(Duration::from_millis(5), Some("timeout"));
    m.record(Duration::from_secs(1), Some("biz"));
    let odd = metrics.method("we\"ird\\name\n");
    odd.record(Duration::from_millis(50), None);
    metrics.connection_opened();

    let registry = MetricsRegistry::new(MetricsConfig {
        buckets: vec![0.001, 0.01, 0.1],
        ..MetricsConfig::subsystem("server")
    });
    registry.publish(0, metrics.snapshot());
    registry.publish(1, metrics.snapshot()); // a second core with the same counts
    let text = registry.render();
    let p = parse(&text);

    assert_eq!(p.types["ringrpc_server_calls_total"], "counter");
    assert_eq!(p.types["ringrpc_server_errors_total"], "counter");
    assert_eq!(p.types["ringrpc_server_call_duration_seconds"], "histogram");
    assert_eq!(p.types["ringrpc_server_in_flight"], "gauge");
    assert_eq!(p.types["ringrpc_server_connections"], "gauge");
    assert_eq!(
        p.value("ringrpc_server_calls_total", &[("method", "Echo")]),
        Some(8.0)
    );
    assert_eq!(
        p.value(
            "ringrpc_server_errors_total",
            &[("method", "Echo"), ("kind", "timeout")]
        ),
        Some(2.0)
    );
    assert_eq!(
        p.value(
            "ringrpc_server_calls_total",
            &[("method", "we\"ird\\name\n")]
        ),
        Some(2.0),
        "escaped label value round-trips:\n{text}"
    );
    assert_eq!(p.value("ringrpc_server_connections", &[]), Some(2.0));

    let h = "ringrpc_server_call_duration_seconds";
    let bucket = |le: &str| p.value(&format!("{h}_bucket"), &[("method", "Echo"), ("le", le)]);
    assert_eq!(bucket("0.001"), Some(2.0));
    assert_eq!(bucket("0.01"), Some(6.0));
    assert_eq!(bucket("0.1"), Some(6.0));
    assert_eq!(bucket("+Inf"), Some(8.0));
    assert_eq!(
        p.value(&format!("{h}_count"), &[("method", "Echo")]),
        Some(8.0)
    );
    let sum = p.value(&format!("{h}_sum"), &[("method", "Echo")]).unwrap();
    assert!((sum - 2.0 * 1.0105).abs() < 1e-9, "{sum}");
    // Bucket lines are in increasing `le` order and cumulative.
    let les: Vec<f64> = p
        .samples
        .iter()
        .filter(|(n, l, _)| n == &format!("{h}_bucket") && l["method"] == "Echo")
        .map(|(_, _, v)| *v)
        .collect();
    assert!(les.windows(2).all(|w| w[0] <= w[1]), "{les:?}");
}

#[test]
fn renderer_writes_help_type_and_escapes() {
    let mut c = Family::new("x_total", "Line one\nline \\ two", MetricKind::Counter);
    c.push(Sample::value(vec![("a".into(), "q\"".into())], 3.0));
    let g = Family::new("empty", "No samples.", MetricKind::Gauge);
    let text = prometheus::render(&[c, g]);
    assert_eq!(
        text,
        "# HELP x_total Line one\\nline \\\\ two\n# TYPE x_total counter\nx_total{a=\"q\\\"\"} 3\n\
         # HELP empty No samples.\n# TYPE empty gauge\n"
    );
    assert_eq!(prometheus::format_value(f64::INFINITY), "+Inf");
    assert_eq!(prometheus::format_value(0.25), "0.25");
}

#[derive(Debug, PartialEq)]
enum Fail {
    Timeout,
    Biz,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[test]
fn metrics_layer_counts_calls_errors_latency_and_cancellations() {
    let metrics = Rc::new(CoreMetrics::new(&[0.001, 0.1]));
    let inner = service_fn(|cx: &mut Cx, req: u32| {
        let method = cx.method.clone();
        async move {
            match req {
                0 => {
                    std::thread::sleep(Duration::from_millis(5));
                    Ok(method)
                }
                1 => Err(Fail::Timeout),
                2 => Err(Fail::Biz),
                _ => std::future::pending().await,
            }
        }
    });
    let svc = MetricsLayer::new(metrics.clone())
        .error_kind(|e: &Fail| match e {
            Fail::Timeout => "timeout",
            Fail::Biz => "biz",
        })
        .layer(inner);

    let mut cx = Cx::new("Get");
    assert_eq!(block_on(svc.call(&mut cx, 0)).unwrap(), "Get");
    assert_eq!(block_on(svc.call(&mut cx, 1)), Err(Fail::Timeout));
    assert_eq!(block_on(svc.call(&mut cx, 2)), Err(Fail::Biz));
    assert_eq!(block_on(svc.call(&mut Cx::new("Put"), 0)).unwrap(), "Put");
    // Pending, then dropped: counted as cancelled, and no longer in flight. Unpolled, it was
    // not counted at all.
    {
        let fut = svc.call(&mut cx, 3);
        assert_eq!(metrics.in_flight(), 0);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut fut = Box::pin(fut);
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(metrics.in_flight(), 1);
    }
    assert_eq!(metrics.in_flight(), 0);

    let get = metrics.method("Get");
    assert_eq!(get.calls(), 4);
    assert_eq!(get.errors("timeout"), 1);
    assert_eq!(get.errors("biz"), 1);
    assert_eq!(get.errors("cancelled"), 1);
    assert_eq!(metrics.method("Put").calls(), 1);
    let snap = metrics.snapshot();
    let latency = &snap.methods["Get"].latency;
    assert_eq!(latency.count, 4);
    // The 5 ms call lands in (1 ms, 100 ms]; the instant errors in the first bucket.
    assert_eq!(latency.counts[1], 1);
    assert!(latency.sum >= 0.005, "{}", latency.sum);
}

/// On an io_uring core the default latency runs from loop turn to loop turn: a call that waits
/// (spans turns) is measured to within a turn, work inside one turn is not seen; exact latency
/// sees both.
#[test]
fn latency_on_an_io_uring_core_is_per_turn_unless_exact() {
    let (tx, rx) = mpsc::channel();
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let mut sums = Vec::new();
            for exact in [false, true] {
                let metrics = Rc::new(CoreMetrics::new(&[0.001, 0.1]).exact_latency(exact));
                let svc = MetricsLayer::new(metrics.clone()).layer(service_fn(
                    |_: &mut Cx, wait: bool| async move {
                        if wait {
                            Uring::sleep(Duration::from_millis(20)).await;
                        } else {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Ok::<_, Fail>(())
                    },
                ));
                svc.call(&mut Cx::new("Wait"), true).await.unwrap();
                svc.call(&mut Cx::new("Busy"), false).await.unwrap();
                let snap = metrics.snapshot();
                sums.push((
                    snap.methods["Wait"].latency.sum,
                    snap.methods["Busy"].latency.sum,
                ));
            }
            tx.send(sums).unwrap();
        }
    })
    .unwrap();
    let sums = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rt.stop(Duration::ZERO);
    let [(turn_wait, turn_busy), (exact_wait, exact_busy)] = sums[..] else {
        panic!("{sums:?}")
    };
    assert!((0.020..0.5).contains(&turn_wait), "{turn_wait}");
    assert!(turn_busy < 0.001, "{turn_busy}");
    assert!((0.020..0.5).contains(&exact_wait), "{exact_wait}");
    assert!(exact_busy >= 0.005, "{exact_busy}");
}

#[test]
fn registry_merges_every_core_and_reports_engine_counters() {
    let registry = MetricsRegistry::new(MetricsConfig::subsystem("server"));
    let rt = Baseline::launch(RuntimeConfig::with_cores(2), |_| async {}).unwrap();
    registry.attach_runtime(rt.handle());
    let (tx, rx) = mpsc::channel();
    for core in 0..2 {
        let registry = registry.clone();
        let tx = tx.clone();
        rt.handle()
            .post(CoreId(core), move || {
                let m = registry.core_metrics();
                for _ in 0..=core {
                    m.method("Echo").record(Duration::from_millis(2), None);
                }
                m.connection_opened();
                tx.send(()).unwrap();
            })
            .unwrap();
    }
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let snap = registry.snapshot();
    assert_eq!(snap.methods["Echo"].calls, 3);
    assert_eq!(snap.connections, 2);
    let p = parse(&registry.render());
    assert_eq!(
        p.value("ringrpc_server_calls_total", &[("method", "Echo")]),
        Some(3.0)
    );
    assert_eq!(p.types["ringrpc_engine_accepted_total"], "counter");
    // The engine's failure counters are exported too (zero here: nothing panicked or failed).
    for name in [
        "tasks_panicked",
        "accept_dropped",
        "enter_errors",
        "leaked_at_exit",
    ] {
        assert_eq!(
            p.value(
                &format!("ringrpc_engine_{name}_total"),
                &[("engine", Baseline::NAME), ("core", "1")]
            ),
            Some(0.0),
            "{name}"
        );
    }
    assert!(p
        .value(
            "ringrpc_engine_accepted_total",
            &[("engine", Baseline::NAME), ("core", "1")]
        )
        .is_some());
    rt.stop(Duration::from_millis(100));
}

/// Logs every hook into a shared list.
struct Recorder(Rc<RefCell<Vec<String>>>);

impl Tracer<Cx> for Recorder {
    fn start(&self, cx: &Cx) {
        self.0.borrow_mut().push(format!("start {}", cx.method));
    }
    fn finish(&self, cx: &Cx, outcome: &CallOutcome<'_>) {
        let error = outcome.error.map(|e| e.to_string()).unwrap_or_default();
        self.0.borrow_mut().push(format!(
            "finish {} {} {error}",
            cx.method,
            outcome.status.as_str()
        ));
    }
    fn cancelled(&self, _: Duration) {
        self.0.borrow_mut().push("cancelled".to_owned());
    }
}

#[test]
fn tracer_sees_start_then_finish_around_the_call() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let inner_log = log.clone();
    let inner = service_fn(move |cx: &mut Cx, fail: Option<bool>| {
        inner_log.borrow_mut().push(format!("call {}", cx.method));
        async move {
            match fail {
                Some(false) => Ok(()),
                Some(true) => Err(Fail::Biz),
                None => std::future::pending().await,
            }
        }
    });
    let svc = ObsLayer::new("server")
        .tracer(Some(Recorder(log.clone())))
        .layer(inner);
    block_on(svc.call(&mut Cx::new("A"), Some(false))).unwrap();
    block_on(svc.call(&mut Cx::new("B"), Some(true))).unwrap_err();
    let mut cx = Cx::new("C");
    poll_once_and_drop(svc.call(&mut cx, None));
    assert_eq!(
        *log.borrow(),
        [
            "start A",
            "call A",
            "finish A ok ",
            "start B",
            "call B",
            "finish B error Biz",
            "start C",
            "call C",
            "cancelled"
        ]
    );
}

/// A `tracing` subscriber that keeps the fields recorded on spans.
#[derive(Default)]
struct SpanFields {
    spans: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

struct Visit<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Visit<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for SpanFields {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Visit(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let i = usize::try_from(span.into_u64()).unwrap() - 1;
        values.record(&mut Visit(&mut spans[i].1));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn trace_layer_records_a_span_per_call() {
    let subscriber = Arc::new(SpanFields::default());
    let dispatch = tracing::Dispatch::from(subscriber.clone());
    let svc =
        ObsLayer::new("server")
            .span(true)
            .layer(service_fn(|_: &mut Cx, fail: bool| async move {
                if fail {
                    Err(Fail::Timeout)
                } else {
                    Ok(())
                }
            }));
    tracing::dispatcher::with_default(&dispatch, || {
        let mut cx = Cx {
            method: "Echo".to_owned(),
            peer: Some("127.0.0.1:4000".parse().unwrap()),
            seq: Some(7),
        };
        block_on(svc.call(&mut cx, false)).unwrap();
        block_on(svc.call(&mut Cx::new("Fail"), true)).unwrap_err();
    });
    let spans = subscriber.spans.lock().unwrap();
    assert_eq!(spans.len(), 2);
    let (name, ok) = &spans[0];
    assert_eq!(name, "rpc");
    assert_eq!(ok["side"], "server");
    assert_eq!(ok["method"], "Echo");
    assert_eq!(ok["peer"], "127.0.0.1:4000");
    assert_eq!(ok["seq_id"], "7");
    assert_eq!(ok["status"], "ok");
    assert!(ok.contains_key("elapsed_us"));
    let failed = &spans[1].1;
    assert_eq!(failed["method"], "Fail");
    assert_eq!(failed["status"], "error");
    assert_eq!(failed["error"], "Timeout");
    assert!(!failed.contains_key("peer"));
}

/// A peer inventing method names cannot grow a core's metrics without bound: past
/// `MAX_METHODS` names the rest count together under `OTHER_METHOD`, and none is lost.
#[test]
fn method_names_past_the_cap_share_one_entry() {
    use ringrpc_governance::obs::{MAX_METHODS, OTHER_METHOD};
    let metrics = CoreMetrics::new(&[0.01]);
    let extra = 100;
    for i in 0..MAX_METHODS + extra {
        metrics
            .method(&format!("m{i}"))
            .record(Duration::from_micros(10), None);
    }
    metrics.method("m0").record(Duration::from_micros(10), None);
    let snap = metrics.snapshot();
    assert_eq!(snap.methods.len(), MAX_METHODS + 1);
    assert_eq!(snap.methods[OTHER_METHOD].calls, extra as u64);
    assert_eq!(
        snap.methods["m0"].calls, 2,
        "known names keep their own entry"
    );
    let total: u64 = snap.methods.values().map(|m| m.calls).sum();
    assert_eq!(total, (MAX_METHODS + extra + 1) as u64);
}
