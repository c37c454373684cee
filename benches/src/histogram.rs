//! Latency recording for the load generator: a thin wrapper over an
//! HdrHistogram with three significant digits.
//!
//! Values are stored as integers in either microseconds or nanoseconds; the
//! histogram starts sized for 60 s and resizes itself if a larger value
//! arrives, so a stalled request is never dropped from the tail. Each worker
//! owns one histogram and the binary merges them at the end.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Unit in which a [`LatencyHistogram`] stores values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolution {
    /// Whole microseconds (the default; enough for RPC round trips).
    #[default]
    Micros,
    /// Whole nanoseconds.
    Nanos,
}

impl Resolution {
    fn nanos_per_unit(self) -> u64 {
        match self {
            Self::Micros => 1_000,
            Self::Nanos => 1,
        }
    }
}

/// Latency percentiles of a run in microseconds, as printed and written to
/// JSON (`latency_us`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest recorded value.
    pub max: f64,
}

/// A latency histogram with three significant digits of precision.
#[derive(Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
    resolution: Resolution,
}

/// Highest value the histogram is sized for up front (it grows past it).
const INITIAL_MAX: Duration = Duration::from_secs(60);
const SIGNIFICANT_DIGITS: u8 = 3;

impl LatencyHistogram {
    /// An empty histogram storing microseconds.
    pub fn new() -> Self {
        Self::with_resolution(Resolution::Micros)
    }

    /// An empty histogram storing values in `resolution` units.
    pub fn with_resolution(resolution: Resolution) -> Self {
        let high = (INITIAL_MAX.as_nanos() as u64 / resolution.nanos_per_unit()).max(2);
        let mut inner = Histogram::new_with_bounds(1, high, SIGNIFICANT_DIGITS)
            .expect("static histogram bounds are valid");
        inner.auto(true);
        Self { inner, resolution }
    }

    /// The unit values are stored in.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    fn to_units(&self, d: Duration) -> u64 {
        let units = d.as_nanos() / u128::from(self.resolution.nanos_per_unit());
        u64::try_from(units).unwrap_or(u64::MAX)
    }

    fn to_duration(&self, units: u64) -> Duration {
        Duration::from_nanos(units.saturating_mul(self.resolution.nanos_per_unit()))
    }

    /// Records one latency. Values beyond the representable range are
    /// clamped to the largest trackable value rather than dropped.
    pub fn record(&mut self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Records `count` occurrences of one latency.
    pub fn record_n(&mut self, latency: Duration, count: u64) {
        let units = self.to_units(latency);
        if self.inner.record_n(units, count).is_err() {
            self.inner.saturating_record_n(units, count);
        }
    }

    /// Adds every value of `other` into `self`, converting units if the two
    /// histograms have different resolutions.
    pub fn merge(&mut self, other: &Self) {
        if self.resolution == other.resolution && self.inner.add(&other.inner).is_ok() {
            return;
        }
        for v in other.inner.iter_recorded() {
            let latency = other.to_duration(v.value_iterated_to());
            self.record_n(latency, v.count_at_value());
        }
    }

    /// The latency at percentile `percent` (0.0..=100.0, so `99.9` is the
    /// 99.9th percentile). Returns zero for an empty histogram.
    pub fn percentile(&self, percent: f64) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        let p = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        self.to_duration(self.inner.value_at_percentile(p))
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Largest recorded value (zero when empty).
    pub fn max(&self) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        self.to_duration(self.inner.max())
    }

    /// Smallest recorded value (zero when empty).
    pub fn min(&self) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        self.to_duration(self.inner.min())
    }

    /// Arithmetic mean (zero when empty).
    pub fn mean(&self) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.inner.mean() * self.resolution.nanos_per_unit() as f64 / 1e9)
    }

    /// Forgets every recorded value (e.g. at the end of warm-up).
    pub fn reset(&mut self) {
        self.inner.reset();
    }

    /// p50/p90/p99/p99.9/max in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |d: Duration| d.as_nanos() as f64 / 1e3;
        LatencySummary {
            p50: us(self.percentile(50.0)),
            p90: us(self.percentile(90.0)),
            p99: us(self.percentile(99.0)),
            p999: us(self.percentile(99.9)),
            max: us(self.max()),
        }
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("resolution", &self.resolution)
            .field("count", &self.count())
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Duration, expected: Duration) -> bool {
        // Three significant digits: relative error below 0.1 % (plus one unit).
        let a = actual.as_nanos() as f64;
        let e = expected.as_nanos() as f64;
        (a - e).abs() <= e * 0.001 + 1_000.0
    }

    #[test]
    fn uniform_distribution_percentiles() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for (p, us) in [(50.0, 5_000), (90.0, 9_000), (99.0, 9_900), (99.9, 9_990)] {
            let got = h.percentile(p);
            assert!(close(got, Duration::from_micros(us)), "p{p}: {got:?}");
        }
        assert!(close(h.max(), Duration::from_micros(10_000)));
        assert_eq!(h.min(), Duration::from_micros(1));
        assert!(close(h.mean(), Duration::from_micros(5_000)));
        let s = h.summary();
        assert!((s.p50 - 5_000.0).abs() <= 5.0, "{s:?}");
        assert!((s.p999 - 9_990.0).abs() <= 10.0, "{s:?}");
        assert!((s.max - 10_000.0).abs() <= 10.0, "{s:?}");
    }

    #[test]
    fn bimodal_tail_is_kept() {
        let mut h = LatencyHistogram::new();
        h.record_n(Duration::from_micros(100), 990);
        h.record_n(Duration::from_millis(50), 10);
        assert!(close(h.percentile(50.0), Duration::from_micros(100)));
        assert!(close(h.percentile(99.0), Duration::from_micros(100)));
        assert!(close(h.percentile(99.5), Duration::from_millis(50)));
        assert!(close(h.max(), Duration::from_millis(50)));
    }

    #[test]
    fn nanosecond_resolution() {
        let mut h = LatencyHistogram::with_resolution(Resolution::Nanos);
        h.record(Duration::from_nanos(1_234));
        assert_eq!(h.resolution(), Resolution::Nanos);
        let p = h.percentile(50.0).as_nanos() as i64;
        assert!((p - 1_234).abs() <= 1, "{p}");
        let mut u = LatencyHistogram::new();
        u.record(Duration::from_nanos(1_234));
        assert_eq!(u.percentile(50.0), Duration::from_micros(1));
    }

    #[test]
    fn values_beyond_sixty_seconds_resize() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_secs(3_600));
        assert_eq!(h.count(), 1);
        assert!(close(h.max(), Duration::from_secs(3_600)));
        let mut n = LatencyHistogram::with_resolution(Resolution::Nanos);
        n.record(Duration::from_secs(600));
        assert!(close(n.max(), Duration::from_secs(600)));
    }

    #[test]
    fn merge_adds_counts_across_resolutions() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut c = LatencyHistogram::with_resolution(Resolution::Nanos);
        a.record_n(Duration::from_micros(10), 50);
        b.record_n(Duration::from_micros(1_000), 50);
        c.record(Duration::from_millis(20));
        a.merge(&b);
        a.merge(&c);
        assert_eq!(a.count(), 101);
        assert!(close(a.percentile(25.0), Duration::from_micros(10)));
        assert!(close(a.percentile(75.0), Duration::from_micros(1_000)));
        assert!(close(a.max(), Duration::from_millis(20)));
    }

    #[test]
    fn empty_histogram_is_zero() {
        let mut h = LatencyHistogram::default();
        assert!(h.is_empty());
        assert_eq!(h.percentile(99.0), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        assert_eq!(h.summary(), LatencySummary::default());
        h.record(Duration::from_micros(5));
        h.reset();
        assert_eq!(h.count(), 0);
        assert!(format!("{h:?}").contains("count: 0"));
    }
}
