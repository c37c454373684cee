//! Open-loop request pacing in the style of wrk2, free of coordinated
//! omission.
//!
//! At a target rate `R`, call `k` is *intended* to start at `start + k / R`
//! whatever happened to earlier calls. A worker asks its [`Pacer`] for the
//! next intended start, waits until then if it is early, sends, and records
//! `completion - intended` as the latency. A worker that falls behind (slow
//! server, stalled client) still walks every intended start in order, so the
//! time requests spent queued behind the stall shows up in the latency tail
//! instead of vanishing, which is what a closed-loop generator would hide.
//!
//! Several workers split one schedule with [`Pacer::for_worker`]: worker `i`
//! of `n` takes calls `i, i + n, i + 2n, ...`, so together they issue exactly
//! the global schedule at the global rate.

use std::time::{Duration, Instant};

/// Why a pacer could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PacingError {
    /// The rate was zero, negative, or not finite.
    #[error("request rate must be a positive number of requests per second, got {0}")]
    InvalidRate(f64),
    /// A worker index outside `0..workers`, or zero workers.
    #[error("worker {worker} is out of range for {workers} workers")]
    InvalidWorker {
        /// The requested worker index.
        worker: usize,
        /// The number of workers.
        workers: usize,
    },
}

/// The intended-start schedule of one worker (or of the whole load if it is
/// not split).
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// Global rate of the schedule this pacer is a share of.
    global_rate: f64,
    /// Index in the global schedule of this pacer's first call.
    offset: u64,
    /// Distance in the global schedule between two calls of this pacer.
    stride: u64,
    /// Calls already handed out by this pacer.
    issued: u64,
}

impl Pacer {
    /// A schedule of `rate_per_sec` calls per second starting at `start`
    /// (the first intended start is `start` itself).
    pub fn new(rate_per_sec: f64, start: Instant) -> Result<Self, PacingError> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
            return Err(PacingError::InvalidRate(rate_per_sec));
        }
        Ok(Self {
            start,
            global_rate: rate_per_sec,
            offset: 0,
            stride: 1,
            issued: 0,
        })
    }

    /// The share of this schedule for worker `worker` of `workers`: every
    /// `workers`-th call of this schedule, beginning with call `worker`. The
    /// shares of all workers are disjoint and together equal this schedule.
    pub fn for_worker(&self, worker: usize, workers: usize) -> Result<Self, PacingError> {
        if workers == 0 || worker >= workers {
            return Err(PacingError::InvalidWorker { worker, workers });
        }
        let (worker, workers) = (worker as u64, workers as u64);
        Ok(Self {
            start: self.start,
            global_rate: self.global_rate,
            offset: self.offset + self.stride * (self.issued + worker),
            stride: self.stride * workers,
            issued: 0,
        })
    }

    /// The rate of this pacer alone, in calls per second.
    pub fn rate(&self) -> f64 {
        self.global_rate / self.stride as f64
    }

    /// Time between two consecutive intended starts of this pacer.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate())
    }

    /// Instant the schedule is anchored to.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Number of intended starts handed out so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    fn intended_at(&self, n: u64) -> Instant {
        let index = self.offset + self.stride * n;
        // Split into whole seconds and remainder to keep f64 precision at
        // high call counts.
        let rate = self.global_rate;
        let whole = (index as f64 / rate).floor();
        let rest = index as f64 - whole * rate;
        let nanos = (rest * 1e9 / rate).round() as u64;
        self.start + Duration::from_secs(whole as u64) + Duration::from_nanos(nanos)
    }

    /// The intended start of the next call, without consuming it.
    pub fn peek_intended(&self) -> Instant {
        self.intended_at(self.issued)
    }

    /// The intended start of the next call. Intended starts are never
    /// skipped, even when the caller is already late for several of them:
    /// latency is measured from this instant, so lateness counts.
    pub fn next_intended(&mut self) -> Instant {
        let at = self.intended_at(self.issued);
        self.issued += 1;
        at
    }

    /// How many intended starts are already due at `now` but not yet handed
    /// out (the backlog of a worker that fell behind).
    pub fn backlog(&self, now: Instant) -> u64 {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return 0;
        };
        let due_global = (elapsed.as_secs_f64() * self.global_rate).floor() as u64 + 1;
        let due_mine = if due_global > self.offset {
            (due_global - self.offset).div_ceil(self.stride)
        } else {
            0
        };
        due_mine.saturating_sub(self.issued)
    }

    /// How long to wait at `now` before the next call is due (zero if late).
    pub fn delay_until_next(&self, now: Instant) -> Duration {
        self.peek_intended().saturating_duration_since(now)
    }
}

/// Latency of a call measured from its intended start: includes any time it
/// waited because the sender was behind schedule.
pub fn latency_since_intended(intended: Instant, completed: Instant) -> Duration {
    completed.saturating_duration_since(intended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(p: &mut Pacer, n: usize) -> Vec<Duration> {
        let start = p.start();
        (0..n).map(|_| p.next_intended() - start).collect()
    }

    #[test]
    fn one_second_at_1000_per_second_is_evenly_spaced() {
        let start = Instant::now();
        let mut p = Pacer::new(1000.0, start).unwrap();
        let end = start + Duration::from_secs(1);
        let mut times = Vec::new();
        while p.peek_intended() < end {
            times.push(p.next_intended());
        }
        assert_eq!(times.len(), 1000);
        assert_eq!(times[0], start);
        for w in times.windows(2) {
            let gap = (w[1] - w[0]).as_nanos() as i128;
            assert!((gap - 1_000_000).abs() <= 1, "gap {gap}");
        }
        assert_eq!(p.interval(), Duration::from_millis(1));
    }

    #[test]
    fn workers_split_the_rate_exactly() {
        let start = Instant::now();
        let global = Pacer::new(1000.0, start).unwrap();
        let mut all = offsets(&mut global.clone(), 1000);
        let mut merged = Vec::new();
        let mut total_rate = 0.0;
        for i in 0..3 {
            let mut w = global.for_worker(i, 3).unwrap();
            total_rate += w.rate();
            let end = start + Duration::from_secs(1);
            while w.peek_intended() < end {
                merged.push(w.next_intended() - start);
            }
        }
        assert!((total_rate - 1000.0).abs() < 1e-9);
        assert_eq!(merged.len(), 1000);
        merged.sort();
        all.sort();
        assert_eq!(merged, all);
    }

    #[test]
    fn split_after_issuing_continues_the_schedule() {
        let start = Instant::now();
        let mut global = Pacer::new(10.0, start).unwrap();
        global.next_intended();
        let mut w0 = global.for_worker(0, 2).unwrap();
        let mut w1 = global.for_worker(1, 2).unwrap();
        assert_eq!(w0.next_intended() - start, Duration::from_millis(100));
        assert_eq!(w1.next_intended() - start, Duration::from_millis(200));
        assert_eq!(w0.next_intended() - start, Duration::from_millis(300));
    }

    #[test]
    fn nested_split_stays_disjoint() {
        let start = Instant::now();
        let global = Pacer::new(100.0, start).unwrap();
        let mut got: Vec<Duration> = (0..2)
            .flat_map(|i| {
                let half = global.for_worker(i, 2).unwrap();
                (0..2).flat_map(move |j| {
                    let mut q = half.for_worker(j, 2).unwrap();
                    offsets(&mut q, 25)
                })
            })
            .collect();
        got.sort();
        let want = offsets(&mut global.clone(), 100);
        assert_eq!(got, want);
    }

    #[test]
    fn late_worker_does_not_skip_intended_starts() {
        let start = Instant::now();
        let mut p = Pacer::new(1000.0, start).unwrap();
        // The worker wakes up 100 ms late: 101 calls are already due.
        let now = start + Duration::from_millis(100);
        assert_eq!(p.backlog(now), 101);
        assert_eq!(p.delay_until_next(now), Duration::ZERO);
        let first = p.next_intended();
        assert_eq!(first, start);
        // A call sent now and completing 50 us later is charged the lateness.
        let done = now + Duration::from_micros(50);
        assert_eq!(
            latency_since_intended(first, done),
            Duration::from_micros(100_050)
        );
        let second = p.next_intended();
        assert_eq!(second - start, Duration::from_millis(1));
        assert_eq!(p.backlog(now), 99);
        assert_eq!(p.issued(), 2);
    }

    #[test]
    fn early_worker_waits() {
        let start = Instant::now();
        let mut p = Pacer::new(10.0, start).unwrap().for_worker(1, 2).unwrap();
        assert_eq!(p.delay_until_next(start), Duration::from_millis(100));
        assert_eq!(p.backlog(start), 0);
        assert_eq!(p.next_intended() - start, Duration::from_millis(100));
        assert_eq!(p.next_intended() - start, Duration::from_millis(300));
        assert_eq!(
            latency_since_intended(start + Duration::from_secs(1), start),
            Duration::ZERO
        );
    }

    #[test]
    fn precision_holds_far_into_a_run() {
        let start = Instant::now();
        let p = Pacer::new(3.0, start).unwrap();
        // Call 3_000_000_000 at 3/s is exactly 1e9 s in.
        let q = Pacer {
            issued: 3_000_000_000,
            ..p
        };
        assert_eq!(
            q.peek_intended() - start,
            Duration::from_secs(1_000_000_000)
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        let start = Instant::now();
        assert_eq!(
            Pacer::new(0.0, start).unwrap_err(),
            PacingError::InvalidRate(0.0)
        );
        assert!(Pacer::new(f64::NAN, start).is_err());
        assert!(Pacer::new(-5.0, start).is_err());
        let p = Pacer::new(10.0, start).unwrap();
        assert!(p.for_worker(2, 2).is_err());
        assert!(p.for_worker(0, 0).is_err());
    }
}
