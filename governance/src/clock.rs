//! Where governance modules read the time: the [`Clock`] trait.
//!
//! Breakers, retry budgets and rate limiters all count events over time windows. Taking the time
//! from a trait rather than calling `Instant::now()` lets tests drive them with a [`ManualClock`]
//! that only moves when told to, so every test is deterministic and none sleeps. Production code
//! uses [`SystemClock`], which is `Instant::now()`.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock {
    /// The current instant. Never goes backwards.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock (`Instant::now()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The engine's per-turn clock ([`ringrpc_engine::turn_now`]): no system call per read, at most
/// one loop turn stale. Right for breakers and budgets, whose windows are seconds, on the request
/// path where several reads per call add up; outside an io_uring core it reads the system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnClock;

impl Clock for TurnClock {
    fn now(&self) -> Instant {
        ringrpc_engine::turn_now()
    }
}

/// A clock that only moves when [`ManualClock::advance`] is called; clones share the same time.
///
/// It is `Send + Sync` (an atomic offset from a fixed origin) so one clock can drive per-core
/// state and shared state alike in a test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    origin: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock reading the current system instant until advanced.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Rc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// Drives a future that completes without waiting on timers or I/O (test services answer at
/// once), so tests need no runtime.
///
/// # Panics
/// If the future stays pending: it was waiting on something a test cannot drive.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1000 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future stayed pending without a runtime");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        let c2 = c.clone();
        c2.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c2.now(), c.now());
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
    }
}
