//! Deterministic randomness and hashing for the simulation.
//!
//! The harness needs two things the standard library does not give deterministically: a seeded
//! generator (a run must be a pure function of its seed so that any failure replays) and a stable
//! 64-bit hash (for the chain hashes of the log-matching and state-machine checks). Both are tiny,
//! so they are written here instead of pulling `rand` into the core crate's dev-dependencies.

use std::hash::{Hash, Hasher};

/// SplitMix64 (Steele, Lea, Flood 2014): fast, tiny, and good enough to drive fault injection.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        // Scramble once so that neighbouring seeds (1, 2, 3, ...) start far apart.
        let mut rng = Self(seed ^ 0x5851_f42d_4c95_7f2d);
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A value in `[0, n)`; `0` when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift instead of `%`: unbiased enough and branch-free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `[lo, hi]` (inclusive); `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `p` (`p <= 0` never, `p >= 1` always).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits make a uniform f64 in [0, 1).
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize])
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// An independent generator derived from this one: lets one part of a run (say, the network)
    /// draw numbers without shifting the stream another part (say, the workload) sees.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// The SplitMix64 finaliser: a strong 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines a running hash with more values. Used for the chain hashes: `chain(i) =
/// combine(chain(i - 1), [index, term, payload hash])`, so equal chain hashes at an index mean
/// equal logs up to that index (with overwhelming probability).
pub fn combine(acc: u64, values: &[u64]) -> u64 {
    values.iter().fold(acc, |h, v| {
        mix64(h.rotate_left(23) ^ v.wrapping_add(0x2545_f491_4f6c_dd1d))
    })
}

/// A stable, seed-free 64-bit hash of anything `Hash` (FNV-1a with a final mix). Unlike
/// `DefaultHasher` its output is the same in every process and Rust version, which keeps
/// failing runs comparable across machines.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut h);
    mix64(h.0)
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Whole words at a time: most of what we hash is indexes, terms and ids.
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
}
