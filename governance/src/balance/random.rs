//! Weighted random: each pick draws an instance with probability proportional to its weight.
//!
//! Stateless between picks apart from the generator, so it needs no coordination at all and
//! shares converge to the weights over many calls (not over short runs, unlike round-robin).
//! A draw that lands on an unavailable instance is redrawn among the available ones only.

use std::cell::RefCell;
use std::net::SocketAddr;

use super::{BalanceError, FastRng, Instance, LoadBalancer, Picked};

/// Weighted random choice over one core's view of the instances.
#[derive(Debug)]
pub struct WeightedRandom {
    state: RefCell<State>,
    rng: FastRng,
}

#[derive(Debug)]
struct State {
    instances: Vec<Instance>,
    /// Running sums of weights: `cumulative[i]` is the sum of weights `0..=i`.
    cumulative: Vec<u64>,
}

impl State {
    fn new(instances: Vec<Instance>) -> Self {
        let mut sum = 0u64;
        let cumulative = instances
            .iter()
            .map(|i| {
                sum += u64::from(i.weight);
                sum
            })
            .collect();
        Self {
            instances,
            cumulative,
        }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl WeightedRandom {
    /// A balancer over `instances`, seeded from entropy.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self::with_rng(instances, FastRng::from_entropy())
    }

    /// A balancer over `instances` drawing from `rng` (seed it for reproducible tests).
    pub fn with_rng(instances: Vec<Instance>, rng: FastRng) -> Self {
        Self {
            state: RefCell::new(State::new(instances)),
            rng,
        }
    }
}

impl LoadBalancer for WeightedRandom {
    fn pick(
        &self,
        _key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        let s = self.state.borrow();
        let total = s.total();
        if total == 0 {
            return Err(BalanceError::NoInstance);
        }
        let r = self.rng.below(total);
        let i = s.cumulative.partition_point(|c| *c <= r);
        let first = &s.instances[i];
        if available(first.addr) {
            return Ok(Picked::addr(first.addr));
        }
        // Redraw among the available instances only.
        let open_total: u64 = s
            .instances
            .iter()
            .filter(|i| i.weight > 0 && available(i.addr))
            .map(|i| u64::from(i.weight))
            .sum();
        if open_total == 0 {
            let weighted = s.instances.iter().filter(|i| i.weight > 0).count();
            return Err(BalanceError::NoAvailable(weighted));
        }
        let mut r = self.rng.below(open_total);
        for inst in s
            .instances
            .iter()
            .filter(|i| i.weight > 0 && available(i.addr))
        {
            let w = u64::from(inst.weight);
            if r < w {
                return Ok(Picked::addr(inst.addr));
            }
            r -= w;
        }
        unreachable!("the draw is below the sum of the available weights")
    }

    fn update(&self, instances: Vec<Instance>) {
        *self.state.borrow_mut() = State::new(instances);
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
    fn shares_follow_weights_within_5_percent() {
        let weights = [1, 2, 3, 4];
        let lb = WeightedRandom::with_rng(instances(&weights), FastRng::new(42));
        let n = 100_000;
        let mut counts = [0u32; 4];
        for _ in 0..n {
            counts[index(lb.pick(0, &|_| true).unwrap().addr)] += 1;
        }
        for (c, w) in counts.iter().zip(weights) {
            let expected = f64::from(n) * f64::from(w) / 10.0;
            assert!(
                (f64::from(*c) - expected).abs() <= expected * 0.05,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn skips_unavailable_and_zero_weight() {
        let lb = WeightedRandom::with_rng(instances(&[1, 0, 1]), FastRng::new(3));
        for _ in 0..1000 {
            assert_ne!(index(lb.pick(0, &|_| true).unwrap().addr), 1);
            assert_eq!(index(lb.pick(0, &|a| index(a) == 2).unwrap().addr), 2);
        }
        assert_eq!(
            lb.pick(0, &|_| false).unwrap_err(),
            BalanceError::NoAvailable(2)
        );
        lb.update(Vec::new());
        assert_eq!(lb.pick(0, &|_| true).unwrap_err(), BalanceError::NoInstance);
    }
}
