//! Circuit breakers: stop calling what keeps failing, probe it after a cool-down, resume when it
//! recovers.
//!
//! A [`Breaker`] follows Kitex's rule: over a sliding window (a ring of time buckets, see
//! [`RollingWindow`]) it trips when at least `min_samples` calls finished and the share of
//! failures reached `error_rate`. Then:
//!
//! ```text
//!   Closed ──(errors ≥ rate, samples ≥ min)──▶ Open ──(cool_down passed)──▶ HalfOpen
//!     ▲                                          ▲                             │
//!     └──────────(half_open_probes succeeded)────┼─────────────────────────────┘
//!                                                └──────(a probe failed)───────┘
//! ```
//!
//! Open fails fast with [`BreakerError::Open`]; HalfOpen lets `half_open_probes` calls through
//! and rejects the rest. Two keyings, both per core (no locks; each core judges from its own
//! traffic, which the kernel's connection spreading makes a fair sample):
//! - per method of the called service: [`BreakerLayer`] (outside retries, so a retry storm
//!   cannot hide from it and an open breaker stops retries too);
//! - per instance (by address): [`InstanceBreakers`], recorded by [`InstanceBreakerLayer`]
//!   inside the load balancer and consulted by it through [`InstanceBreakers::is_available`].
//!
//! What counts as a failure is a [`FailurePolicy`] over the error (by default every error;
//! business errors usually should not count). A call cancelled (its future dropped) before its
//! deadline counts as nothing; one dropped at or after its deadline counts as a failure (a
//! timeout).

mod instance;
mod layer;
mod window;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use instance::InstanceBreakers;
pub use layer::{
    Admitted, AnyError, BreakerLayer, BreakerService, FailurePolicy, InstanceBreakerHook,
    InstanceBreakerLayer, InstanceBreakerService, MethodBreakers,
};
pub use window::RollingWindow;

/// Configuration of a circuit breaker. Defaults follow Kitex (`ErrRate` 0.5, `MinSample` 200,
/// a 10 s window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Length of the sliding window over which failures are counted. Default 10 s. Longer
    /// windows react slower but judge on more samples.
    pub window: Duration,
    /// Buckets the window is cut into. Default 10 (1 s each): old results leave a bucket at a
    /// time. More buckets slide more smoothly and cost a little more per read.
    pub buckets: usize,
    /// Failure share in `[0, 1]` at which the breaker opens. Default 0.5.
    pub error_rate: f64,
    /// Minimum finished calls in the window before the breaker may open. Default 200. Counted per
    /// core: with `n` cores a service must see about `n * min_samples` calls per window. Too low
    /// and a few unlucky calls trip it; too high and a low-traffic service never trips.
    pub min_samples: u64,
    /// Time an open breaker rejects everything before probing. Default 5 s.
    pub cool_down: Duration,
    /// Calls let through while half-open; all must succeed to close, one failure reopens.
    /// Default 5. Calls beyond these are rejected until the probes are answered.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            buckets: 10,
            error_rate: 0.5,
            min_samples: 200,
            cool_down: Duration::from_secs(5),
            half_open_probes: 5,
        }
    }
}

/// A call rejected by a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError {
    /// The method's breaker is open (or half-open with all its probes out).
    #[error("circuit breaker open")]
    Open,
    /// The breaker of the instance the call was pinned to is open.
    #[error("circuit breaker open for instance {0}")]
    InstanceOpen(SocketAddr),
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; results are counted.
    Closed,
    /// Calls fail fast until `until`.
    Open {
        /// End of the cool-down.
        until: Instant,
    },
    /// Probing: `admitted` of the allowed probes are out, `succeeded` came back well.
    HalfOpen {
        /// Probes let through so far.
        admitted: u32,
        /// Probes that succeeded so far.
        succeeded: u32,
    },
}

/// How a call admitted by a breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded (or failed in a way the policy does not count).
    Success,
    /// It failed (including timing out).
    Failure,
    /// It was abandoned before its deadline: counts as nothing, and frees its probe slot.
    Cancelled,
}

/// Permission for one call, returned to [`Breaker::record`] with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "record the outcome, or a half-open breaker keeps the probe slot"]
pub struct Ticket {
    generation: u64,
    probe: bool,
}

/// Successes and failures counted in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
}

/// One circuit breaker, used from one core; see the [module docs](self).
///
/// Time is passed in (`now`) rather than read, so the owner decides the clock.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Cell<BreakerState>,
    /// Bumped on every state change; results from tickets of an earlier generation are ignored.
    generation: Cell<u64>,
    window: RefCell<RollingWindow<Counts>>,
    /// The count of breakers not closed in this breaker's group (see [`InstanceBreakers`]);
    /// this one is in it while it is not closed and not detached.
    tally: Option<Rc<Cell<usize>>>,
    detached: Cell<bool>,
}

impl Breaker {
    /// A closed breaker with an empty window starting at `now`.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            state: Cell::new(BreakerState::Closed),
            generation: Cell::new(0),
            window: RefCell::new(RollingWindow::new(config.window, config.buckets, now)),
            tally: None,
            detached: Cell::new(false),
        }
    }

    /// A closed breaker that keeps `tally` counting the breakers of its group that are not
    /// closed, until [`detach`](Self::detach)ed.
    pub(crate) fn tallied(config: BreakerConfig, now: Instant, tally: Rc<Cell<usize>>) -> Self {
        Self {
            tally: Some(tally),
            ..Self::new(config, now)
        }
    }

    /// Leaves the group: no longer counted in its tally, whatever happens to it later (calls
    /// admitted before may still record into it).
    pub(crate) fn detach(&self) {
        self.count_in_tally(false);
        self.detached.set(true);
    }

    /// Whether this breaker is in its group's tally now.
    fn in_tally(&self) -> bool {
        self.state.get() != BreakerState::Closed && !self.detached.get()
    }

    /// Puts this breaker in its group's tally, or takes it out.
    fn count_in_tally(&self, counted: bool) {
        if let Some(tally) = &self.tally {
            if counted != self.in_tally() {
                tally.set(if counted {
                    tally.get() + 1
                } else {
                    tally.get() - 1
                });
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now` (an open breaker whose cool-down passed reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state.get() {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen {
                admitted: 0,
                succeeded: 0,
            },
            s => s,
        }
    }

    /// Whether a call at `now` would be admitted (without admitting it).
    pub fn is_available(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { admitted, .. } => admitted < self.config.half_open_probes,
        }
    }

    /// Successes and failures in the window at `now`.
    pub fn counts(&self, now: Instant) -> Counts {
        self.window
            .borrow_mut()
            .slices(now)
            .iter()
            .fold(Counts::default(), |a, b| Counts {
                successes: a.successes + b.successes,
                failures: a.failures + b.failures,
            })
    }

    fn transition(&self, to: BreakerState) {
        self.count_in_tally(to != BreakerState::Closed && !self.detached.get());
        self.state.set(to);
        self.generation.set(self.generation.get() + 1);
        self.window.borrow_mut().reset();
    }

    /// Admits a call at `now`, or rejects it with [`BreakerError::Open`].
    ///
    /// # Errors
    /// [`BreakerError::Open`] while open, and while half-open once all probes are out.
    pub fn try_acquire(&self, now: Instant) -> Result<Ticket, BreakerError> {
        if let BreakerState::Open { until } = self.state.get() {
            if now < until {
                return Err(BreakerError::Open);
            }
            self.transition(BreakerState::HalfOpen {
                admitted: 0,
                succeeded: 0,
            });
        }
        match self.state.get() {
            BreakerState::Closed => Ok(Ticket {
                generation: self.generation.get(),
                probe: false,
            }),
            BreakerState::HalfOpen {
                admitted,
                succeeded,
            } if admitted < self.config.half_open_probes => {
                self.state.set(BreakerState::HalfOpen {
                    admitted: admitted + 1,
                    succeeded,
                });
                Ok(Ticket {
                    generation: self.generation.get(),
                    probe: true,
                })
            }
            _ => Err(BreakerError::Open),
        }
    }

    /// Records how the call admitted with `ticket` ended, at `now`.
    pub fn record(&self, ticket: Ticket, outcome: Outcome, now: Instant) {
        if ticket.generation != self.generation.get() {
            return; // admitted before the last state change: no longer relevant
        }
        match (self.state.get(), ticket.probe) {
            (BreakerState::Closed, false) => {
                {
                    let mut w = self.window.borrow_mut();
                    let c = w.current(now);
                    match outcome {
                        Outcome::Success => c.successes += 1,
                        Outcome::Failure => c.failures += 1,
                        Outcome::Cancelled => return,
                    }
                }
                if outcome == Outcome::Failure && self.should_trip(now) {
                    self.open(now);
                }
            }
            (
                BreakerState::HalfOpen {
                    admitted,
                    succeeded,
                },
                true,
            ) => match outcome {
                Outcome::Success if succeeded + 1 >= self.config.half_open_probes => {
                    self.transition(BreakerState::Closed);
                }
                Outcome::Success => self.state.set(BreakerState::HalfOpen {
                    admitted,
                    succeeded: succeeded + 1,
                }),
                Outcome::Failure => self.open(now),
                Outcome::Cancelled => self.state.set(BreakerState::HalfOpen {
                    admitted: admitted.saturating_sub(1),
                    succeeded,
                }),
            },
            _ => {}
        }
    }

    fn should_trip(&self, now: Instant) -> bool {
        let c = self.counts(now);
        let total = c.successes + c.failures;
        total >= self.config.min_samples.max(1)
            && c.failures as f64 >= self.config.error_rate * total as f64
    }

    fn open(&self, now: Instant) {
        self.transition(BreakerState::Open {
            until: now + self.config.cool_down,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn config() -> BreakerConfig {
        BreakerConfig {
            min_samples: 20,
            error_rate: 0.5,
            cool_down: Duration::from_secs(5),
            half_open_probes: 3,
            ..BreakerConfig::default()
        }
    }

    fn call(b: &Breaker, clock: &ManualClock, outcome: Outcome) -> Result<(), BreakerError> {
        let t = b.try_acquire(clock.now())?;
        b.record(t, outcome, clock.now());
        Ok(())
    }

    #[test]
    fn opens_at_the_error_rate_only_with_the_minimum_sample() {
        let clock = ManualClock::new();
        let b = Breaker::new(config(), clock.now());
        // 19 failures: 100% errors but below the minimum sample.
        for _ in 0..19 {
            call(&b, &clock, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        // The 20th opens it.
        call(&b, &clock, Outcome::Failure).unwrap();
        assert!(matches!(b.state(clock.now()), BreakerState::Open { .. }));
        assert_eq!(call(&b, &clock, Outcome::Success), Err(BreakerError::Open));
        assert!(!b.is_available(clock.now()));
    }

    #[test]
    fn stays_closed_below_the_rate_and_forgets_old_failures() {
        let clock = ManualClock::new();
        let b = Breaker::new(config(), clock.now());
        // 40% errors over 100 calls.
        for i in 0..100 {
            let o = if i % 5 < 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            call(&b, &clock, o).unwrap();
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        // Cancelled calls count as nothing.
        for _ in 0..100 {
            call(&b, &clock, Outcome::Cancelled).unwrap();
        }
        assert_eq!(
            b.counts(clock.now()).successes + b.counts(clock.now()).failures,
            100
        );
        // After the window, 15 failures alone are below the minimum sample again.
        clock.advance(Duration::from_secs(11));
        for _ in 0..15 {
            call(&b, &clock, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        assert_eq!(b.counts(clock.now()).failures, 15);
    }

    #[test]
    fn half_open_probes_limited_calls_and_a_failed_probe_reopens() {
        let clock = ManualClock::new();
        let b = Breaker::new(config(), clock.now());
        for _ in 0..20 {
            call(&b, &clock, Outcome::Failure).unwrap();
        }
        clock.advance(Duration::from_millis(4_999));
        assert_eq!(b.try_acquire(clock.now()), Err(BreakerError::Open));
        clock.advance(Duration::from_millis(1));
        // Half-open: three probes pass, the fourth is rejected while they are out.
        let probes: Vec<_> = (0..3)
            .map(|_| b.try_acquire(clock.now()).unwrap())
            .collect();
        assert_eq!(b.try_acquire(clock.now()), Err(BreakerError::Open));
        assert!(!b.is_available(clock.now()));
        // A cancelled probe frees its slot.
        b.record(probes[0], Outcome::Cancelled, clock.now());
        assert!(b.is_available(clock.now()));
        let again = b.try_acquire(clock.now()).unwrap();
        b.record(probes[1], Outcome::Success, clock.now());
        // One failed probe reopens for another cool-down; late results are ignored.
        b.record(probes[2], Outcome::Failure, clock.now());
        assert!(matches!(b.state(clock.now()), BreakerState::Open { .. }));
        b.record(again, Outcome::Success, clock.now());
        assert!(matches!(b.state(clock.now()), BreakerState::Open { .. }));
        clock.advance(Duration::from_secs(5));
        assert!(b.is_available(clock.now()));
    }

    #[test]
    fn closes_when_the_probes_succeed() {
        let clock = ManualClock::new();
        let b = Breaker::new(config(), clock.now());
        for _ in 0..20 {
            call(&b, &clock, Outcome::Failure).unwrap();
        }
        clock.advance(Duration::from_secs(5));
        for _ in 0..3 {
            call(&b, &clock, Outcome::Success).unwrap();
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        // The window starts afresh: earlier failures do not count against it.
        assert_eq!(b.counts(clock.now()), Counts::default());
        for _ in 0..10 {
            call(&b, &clock, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }
}
