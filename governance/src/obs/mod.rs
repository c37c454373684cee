//! Observability: per-core call metrics, Prometheus exposition, and per-call tracing.
//!
//! - [`metrics`]: [`CoreMetrics`] per core (plain `Cell` counters: calls, errors by kind and
//!   latency histograms per method, calls in flight, connections), recorded by a
//!   [`MetricsLayer`]; a [`MetricsRegistry`] (`Send + Sync`, cloneable) merges every core's
//!   snapshot off the request path and adds the engine's per-core counters.
//! - [`prometheus`]: the text exposition format (no I/O); crate `ringrpc-metrics-http`'s
//!   `MetricsServer` serves it at `GET /metrics` from a plain thread.
//! - [`trace`]: what tracing reads of a call ([`CallInfo`]) and Kitex-style [`Tracer`] hooks.
//! - [`stage`]: [`ObsLayer`], the `tracing` span and the tracer hooks as one stage (what the
//!   server and client pipelines use). The pipelines run the metrics as a [`MetricsHook`],
//!   just inside it.
//!
//! Wiring, on a server (the client is the same with `MetricsConfig::subsystem("client")`):
//!
//! ```ignore
//! // Builder, once:
//! let registry = MetricsRegistry::new(MetricsConfig::subsystem("server"));
//! registry.attach_runtime(runtime.handle());
//! let _endpoint = MetricsServer::serve("0.0.0.0:9100".parse()?, registry.clone())?;
//! // Each core, outermost first, so rejections and timeouts are counted too:
//! let metrics = registry.core_metrics();            // Rc<CoreMetrics> of this core
//! let svc = ObsLayer::new("server").span(true).layer(
//!     MetricsLayer::new(metrics.clone())
//!         .error_kind(|e: &HandlerError| e.kind())
//!         .layer(pipeline));
//! // Accept loop: metrics.connection_opened() / connection_closed().
//! ```

pub mod metrics;
pub mod prometheus;
pub mod stage;
pub mod trace;

pub use metrics::{
    CoreMetrics, ErrorKind, HistogramSnapshot, MethodSnapshot, Metrics, MetricsConfig, MetricsHook,
    MetricsLayer, MetricsRegistry, MetricsSnapshot, OneKind, Recording, DEFAULT_BUCKETS,
    MAX_METHODS, OTHER_METHOD,
};
pub use stage::{NoTracer, ObsLayer, Observed};
pub use trace::{CallInfo, CallOutcome, CallStatus, Tracer};
