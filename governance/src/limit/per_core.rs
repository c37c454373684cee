//! One core's limiter: a token bucket and an in-flight counter over the core's shares.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ringrpc_engine::Engine;

use super::{GlobalLimit, LimitError};
use crate::clock::Clock;
use crate::hook::{reject, CallHook, Hooked};
use crate::Layer;

/// The limiter of one core; made by [`GlobalLimit::core`], used only on that core.
#[derive(Debug)]
pub struct CoreLimiter<C> {
    global: Arc<GlobalLimit>,
    core: usize,
    clock: C,
    // QPS: a token bucket at `rate` per second, `capacity` deep.
    rate: Cell<f64>,
    capacity: Cell<f64>,
    tokens: Cell<f64>,
    refilled: Cell<Instant>,
    arrivals: Cell<u64>,
    synced: Cell<Instant>,
    // Concurrency: `in_flight` calls against `limit` (the smaller of the slots held and the
    // target share); `held` slots are taken out of the global pool.
    in_flight: Cell<u64>,
    held: Cell<u64>,
    limit: Cell<u64>,
    /// Most calls in flight at once since the last sync.
    peak: Cell<u64>,
    /// Calls rejected for concurrency since the last sync.
    rejected: Cell<u64>,
}

impl<C: Clock> CoreLimiter<C> {
    pub(super) fn new(global: Arc<GlobalLimit>, core: usize, clock: C) -> Self {
        let now = clock.now();
        let l = Self {
            global,
            core,
            clock,
            rate: Cell::new(0.0),
            capacity: Cell::new(0.0),
            tokens: Cell::new(0.0),
            refilled: Cell::new(now),
            arrivals: Cell::new(0),
            synced: Cell::new(now),
            in_flight: Cell::new(0),
            held: Cell::new(0),
            limit: Cell::new(0),
            peak: Cell::new(0),
            rejected: Cell::new(0),
        };
        l.set_rate(l.global.slot(core).qps_share.load(Ordering::Relaxed) as f64);
        l.tokens.set(l.capacity.get());
        l.sync_concurrency();
        l
    }

    /// The core this limiter belongs to.
    pub fn core(&self) -> usize {
        self.core
    }

    /// The shared totals.
    pub fn global(&self) -> &Arc<GlobalLimit> {
        &self.global
    }

    /// This core's current share of `max_qps`.
    pub fn qps_share(&self) -> u64 {
        self.rate.get() as u64
    }

    /// How many calls this core may have in flight now.
    pub fn concurrency_limit(&self) -> u64 {
        self.limit.get()
    }

    /// Calls in flight on this core.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.get()
    }

    fn set_rate(&self, rate: f64) {
        self.rate.set(rate);
        let cap = (rate * self.global.config.burst.as_secs_f64()).max(1.0);
        self.capacity.set(cap);
        self.tokens.set(self.tokens.get().min(cap));
    }

    fn refill(&self, now: Instant) {
        // With the turn clock every call of a loop turn reads the same time: one refill a turn.
        if now == self.refilled.get() {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled.get())
            .as_secs_f64();
        self.refilled.set(now);
        let t = self.tokens.get() + elapsed * self.rate.get();
        self.tokens.set(t.min(self.capacity.get()));
    }

    /// Admits one call, or rejects it at once. The permit holds a concurrency slot until dropped.
    ///
    /// # Errors
    /// [`LimitError::Concurrency`] when this core's share of slots is in use,
    /// [`LimitError::Qps`] when its token bucket is empty.
    pub fn try_acquire(&self) -> Result<LimitPermit<'_, C>, LimitError> {
        let config = &self.global.config;
        self.arrivals.set(self.arrivals.get() + 1);
        if config.max_concurrency.is_some() && self.in_flight.get() >= self.limit.get() {
            self.rejected.set(self.rejected.get() + 1);
            return Err(LimitError::Concurrency {
                share: self.limit.get(),
            });
        }
        if config.max_qps.is_some() {
            self.refill(self.clock.now());
            let t = self.tokens.get();
            if t < 1.0 {
                return Err(LimitError::Qps {
                    share: self.qps_share(),
                });
            }
            self.tokens.set(t - 1.0);
        }
        let n = self.in_flight.get() + 1;
        self.in_flight.set(n);
        self.peak.set(self.peak.get().max(n));
        Ok(LimitPermit { limiter: self })
    }

    /// Reports this core's demand since the last sync and adopts its current shares. Call it
    /// every `sync_period` on this core (see [`CoreLimiter::spawn_sync`]), after the
    /// coordinator's [`GlobalLimit::rebalance`].
    pub fn sync(&self) {
        let now = self.clock.now();
        let slot = self.global.slot(self.core);
        let elapsed = now
            .saturating_duration_since(self.synced.get())
            .as_secs_f64();
        if elapsed > 0.0 {
            let rate = self.arrivals.get() as f64 / elapsed;
            slot.qps_demand.store(rate.to_bits(), Ordering::Relaxed);
            self.arrivals.set(0);
            self.synced.set(now);
        }
        if self.global.config.max_qps.is_some() {
            self.refill(now);
            self.set_rate(slot.qps_share.load(Ordering::Relaxed) as f64);
        }
        if self.global.config.max_concurrency.is_some() {
            // Demand: the most in flight at once, plus what was turned away.
            let demand = self.peak.get().max(self.in_flight.get()) + self.rejected.get();
            slot.conc_demand.store(demand, Ordering::Relaxed);
            self.peak.set(self.in_flight.get());
            self.rejected.set(0);
            self.sync_concurrency();
        }
    }

    /// Gives back slots above the target that are not in use, takes free slots up to it.
    fn sync_concurrency(&self) {
        if self.global.config.max_concurrency.is_none() {
            return;
        }
        let target = self
            .global
            .slot(self.core)
            .conc_target
            .load(Ordering::Relaxed);
        let held = self.held.get();
        if held > target {
            let keep = target.max(self.in_flight.get());
            self.global.give_slots(held - keep);
            self.held.set(keep);
        } else if held < target {
            self.held.set(held + self.global.take_slots(target - held));
        }
        self.limit.set(self.held.get().min(target));
    }

    /// Spawns the periodic task on this core: every `sync_period`, rebalance (on core 0) and
    /// [`CoreLimiter::sync`]. The task ends when the limiter is dropped or the runtime stops.
    pub fn spawn_sync<E: Engine>(self: &Rc<Self>)
    where
        C: 'static,
    {
        let weak = Rc::downgrade(self);
        let period = self.global.config.sync_period;
        E::spawn(async move {
            loop {
                E::sleep(period).await;
                let Some(l) = weak.upgrade() else { return };
                if ringrpc_engine::current_runtime().is_some_and(|r| r.is_stopping()) {
                    return;
                }
                if l.core == 0 {
                    l.global.rebalance();
                }
                l.sync();
            }
        });
    }
}

impl<C> Drop for CoreLimiter<C> {
    fn drop(&mut self) {
        self.global.give_slots(self.held.get());
        self.global
            .slot(self.core)
            .taken
            .store(false, Ordering::Release);
    }
}

/// One admitted call; frees its concurrency slot when dropped.
#[derive(Debug)]
#[must_use = "the slot is freed as soon as the permit drops"]
pub struct LimitPermit<'a, C> {
    limiter: &'a CoreLimiter<C>,
}

impl<C> Drop for LimitPermit<'_, C> {
    fn drop(&mut self) {
        let n = &self.limiter.in_flight;
        n.set(n.get().saturating_sub(1));
    }
}

/// Builds [`LimitService`]s over this core's limiter.
#[derive(Debug)]
pub struct LimitLayer<C> {
    limiter: Rc<CoreLimiter<C>>,
}

impl<C> Clone for LimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<C> LimitLayer<C> {
    /// A layer admitting calls through `limiter` (this core's).
    pub fn new(limiter: Rc<CoreLimiter<C>>) -> Self {
        Self { limiter }
    }
}

impl<S, C> Layer<S> for LimitLayer<C> {
    type Service = LimitService<S, C>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.limiter)
    }
}

/// A service that rejects calls over the limits with [`LimitError`] and holds a concurrency
/// slot while each admitted call runs.
pub type LimitService<S, C> = Hooked<S, Rc<CoreLimiter<C>>>;

/// The limiter as a hook: a permit taken before the call, freed when it ends.
impl<Cx, Req, Res, Err, C> CallHook<Cx, Req, Res, Err> for CoreLimiter<C>
where
    Err: From<LimitError>,
    C: Clock,
{
    type Token<'a>
        = LimitPermit<'a, C>
    where
        Self: 'a;

    fn before<'a>(
        &'a self,
        _: &mut Cx,
        _: &Req,
    ) -> ControlFlow<Result<Res, Err>, LimitPermit<'a, C>> {
        match self.try_acquire() {
            Ok(permit) => ControlFlow::Continue(permit),
            Err(e) => reject(e),
        }
    }

    fn after(
        &self,
        permit: LimitPermit<'_, C>,
        _: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        drop(permit);
        result
    }
}
