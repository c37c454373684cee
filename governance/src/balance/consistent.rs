//! Consistent hashing on a ring of virtual nodes: one key, one instance, minimal remapping.
//!
//! Each instance gets `weight * virtual_nodes_per_weight` points on a 64-bit ring, placed by a
//! stable hash of its address and the point's index, so every core and every client process
//! builds the same ring. A call's key (see [`crate::balance::hash_key`]) goes to the first point
//! at or after it, clockwise. When an instance leaves, only the keys on its points move (to the
//! next points); when it is unavailable, its keys walk on to the next available instance and
//! come back when it recovers. More virtual nodes spread keys more evenly but cost memory
//! (16 bytes per point) and a slower rebuild on discovery changes.

use std::cell::RefCell;
use std::net::SocketAddr;

use super::rng::{hash_key, mix64};
use super::{BalanceError, Instance, LoadBalancer, Picked};

/// Configuration of [`ConsistentHash`].
#[derive(Debug, Clone, Copy)]
pub struct ConsistentHashConfig {
    /// Ring points per unit of weight. Default 100: with 10 equal instances each gets its fair
    /// share of keys within roughly ±20%.
    pub virtual_nodes_per_weight: u32,
}

impl Default for ConsistentHashConfig {
    fn default() -> Self {
        Self {
            virtual_nodes_per_weight: 100,
        }
    }
}

/// A consistent-hash ring over one core's view of the instances.
#[derive(Debug)]
pub struct ConsistentHash {
    config: ConsistentHashConfig,
    state: RefCell<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    instances: Vec<Instance>,
    /// `(point, instance index)`, sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    fn build(instances: Vec<Instance>, config: ConsistentHashConfig) -> Self {
        let mut points = Vec::new();
        for (idx, inst) in instances.iter().enumerate() {
            let seed = addr_hash(inst.addr);
            let n = u64::from(inst.weight) * u64::from(config.virtual_nodes_per_weight);
            for v in 0..n {
                points.push((mix64(seed ^ mix64(v)), idx as u32));
            }
        }
        points.sort_unstable();
        Self { instances, points }
    }
}

/// A stable hash of an address (ip bytes and port).
fn addr_hash(addr: SocketAddr) -> u64 {
    let mut bytes = Vec::with_capacity(18);
    match addr {
        SocketAddr::V4(a) => bytes.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => bytes.extend_from_slice(&a.ip().octets()),
    }
    bytes.extend_from_slice(&addr.port().to_be_bytes());
    hash_key(&bytes)
}

impl ConsistentHash {
    /// A ring over `instances` with the default configuration.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self::with_config(instances, ConsistentHashConfig::default())
    }

    /// A ring over `instances` with `config`.
    pub fn with_config(instances: Vec<Instance>, config: ConsistentHashConfig) -> Self {
        Self {
            config,
            state: RefCell::new(Ring::build(instances, config)),
        }
    }
}

impl LoadBalancer for ConsistentHash {
    /// Picks the owner of `key`; keys should already be well spread (use
    /// [`crate::balance::hash_key`]); they are mixed once more here so that small integers
    /// work too.
    fn pick(
        &self,
        key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        let ring = self.state.borrow();
        if ring.points.is_empty() {
            return Err(BalanceError::NoInstance);
        }
        let h = mix64(key);
        let start = ring.points.partition_point(|(p, _)| *p < h);
        let n = ring.points.len();
        let first = ring.instances[ring.points[start % n].1 as usize].addr;
        if available(first) {
            return Ok(Picked::addr(first));
        }
        let mut tried = vec![false; ring.instances.len()];
        let mut left = ring.instances.iter().filter(|i| i.weight > 0).count();
        for step in 0..n {
            let idx = ring.points[(start + step) % n].1 as usize;
            if tried[idx] {
                continue;
            }
            let addr = ring.instances[idx].addr;
            if available(addr) {
                return Ok(Picked::addr(addr));
            }
            tried[idx] = true;
            left -= 1;
            if left == 0 {
                break;
            }
        }
        Err(BalanceError::NoAvailable(
            ring.instances.iter().filter(|i| i.weight > 0).count(),
        ))
    }

    fn update(&self, instances: Vec<Instance>) {
        *self.state.borrow_mut() = Ring::build(instances, self.config);
    }

    fn instances(&self) -> Vec<Instance> {
        self.state.borrow().instances.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{index, instances};

    const KEYS: u64 = 10_000;

    fn owners(lb: &ConsistentHash, available: &dyn Fn(SocketAddr) -> bool) -> Vec<usize> {
        (0..KEYS)
            .map(|k| index(lb.pick(hash_key(&k.to_le_bytes()), available).unwrap().addr))
            .collect()
    }

    #[test]
    fn spreads_keys_roughly_evenly() {
        let lb = ConsistentHash::new(instances(&[1; 10]));
        let mut counts = [0u32; 10];
        for o in owners(&lb, &|_| true) {
            counts[o] += 1;
        }
        // Fair share 1000 each; 100 points per instance keep each within ±30%.
        for c in counts {
            assert!((700..=1300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn one_of_ten_leaving_keeps_at_least_90_percent_of_keys_in_place() {
        let list = instances(&[1; 10]);
        let lb = ConsistentHash::new(list.clone());
        let before = owners(&lb, &|_| true);
        let mut rest = list;
        rest.remove(3);
        lb.update(rest);
        let after = owners(&lb, &|_| true);
        let kept = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert!(kept as f64 >= 0.9 * KEYS as f64, "kept {kept}");
        // Only the leaver's keys moved.
        for (a, b) in before.iter().zip(&after) {
            assert!(a == b || *a == 3);
        }
    }

    #[test]
    fn unavailable_instance_keys_move_and_come_back() {
        let lb = ConsistentHash::new(instances(&[1; 10]));
        let before = owners(&lb, &|_| true);
        let during = owners(&lb, &|a| index(a) != 3);
        for (a, b) in before.iter().zip(&during) {
            assert!(a == b || (*a == 3 && *b != 3));
        }
        assert_eq!(owners(&lb, &|_| true), before);
        assert_eq!(
            lb.pick(1, &|_| false).unwrap_err(),
            BalanceError::NoAvailable(10)
        );
    }

    #[test]
    fn weights_scale_the_share_of_keys() {
        let lb = ConsistentHash::new(instances(&[1, 3]));
        let heavy = owners(&lb, &|_| true).iter().filter(|o| **o == 1).count();
        assert!((6500..=8500).contains(&heavy), "{heavy}");
        lb.update(Vec::new());
        assert_eq!(lb.pick(1, &|_| true).unwrap_err(), BalanceError::NoInstance);
    }
}
