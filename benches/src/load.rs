//! The load generator: closed or open loop echo calls from a ringrpc client runtime.
//!
//! Workers run on the client's cores (the io_uring engine by default, see
//! [`CLIENT_ENGINE_VAR`]; pinned when CPUs are given), spread
//! evenly. In closed loop each worker calls again as soon as its reply arrives. In open loop
//! (`--rate`) each worker follows its share of a fixed schedule and a call's latency counts from
//! its *intended* start, so a slow server cannot hide queueing behind a slowed-down generator
//! (wrk2's correction for coordinated omission). Calls started during warm-up are not counted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_client::governance::breaker::BreakerConfig;
use ringrpc_client::governance::obs::{MetricsConfig, MetricsRegistry};
use ringrpc_client::{
    CallOptions, Client, ClientConfig, ClientError, ConnMode, LoadBalancerKind, Protocol,
};
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, EngineError, RuntimeConfig};

use crate::args::{ConnModeArg, LoadOptions, ProtocolArg};
use crate::echo::{reply_matches, request_body, PROTOBUF_METHOD, THRIFT_METHOD, THRIFT_SERVICE};
use crate::histogram::LatencyHistogram;
use crate::pacing::{latency_since_intended, Pacer};
use crate::procstat::{cpu_time, cpu_us_per_request, self_cpu_time};
use crate::progress::{LoadCounters, Progress};
use crate::report::RunReport;

/// Where and how to load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Server addresses.
    pub targets: Vec<SocketAddr>,
    /// Load shape.
    pub options: LoadOptions,
    /// Client cores.
    pub cores: usize,
    /// CPUs to pin the client cores to.
    pub pin: Option<Vec<usize>>,
    /// Server process, for its CPU time.
    pub server_pid: Option<u32>,
    /// Report label.
    pub label: Option<String>,
    /// Server engine name, when known.
    pub engine: Option<String>,
}

/// What one core measured.
#[derive(Default)]
struct CoreResult {
    histogram: LatencyHistogram,
    requests: u64,
    errors: BTreeMap<String, u64>,
}

/// A finished run: its report and its latency histogram (for plots).
#[derive(Debug)]
pub struct LoadOutcome {
    /// The report.
    pub report: RunReport,
    /// Latencies of the measured calls.
    pub histogram: LatencyHistogram,
}

/// Errors that stop a run before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The client runtime could not start.
    #[error("client runtime: {0}")]
    Engine(#[from] EngineError),
    /// A core never reported back.
    #[error("a client core did not finish")]
    Lost,
}

fn protocol(p: ProtocolArg) -> Protocol {
    match p {
        ProtocolArg::Ttheader => Protocol::TtHeader,
        ProtocolArg::TtheaderFramed => Protocol::TtHeaderFramed,
        ProtocolArg::Framed => Protocol::Framed,
        ProtocolArg::Buffered => Protocol::Buffered,
        ProtocolArg::KitexProtobuf => Protocol::KitexProtobuf,
    }
}

fn error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Timeout(_) => "timeout",
        ClientError::ConnectTimeout { .. } | ClientError::Connect { .. } => "connect",
        ClientError::Remote { .. } => "remote-exception",
        ClientError::Biz(_) => "biz",
        ClientError::Codec(_) => "codec",
        ClientError::BadSequence { .. } => "bad-sequence",
        ClientError::Closed => "closed",
        ClientError::NoTarget | ClientError::NotOnCore => "setup",
        ClientError::CircuitOpen(_) => "circuit-open",
        ClientError::NoInstance(_) => "no-instance",
        ClientError::AclRejected(_) => "acl",
    }
}

/// Runs one load and reports it.
///
/// # Errors
/// [`LoadError`] if the client runtime cannot start or a core is lost.
pub fn run_load(plan: &LoadPlan) -> Result<LoadOutcome, LoadError> {
    match std::env::var(CLIENT_ENGINE_VAR).as_deref() {
        Ok("baseline") => run_load_on::<Baseline>(plan),
        _ => run_load_on::<Uring>(plan),
    }
}

/// Environment variable choosing the load generator's own engine: `uring` (default) or
/// `baseline`. The generator is the same program whichever server engine it measures; the
/// io_uring client is the default because it spends less CPU per call (docs/benchmarks.md), and
/// `baseline` is there to check that a result does not come from the generator's engine.
pub const CLIENT_ENGINE_VAR: &str = "RINGRPC_BENCH_CLIENT_ENGINE";

fn run_load_on<E: Engine>(plan: &LoadPlan) -> Result<LoadOutcome, LoadError> {
    let o = plan.options.clone();
    let protobuf = o.protocol == ProtocolArg::KitexProtobuf;
    let conn_mode = match o.conn_mode {
        ConnModeArg::Mux => ConnMode::multiplexed(o.connections_per_addr()),
        ConnModeArg::Pool => ConnMode::Pooled {
            max_idle_per_addr: o.concurrency,
            idle_timeout: Duration::from_secs(60),
        },
    };
    let mut config = ClientConfig::new(plan.targets.clone())
        .protocol(protocol(o.protocol))
        .conn_mode(conn_mode)
        .service_name(THRIFT_SERVICE)
        .rpc_timeout(Some(Duration::from_secs(5)));
    if o.governance {
        config = governed(config);
    }
    let client = Client::<E>::new(config);
    let body = request_body(protobuf, o.payload);
    let method = if protobuf {
        PROTOBUF_METHOD
    } else {
        THRIFT_METHOD
    };
    let counters = Arc::new(LoadCounters::new());
    let cores = plan.cores.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    let pacer = o
        .rate
        .map(|r| Pacer::new(r, start))
        .transpose()
        .expect("rate validated by the argument parser");
    let (tx, rx) = mpsc::channel::<CoreResult>();
    let runtime = E::launch(
        RuntimeConfig {
            cores,
            pin: plan.pin.clone(),
            name: "ringrpc-load".into(),
            // The io_uring client polls; the baseline's tokio sleeps in epoll_wait at once.
            busy_poll: o.busy_poll,
        },
        {
            let counters = counters.clone();
            move |core| {
                let client = client.clone();
                let body = body.clone();
                let counters = counters.clone();
                let tx = tx.clone();
                let pacer = pacer.clone();
                let workers: Vec<usize> =
                    (0..o.concurrency).filter(|w| w % cores == core.0).collect();
                async move {
                    let result = Rc::new(RefCell::new(CoreResult::default()));
                    let left = Rc::new(std::cell::Cell::new(workers.len()));
                    let done = Rc::new(ringrpc_engine::local::Notify::new());
                    for w in workers {
                        let worker = Worker {
                            client: client.clone(),
                            body: body.clone(),
                            method,
                            protobuf,
                            counters: counters.clone(),
                            result: result.clone(),
                            pacer: pacer.as_ref().map(|p| {
                                p.for_worker(w, o.concurrency).expect("valid worker split")
                            }),
                            measure_from,
                            end,
                        };
                        let (left, done) = (left.clone(), done.clone());
                        E::spawn(async move {
                            worker.run().await;
                            left.set(left.get() - 1);
                            done.notify();
                        });
                    }
                    while left.get() > 0 {
                        done.notified().await;
                    }
                    let r = std::mem::take(&mut *result.borrow_mut());
                    let _ = tx.send(r);
                }
            }
        },
    )?;
    // Sample CPU times at the edges of the measured window.
    sleep_until(measure_from);
    counters.reset();
    let progress = Progress::start(o.duration, counters.clone());
    let server_cpu0 = plan.server_pid.and_then(|p| cpu_time(p).ok());
    let client_cpu0 = self_cpu_time().ok();
    sleep_until(end);
    let server_cpu1 = plan.server_pid.and_then(|p| cpu_time(p).ok());
    let client_cpu1 = self_cpu_time().ok();
    progress.stop();
    let mut histogram = LatencyHistogram::new();
    let mut requests = 0;
    let mut errors_by_kind = BTreeMap::new();
    for _ in 0..cores {
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| LoadError::Lost)?;
        histogram.merge(&r.histogram);
        requests += r.requests;
        for (k, n) in r.errors {
            *errors_by_kind.entry(k).or_insert(0) += n;
        }
    }
    runtime.stop(Duration::from_millis(100));
    let errors = errors_by_kind.values().sum();
    let per_req = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => cpu_us_per_request(b.saturating_sub(a), requests),
        _ => None,
    };
    let report = RunReport {
        label: plan.label.clone(),
        engine: plan.engine.clone(),
        protocol: o.protocol.as_str().to_owned(),
        conn_mode: o.conn_mode.as_str().to_owned(),
        concurrency: o.concurrency as u64,
        payload: o.payload as u64,
        rate: o.rate,
        duration_s: o.duration.as_secs_f64(),
        requests,
        errors,
        qps: RunReport::qps_for(requests, o.duration),
        latency_us: histogram.summary(),
        server_cpu_us_per_req: per_req(server_cpu0, server_cpu1),
        client_cpu_us_per_req: per_req(client_cpu0, client_cpu1),
        errors_by_kind,
    };
    Ok(LoadOutcome { report, histogram })
}

/// The client governance pipeline of `--governance`: breakers per method and per instance,
/// weighted round-robin, and call metrics (per-method counters and latency histogram). The
/// timeout is the RPC timeout, on in both runs.
fn governed(config: ClientConfig) -> ClientConfig {
    config
        .balancer(LoadBalancerKind::RoundRobin)
        .breaker(BreakerConfig::default())
        .instance_breaker(BreakerConfig::default())
        .metrics(MetricsRegistry::new(MetricsConfig::subsystem("client")))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// One closed- or open-loop caller.
struct Worker<E: Engine> {
    client: Client<E>,
    body: Bytes,
    method: &'static str,
    protobuf: bool,
    counters: Arc<LoadCounters>,
    result: Rc<RefCell<CoreResult>>,
    pacer: Option<Pacer>,
    measure_from: Instant,
    end: Instant,
}

impl<E: Engine> Worker<E> {
    async fn run(mut self) {
        // In closed loop a call starts when the previous one ended: one clock read per call.
        let mut now = Instant::now();
        loop {
            let intended = match &mut self.pacer {
                Some(p) => {
                    let t = p.next_intended();
                    if t >= self.end {
                        break;
                    }
                    if t > Instant::now() {
                        E::sleep_until(t).await;
                    }
                    t
                }
                None => {
                    if now >= self.end {
                        break;
                    }
                    now
                }
            };
            let outcome = self
                .client
                .call_raw(self.method, self.body.clone(), CallOptions::default())
                .await;
            let done = Instant::now();
            now = done;
            if intended < self.measure_from {
                continue;
            }
            let mut r = self.result.borrow_mut();
            match outcome {
                Ok(reply) if reply_matches(self.protobuf, &self.body, &reply.body) => {
                    r.histogram.record(latency_since_intended(intended, done));
                    r.requests += 1;
                    self.counters.add_request();
                }
                Ok(_) => {
                    *r.errors.entry("wrong-reply".into()).or_insert(0) += 1;
                    self.counters.add_error();
                }
                Err(e) => {
                    *r.errors.entry(error_kind(&e).into()).or_insert(0) += 1;
                    self.counters.add_error();
                }
            }
        }
    }
}
