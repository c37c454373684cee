//! Latency-by-percentile plots as standalone SVG, written by `--plot`.
//!
//! The layout follows the usual HdrHistogram plot: the x axis is the
//! percentile on a log scale of `1 / (1 - p)`, so 90 %, 99 %, 99.9 %, ...
//! are evenly spaced and the tail gets as much room as the median; the y axis
//! is latency, logarithmic when the curves span more than a factor of 50 and
//! linear otherwise. The SVG is written by hand: no plotting crate, no fonts
//! to embed, and any browser shows it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::histogram::LatencyHistogram;

/// Failure to produce a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There was nothing to plot.
    #[error("no runs to plot")]
    NoRuns,
    /// The file could not be written.
    #[error("cannot write plot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Decades of `1 / (1 - p)` on the x axis: 0 % to 99.999 %.
const X_DECADES: f64 = 5.0;
/// Samples per decade along each curve.
const STEPS_PER_DECADE: usize = 40;
/// A spread (max / min) above which the y axis is logarithmic.
const LOG_Y_SPREAD: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Writes [`render_percentile_svg`] to `path`.
pub fn write_percentile_svg(
    path: impl AsRef<Path>,
    runs: &[(&str, &LatencyHistogram)],
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let svg = render_percentile_svg(runs)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One SVG document with a latency-by-percentile curve per run (one colour
/// each, cycling after eight), axes with ticks, and a legend giving each
/// run's label and p99. Runs with an empty histogram appear in the legend
/// only.
pub fn render_percentile_svg(runs: &[(&str, &LatencyHistogram)]) -> Result<String, PlotError> {
    if runs.is_empty() {
        return Err(PlotError::NoRuns);
    }
    let xs: Vec<f64> = (0..=(X_DECADES as usize * STEPS_PER_DECADE))
        .map(|i| i as f64 / STEPS_PER_DECADE as f64)
        .collect();
    // Latency in µs at each x, per run (None for empty histograms).
    let curves: Vec<Option<Vec<f64>>> = runs
        .iter()
        .map(|(_, h)| {
            (!h.is_empty()).then(|| {
                xs.iter()
                    .map(|x| {
                        let percent = 100.0 * (1.0 - 10f64.powf(-x));
                        h.percentile(percent).as_nanos() as f64 / 1e3
                    })
                    .collect()
            })
        })
        .collect();
    let values = curves.iter().flatten().flatten().copied();
    let max = values.clone().fold(0.0_f64, f64::max);
    let min_positive = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let y = YAxis::new(min_positive, max);

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / X_DECADES * plot_w;
    let py = |us: f64| TOP + (1.0 - y.fraction(us)) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">Latency by percentile</text>"#,
        WIDTH / 2.0
    );

    // Grid and ticks.
    for decade in 0..=X_DECADES as usize {
        let x = px(decade as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#dddddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            percentile_label(decade)
        );
    }
    for tick in y.ticks() {
        let yy = py(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yy + 4.0,
            latency_tick_label(tick)
        );
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency ({} scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        if y.log { "log" } else { "linear" }
    );

    // Curves.
    for (i, curve) in curves.iter().enumerate() {
        let Some(points) = curve else { continue };
        let mut d = String::new();
        for (j, (x, v)) in xs.iter().zip(points).enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if j == 0 { "M" } else { " L" },
                px(*x),
                py(*v)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"/>"#,
            COLOURS[i % COLOURS.len()]
        );
    }

    // Legend, top left inside the plot area.
    let row_h = 18.0;
    let legend_h = row_h * runs.len() as f64 + 10.0;
    let legend_w = 280.0;
    let (lx, ly) = (LEFT + 10.0, TOP + 10.0);
    let _ = writeln!(
        s,
        r##"<rect x="{lx}" y="{ly}" width="{legend_w}" height="{legend_h}" fill="white" fill-opacity="0.85" stroke="#999999"/>"##
    );
    for (i, (label, h)) in runs.iter().enumerate() {
        let yy = ly + 14.0 + row_h * i as f64;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 8.0,
            yy - 4.0,
            lx + 32.0,
            yy - 4.0
        );
        let detail = if h.is_empty() {
            "no samples".to_owned()
        } else {
            format!(
                "p99 {}",
                latency_tick_label(h.percentile(99.0).as_nanos() as f64 / 1e3)
            )
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{yy:.1}">{} ({detail})</text>"#,
            lx + 40.0,
            escape_xml(label)
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// The y axis mapping from latency in µs to a 0..=1 fraction of the height.
struct YAxis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl YAxis {
    fn new(min_positive: f64, max: f64) -> Self {
        if max.is_nan() || max <= 0.0 {
            return Self {
                log: false,
                lo: 0.0,
                hi: 1.0,
            };
        }
        let min_positive = if min_positive.is_finite() {
            min_positive
        } else {
            max
        };
        if max / min_positive > LOG_Y_SPREAD {
            Self {
                log: true,
                lo: 10f64.powf(min_positive.log10().floor()),
                hi: 10f64.powf(max.log10().ceil()),
            }
        } else {
            let step = nice_step(max / 5.0);
            Self {
                log: false,
                lo: 0.0,
                hi: (max / step).ceil().max(1.0) * step,
            }
        }
    }

    fn fraction(&self, us: f64) -> f64 {
        let f = if self.log {
            let v = us.max(self.lo);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (us - self.lo) / (self.hi - self.lo)
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let decades = (self.hi / self.lo).log10().round() as i32;
            let mut t = Vec::new();
            for k in 0..=decades {
                let base = self.lo * 10f64.powi(k);
                t.push(base);
                if decades <= 3 && k < decades {
                    t.push(base * 2.0);
                    t.push(base * 5.0);
                }
            }
            t
        } else {
            let step = nice_step(self.hi / 5.0);
            let n = (self.hi / step).round() as usize;
            (0..=n).map(|i| self.lo + step * i as f64).collect()
        }
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

fn percentile_label(decade: usize) -> String {
    match decade {
        0 => "0%".to_owned(),
        d => format!(
            "{}%",
            trim_float(100.0 * (1.0 - 10f64.powi(-(d as i32))), 5)
        ),
    }
}

fn latency_tick_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{}s", trim_float(us / 1e6, 2))
    } else if us >= 1e3 {
        format!("{}ms", trim_float(us / 1e3, 2))
    } else {
        format!("{}µs", trim_float(us, 1))
    }
}

fn trim_float(v: f64, decimals: usize) -> String {
    let mut t = format!("{v:.decimals$}");
    if t.contains('.') {
        while t.ends_with('0') {
            t.pop();
        }
        if t.ends_with('.') {
            t.pop();
        }
    }
    t
}

fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hist(base_us: u64, tail_us: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for i in 0..10_000u64 {
            h.record(Duration::from_micros(base_us + i % 100));
        }
        h.record_n(Duration::from_micros(tail_us), 20);
        h
    }

    /// Every `<tag` is closed by `/>` or by a matching `</tag>`, in order.
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return false;
            };
            let tag = &rest[open + 1..open + close];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_owned());
            }
            rest = &rest[open + close + 1..];
        }
        stack.is_empty()
    }

    #[test]
    fn one_path_per_run_with_legend() {
        let a = hist(100, 5_000);
        let b = hist(300, 90_000);
        let svg = render_percentile_svg(&[("uring", &a), ("baseline <tokio> & co", &b)]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced(&svg), "unbalanced tags");
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains(">uring (p99 "));
        assert!(svg.contains("baseline &lt;tokio&gt; &amp; co"));
        assert!(svg.contains(COLOURS[0]) && svg.contains(COLOURS[1]));
        for label in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "missing {label}");
        }
        assert!(
            svg.contains("log scale"),
            "wide spread should use a log y axis"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn narrow_spread_uses_linear_axis_and_empty_runs_are_legend_only() {
        let a = hist(1_000, 1_200);
        let empty = LatencyHistogram::new();
        let svg = render_percentile_svg(&[("a", &a), ("idle", &empty)]).unwrap();
        assert!(balanced(&svg));
        assert!(svg.contains("linear scale"));
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains("idle (no samples)"));
        let svg = render_percentile_svg(&[("idle", &empty)]).unwrap();
        assert!(balanced(&svg) && !svg.contains("NaN"));
    }

    #[test]
    fn curve_rises_to_the_right() {
        let a = hist(100, 50_000);
        let svg = render_percentile_svg(&[("a", &a)]).unwrap();
        let d = svg
            .split("<path d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = d
            .split(['M', 'L'])
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 201);
        // SVG y grows downwards: latency never decreases with percentile.
        assert!(ys.windows(2).all(|w| w[1] <= w[0] + 1e-9));
        assert!(ys[0] > ys[200]);
    }

    #[test]
    fn writes_file_and_reports_errors() {
        let a = hist(10, 20);
        let path = std::env::temp_dir().join(format!("ringrpc-plot-{}.svg", std::process::id()));
        write_percentile_svg(&path, &[("a", &a)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(render_percentile_svg(&[]), Err(PlotError::NoRuns)));
        let err = write_percentile_svg("/nonexistent-dir/x.svg", &[("a", &a)]).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }));
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(130.0), 200.0);
        assert_eq!(nice_step(400.0), 500.0);
        assert_eq!(latency_tick_label(1_000.0), "1ms");
        assert_eq!(latency_tick_label(250.0), "250µs");
        assert_eq!(latency_tick_label(2_500_000.0), "2.5s");
        assert_eq!(percentile_label(3), "99.9%");
        let y = YAxis::new(10.0, 100_000.0);
        assert!(y.log);
        assert_eq!(y.ticks().first().copied(), Some(10.0));
        assert_eq!(y.ticks().last().copied(), Some(100_000.0));
    }
}
