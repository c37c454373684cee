//! Server-wide QPS and concurrency limits, enforced per core without cross-core traffic.
//!
//! The limits are for the whole server, but checking one shared counter per request would make
//! every core contend on one cache line. Instead a [`GlobalLimit`] (shared, `Arc`, atomics and
//! a mutex, touched only off the request path) holds the totals and hands each core a share;
//! each core's [`CoreLimiter`] enforces its share with plain `Cell`s:
//! - QPS: a token bucket refilled at the core's share of the rate;
//! - concurrency: a counter of calls in flight against the core's share of the slots.
//!
//! Over the limit, a call fails at once with [`LimitError`]; nothing queues.
//!
//! Shares follow demand. Every `sync_period` each core reports what it saw (arrivals per
//! second, admitted or not; peak concurrency wanted) and picks up its new share
//! ([`CoreLimiter::sync`]); one core recomputes the shares from the reports
//! ([`GlobalLimit::rebalance`]): a max-min fair split (cores wanting less than an even share get
//! what they want plus `headroom`, the rest share the remainder; capacity nobody wants follows
//! demand), with a small floor per core so an idle core can admit its first calls. QPS shares always sum to the total, so the server
//! admits the total within a few percent however the kernel spreads connections. Concurrency
//! slots move between cores through a free pool: a core gives back only slots it is not using
//! and takes only slots in the pool, so the total in flight never exceeds the limit, even while
//! shares move. [`CoreLimiter::spawn_sync`] runs the periodic task on a core.

mod per_core;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use per_core::{CoreLimiter, LimitLayer, LimitPermit, LimitService};

use crate::clock::Clock;

/// Configuration of the server-wide limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    /// Calls admitted per second by the whole server. Default `None`: unlimited.
    pub max_qps: Option<u64>,
    /// Calls in flight in the whole server. Default `None`: unlimited.
    pub max_concurrency: Option<u64>,
    /// Token bucket depth, as time at the core's rate. Default 100 ms: a core may admit 100 ms
    /// worth of its share at once after a quiet spell. Deeper absorbs bursts better but lets the
    /// server exceed `max_qps` for longer.
    pub burst: Duration,
    /// How often cores report demand and pick up new shares. Default 100 ms. Shorter follows
    /// shifting load faster at the cost of more cross-core messages (two atomics per core).
    pub sync_period: Duration,
    /// Extra share given to a core on top of its measured demand, as a fraction. Default 0.1:
    /// a core whose load grows by 10% within a period is not throttled; the price is up to 10%
    /// of a light core's share sitting idle.
    pub headroom: f64,
    /// Each core's floor, as a fraction of an even share. Default 0.05. Lets a core that was idle
    /// admit calls before the next rebalance; costs that much capacity while it stays idle.
    pub min_share: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_qps: None,
            max_concurrency: None,
            burst: Duration::from_millis(100),
            sync_period: Duration::from_millis(100),
            headroom: 0.1,
            min_share: 0.05,
        }
    }
}

/// A call rejected by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The server admitted its `max_qps` (this core its share of it).
    #[error("qps limit reached (this core's share: {share} per second)")]
    Qps {
        /// The core's share of the rate when the call was rejected.
        share: u64,
    },
    /// The server has its `max_concurrency` calls in flight (this core its share of them).
    #[error("concurrency limit reached (this core's share: {share})")]
    Concurrency {
        /// The core's share of the slots when the call was rejected.
        share: u64,
    },
}

/// What one core reported and was given; shared by the core and the coordinator.
#[derive(Debug, Default)]
struct CoreSlot {
    /// A [`CoreLimiter`] exists for this core.
    taken: AtomicBool,
    /// Arrivals per second over the last period (`f64` bits).
    qps_demand: AtomicU64,
    /// The core's share of `max_qps`.
    qps_share: AtomicU64,
    /// Peak concurrency wanted over the last period.
    conc_demand: AtomicU64,
    /// The core's target share of `max_concurrency`.
    conc_target: AtomicU64,
}

/// The server-wide totals and each core's share; see the [module docs](self).
#[derive(Debug)]
pub struct GlobalLimit {
    config: LimitConfig,
    cores: Vec<CoreSlot>,
    /// Concurrency slots no core holds.
    free_slots: AtomicU64,
    /// Serialises rebalances (off the request path).
    rebalancing: Mutex<()>,
}

impl GlobalLimit {
    /// Limits for a server of `cores` cores (at least one), split evenly until the first
    /// rebalance.
    pub fn new(config: LimitConfig, cores: usize) -> Arc<Self> {
        let n = cores.max(1);
        let slots: Vec<CoreSlot> = (0..n).map(|_| CoreSlot::default()).collect();
        let even =
            |total: u64, i: usize| total / n as u64 + u64::from((i as u64) < total % n as u64);
        for (i, s) in slots.iter().enumerate() {
            if let Some(q) = config.max_qps {
                s.qps_share.store(even(q, i), Ordering::Relaxed);
            }
            if let Some(c) = config.max_concurrency {
                s.conc_target.store(even(c, i), Ordering::Relaxed);
            }
        }
        Arc::new(Self {
            config,
            free_slots: AtomicU64::new(config.max_concurrency.unwrap_or(0)),
            cores: slots,
            rebalancing: Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The limiter of core `core`, reading time from `clock`: one per core, made on that core.
    /// `None` if `core` is out of range or its limiter exists already (it is released when that
    /// limiter drops).
    pub fn core<C: Clock>(self: &Arc<Self>, core: usize, clock: C) -> Option<CoreLimiter<C>> {
        let slot = self.cores.get(core)?;
        if slot.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(CoreLimiter::new(self.clone(), core, clock))
    }

    /// Recomputes every core's share from their last reports. Call it periodically from one
    /// place (the sync task of core 0 does); it is cheap and takes no lock any request takes.
    pub fn rebalance(&self) {
        let _guard = self
            .rebalancing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = &self.config;
        if let Some(total) = c.max_qps {
            let demand: Vec<f64> = self
                .cores
                .iter()
                .map(|s| f64::from_bits(s.qps_demand.load(Ordering::Relaxed)))
                .collect();
            for (s, share) in
                self.cores
                    .iter()
                    .zip(allocate(total, &demand, c.min_share, c.headroom))
            {
                s.qps_share.store(share, Ordering::Relaxed);
            }
        }
        if let Some(total) = c.max_concurrency {
            let demand: Vec<f64> = self
                .cores
                .iter()
                .map(|s| s.conc_demand.load(Ordering::Relaxed) as f64)
                .collect();
            for (s, share) in
                self.cores
                    .iter()
                    .zip(allocate(total, &demand, c.min_share, c.headroom))
            {
                s.conc_target.store(share, Ordering::Relaxed);
            }
        }
    }

    fn slot(&self, core: usize) -> &CoreSlot {
        &self.cores[core]
    }

    /// Takes up to `want` free concurrency slots; returns how many it got.
    fn take_slots(&self, want: u64) -> u64 {
        let mut free = self.free_slots.load(Ordering::Acquire);
        loop {
            let got = want.min(free);
            if got == 0 {
                return 0;
            }
            match self.free_slots.compare_exchange_weak(
                free,
                free - got,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return got,
                Err(now) => free = now,
            }
        }
    }

    /// Returns `n` concurrency slots to the pool.
    fn give_slots(&self, n: u64) {
        if n > 0 {
            self.free_slots.fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// Splits `total` over cores by `demand`: max-min fair on `demand * (1 + headroom)` above a
/// floor of `min_share` of an even share, any unwanted remainder in proportion to demand. The
/// result sums to `total` exactly.
fn allocate(total: u64, demand: &[f64], min_share: f64, headroom: f64) -> Vec<u64> {
    let n = demand.len();
    if n == 0 {
        return Vec::new();
    }
    let totalf = total as f64;
    let floor = (totalf / n as f64 * min_share.clamp(0.0, 1.0)).floor();
    let mut left = totalf - floor * n as f64;
    let wants: Vec<f64> = demand
        .iter()
        .map(|d| (d.max(0.0) * (1.0 + headroom.max(0.0)) - floor).max(0.0))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| wants[*a].total_cmp(&wants[*b]));
    let mut share = vec![floor; n];
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (n - k) as f64;
        let give = wants[i].min(fair);
        share[i] += give;
        left -= give;
    }
    // Capacity nobody asked for goes out in proportion to demand (evenly if there is none).
    let wanted: f64 = wants.iter().sum();
    for (s, w) in share.iter_mut().zip(&wants) {
        *s += if wanted > 0.0 {
            left * w / wanted
        } else {
            left / n as f64
        };
    }
    // Round down, then hand the units lost to rounding to the largest remainders.
    let mut out: Vec<u64> = share.iter().map(|s| s.floor() as u64).collect();
    let mut missing = total.saturating_sub(out.iter().sum());
    let mut by_rest: Vec<usize> = (0..n).collect();
    by_rest.sort_by(|a, b| {
        (share[*b] - share[*b].floor()).total_cmp(&(share[*a] - share[*a].floor()))
    });
    for &i in by_rest.iter().cycle() {
        if missing == 0 {
            break;
        }
        out[i] += 1;
        missing -= 1;
    }
    out
}

#[cfg(test)]
mod tests;
