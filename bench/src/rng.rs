//! A small, fast, deterministic PRNG (wyrand) so that every allocator sees exactly the same
//! sequence of requests: the workloads' checksums must agree across variants.

/// wyrand: one 64-bit state, one multiply per number. Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `lo..=hi` (multiply-shift; the bias is far below anything a benchmark sees).
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        let span = (hi - lo) as u128 + 1;
        lo + ((u128::from(self.next_u64()) * span) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn range_stays_in_bounds_and_covers_both_ends() {
        let mut rng = Rng::new(1);
        let (mut saw_lo, mut saw_hi) = (false, false);
        for _ in 0..100_000 {
            let x = rng.range(8, 12);
            assert!((8..=12).contains(&x));
            saw_lo |= x == 8;
            saw_hi |= x == 12;
        }
        assert!(saw_lo && saw_hi);
    }

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
