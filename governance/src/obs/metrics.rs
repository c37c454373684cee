//! Per-core call metrics, their snapshots, and the registry that merges them across cores.
//!
//! A [`CoreMetrics`] lives on one core (`Rc`, plain `Cell`s): recording a call is a few adds
//! and one hash lookup by method name, with no lock and no atomic. Reading happens off the
//! request path: [`CoreMetrics::snapshot`] copies it into a `Send` [`MetricsSnapshot`], which a
//! [`MetricsRegistry`] gathers from every core when scraped — by posting a closure to each core
//! of an attached runtime ([`MetricsRegistry::attach_runtime`]), from snapshots cores published
//! ([`MetricsRegistry::publish`]), or from any other source ([`MetricsRegistry::add_source`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringrpc_engine::{CoreId, RuntimeHandle};

use super::prometheus::{Family, MetricKind, Sample};
use crate::hook::{CallHook, Hooked};
use crate::{CallMethod, Layer};

/// Prometheus' default latency buckets extended below 5 ms, in seconds.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The error kind recorded for a call whose future was dropped before it finished.
pub const CANCELLED: &str = "cancelled";

/// One method's counters on one core.
#[derive(Debug)]
pub struct MethodMetrics {
    calls: Cell<u64>,
    errors: RefCell<FxHashMap<&'static str, u64>>,
    /// Upper bounds of the buckets, in nanoseconds.
    bounds_ns: Rc<[u64]>,
    /// Calls per bucket (not cumulative); the last is `+Inf`.
    buckets: Box<[Cell<u64>]>,
    sum_ns: Cell<u64>,
}

impl MethodMetrics {
    fn new(bounds_ns: Rc<[u64]>) -> Self {
        let buckets = (0..=bounds_ns.len()).map(|_| Cell::new(0)).collect();
        Self {
            calls: Cell::new(0),
            errors: RefCell::new(FxHashMap::default()),
            bounds_ns,
            buckets,
            sum_ns: Cell::new(0),
        }
    }

    /// Records one finished call: its latency and, if it failed, the error's kind.
    pub fn record(&self, latency: Duration, error: Option<&'static str>) {
        self.calls.set(self.calls.get() + 1);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        self.buckets[i].set(self.buckets[i].get() + 1);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
        if let Some(kind) = error {
            *self.errors.borrow_mut().entry(kind).or_insert(0) += 1;
        }
    }

    /// Calls finished so far.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// Calls that failed with `kind`.
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors.borrow().get(kind).copied().unwrap_or(0)
    }

    fn snapshot(&self, bounds: &Arc<[f64]>) -> MethodSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(Cell::get).collect();
        MethodSnapshot {
            calls: self.calls.get(),
            errors: self
                .errors
                .borrow()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency: HistogramSnapshot {
                bounds: bounds.clone(),
                count: counts.iter().sum(),
                counts,
                sum: self.sum_ns.get() as f64 / 1e9,
            },
        }
    }
}

/// Distinct method names one core keeps metrics for; later names count under [`OTHER_METHOD`].
pub const MAX_METHODS: usize = 256;

/// The method label shared by the names past [`MAX_METHODS`].
pub const OTHER_METHOD: &str = "_other";

/// The call metrics of one core. Not `Send`: build one per core with
/// [`MetricsRegistry::core_metrics`].
#[derive(Debug)]
pub struct CoreMetrics {
    bounds: Arc<[f64]>,
    bounds_ns: Rc<[u64]>,
    methods: RefCell<FxHashMap<String, Rc<MethodMetrics>>>,
    in_flight: Cell<i64>,
    connections: Cell<i64>,
    exact_latency: bool,
}

impl CoreMetrics {
    /// Empty metrics whose latency histograms use `buckets` (upper bounds in seconds,
    /// ascending; `+Inf` is implied).
    pub fn new(buckets: &[f64]) -> Self {
        let mut bounds: Vec<f64> = buckets
            .iter()
            .copied()
            .filter(|b| b.is_finite() && *b >= 0.0)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let bounds_ns: Vec<u64> = bounds.iter().map(|b| (b * 1e9) as u64).collect();
        Self {
            bounds: bounds.into(),
            bounds_ns: bounds_ns.into(),
            methods: RefCell::new(FxHashMap::default()),
            in_flight: Cell::new(0),
            connections: Cell::new(0),
            exact_latency: false,
        }
    }

    /// Reads the clock at both ends of a call instead of using the loop turn's time (see
    /// [`MetricsConfig::exact_latency`]).
    pub fn exact_latency(mut self, exact: bool) -> Self {
        self.exact_latency = exact;
        self
    }

    /// The time a call starts or ends, for its latency.
    fn now(&self) -> Instant {
        if self.exact_latency {
            Instant::now()
        } else {
            ringrpc_engine::turn_now()
        }
    }

    /// The counters of `method`, created on first use. Past [`MAX_METHODS`] distinct names
    /// (a server records the names callers send, known or not) the rest share the
    /// [`OTHER_METHOD`] entry, so a peer inventing names cannot grow the map without bound.
    pub fn method(&self, method: &str) -> Rc<MethodMetrics> {
        if let Some(m) = self.methods.borrow().get(method) {
            return m.clone();
        }
        let name = if self.methods.borrow().len() >= MAX_METHODS {
            if let Some(m) = self.methods.borrow().get(OTHER_METHOD) {
                return m.clone();
            }
            OTHER_METHOD
        } else {
            method
        };
        let m = Rc::new(MethodMetrics::new(self.bounds_ns.clone()));
        self.methods.borrow_mut().insert(name.to_owned(), m.clone());
        m
    }

    /// Counts a call in flight until the guard is dropped.
    pub fn in_flight_guard(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight {
            metrics: self.clone(),
        }
    }

    /// Calls in flight on this core.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Counts a connection opened (the server's accept loop or the client's pool calls it).
    pub fn connection_opened(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    /// Counts a connection closed.
    pub fn connection_closed(&self) {
        self.connections.set(self.connections.get() - 1);
    }

    /// Connections open on this core.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    /// A `Send` copy of everything, for merging off the core.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            bounds: self.bounds.clone(),
            methods: self
                .methods
                .borrow()
                .iter()
                .map(|(k, m)| (k.clone(), m.snapshot(&self.bounds)))
                .collect(),
            in_flight: self.in_flight.get(),
            connections: self.connections.get(),
        }
    }
}

/// A call counted in flight on a core until dropped.
#[derive(Debug)]
pub struct InFlight {
    metrics: Rc<CoreMetrics>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.set(self.metrics.in_flight.get() - 1);
    }
}

/// A latency histogram's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets in seconds (without `+Inf`).
    pub bounds: Arc<[f64]>,
    /// Observations per bucket, not cumulative; one more entry than `bounds` (`+Inf`).
    pub counts: Vec<u64>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// Adds `other`'s observations (same bounds; otherwise only `sum` and `count` add up and
    /// the observations land in `+Inf`).
    pub fn merge(&mut self, other: &Self) {
        if self.bounds == other.bounds {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
        } else if let Some(inf) = self.counts.last_mut() {
            *inf += other.count;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Cumulative counts per bucket, as Prometheus' `_bucket{le=..}` series list them; the
    /// last is `+Inf` and equals `count`.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

/// One method's metrics, merged or from one core.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSnapshot {
    /// Calls finished.
    pub calls: u64,
    /// Failed calls by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of every finished call.
    pub latency: HistogramSnapshot,
}

/// A copy of one or more cores' [`CoreMetrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Histogram bucket bounds, seconds.
    pub bounds: Arc<[f64]>,
    /// Per method.
    pub methods: BTreeMap<String, MethodSnapshot>,
    /// Calls in flight.
    pub in_flight: i64,
    /// Connections open.
    pub connections: i64,
}

impl MetricsSnapshot {
    /// An empty snapshot with histograms over `bounds`.
    pub fn empty(bounds: Arc<[f64]>) -> Self {
        Self {
            bounds,
            methods: BTreeMap::new(),
            in_flight: 0,
            connections: 0,
        }
    }

    /// Adds `other` (another core) into this one.
    pub fn merge(&mut self, other: &Self) {
        for (name, m) in &other.methods {
            match self.methods.get_mut(name) {
                Some(mine) => {
                    mine.calls += m.calls;
                    for (k, v) in &m.errors {
                        *mine.errors.entry(k.clone()).or_insert(0) += v;
                    }
                    mine.latency.merge(&m.latency);
                }
                None => {
                    self.methods.insert(name.clone(), m.clone());
                }
            }
        }
        self.in_flight += other.in_flight;
        self.connections += other.connections;
    }
}

/// Configuration of a [`MetricsRegistry`].
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Prefix of every metric name. Default `"ringrpc"`.
    pub namespace: String,
    /// Second part of the call metrics' names, e.g. `"server"` or `"client"`. Default
    /// `"server"`: `ringrpc_server_calls_total`, ...
    pub subsystem: String,
    /// Latency histogram bucket bounds in seconds. Default [`DEFAULT_BUCKETS`].
    pub buckets: Vec<f64>,
    /// How long a scrape waits for the cores of attached runtimes. Default 1 s; a core that
    /// has not answered by then is left out of that scrape.
    pub scrape_timeout: Duration,
    /// Read the clock at both ends of every call for its latency. Default `false`: on an
    /// io_uring core a call's latency runs from the start of the loop turn in which it began
    /// to the start of the turn in which it ended (the engine reads the clock once per turn,
    /// right after the wait), so a sample is exact to within one turn and costs no clock read;
    /// elsewhere (the baseline engine, other threads) the clock is read exactly either way.
    /// Exact reads cost two `clock_gettime`s per call (about 4 % of the io_uring client's CPU in
    /// `ringrpc-bench compare --governance`, see docs/benchmarks.md).
    pub exact_latency: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            namespace: "ringrpc".to_owned(),
            subsystem: "server".to_owned(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            scrape_timeout: Duration::from_secs(1),
            exact_latency: false,
        }
    }
}

impl MetricsConfig {
    /// The defaults with `subsystem` (`"server"`, `"client"`).
    pub fn subsystem(subsystem: impl Into<String>) -> Self {
        Self {
            subsystem: subsystem.into(),
            ..Self::default()
        }
    }
}

/// A source of snapshots, called on every scrape.
pub type SnapshotSource = Arc<dyn Fn() -> Vec<MetricsSnapshot> + Send + Sync>;

thread_local! {
    /// This thread's (core's) metrics, per registry id.
    static CORE_METRICS: RefCell<FxHashMap<u64, Rc<CoreMetrics>>> = RefCell::new(FxHashMap::default());
}

thread_local! {
    /// Registries attached to the runtime whose core 0 is this thread (see
    /// [`MetricsRegistry::attach_current_runtime`]).
    static ATTACHED_HERE: RefCell<std::collections::HashSet<u64>> =
        RefCell::new(std::collections::HashSet::new());
}

static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

struct RegistryInner {
    id: u64,
    config: MetricsConfig,
    bounds: Arc<[f64]>,
    published: Mutex<BTreeMap<usize, MetricsSnapshot>>,
    runtimes: Mutex<Vec<RuntimeHandle>>,
    sources: Mutex<Vec<SnapshotSource>>,
}

/// Gathers the per-core metrics of a server or client and renders them for Prometheus.
/// Cloning gives another handle to the same registry.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<RegistryInner>,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("id", &self.inner.id)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new(config: MetricsConfig) -> Self {
        let bounds = CoreMetrics::new(&config.buckets).bounds;
        Self {
            inner: Arc::new(RegistryInner {
                id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
                config,
                bounds,
                published: Mutex::new(BTreeMap::new()),
                runtimes: Mutex::new(Vec::new()),
                sources: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MetricsConfig {
        &self.inner.config
    }

    /// This thread's metrics for this registry, created on first use. Call it on each core
    /// when building that core's pipeline; scrapes of an attached runtime read it there.
    pub fn core_metrics(&self) -> Rc<CoreMetrics> {
        CORE_METRICS.with(|t| {
            t.borrow_mut()
                .entry(self.inner.id)
                .or_insert_with(|| {
                    let m = CoreMetrics::new(&self.inner.bounds);
                    Rc::new(m.exact_latency(self.inner.config.exact_latency))
                })
                .clone()
        })
    }

    /// Scrapes also ask every core of `handle`'s runtime for its [`Self::core_metrics`] (a
    /// closure posted to each core), and report the engine's per-core counters.
    pub fn attach_runtime(&self, handle: RuntimeHandle) {
        lock(&self.inner.runtimes).push(handle);
    }

    /// Attaches the runtime of the calling core ([`Self::attach_runtime`]) unless this registry
    /// already attached it this way; for code that runs inside a runtime it did not start (a
    /// client building its pipeline on a core). Each runtime is attached once however many of
    /// its cores call this: the bookkeeping lives on the runtime's core 0, reached by a post
    /// when called elsewhere (so the attachment may complete just after this returns). Returns
    /// `false` off a runtime core.
    pub fn attach_current_runtime(&self) -> bool {
        let (Some(core), Some(handle)) = (
            ringrpc_engine::current_core(),
            ringrpc_engine::current_runtime(),
        ) else {
            return false;
        };
        let registry = self.clone();
        let h = handle.clone();
        let attach = move || {
            let first = ATTACHED_HERE.with(|a| a.borrow_mut().insert(registry.inner.id));
            if first {
                registry.attach_runtime(h);
            }
        };
        if core.0 == 0 {
            attach();
            true
        } else {
            handle.post(CoreId(0), attach).is_ok()
        }
    }

    /// Stores `snapshot` as core `core`'s latest, for cores that publish periodically instead
    /// of being asked (see [`Self::spawn_publisher`]).
    pub fn publish(&self, core: usize, snapshot: MetricsSnapshot) {
        lock(&self.inner.published).insert(core, snapshot);
    }

    /// Spawns, on the current core of engine `E`, a task publishing this core's metrics every
    /// `period` until the runtime stops.
    pub fn spawn_publisher<E: ringrpc_engine::Engine>(&self, period: Duration) {
        let registry = self.clone();
        let core = ringrpc_engine::current_core().map_or(0, |c| c.0);
        let metrics = self.core_metrics();
        E::spawn(async move {
            loop {
                registry.publish(core, metrics.snapshot());
                E::sleep(period).await;
                if ringrpc_engine::current_runtime().is_none_or(|h| h.is_stopping()) {
                    return;
                }
            }
        });
    }

    /// Adds a source of snapshots read on every scrape.
    pub fn add_source(&self, source: impl Fn() -> Vec<MetricsSnapshot> + Send + Sync + 'static) {
        lock(&self.inner.sources).push(Arc::new(source));
    }

    /// Asks every core of `handle` for its metrics; waits until `deadline` at most.
    fn ask_cores(&self, handle: &RuntimeHandle, deadline: Instant) -> Vec<MetricsSnapshot> {
        let (tx, rx) = mpsc::channel();
        let id = self.inner.id;
        let mut asked = 0;
        for core in 0..handle.cores() {
            let tx = tx.clone();
            let posted = handle.post(CoreId(core), move || {
                let snap = CORE_METRICS.with(|t| t.borrow().get(&id).map(|m| m.snapshot()));
                let _ = tx.send(snap);
            });
            if posted.is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let mut out = Vec::new();
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// The merged snapshot of every core and source.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let deadline = Instant::now() + self.inner.config.scrape_timeout;
        let mut total = MetricsSnapshot::empty(self.inner.bounds.clone());
        for s in lock(&self.inner.published).values() {
            total.merge(s);
        }
        let runtimes = lock(&self.inner.runtimes).clone();
        for h in &runtimes {
            for s in self.ask_cores(h, deadline) {
                total.merge(&s);
            }
        }
        let sources = lock(&self.inner.sources).clone();
        for source in sources {
            for s in source() {
                total.merge(&s);
            }
        }
        total
    }

    /// Every metric family, ready to render.
    pub fn gather(&self) -> Vec<Family> {
        let c = &self.inner.config;
        let p = format!("{}_{}", c.namespace, c.subsystem);
        let snap = self.snapshot();
        let mut calls = Family::new(
            format!("{p}_calls_total"),
            "Calls finished, per method.",
            MetricKind::Counter,
        );
        let mut errors = Family::new(
            format!("{p}_errors_total"),
            "Calls that failed, per method and error kind.",
            MetricKind::Counter,
        );
        let mut latency = Family::new(
            format!("{p}_call_duration_seconds"),
            "Call latency in seconds, per method.",
            MetricKind::Histogram,
        );
        for (method, m) in &snap.methods {
            let labels = vec![("method".to_owned(), method.clone())];
            calls.push(Sample::value(labels.clone(), m.calls as f64));
            for (kind, n) in &m.errors {
                let mut l = labels.clone();
                l.push(("kind".to_owned(), kind.clone()));
                errors.push(Sample::value(l, *n as f64));
            }
            latency.push(Sample::Histogram {
                labels,
                histogram: m.latency.clone(),
            });
        }
        let mut in_flight = Family::new(
            format!("{p}_in_flight"),
            "Calls in flight.",
            MetricKind::Gauge,
        );
        in_flight.push(Sample::value(Vec::new(), snap.in_flight as f64));
        let mut connections = Family::new(
            format!("{p}_connections"),
            "Connections open.",
            MetricKind::Gauge,
        );
        connections.push(Sample::value(Vec::new(), snap.connections as f64));
        let mut out = vec![calls, errors, latency, in_flight, connections];
        out.extend(self.engine_families());
        out
    }

    /// The engine counters of every core of the attached runtimes.
    fn engine_families(&self) -> Vec<Family> {
        let runtimes = lock(&self.inner.runtimes).clone();
        if runtimes.is_empty() {
            return Vec::new();
        }
        type Field = fn(&ringrpc_engine::CounterSnapshot) -> u64;
        let fields: [(&str, &str, Field); 15] = [
            ("submissions", "I/O operations submitted.", |c| {
                c.submissions
            }),
            ("completions", "I/O completions reaped.", |c| c.completions),
            ("enters", "Calls into the kernel to submit and wait.", |c| {
                c.enters
            }),
            (
                "buf_ring_misses",
                "Receives that found the buffer ring empty.",
                |c| c.buf_ring_misses,
            ),
            (
                "buf_copies",
                "Receives copied out of the buffer ring because it ran low.",
                |c| c.buf_copies,
            ),
            (
                "small_copies",
                "Small receives copied out at once so they hold no ring buffer.",
                |c| c.small_copies,
            ),
            (
                "reader_cap_copies",
                "Receives copied out because their connection held its share of the ring.",
                |c| c.reader_cap_copies,
            ),
            ("received_bytes", "Bytes received.", |c| c.bytes_received),
            ("sent_bytes", "Bytes sent.", |c| c.bytes_sent),
            ("accepted", "Connections accepted.", |c| c.accepted),
            (
                "accept_dropped",
                "Accepted connections dropped because their setup failed.",
                |c| c.accept_dropped,
            ),
            (
                "tasks_panicked",
                "Tasks that panicked and were dropped.",
                |c| c.tasks_panicked,
            ),
            (
                "busy_poll_spins",
                "Polls of the ring before sleeping.",
                |c| c.busy_poll_spins,
            ),
            ("enter_errors", "Failed calls into the kernel.", |c| {
                c.enter_errors
            }),
            (
                "leaked_at_exit",
                "Operations still in flight when a core gave up waiting at exit.",
                |c| c.leaked_at_exit,
            ),
        ];
        let ns = &self.inner.config.namespace;
        fields
            .iter()
            .map(|(name, help, get)| {
                let mut f = Family::new(
                    format!("{ns}_engine_{name}_total"),
                    *help,
                    MetricKind::Counter,
                );
                for h in &runtimes {
                    for core in 0..h.cores() {
                        if let Some(c) = h.counters(CoreId(core)) {
                            let labels = vec![
                                ("engine".to_owned(), h.engine_name().to_owned()),
                                ("core".to_owned(), core.to_string()),
                            ];
                            f.push(Sample::value(labels, get(&c) as f64));
                        }
                    }
                }
                f
            })
            .collect()
    }

    /// The Prometheus text exposition of [`Self::gather`].
    pub fn render(&self) -> String {
        super::prometheus::render(&self.gather())
    }
}

/// Names the kind of an error, for the `kind` label of the error counter.
pub trait ErrorKind<E> {
    /// A short, bounded-cardinality name (`"timeout"`, `"connect"`, `"biz"`, ...).
    fn kind(&self, error: &E) -> &'static str;
}

/// Every error is of kind `"error"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneKind;

impl<E> ErrorKind<E> for OneKind {
    fn kind(&self, _: &E) -> &'static str {
        "error"
    }
}

impl<E, F: Fn(&E) -> &'static str> ErrorKind<E> for F {
    fn kind(&self, error: &E) -> &'static str {
        self(error)
    }
}

/// Builds [`Metrics`] services recording into one core's [`CoreMetrics`].
#[derive(Debug, Clone)]
pub struct MetricsLayer<K = OneKind> {
    metrics: Rc<CoreMetrics>,
    kind: K,
}

impl MetricsLayer {
    /// Records into `metrics` (this core's, from [`MetricsRegistry::core_metrics`]); every
    /// error counts as kind `"error"`.
    pub fn new(metrics: Rc<CoreMetrics>) -> Self {
        Self {
            metrics,
            kind: OneKind,
        }
    }
}

impl<K> MetricsLayer<K> {
    /// Labels errors with `kind` (a closure `Fn(&E) -> &'static str` works).
    pub fn error_kind<K2>(self, kind: K2) -> MetricsLayer<K2> {
        MetricsLayer {
            metrics: self.metrics,
            kind,
        }
    }
}

impl<K> MetricsLayer<K> {
    /// The metrics as a hook, to share a stage with other hooks.
    pub fn into_hook(self) -> MetricsHook<K> {
        MetricsHook {
            metrics: self.metrics,
            kind: self.kind,
        }
    }
}

impl<S, K> Layer<S> for MetricsLayer<K> {
    type Service = Metrics<S, K>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.into_hook())
    }
}

/// A service counting calls, errors, latency per method and calls in flight.
pub type Metrics<S, K> = Hooked<S, MetricsHook<K>>;

/// The hook of [`Metrics`]: notes the call's start and method, records it when it ends.
#[derive(Debug)]
pub struct MetricsHook<K = OneKind> {
    metrics: Rc<CoreMetrics>,
    kind: K,
}

/// A call being recorded: recorded when finished, or as [`CANCELLED`] when dropped before.
#[derive(Debug)]
pub struct Recording {
    method: Rc<MethodMetrics>,
    start: Instant,
    done: bool,
    in_flight: InFlight,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done {
            let latency = self
                .in_flight
                .metrics
                .now()
                .saturating_duration_since(self.start);
            self.method.record(latency, Some(CANCELLED));
        }
    }
}

impl<Cx, Req, Res, Err, K> CallHook<Cx, Req, Res, Err> for MetricsHook<K>
where
    Cx: CallMethod,
    K: ErrorKind<Err>,
{
    type Token<'a>
        = Recording
    where
        Self: 'a;

    fn before(&self, cx: &mut Cx, _: &Req) -> ControlFlow<Result<Res, Err>, Recording> {
        ControlFlow::Continue(Recording {
            method: self.metrics.method(cx.method()),
            start: self.metrics.now(),
            done: false,
            in_flight: self.metrics.in_flight_guard(),
        })
    }

    fn after(&self, mut rec: Recording, _: &mut Cx, result: Result<Res, Err>) -> Result<Res, Err> {
        rec.done = true;
        let kind = result.as_ref().err().map(|e| self.kind.kind(e));
        let latency = self.metrics.now().saturating_duration_since(rec.start);
        rec.method.record(latency, kind);
        result
    }
}
