//! A live progress line for long load runs.
//!
//! Workers bump shared [`LoadCounters`]; a background thread started by
//! [`Progress::start`] reads them every second and shows the QPS over the last
//! second, the error count and elapsed/total time. On a terminal the line is
//! redrawn in place on stderr; when stderr is not a terminal (CI, pipes) one
//! plain line is printed every five seconds so logs stay short.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters shared between the load workers and the progress printer.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Completed successful requests.
    pub requests: AtomicU64,
    /// Failed requests.
    pub errors: AtomicU64,
}

impl LoadCounters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one successful request.
    pub fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed request.
    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Current `(requests, errors)`.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Sets both counters back to zero (e.g. at the end of warm-up).
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
    }
}

/// How the progress printer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressOptions {
    /// Sampling period; QPS is measured over one tick.
    pub tick: Duration,
    /// Redraw one line in place (`\r`) rather than printing new lines.
    pub live: bool,
    /// Print on every n-th tick only (1 = every tick).
    pub print_every: u32,
}

impl ProgressOptions {
    /// For a terminal: redraw every second.
    pub fn terminal() -> Self {
        Self {
            tick: Duration::from_secs(1),
            live: true,
            print_every: 1,
        }
    }

    /// For logs: one line every five seconds.
    pub fn log() -> Self {
        Self {
            tick: Duration::from_secs(1),
            live: false,
            print_every: 5,
        }
    }
}

/// The progress line text: `[  3s/10s] QPS 123456 requests 370000 errors 0`.
pub fn format_line(
    elapsed: Duration,
    total: Duration,
    qps: f64,
    requests: u64,
    errors: u64,
) -> String {
    let total_s = total.as_secs_f64();
    let width = format!("{total_s:.0}").len();
    format!(
        "[{:>width$.0}s/{total_s:.0}s] QPS {qps:.0}  requests {requests}  errors {errors}",
        elapsed.as_secs_f64()
    )
}

struct Shared {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// A running progress printer; stop it with [`Progress::stop`] (or drop it).
pub struct Progress {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing to stderr for a run of `total`: live if stderr is a
    /// terminal ([`ProgressOptions::terminal`]), else every five seconds
    /// ([`ProgressOptions::log`]).
    pub fn start(total: Duration, counters: Arc<LoadCounters>) -> Self {
        let options = if io::stderr().is_terminal() {
            ProgressOptions::terminal()
        } else {
            ProgressOptions::log()
        };
        Self::start_with(total, counters, options, Box::new(io::stderr()))
    }

    /// Starts printing to `out` with explicit options.
    pub fn start_with(
        total: Duration,
        counters: Arc<LoadCounters>,
        options: ProgressOptions,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let shared = Arc::new(Shared {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || run(&thread_shared, total, &counters, options, out))
            .ok();
        Self { shared, handle }
    }

    /// Stops the printer, clears a live line, and waits for the thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        *self
            .shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.handle.take() {
            // A panic in the printer must not take the benchmark down.
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    shared: &Shared,
    total: Duration,
    counters: &LoadCounters,
    options: ProgressOptions,
    mut out: Box<dyn Write + Send>,
) {
    let tick = options.tick.max(Duration::from_millis(1));
    let every = options.print_every.max(1);
    let start = Instant::now();
    let mut next = start + tick;
    let (mut prev_requests, _) = counters.snapshot();
    let mut prev_at = start;
    let mut ticks: u32 = 0;
    let mut drew_live = false;
    let mut stopped = shared
        .stopped
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        if now < next {
            stopped = shared
                .wake
                .wait_timeout_while(stopped, next - now, |s| !*s)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if *stopped {
                break;
            }
            continue;
        }
        let (requests, errors) = counters.snapshot();
        let span = now.duration_since(prev_at).as_secs_f64();
        let qps = if span > 0.0 {
            requests.saturating_sub(prev_requests) as f64 / span
        } else {
            0.0
        };
        prev_requests = requests;
        prev_at = now;
        ticks = ticks.wrapping_add(1);
        next += tick;
        if next <= now {
            // Fell behind (suspended, starved): resume the cadence from now
            // rather than printing a burst of catch-up lines.
            next = now + tick;
        }
        if ticks % every != 0 {
            continue;
        }
        let line = format_line(now - start, total, qps, requests, errors);
        let written = if options.live {
            drew_live = true;
            write!(out, "\r\x1b[2K{line}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = written.and_then(|()| out.flush());
    }
    drop(stopped);
    if drew_live {
        let _ = write!(out, "\r\x1b[2K").and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn feed(counters: &LoadCounters, for_: Duration) {
        let end = Instant::now() + for_;
        while Instant::now() < end {
            counters.add_request();
            if counters.requests.load(Ordering::Relaxed) % 1000 == 0 {
                counters.add_error();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(
                Duration::from_secs(3),
                Duration::from_secs(10),
                1234.4,
                5000,
                2
            ),
            "[ 3s/10s] QPS 1234  requests 5000  errors 2"
        );
        assert_eq!(
            format_line(
                Duration::from_millis(900),
                Duration::from_secs(5),
                0.0,
                0,
                0
            ),
            "[1s/5s] QPS 0  requests 0  errors 0"
        );
    }

    #[test]
    fn counters() {
        let c = LoadCounters::new();
        c.add_request();
        c.add_request();
        c.add_error();
        assert_eq!(c.snapshot(), (2, 1));
        c.reset();
        assert_eq!(c.snapshot(), (0, 0));
    }

    #[test]
    fn log_mode_prints_every_nth_tick_as_plain_lines() {
        let counters = Arc::new(LoadCounters::new());
        let sink = Sink::default();
        let options = ProgressOptions {
            tick: Duration::from_millis(20),
            live: false,
            print_every: 5,
        };
        let p = Progress::start_with(
            Duration::from_secs(1),
            Arc::clone(&counters),
            options,
            Box::new(sink.clone()),
        );
        feed(&counters, Duration::from_millis(350));
        p.stop();
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        // ~17 ticks at 20 ms, one line per 5 ticks; allow for slow CI.
        assert!((1..=4).contains(&lines.len()), "{text:?}");
        assert!(!text.contains('\r'));
        assert!(lines.iter().all(|l| l.contains("/1s] QPS ")), "{text:?}");
        let last: u64 = lines
            .last()
            .unwrap()
            .split("requests ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(last > 0);
    }

    #[test]
    fn live_mode_redraws_and_clears() {
        let counters = Arc::new(LoadCounters::new());
        let sink = Sink::default();
        let options = ProgressOptions {
            tick: Duration::from_millis(10),
            live: true,
            print_every: 1,
        };
        let p = Progress::start_with(
            Duration::from_secs(2),
            Arc::clone(&counters),
            options,
            Box::new(sink.clone()),
        );
        feed(&counters, Duration::from_millis(80));
        drop(p);
        let text = sink.text();
        assert!(!text.contains('\n'), "{text:?}");
        assert!(text.matches("\r\x1b[2K").count() >= 2, "{text:?}");
        assert!(text.ends_with("\r\x1b[2K"));
        assert!(text.contains("QPS "));
    }

    #[test]
    fn stop_is_prompt_and_silent_before_first_tick() {
        let sink = Sink::default();
        let p = Progress::start_with(
            Duration::from_secs(60),
            Arc::new(LoadCounters::new()),
            ProgressOptions::terminal(),
            Box::new(sink.clone()),
        );
        let t = Instant::now();
        p.stop();
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(sink.text(), "");
        assert_eq!(ProgressOptions::log().print_every, 5);
    }
}
