//! Per-instance breakers of one core, keyed by address, shared with the load balancer.
//!
//! The [`InstanceBreakerLayer`](super::InstanceBreakerLayer) records each call's outcome against
//! the instance it went to; the balancer asks [`InstanceBreakers::is_available`] before picking,
//! so a tripped instance gets no traffic until its cool-down passes, and then only probes.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use super::{Breaker, BreakerConfig, BreakerError, BreakerState, Outcome, Ticket};
use crate::clock::{Clock, SystemClock};

/// One breaker per instance address, created on first use; one map per client per core.
#[derive(Debug)]
pub struct InstanceBreakers<C = SystemClock> {
    config: BreakerConfig,
    clock: C,
    map: RefCell<FxHashMap<SocketAddr, Rc<Breaker>>>,
    /// Breakers in `map` that are not closed: while none is, every instance is available
    /// without a lookup (the balancer asks for every candidate of every pick).
    not_closed: Rc<Cell<usize>>,
}

impl InstanceBreakers {
    /// Breakers with `config` on the system clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }
}

impl<C: Clock> InstanceBreakers<C> {
    /// Breakers with `config` reading time from `clock`.
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        Self {
            config,
            clock,
            map: RefCell::new(FxHashMap::default()),
            not_closed: Rc::new(Cell::new(0)),
        }
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Whether a call to `addr` would be admitted now; instances never called are available.
    pub fn is_available(&self, addr: SocketAddr) -> bool {
        if self.not_closed.get() == 0 {
            return true;
        }
        self.map
            .borrow()
            .get(&addr)
            .is_none_or(|b| b.is_available(self.clock.now()))
    }

    /// The state of `addr`'s breaker (closed if never called).
    pub fn state(&self, addr: SocketAddr) -> BreakerState {
        self.map
            .borrow()
            .get(&addr)
            .map_or(BreakerState::Closed, |b| b.state(self.clock.now()))
    }

    /// Admits a call to `addr`.
    ///
    /// # Errors
    /// [`BreakerError::InstanceOpen`] when `addr`'s breaker rejects it.
    pub fn try_acquire(&self, addr: SocketAddr) -> Result<Ticket, BreakerError> {
        self.try_acquire_at(addr).map(|(_, ticket)| ticket)
    }

    /// Admits a call to `addr`, returning the breaker to record its outcome into (without a
    /// second lookup).
    ///
    /// # Errors
    /// [`BreakerError::InstanceOpen`] when `addr`'s breaker rejects it.
    pub fn try_acquire_at(&self, addr: SocketAddr) -> Result<(Rc<Breaker>, Ticket), BreakerError> {
        let now = self.clock.now();
        let known = self.map.borrow().get(&addr).cloned();
        let breaker = known.unwrap_or_else(|| {
            let tally = self.not_closed.clone();
            let b = Rc::new(Breaker::tallied(self.config, now, tally));
            self.map.borrow_mut().insert(addr, b.clone());
            b
        });
        match breaker.try_acquire(now) {
            Ok(ticket) => Ok((breaker, ticket)),
            Err(_) => Err(BreakerError::InstanceOpen(addr)),
        }
    }

    /// Records the outcome of a call to `addr` admitted with `ticket`.
    pub fn record(&self, addr: SocketAddr, ticket: Ticket, outcome: Outcome) {
        let breaker = self.map.borrow().get(&addr).cloned();
        if let Some(b) = breaker {
            b.record(ticket, outcome, self.clock.now());
        }
    }

    /// Forgets the instances for which `keep` is false (call it when discovery drops them).
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        self.map.borrow_mut().retain(|a, b| {
            let kept = keep(*a);
            if !kept {
                b.detach();
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn the_tally_of_open_breakers_follows_trips_recoveries_and_removals() {
        let clock = ManualClock::new();
        let config = BreakerConfig {
            min_samples: 2,
            half_open_probes: 1,
            ..BreakerConfig::default()
        };
        let breakers = InstanceBreakers::with_clock(config, clock.clone());
        let (a, b) = (
            SocketAddr::from(([10, 0, 0, 1], 1)),
            SocketAddr::from(([10, 0, 0, 2], 1)),
        );
        let fail = |addr| {
            let t = breakers.try_acquire(addr).unwrap();
            breakers.record(addr, t, Outcome::Failure);
        };
        fail(a);
        fail(a);
        assert_eq!(breakers.not_closed.get(), 1);
        assert!(!breakers.is_available(a));
        assert!(breakers.is_available(b));

        // Cool-down passed: one probe, which succeeds and closes the breaker.
        clock.advance(config.cool_down);
        let probe = breakers.try_acquire(a).unwrap();
        assert_eq!(breakers.not_closed.get(), 1);
        breakers.record(a, probe, Outcome::Success);
        assert_eq!(breakers.state(a), BreakerState::Closed);
        assert_eq!(breakers.not_closed.get(), 0);

        // Tripped again, then removed with a probe out: the probe's late success leaves the
        // tally alone.
        fail(a);
        fail(a);
        clock.advance(config.cool_down + Duration::from_secs(1));
        let (breaker, probe) = breakers.try_acquire_at(a).unwrap();
        breakers.retain(|x| x != a);
        assert_eq!(breakers.not_closed.get(), 0);
        breaker.record(probe, Outcome::Success, clock.now());
        assert_eq!(breakers.not_closed.get(), 0);
        assert!(breakers.is_available(a));
    }
}
