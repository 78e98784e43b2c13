//! churn: a fixed population of live objects, each step frees a random one and allocates a
//! replacement of a random size (8..=512 bytes). The steady state of a long-running program.

use super::Params;
use crate::rng::Rng;

pub const LIVE: usize = 100_000;
pub const OPS: usize = 20_000_000;
pub const MIN_SIZE: usize = 8;
pub const MAX_SIZE: usize = 512;

pub fn run(params: &Params) -> u64 {
    let ops = params.scaled(OPS, 1000);
    // The population stays at LIVE (it decides how much memory is in play) unless the run is
    // so short that filling it would be most of the work.
    churn(LIVE.min(ops / 10), ops, 0x5eed)
}

/// `live` objects, `ops` replacements; also the body of each thread in `threads`.
pub fn churn(live: usize, ops: usize, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut slots: Vec<Vec<u8>> = (0..live).map(|_| object(&mut rng)).collect();
    let mut sum = 0u64;
    for _ in 0..ops {
        let slot = rng.range(0, live - 1);
        let fresh = object(&mut rng);
        let old = std::mem::replace(&mut slots[slot], fresh);
        sum = sum.wrapping_add(digest(&old));
    }
    for old in &slots {
        sum = sum.wrapping_add(digest(old));
    }
    sum
}

/// An object of random size, its first byte written (initialized, as a program would, without
/// paying for a memset that would measure memory bandwidth instead of the allocator).
#[inline]
pub fn object(rng: &mut Rng) -> Vec<u8> {
    let size = rng.range(MIN_SIZE, MAX_SIZE);
    let mut v = Vec::with_capacity(size);
    v.push(size as u8);
    v
}

/// What an object adds to the checksum: read from the handle, not the object's memory, so
/// freeing does not pay for a cache miss the allocator itself might avoid.
#[inline]
pub fn digest(v: &Vec<u8>) -> u64 {
    v.capacity() as u64
}
