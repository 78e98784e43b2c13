//! The churn loop shared by `examples/record_overhead.rs` and `tests/capture_size.rs`: `live`
//! objects of 8..=512 bytes, then `ops` random replacements (the allocator benchmark's churn,
//! small enough to record). Included with `#[path]`, so it is not an example of its own.

pub struct Rng(u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + ((u128::from(self.next()) * (hi - lo + 1) as u128) >> 64) as usize
    }
}

/// Object sizes are drawn uniformly from `MIN_SIZE..=MAX_SIZE`.
pub const MIN_SIZE: usize = 8;
pub const MAX_SIZE: usize = 512;

#[inline(never)]
pub fn object(rng: &mut Rng) -> Vec<u8> {
    let size = rng.range(MIN_SIZE, MAX_SIZE);
    let mut v = Vec::with_capacity(size);
    v.push(size as u8);
    v
}

#[inline(never)]
pub fn churn(live: usize, ops: usize) -> u64 {
    let mut rng = Rng(0x5eed);
    let mut slots: Vec<Vec<u8>> = (0..live).map(|_| object(&mut rng)).collect();
    let mut sum = 0u64;
    for _ in 0..ops {
        let slot = rng.range(0, live - 1);
        let fresh = object(&mut rng);
        let old = std::mem::replace(&mut slots[slot], fresh);
        sum = sum.wrapping_add(old.capacity() as u64);
    }
    sum + slots.len() as u64
}
