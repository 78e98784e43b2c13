//! Size classes and the geometry of arenas and pools.
//!
//! ```text
//!  arena (1 MiB, 1 MiB-aligned, from mmap)
//!  +--------+--------+--------+-- ... --+--------+
//!  | pool 0 | pool 1 | pool 2 |         | pool 63|     64 pools of 16 KiB
//!  +--------+--------+--------+-- ... --+--------+
//!
//!  pool (16 KiB, 16 KiB-aligned)
//!  +--------+-------+-------+-------+-- ... --+-------+------+
//!  | header | block | block | block |         | block | tail |  blocks of one size class
//!  +--------+-------+-------+-------+-- ... --+-------+------+
//!    POOL_OVERHEAD                                      quantization loss
//! ```
//!
//! A request of `n` bytes (1 ≤ n ≤ 512, alignment ≤ 16) is served from size class
//! `(n - 1) >> 4`, whose blocks are `16 * (class + 1)` bytes. Because every block size is a
//! multiple of 16 and the pool header is too, every block is 16-byte aligned.

/// Blocks are multiples of this size; it is also the alignment every block has.
pub const ALIGNMENT: usize = 16;
const ALIGNMENT_SHIFT: u32 = 4;

/// Requests larger than this go to the system allocator (the "raw" path).
pub const SMALL_REQUEST_THRESHOLD: usize = 512;

/// Number of size classes: 16, 32, ..., 512.
pub const NUM_CLASSES: usize = SMALL_REQUEST_THRESHOLD / ALIGNMENT;

/// Arenas are 1 MiB and aligned to their size, so `ptr >> ARENA_SHIFT` names the arena.
pub const ARENA_SHIFT: u32 = 20;
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;

/// Pools are 16 KiB and aligned to their size, so `ptr & !POOL_MASK` is the pool header.
pub const POOL_SHIFT: u32 = 14;
pub const POOL_SIZE: usize = 1 << POOL_SHIFT;
pub const POOL_MASK: usize = POOL_SIZE - 1;

/// Pools in one arena.
pub const POOLS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;

/// Bytes at the start of each pool taken by its header (a multiple of `ALIGNMENT`).
pub const POOL_OVERHEAD: usize = 128;

/// Bytes of free blocks a thread's class cache may hold before it sends half back to the
/// pools, and the bounds on the block count that gives: small blocks are cheap to keep and
/// churn most, so their caches hold more blocks (jemalloc sizes its tcache bins the same way).
const CACHE_BYTES: usize = 32 * 1024;
const CACHE_MIN_BLOCKS: usize = 64;
const CACHE_MAX_BLOCKS: usize = 1024;

/// Blocks a thread's cache of `class` holds at most: 1024 blocks of 16 bytes down to 64 of
/// 512.
#[inline(always)]
pub const fn cache_limit(class: usize) -> u32 {
    let blocks = CACHE_BYTES / block_size(class);
    let blocks = if blocks < CACHE_MIN_BLOCKS {
        CACHE_MIN_BLOCKS
    } else {
        blocks
    };
    (if blocks > CACHE_MAX_BLOCKS {
        CACHE_MAX_BLOCKS
    } else {
        blocks
    }) as u32
}

/// Can a request of this size and alignment be served from a pool?
#[inline(always)]
pub const fn is_small(size: usize, align: usize) -> bool {
    size <= SMALL_REQUEST_THRESHOLD && align <= ALIGNMENT
}

/// The size class of a small request. `size` 0 is served as 1 byte (C's `malloc(0)`).
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    size.saturating_sub(1) >> ALIGNMENT_SHIFT
}

/// The block size of a class.
#[inline(always)]
pub const fn block_size(class: usize) -> usize {
    (class + 1) << ALIGNMENT_SHIFT
}

/// How many blocks of `class` fit in one pool.
#[inline(always)]
pub const fn blocks_per_pool(class: usize) -> usize {
    (POOL_SIZE - POOL_OVERHEAD) / block_size(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_exactly() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(16), 0);
        assert_eq!(class_of(17), 1);
        assert_eq!(class_of(512), 31);
        assert_eq!(class_of(0), 0);
        for size in 1..=SMALL_REQUEST_THRESHOLD {
            let class = class_of(size);
            assert!(class < NUM_CLASSES);
            assert!(block_size(class) >= size);
            assert!(block_size(class) - size < ALIGNMENT);
        }
    }

    #[test]
    fn geometry() {
        assert_eq!(NUM_CLASSES, 32);
        assert_eq!(POOLS_PER_ARENA, 64);
        assert_eq!(blocks_per_pool(0), 1016);
        assert_eq!(blocks_per_pool(31), 31);
        assert_eq!(blocks_per_pool(2), 338);
        assert!(!is_small(513, 8));
        assert!(!is_small(16, 32));
        assert!(is_small(512, 16));
        assert_eq!(cache_limit(0), 1024);
        assert_eq!(cache_limit(3), 512);
        assert_eq!(cache_limit(15), 128);
        assert_eq!(cache_limit(31), 64);
    }
}
