//! Smooth weighted round-robin (nginx): exact shares, interleaved rather than in runs.
//!
//! Every pick adds each available instance's weight to its running score, picks the highest
//! score, and subtracts the total weight from the winner. Over any `sum(weights)` consecutive
//! picks each instance is chosen exactly `weight` times, and a heavy instance's picks are spread
//! out (weights 5,1,1 give `a a b a c a a`, not `a a a a a b c`).

use std::cell::RefCell;
use std::net::SocketAddr;

use super::{BalanceError, Instance, LoadBalancer, Picked};

/// Smooth weighted round-robin over one core's view of the instances.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    instances: Vec<Instance>,
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// A balancer over `instances`.
    pub fn new(instances: Vec<Instance>) -> Self {
        let current = vec![0; instances.len()];
        Self {
            state: RefCell::new(State { instances, current }),
        }
    }
}

impl LoadBalancer for WeightedRoundRobin {
    fn pick(
        &self,
        _key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        let mut s = self.state.borrow_mut();
        let State { instances, current } = &mut *s;
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        let mut weighted = 0;
        for (i, inst) in instances.iter().enumerate() {
            if inst.weight == 0 {
                continue;
            }
            weighted += 1;
            if !available(inst.addr) {
                continue;
            }
            let w = i64::from(inst.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        match best {
            Some(b) => {
                current[b] -= total;
                Ok(Picked::addr(instances[b].addr))
            }
            None if weighted == 0 => Err(BalanceError::NoInstance),
            None => Err(BalanceError::NoAvailable(weighted)),
        }
    }

    fn update(&self, instances: Vec<Instance>) {
        *self.state.borrow_mut() = State {
            current: vec![0; instances.len()],
            instances,
        };
    }

    fn instances(&self) -> Vec<Instance> {
        self.state.borrow().instances.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{index, instances};

    #[test]
    fn shares_follow_weights_within_5_percent_over_10000_picks() {
        let weights = [1, 2, 3, 4];
        let lb = WeightedRoundRobin::new(instances(&weights));
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[index(lb.pick(0, &|_| true).unwrap().addr)] += 1;
        }
        for (c, w) in counts.iter().zip(weights) {
            let expected = 10_000.0 * f64::from(w) / 10.0;
            assert!(
                (f64::from(*c) - expected).abs() <= expected * 0.05,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn picks_are_smooth_and_skip_unavailable_and_zero_weight() {
        let lb = WeightedRoundRobin::new(instances(&[5, 1, 1, 0]));
        let seq: Vec<_> = (0..7)
            .map(|_| index(lb.pick(0, &|_| true).unwrap().addr))
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        for _ in 0..20 {
            let i = index(lb.pick(0, &|a| index(a) != 0).unwrap().addr);
            assert!(i == 1 || i == 2);
        }
        assert_eq!(
            lb.pick(0, &|_| false).unwrap_err(),
            BalanceError::NoAvailable(3)
        );
        lb.update(instances(&[0]));
        assert_eq!(lb.pick(0, &|_| true).unwrap_err(), BalanceError::NoInstance);
    }
}
