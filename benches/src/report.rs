//! Results of load runs: the JSON report written by `--json` and the human
//! summaries printed to stdout.
//!
//! The JSON schema is fixed (one object per run with exactly the fields of
//! [`RunReport`], absent values as `null`) so that scripts comparing runs
//! over time can rely on it; error counts by kind are printed but kept out
//! of the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencySummary;

/// Failure to write or read a JSON report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written or read.
    #[error("cannot access report file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The report could not be encoded or decoded.
    #[error("invalid report JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The outcome of one load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Free-form name given with `--label`.
    pub label: Option<String>,
    /// Server engine, when known (`uring`, `baseline`).
    pub engine: Option<String>,
    /// Wire protocol (`ttheader-framed`, ...).
    pub protocol: String,
    /// Connection mode (`pool` or `mux`).
    pub conn_mode: String,
    /// Requests in flight (closed loop) or sender slots (open loop).
    pub concurrency: u64,
    /// Request payload in bytes.
    pub payload: u64,
    /// Target rate in requests/s for an open-loop run; `null` for closed loop.
    pub rate: Option<f64>,
    /// Measured duration in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Successful requests during the measured duration.
    pub requests: u64,
    /// Failed requests during the measured duration.
    pub errors: u64,
    /// Successful requests per second.
    pub qps: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: LatencySummary,
    /// Server CPU time per successful request in µs, if the server pid was known.
    pub server_cpu_us_per_req: Option<f64>,
    /// Client CPU time per successful request in µs.
    pub client_cpu_us_per_req: Option<f64>,
    /// Failed requests by kind (e.g. `timeout`), printed but not serialized.
    #[serde(skip)]
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl RunReport {
    /// Display name: the label, else the engine, else `run`.
    pub fn name(&self) -> &str {
        self.label
            .as_deref()
            .or(self.engine.as_deref())
            .unwrap_or("run")
    }

    /// Requests per second over `duration` (zero for a zero duration).
    pub fn qps_for(requests: u64, duration: Duration) -> f64 {
        let secs = duration.as_secs_f64();
        if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// Every run of one invocation, as written by `--json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The runs in the order they were made.
    pub runs: Vec<RunReport>,
}

impl Report {
    /// A report of the given runs.
    pub fn new(runs: Vec<RunReport>) -> Self {
        Self { runs }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parses JSON written by [`Report::to_json`].
    pub fn from_json(text: &str) -> Result<Self, ReportError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Writes the pretty-printed JSON (with a trailing newline) to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), ReportError> {
        let path = path.as_ref();
        let mut text = self.to_json()?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self, ReportError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }
}

/// A latency in µs printed with a unit that keeps it short: `812.3µs`,
/// `12.35ms`, `1.20s`.
pub fn format_us(us: f64) -> String {
    if !us.is_finite() {
        "n/a".to_owned()
    } else if us < 1_000.0 {
        format!("{us:.1}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn format_opt_us(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), format_us)
}

fn describe_load(r: &RunReport) -> String {
    let mode = match r.rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_owned(),
    };
    format!(
        "{}, {}, concurrency {}, payload {} B, {}, {:.2} s",
        r.protocol, r.conn_mode, r.concurrency, r.payload, mode, r.duration_s
    )
}

/// The human summary of one run, several lines, ending with a newline.
pub fn format_run(r: &RunReport) -> String {
    let mut out = String::new();
    let engine = match (&r.label, &r.engine) {
        (Some(_), Some(e)) => format!(" [{e}]"),
        _ => String::new(),
    };
    let _ = writeln!(out, "== {}{} — {}", r.name(), engine, describe_load(r));
    let _ = writeln!(out, "  requests  {:<12} errors {}", r.requests, r.errors);
    let _ = writeln!(out, "  QPS       {:.1}", r.qps);
    let l = &r.latency_us;
    let _ = writeln!(
        out,
        "  latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        format_us(l.p50),
        format_us(l.p90),
        format_us(l.p99),
        format_us(l.p999),
        format_us(l.max)
    );
    if !r.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "  errors    {}", kinds.join(", "));
    }
    let _ = writeln!(
        out,
        "  CPU/req   server {}  client {}",
        format_opt_us(r.server_cpu_us_per_req),
        format_opt_us(r.client_cpu_us_per_req)
    );
    out
}

/// Prints [`format_run`] to stdout.
pub fn print_run(r: &RunReport) {
    print!("{}", format_run(r));
}

/// Which way a metric is better, to orient its ratio.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    /// No ratio for this row.
    None,
}

/// A ratio oriented so that a value above 1 favours `first`, labelled with
/// the division it is (`uring/baseline` or `baseline/uring`).
fn ratio_cell(better: Better, first: (&str, Option<f64>), other: (&str, Option<f64>)) -> String {
    let (num, den) = match better {
        Better::Higher => (first, other),
        Better::Lower => (other, first),
        Better::None => return String::new(),
    };
    match (num.1, den.1) {
        (Some(n), Some(d)) if d > 0.0 && n.is_finite() && d.is_finite() => {
            format!("{:.2}x {}/{}", n / d, num.0, den.0)
        }
        _ => "n/a".to_owned(),
    }
}

/// A side-by-side table of runs, one column per run, then one ratio column
/// per run after the first comparing the first run with it. Each ratio is
/// oriented so that above 1 means the first run is better (more QPS, less
/// latency, less CPU) and is labelled with its division, e.g.
/// `1.35x uring/baseline` for QPS and `2.10x baseline/uring` for p99.
pub fn format_comparison(runs: &[RunReport]) -> String {
    if runs.is_empty() {
        return "no runs to compare\n".to_owned();
    }
    let names: Vec<&str> = runs.iter().map(RunReport::name).collect();
    type Getter = fn(&RunReport) -> Option<f64>;
    type Formatter = fn(f64) -> String;
    let rows: [(&str, Better, Getter, Formatter); 10] = [
        (
            "requests",
            Better::None,
            |r| Some(r.requests as f64),
            |v| format!("{v:.0}"),
        ),
        (
            "errors",
            Better::None,
            |r| Some(r.errors as f64),
            |v| format!("{v:.0}"),
        ),
        (
            "QPS",
            Better::Higher,
            |r| Some(r.qps),
            |v| format!("{v:.1}"),
        ),
        ("p50", Better::Lower, |r| Some(r.latency_us.p50), format_us),
        ("p90", Better::Lower, |r| Some(r.latency_us.p90), format_us),
        ("p99", Better::Lower, |r| Some(r.latency_us.p99), format_us),
        (
            "p99.9",
            Better::Lower,
            |r| Some(r.latency_us.p999),
            format_us,
        ),
        ("max", Better::Lower, |r| Some(r.latency_us.max), format_us),
        (
            "server CPU/req",
            Better::Lower,
            |r| r.server_cpu_us_per_req,
            format_us,
        ),
        (
            "client CPU/req",
            Better::Lower,
            |r| r.client_cpu_us_per_req,
            format_us,
        ),
    ];

    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["metric".to_owned()];
    header.extend(names.iter().map(|n| (*n).to_owned()));
    if runs.len() == 2 {
        header.push("ratio".to_owned());
    } else {
        header.extend(names[1..].iter().map(|n| format!("ratio vs {n}")));
    }
    table.push(header);
    for (metric, better, get, fmt) in rows {
        let mut row = vec![metric.to_owned()];
        row.extend(
            runs.iter()
                .map(|r| get(r).map_or_else(|| "n/a".to_owned(), fmt)),
        );
        for (other, name) in runs[1..].iter().zip(&names[1..]) {
            row.push(ratio_cell(
                better,
                (names[0], get(&runs[0])),
                (name, get(other)),
            ));
        }
        table.push(row);
    }

    let columns = table[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            if c == 0 || c > runs.len() {
                let _ = write!(line, "{cell:<w$}  ");
            } else {
                let _ = write!(line, "{cell:>w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if runs.len() > 1 {
        let _ = writeln!(
            out,
            "ratios: above 1 favours {} (QPS is {}/other; latency and CPU are other/{})",
            names[0], names[0], names[0]
        );
    }
    out
}

/// Prints [`format_comparison`] to stdout.
pub fn print_comparison(runs: &[RunReport]) {
    print!("{}", format_comparison(runs));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(engine: &str, qps: f64, p99: f64, cpu: Option<f64>) -> RunReport {
        RunReport {
            label: None,
            engine: Some(engine.to_owned()),
            protocol: "ttheader-framed".to_owned(),
            conn_mode: "mux".to_owned(),
            concurrency: 100,
            payload: 1024,
            rate: None,
            duration_s: 10.0,
            requests: (qps * 10.0) as u64,
            errors: 0,
            qps,
            latency_us: LatencySummary {
                p50: p99 / 4.0,
                p90: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
                max: p99 * 10.0,
            },
            server_cpu_us_per_req: cpu,
            client_cpu_us_per_req: Some(3.0),
            errors_by_kind: BTreeMap::new(),
        }
    }

    const FIELDS: [&str; 14] = [
        "label",
        "engine",
        "protocol",
        "conn_mode",
        "concurrency",
        "payload",
        "rate",
        "duration_s",
        "requests",
        "errors",
        "qps",
        "latency_us",
        "server_cpu_us_per_req",
        "client_cpu_us_per_req",
    ];

    #[test]
    fn json_has_exactly_the_fields_with_nulls() {
        let mut r = run("uring", 1000.0, 200.0, None);
        r.errors_by_kind.insert("timeout".into(), 3);
        r.errors = 3;
        let report = Report::new(vec![r.clone()]);
        let value: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        let obj = value["runs"][0].as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(obj["label"].is_null());
        assert!(obj["rate"].is_null());
        assert!(obj["server_cpu_us_per_req"].is_null());
        assert_eq!(obj["engine"], "uring");
        assert_eq!(obj["errors"], 3);
        let lat = obj["latency_us"].as_object().unwrap();
        let mut lat_keys: Vec<&str> = lat.keys().map(String::as_str).collect();
        lat_keys.sort_unstable();
        assert_eq!(lat_keys, ["max", "p50", "p90", "p99", "p999"]);
        assert_eq!(lat["p99"], 200.0);
    }

    #[test]
    fn json_round_trips_through_a_file() {
        let mut open = run("baseline", 500.0, 900.0, Some(12.5));
        open.rate = Some(500.0);
        open.label = Some("open".into());
        let report = Report::new(vec![run("uring", 1000.0, 200.0, None), open]);
        let dir = std::env::temp_dir().join(format!("ringrpc-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        report.write_json(&path).unwrap();
        let back = Report::read_json(&path).unwrap();
        assert_eq!(back, report);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = Report::read_json(dir.join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
        assert!(matches!(Report::from_json("{"), Err(ReportError::Json(_))));
    }

    #[test]
    fn run_block_lists_everything() {
        let mut r = run("uring", 123_456.7, 1_500.0, Some(8.25));
        r.label = Some("fast".into());
        r.errors = 4;
        r.errors_by_kind.insert("timeout".into(), 3);
        r.errors_by_kind.insert("reset".into(), 1);
        let text = format_run(&r);
        assert!(text.starts_with("== fast [uring] — ttheader-framed, mux, concurrency 100"));
        assert!(text.contains("closed loop"));
        assert!(text.contains("QPS       123456.7"), "{text}");
        assert!(text.contains("p50 375.0µs  p90 750.0µs  p99 1.50ms  p99.9 3.00ms  max 15.00ms"));
        assert!(text.contains("errors    reset 1, timeout 3"));
        assert!(
            text.contains("CPU/req   server 8.2µs  client 3.0µs"),
            "{text}"
        );
        let mut o = run("baseline", 10.0, 100.0, None);
        o.rate = Some(10.0);
        let text = format_run(&o);
        assert!(text.contains("open loop at 10 req/s"));
        assert!(text.contains("server n/a"));
        assert!(!text.contains("  errors  "));
    }

    #[test]
    fn comparison_table_is_aligned_and_ratios_labelled() {
        let uring = run("uring", 200_000.0, 100.0, Some(5.0));
        let baseline = run("baseline", 100_000.0, 400.0, Some(10.0));
        let text = format_comparison(&[uring, baseline]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12, "{text}");
        assert!(lines[0].starts_with("metric"));
        assert!(lines[0].contains("uring") && lines[0].contains("baseline"));
        assert!(lines[0].ends_with("ratio"));
        let qps = lines.iter().find(|l| l.starts_with("QPS")).unwrap();
        assert!(qps.ends_with("2.00x uring/baseline"), "{qps}");
        let p99 = lines.iter().find(|l| l.starts_with("p99 ")).unwrap();
        assert!(p99.ends_with("4.00x baseline/uring"), "{p99}");
        let cpu = lines
            .iter()
            .find(|l| l.starts_with("server CPU/req"))
            .unwrap();
        assert!(cpu.ends_with("2.00x baseline/uring"), "{cpu}");
        let req = lines.iter().find(|l| l.starts_with("requests")).unwrap();
        assert!(req.trim_end().ends_with("1000000"), "{req}");
        assert!(lines[11].starts_with("ratios: above 1 favours uring"));
        // Value columns line up: every table row has the first value column
        // ending at the same character offset.
        let ends: Vec<usize> = lines[..11]
            .iter()
            .map(|l| {
                let header_end = lines[0].find("uring").unwrap() + "uring".len();
                l.chars().take(header_end).count()
            })
            .collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]));
        let widths: Vec<usize> = lines[1..11]
            .iter()
            .map(|l| l.find("  ").unwrap_or(0))
            .collect();
        assert!(widths.iter().all(|w| *w > 0));
    }

    #[test]
    fn comparison_handles_missing_values_and_many_runs() {
        let a = run("uring", 100.0, 100.0, None);
        let b = run("baseline", 0.0, 0.0, Some(10.0));
        let mut c = run("other", 50.0, 50.0, Some(1.0));
        c.label = Some("tokio".into());
        let text = format_comparison(&[a, b, c]);
        assert!(text.lines().next().unwrap().contains("ratio vs baseline"));
        assert!(text.lines().next().unwrap().contains("ratio vs tokio"));
        let cpu = text
            .lines()
            .find(|l| l.starts_with("server CPU/req"))
            .unwrap();
        assert!(cpu.contains("n/a"));
        let qps = text.lines().find(|l| l.starts_with("QPS")).unwrap();
        assert!(
            qps.contains("n/a") && qps.contains("2.00x uring/tokio"),
            "{qps}"
        );
        assert_eq!(format_comparison(&[]), "no runs to compare\n");
        let single = format_comparison(&[run("uring", 1.0, 1.0, None)]);
        assert!(!single.contains("ratio"));
    }

    #[test]
    fn helpers() {
        assert_eq!(RunReport::qps_for(1000, Duration::from_secs(2)), 500.0);
        assert_eq!(RunReport::qps_for(1000, Duration::ZERO), 0.0);
        assert_eq!(format_us(12.34), "12.3µs");
        assert_eq!(format_us(12_345.0), "12.35ms");
        assert_eq!(format_us(2_500_000.0), "2.50s");
        assert_eq!(format_us(f64::NAN), "n/a");
        let mut r = run("uring", 1.0, 1.0, None);
        assert_eq!(r.name(), "uring");
        r.engine = None;
        assert_eq!(r.name(), "run");
    }
}
