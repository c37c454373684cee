//! A rolling window of counters over a [`Clock`](crate::clock::Clock): a ring of time buckets.
//!
//! The window is cut into `buckets` slices of equal length; events land in the slice covering
//! "now", and slices older than the window are cleared lazily on the next access. Reading sums
//! the live slices. Memory and cost are fixed (no per-event allocation); the price is that
//! events leave the window a whole bucket at a time, so the window covers between
//! `window - window/buckets` and `window` of history.

use std::time::{Duration, Instant};

/// Counters over the last `window` of time, in `buckets` slices. `T` is the per-slice counter.
#[derive(Debug, Clone)]
pub struct RollingWindow<T> {
    buckets: Vec<T>,
    bucket_nanos: u64,
    origin: Instant,
    /// Absolute index (since `origin`) of the newest bucket.
    head: u64,
    /// Where the newest bucket ends: until then an access needs no arithmetic (most accesses,
    /// with buckets of a second and calls microseconds apart).
    head_until: Instant,
}

impl<T: Default> RollingWindow<T> {
    /// A window of `window` length cut into `buckets` slices (at least one; each at least 1 µs),
    /// starting at `now`.
    pub fn new(window: Duration, buckets: usize, now: Instant) -> Self {
        let n = buckets.max(1);
        let bucket_nanos =
            (u64::try_from(window.as_nanos()).unwrap_or(u64::MAX) / n as u64).max(1_000);
        Self {
            buckets: (0..n).map(|_| T::default()).collect(),
            bucket_nanos,
            origin: now,
            head: 0,
            head_until: now + Duration::from_nanos(bucket_nanos),
        }
    }

    /// Clears the slices that fell out of the window by `now`.
    fn advance(&mut self, now: Instant) {
        if now < self.head_until {
            return;
        }
        let elapsed = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let abs = elapsed / self.bucket_nanos;
        if abs <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        let stale = (abs - self.head).min(n);
        for k in 0..stale {
            let i = ((abs - k) % n) as usize;
            self.buckets[i] = T::default();
        }
        self.head = abs;
        self.head_until = self
            .origin
            .checked_add(Duration::from_nanos(
                abs.saturating_add(1).saturating_mul(self.bucket_nanos),
            ))
            .unwrap_or(now);
    }

    /// The slice covering `now`, to count into.
    pub fn current(&mut self, now: Instant) -> &mut T {
        self.advance(now);
        let i = (self.head % self.buckets.len() as u64) as usize;
        &mut self.buckets[i]
    }

    /// The live slices at `now`, in ring order (not oldest first).
    pub fn slices(&mut self, now: Instant) -> &[T] {
        self.advance(now);
        &self.buckets
    }

    /// Clears every slice.
    pub fn reset(&mut self) {
        for b in &mut self.buckets {
            *b = T::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_slices_expire_a_bucket_at_a_time() {
        let t0 = Instant::now();
        let mut w: RollingWindow<u32> = RollingWindow::new(Duration::from_secs(10), 10, t0);
        *w.current(t0) += 5;
        *w.current(t0 + Duration::from_millis(4_500)) += 3;
        let sum = |w: &mut RollingWindow<u32>, s: u64| {
            w.slices(t0 + Duration::from_millis(s)).iter().sum::<u32>()
        };
        assert_eq!(sum(&mut w, 9_999), 8);
        assert_eq!(sum(&mut w, 10_000), 3); // bucket 0 left the window
        assert_eq!(sum(&mut w, 13_999), 3);
        assert_eq!(sum(&mut w, 14_000), 0); // bucket 4 (4.0–5.0 s) left too
        *w.current(t0 + Duration::from_secs(100)) += 1;
        assert_eq!(sum(&mut w, 100_000), 1);
        w.reset();
        assert_eq!(sum(&mut w, 100_000), 0);
    }
}
