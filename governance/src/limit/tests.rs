//! Tests of the server-wide limits, on a manual clock with the sync task's calls made by hand.

use std::time::Duration;

use super::*;
use crate::balance::FastRng;
use crate::clock::{block_on, ManualClock};
use crate::{service_fn, Layer, Service};

fn qps_limit(qps: u64) -> LimitConfig {
    LimitConfig {
        max_qps: Some(qps),
        ..LimitConfig::default()
    }
}

/// Offers `offered(ms)` calls per millisecond for `secs` seconds; call `k` goes to core 0 when
/// `to_core0(ms, k)`. Syncs every 100 ms as the periodic task would. Returns calls admitted per
/// second.
fn simulate(
    limit: u64,
    secs: u64,
    offered: impl Fn(u64) -> u64,
    to_core0: impl Fn(u64, u64) -> bool,
) -> Vec<u64> {
    let clock = ManualClock::new();
    let g = GlobalLimit::new(qps_limit(limit), 2);
    let cores = [
        g.core(0, clock.clone()).unwrap(),
        g.core(1, clock.clone()).unwrap(),
    ];
    let mut per_sec = vec![0u64; secs as usize];
    let mut k = 0;
    for ms in 0..secs * 1000 {
        clock.advance(Duration::from_millis(1));
        for _ in 0..offered(ms) {
            k += 1;
            let c = if to_core0(ms, k) { 0 } else { 1 };
            if cores[c].try_acquire().is_ok() {
                per_sec[(ms / 1000) as usize] += 1;
            }
        }
        if ms % 100 == 99 {
            g.rebalance();
            for c in &cores {
                c.sync();
            }
        }
    }
    per_sec
}

fn assert_within_5_percent(per_sec: &[u64], expected: u64) {
    // Every second after the first (the first includes the even split before any report).
    for (s, n) in per_sec.iter().enumerate().skip(1) {
        let err = (*n as f64 - expected as f64).abs() / expected as f64;
        assert!(
            err <= 0.05,
            "second {s}: {n} admitted, expected {expected}: {per_sec:?}"
        );
    }
    let total: u64 = per_sec.iter().sum();
    let expected_total = expected * per_sec.len() as u64;
    let err = (total as f64 - expected_total as f64).abs() / expected_total as f64;
    assert!(
        err <= 0.05,
        "{total} admitted in total, expected {expected_total}"
    );
}

#[test]
fn skewed_demand_still_admits_the_total_within_5_percent() {
    // 2000 calls/s offered against 1000/s; core 0 gets 90% of them.
    let per_sec = simulate(1000, 10, |_| 2, |_, k| k % 10 != 0);
    assert_within_5_percent(&per_sec, 1000);
}

#[test]
fn the_skew_can_flip_and_the_shares_follow() {
    // 90% to core 0 for 5 s, then 90% to core 1; 3000/s offered against 1000/s.
    let per_sec = simulate(1000, 10, |_| 3, |ms, k| (k % 10 != 0) == (ms < 5000));
    // The second of the flip may dip while the shares move; every other second holds.
    let (before, after) = per_sec.split_at(5);
    assert_within_5_percent(before, 1000);
    assert_within_5_percent(after, 1000);
}

#[test]
fn load_under_the_limit_is_not_throttled() {
    // 800/s offered (4 calls every 5 ms) against 1000/s, 90% to core 0.
    let per_sec = simulate(
        1000,
        5,
        |ms| if ms % 5 < 4 { 1 } else { 0 },
        |_, k| k % 10 != 0,
    );
    for n in &per_sec[1..] {
        assert_eq!(*n, 800, "{per_sec:?}");
    }
}

#[test]
fn concurrency_limit_is_exact_while_shares_move() {
    let clock = ManualClock::new();
    let total = 10;
    let g = GlobalLimit::new(
        LimitConfig {
            max_concurrency: Some(total),
            ..LimitConfig::default()
        },
        2,
    );
    let cores = [
        g.core(0, clock.clone()).unwrap(),
        g.core(1, clock.clone()).unwrap(),
    ];
    assert!(g.core(0, clock.clone()).is_none());
    // Even split to start: exactly 5 each.
    let mut held: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for (c, h) in cores.iter().zip(&mut held) {
        while let Ok(p) = c.try_acquire() {
            h.push(p);
        }
        assert_eq!(h.len(), 5);
        assert_eq!(
            c.try_acquire().unwrap_err(),
            LimitError::Concurrency { share: 5 }
        );
    }
    // Random acquire/release/rebalance/sync steps, mostly on core 0: never more than the
    // total in flight, and when both cores want more than they have, exactly the total.
    let rng = FastRng::new(11);
    for step in 0..20_000 {
        clock.advance(Duration::from_millis(1));
        let c = if rng.below(10) < 8 { 0 } else { 1 };
        match rng.below(4) {
            0 | 1 => {
                if let Ok(p) = cores[c].try_acquire() {
                    held[c].push(p);
                }
            }
            2 => {
                if !held[c].is_empty() {
                    let i = rng.below(held[c].len() as u64) as usize;
                    drop(held[c].swap_remove(i));
                }
            }
            _ => {
                if step % 7 == 0 {
                    g.rebalance();
                }
                cores[c].sync();
            }
        }
        let in_flight = cores[0].in_flight() + cores[1].in_flight();
        assert!(in_flight <= total, "step {step}: {in_flight} in flight");
        assert_eq!(cores[0].in_flight(), held[0].len() as u64);
    }
    // Saturate both, sync until the pool settles: the whole limit is in use, not more.
    for _ in 0..5 {
        for (c, h) in cores.iter().zip(&mut held) {
            while let Ok(p) = c.try_acquire() {
                h.push(p);
            }
        }
        g.rebalance();
        for c in &cores {
            c.sync();
        }
    }
    for (c, h) in cores.iter().zip(&mut held) {
        while let Ok(p) = c.try_acquire() {
            h.push(p);
        }
    }
    assert_eq!(cores[0].in_flight() + cores[1].in_flight(), total);
    // Core 1 idles: its slots move to core 0 within a few periods (reports lag one period).
    held[1].clear();
    for _ in 0..4 {
        for _ in 0..5 {
            if let Ok(p) = cores[0].try_acquire() {
                held[0].push(p);
            }
        }
        g.rebalance();
        cores[1].sync();
        cores[0].sync();
    }
    while let Ok(p) = cores[0].try_acquire() {
        held[0].push(p);
    }
    assert_eq!(held[0].len() as u64, total);
    assert!(cores[0].in_flight() + cores[1].in_flight() <= total);
}

#[test]
fn allocation_is_max_min_fair_and_sums_to_the_total() {
    // A light core gets its demand plus headroom; the heavy one the rest.
    assert_eq!(allocate(1000, &[1800.0, 200.0], 0.0, 0.1), vec![780, 220]);
    // Nobody reports: an even split.
    assert_eq!(allocate(1001, &[0.0, 0.0], 0.05, 0.1), vec![501, 500]);
    // Unwanted capacity follows demand; floors hold.
    assert_eq!(allocate(100, &[10.0, 0.0], 0.1, 0.0), vec![95, 5]);
    assert_eq!(allocate(100, &[10.0, 30.0], 0.0, 0.0), vec![25, 75]);
    for total in [0, 1, 7, 1000] {
        let a = allocate(total, &[5.0, 900.0, 3.3, 0.0], 0.05, 0.1);
        assert_eq!(a.iter().sum::<u64>(), total);
    }
}

#[test]
fn the_layer_rejects_over_the_limit_at_once() {
    #[derive(Debug, PartialEq)]
    enum Error {
        Limit(LimitError),
    }
    impl From<LimitError> for Error {
        fn from(e: LimitError) -> Self {
            Self::Limit(e)
        }
    }
    let clock = ManualClock::new();
    let g = GlobalLimit::new(
        LimitConfig {
            max_qps: Some(10),
            burst: Duration::from_millis(200),
            ..LimitConfig::default()
        },
        1,
    );
    let limiter = std::rc::Rc::new(g.core(0, clock.clone()).unwrap());
    let svc = LimitLayer::new(limiter.clone())
        .layer(service_fn(|_: &mut (), ()| async { Ok::<_, Error>(()) }));
    // A burst of 2 (200 ms at 10/s), then one per 100 ms.
    assert_eq!(block_on(svc.call(&mut (), ())), Ok(()));
    assert_eq!(block_on(svc.call(&mut (), ())), Ok(()));
    assert_eq!(
        block_on(svc.call(&mut (), ())),
        Err(Error::Limit(LimitError::Qps { share: 10 }))
    );
    clock.advance(Duration::from_millis(100));
    assert_eq!(block_on(svc.call(&mut (), ())), Ok(()));
    assert_eq!(limiter.in_flight(), 0);
}
