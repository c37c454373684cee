//! Per-instance breakers of one core, keyed by address, shared with the load balancer.
//!
//! The [`InstanceBreakerLayer`](super::InstanceBreakerLayer) records each call's outcome against
//! the instance it went to; the balancer asks [`InstanceBreakers::is_available`] before picking,
//! so a tripped instance gets no traffic until its cool-down passes, and then only probes.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
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
        }
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Whether a call to `addr` would be admitted now; instances never called are available.
    pub fn is_available(&self, addr: SocketAddr) -> bool {
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
        let breaker = self
            .map
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| Rc::new(Breaker::new(self.config, now)))
            .clone();
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
        self.map.borrow_mut().retain(|a, _| keep(*a));
    }
}
