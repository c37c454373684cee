//! The retry budget: retries may be at most a share of recent calls, plus a small floor.
//!
//! Every call deposits one token; every retry (or backup request) withdraws one, and is refused
//! when the withdrawals within the last `ttl` would exceed `min_per_sec * ttl + retry_ratio *
//! deposits`. Counting is a [`RollingWindow`] over the clock, on one core: with `n` cores the floor
//! applies per core, so the process-wide floor is `n * min_per_sec`.

use std::cell::RefCell;
use std::time::Duration;

use crate::breaker::RollingWindow;
use crate::clock::{Clock, SystemClock};

/// Configuration of a [`RetryBudget`] (tower's `TpsBudget`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long deposits and withdrawals count. Default 10 s. Longer smooths bursts but lets an
    /// old quiet period fund a retry storm for longer.
    pub ttl: Duration,
    /// Retries allowed per second regardless of traffic, per core. Default 10: lets a
    /// low-traffic client retry at all.
    pub min_per_sec: u32,
    /// Retries allowed per call, on top of the floor. Default 0.2 (20% extra load at most).
    pub retry_ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Tokens {
    deposits: u64,
    withdrawals: u64,
}

/// A per-core retry budget, shared (through an `Rc`) by the retry and backup layers of a
/// client on that core.
#[derive(Debug)]
pub struct RetryBudget<C = SystemClock> {
    config: BudgetConfig,
    clock: C,
    window: RefCell<RollingWindow<Tokens>>,
}

impl RetryBudget {
    /// A budget on the system clock.
    pub fn new(config: BudgetConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }
}

impl<C: Clock> RetryBudget<C> {
    /// A budget reading time from `clock`.
    pub fn with_clock(config: BudgetConfig, clock: C) -> Self {
        let window = RollingWindow::new(config.ttl, 10, clock.now());
        Self {
            config,
            clock,
            window: RefCell::new(window),
        }
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Counts one call.
    pub fn deposit(&self) {
        self.window.borrow_mut().current(self.clock.now()).deposits += 1;
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn withdraw(&self) -> bool {
        let now = self.clock.now();
        let mut w = self.window.borrow_mut();
        let (deposits, withdrawals) = w
            .slices(now)
            .iter()
            .fold((0, 0), |(d, r), t| (d + t.deposits, r + t.withdrawals));
        let allowed = f64::from(self.config.min_per_sec) * self.config.ttl.as_secs_f64()
            + self.config.retry_ratio * deposits as f64;
        if (withdrawals + 1) as f64 > allowed {
            return false;
        }
        w.current(now).withdrawals += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn retries_stay_under_the_ratio_plus_the_floor_and_refill_with_time() {
        let clock = ManualClock::new();
        let b = RetryBudget::with_clock(
            BudgetConfig {
                ttl: Duration::from_secs(10),
                min_per_sec: 1,
                retry_ratio: 0.1,
            },
            clock.clone(),
        );
        // Floor alone: 1/s over 10 s.
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
        for _ in 0..1000 {
            b.deposit();
        }
        // 10% of 1000 calls on top, minus the 10 already taken.
        assert_eq!((0..1000).filter(|_| b.withdraw()).count(), 100);
        // Everything expires after the ttl.
        clock.advance(Duration::from_secs(11));
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
    }
}
