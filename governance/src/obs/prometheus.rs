//! The Prometheus text exposition format (version 0.0.4).
//!
//! A [`Family`] is one metric name with its `# HELP`, `# TYPE` and samples. Counters and
//! gauges render one line per label set; histograms render cumulative `_bucket{le=".."}`
//! lines ending at `le="+Inf"`, then `_sum` and `_count`. Label values and help texts are
//! escaped as the format requires (`\\`, `\"`, `\n`).

use std::fmt::Write;

use super::metrics::HistogramSnapshot;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`_total` by convention).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets, with their sum and count.
    Histogram,
}

impl MetricKind {
    /// The word used in `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Label names and values of one sample.
pub type Labels = Vec<(String, String)>;

/// One sample of a family.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A counter's or gauge's value.
    Value {
        /// Its labels.
        labels: Labels,
        /// Its value.
        value: f64,
    },
    /// A histogram.
    Histogram {
        /// Its labels (besides `le`).
        labels: Labels,
        /// Its buckets, sum and count.
        histogram: HistogramSnapshot,
    },
}

impl Sample {
    /// A counter or gauge sample.
    pub fn value(labels: Labels, value: f64) -> Self {
        Self::Value { labels, value }
    }
}

/// One metric name with its help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Its type.
    pub kind: MetricKind,
    /// Its samples.
    pub samples: Vec<Sample>,
}

impl Family {
    /// A family without samples.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, sample: Sample) {
        self.samples.push(sample);
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, or Rust's shortest round-trip form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra);
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

/// Renders `families` in the text format. Families without samples still get their
/// `# HELP` and `# TYPE` lines.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            match s {
                Sample::Value { labels, value } => {
                    out.push_str(&f.name);
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {}", format_value(*value));
                }
                Sample::Histogram { labels, histogram } => {
                    let cumulative = histogram.cumulative();
                    let bounds = histogram
                        .bounds
                        .iter()
                        .map(|b| format_value(*b))
                        .chain(std::iter::once("+Inf".to_owned()));
                    for (le, n) in bounds.zip(cumulative) {
                        let _ = write!(out, "{}_bucket", f.name);
                        write_labels(&mut out, labels, Some(("le", &le)));
                        let _ = writeln!(out, " {n}");
                    }
                    let _ = write!(out, "{}_sum", f.name);
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {}", format_value(histogram.sum));
                    let _ = write!(out, "{}_count", f.name);
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {}", histogram.count);
                }
            }
        }
    }
    out
}
