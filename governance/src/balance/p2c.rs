//! Power of two choices: of two random available instances, call the less loaded one.
//!
//! Load is the number of this core's calls in flight to the instance divided by its weight.
//! Candidates are drawn uniformly, so weight decides only between the two: a heavier instance
//! wins more comparisons but, when every instance is saturated, carries less than its weight's
//! share (use [`super::WeightedRoundRobin`] when exact shares matter).
//! Counting per core needs no synchronisation and, since the kernel spreads connections over
//! cores, each core's view is a fair sample of the whole. Two random candidates avoid the herd
//! effect of always choosing the global minimum (every core rushing to the same idle instance)
//! while still steering away from slow instances, whose calls pile up in flight.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use super::{BalanceError, FastRng, InFlightGuard, Instance, LoadBalancer, Picked};

/// Power-of-two-choices on in-flight calls, over one core's view of the instances.
#[derive(Debug)]
pub struct PowerOfTwo {
    state: RefCell<Vec<(Instance, Rc<Cell<usize>>)>>,
    rng: FastRng,
}

impl PowerOfTwo {
    /// A balancer over `instances`, seeded from entropy.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self::with_rng(instances, FastRng::from_entropy())
    }

    /// A balancer over `instances` drawing from `rng`.
    pub fn with_rng(instances: Vec<Instance>, rng: FastRng) -> Self {
        let lb = Self {
            state: RefCell::new(Vec::new()),
            rng,
        };
        lb.update(instances);
        lb
    }

    /// This core's calls in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.state
            .borrow()
            .iter()
            .find(|(i, _)| i.addr == addr)
            .map_or(0, |(_, n)| n.get())
    }

    /// Draws a random index of an available, weighted instance, trying a few times before
    /// falling back to a scan.
    fn draw(
        &self,
        list: &[(Instance, Rc<Cell<usize>>)],
        available: &dyn Fn(SocketAddr) -> bool,
        not: Option<usize>,
    ) -> Option<usize> {
        let ok = |i: usize| Some(i) != not && list[i].0.weight > 0 && available(list[i].0.addr);
        for _ in 0..4 {
            let i = self.rng.below(list.len() as u64) as usize;
            if ok(i) {
                return Some(i);
            }
        }
        let candidates: Vec<usize> = (0..list.len()).filter(|i| ok(*i)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len() as u64) as usize])
    }
}

impl LoadBalancer for PowerOfTwo {
    fn pick(
        &self,
        _key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        let list = self.state.borrow();
        let weighted = list.iter().filter(|(i, _)| i.weight > 0).count();
        if weighted == 0 {
            return Err(BalanceError::NoInstance);
        }
        let a = self
            .draw(&list, available, None)
            .ok_or(BalanceError::NoAvailable(weighted))?;
        let chosen = match self.draw(&list, available, Some(a)) {
            None => a,
            Some(b) => {
                // load(a) <= load(b)  <=>  (n_a + 1) / w_a <= (n_b + 1) / w_b
                let load = |i: usize| (list[i].1.get() as u64 + 1, u64::from(list[i].0.weight));
                let ((na, wa), (nb, wb)) = (load(a), load(b));
                if u128::from(na) * u128::from(wb) <= u128::from(nb) * u128::from(wa) {
                    a
                } else {
                    b
                }
            }
        };
        let (inst, count) = &list[chosen];
        Ok(Picked {
            addr: inst.addr,
            guard: Some(InFlightGuard::new(count.clone())),
        })
    }

    fn update(&self, instances: Vec<Instance>) {
        let mut state = self.state.borrow_mut();
        let old: HashMap<SocketAddr, Rc<Cell<usize>>> =
            state.drain(..).map(|(i, n)| (i.addr, n)).collect();
        *state = instances
            .into_iter()
            .map(|i| {
                let n = old.get(&i.addr).cloned().unwrap_or_default();
                (i, n)
            })
            .collect();
    }

    fn instances(&self) -> Vec<Instance> {
        self.state.borrow().iter().map(|(i, _)| i.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{index, instances};

    #[test]
    fn prefers_the_less_loaded_instance() {
        let list = instances(&[1, 1]);
        let lb = PowerOfTwo::with_rng(list.clone(), FastRng::new(9));
        // Instance 0 is slow: ten of its calls are still in flight.
        let held: Vec<_> = (0..10)
            .map(|_| InFlightGuard::new(lb.state.borrow()[0].1.clone()))
            .collect();
        assert_eq!(lb.in_flight(list[0].addr), 10);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            let p = lb.pick(0, &|_| true).unwrap();
            counts[index(p.addr)] += 1;
        }
        // With two instances both are always the candidates: the idle one always wins.
        assert_eq!(counts, [0, 1000]);
        drop(held);
        assert_eq!(lb.in_flight(list[0].addr), 0);
    }

    #[test]
    fn balances_in_flight_and_weights_among_many() {
        let list = instances(&[1, 1, 1, 1, 4]);
        let lb = PowerOfTwo::with_rng(list, FastRng::new(5));
        let mut guards = Vec::new();
        for _ in 0..800 {
            guards.push(lb.pick(0, &|_| true).unwrap());
        }
        let loads: Vec<_> = (0..5)
            .map(|i| lb.in_flight(SocketAddr::from(([10, 0, 0, i + 1], 9000))))
            .collect();
        // The weight-4 instance carries more load, though less than four times as much: it is
        // only a candidate in 2 of 5 draws.
        assert!(loads[4] > 2 * loads[0], "{loads:?}");
        let small = &loads[..4];
        let (min, max) = (small.iter().min().unwrap(), small.iter().max().unwrap());
        assert!(max - min <= 10, "{loads:?}");
    }

    #[test]
    fn skips_unavailable_and_keeps_counters_across_updates() {
        let list = instances(&[1, 1, 1]);
        let lb = PowerOfTwo::with_rng(list.clone(), FastRng::new(1));
        for _ in 0..100 {
            assert_eq!(index(lb.pick(0, &|a| index(a) == 1).unwrap().addr), 1);
        }
        let g = lb.pick(0, &|a| index(a) == 2).unwrap();
        lb.update(list[1..].to_vec());
        assert_eq!(lb.in_flight(list[2].addr), 1);
        drop(g);
        assert_eq!(lb.in_flight(list[2].addr), 0);
        assert_eq!(
            lb.pick(0, &|_| false).unwrap_err(),
            BalanceError::NoAvailable(2)
        );
    }
}
