//! A small, fast, per-core pseudo-random generator (SplitMix64) and a stable hash.
//!
//! Balancers and retry jitter need a few random numbers per call. A `Cell`-based generator owned
//! by the core costs a handful of instructions and no synchronisation; it can be seeded for
//! deterministic tests. It is not cryptographic. [`hash_key`] is a stable (process- and
//! version-independent) 64-bit hash, so every core and every client maps a key to the same
//! place on a consistent-hash ring.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// A SplitMix64 generator with interior mutability, for use on one core.
#[derive(Debug, Clone)]
pub struct FastRng {
    state: Cell<u64>,
}

impl FastRng {
    /// A generator with a fixed seed: the same seed yields the same sequence.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Cell::new(seed),
        }
    }

    /// A generator seeded from the process's hash randomness (different per generator).
    pub fn from_entropy() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        );
        Self::new(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let s = self.state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.state.set(s);
        mix64(s)
    }

    /// A number in `0..n` (Lemire's multiply-shift; `n == 0` yields 0).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of `bytes` (FNV-1a, then mixed), for consistent-hash keys: the same bytes
/// give the same hash on every core, process and build.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generators_repeat_and_stay_in_range() {
        let a = FastRng::new(7);
        let b = FastRng::new(7);
        for _ in 0..100 {
            let (x, y) = (a.below(10), b.below(10));
            assert_eq!(x, y);
            assert!(x < 10);
            let f = a.next_f64();
            b.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_ne!(
            FastRng::from_entropy().next_u64(),
            FastRng::from_entropy().next_u64()
        );
    }

    #[test]
    fn hash_key_is_stable() {
        assert_eq!(hash_key(b"user-42"), hash_key(b"user-42"));
        assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
    }
}
