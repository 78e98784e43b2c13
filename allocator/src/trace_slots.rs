//! Trace slots: one 64-bit word per small block, where a tracer keeps the block's trace.
//!
//! A tracer that keeps "pointer → trace" in a hash table pays, per allocation and per free, a
//! hash, a lock and a probe into a table as big as the number of live blocks (a cache miss
//! once the program has more than a few thousand). For blocks of our pools the allocator
//! already knows where a block is: its pool is the address rounded down, its index in the pool
//! one multiply away. So each arena gets a side region with a word per block position, and the
//! tracer stores its trace there: one store to record, one load and store to forget.
//!
//! Layout: the region of arena `a` (its descriptor index) holds, for each of its 64 pools,
//! `MAX_BLOCKS` words; block `i` of pool `p` uses word `p * MAX_BLOCKS + i`. The regions are
//! mapped lazily (512 KiB of address space per arena, only the pages of words in use become
//! resident: 8 bytes per block, at least a page per pool in use) and never unmapped: a region
//! follows its arena descriptor, which is reused for the next arena mapped.
//!
//! The contract with the tracer, which this module cannot check: a word is non-zero only while
//! its block is live (the tracer clears it when the block is freed, and `clear_all` zeroes every
//! word when it stops tracing), so a reused descriptor's region starts out all zero.

use crate::arena_map;
use crate::os;
use crate::pool::{Pool, UNUSED};
use crate::size_class::{
    block_size, blocks_per_pool, ARENA_SIZE, NUM_CLASSES, POOLS_PER_ARENA, POOL_OVERHEAD,
    POOL_SHIFT, POOL_SIZE,
};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Words per pool: the most blocks a pool holds (the 16-byte class).
const MAX_BLOCKS: usize = (POOL_SIZE - POOL_OVERHEAD) / 16;
const REGION_BYTES: usize = POOLS_PER_ARENA * MAX_BLOCKS * 8;
/// Arena descriptors that can have a region (as many as the arena table holds).
const MAX_REGIONS: usize = 1 << 20;

/// `region pointer` per arena descriptor, in a lazily mapped table (8 MiB of address space).
static REGIONS: AtomicPtr<AtomicPtr<AtomicU64>> = AtomicPtr::new(core::ptr::null_mut());

/// `ceil(2^32 / block_size)`: `(offset * RECIPROCAL[c]) >> 32 == offset / block_size(c)` for
/// every offset inside a pool (offsets < 2^14, sizes ≤ 2^9: the error term stays below one
/// block; the unit test checks every offset of every class).
const RECIPROCAL: [u64; NUM_CLASSES] = {
    let mut r = [0u64; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        r[c] = (1u64 << 32) / block_size(c) as u64 + 1;
        c += 1;
    }
    r
};

/// The trace word of the block that contains `ptr`, if `ptr` lies in a block of one of our
/// pools; mapped on first use (None if that mapping fails). Any address may be asked about.
///
/// The word of a block that is not live is zero (see the module docs); what the tracer
/// stores in it is its own business, except that it must be non-zero for a traced block.
#[inline]
pub fn trace_slot(ptr: *const u8) -> Option<&'static AtomicU64> {
    if !arena_map::contains(ptr) {
        return None;
    }
    let addr = ptr as usize;
    let pool = addr & !(POOL_SIZE - 1);
    // SAFETY: `ptr` lies in one of our live arenas, whose memory is mapped; a pool header is
    // either initialized or (never carved) zero, and a block the tracer asks about lies in a
    // carved pool.
    let (class, arena) = unsafe {
        let p = &*(pool as *const Pool);
        (p.class.load(Ordering::Relaxed), p.arena)
    };
    let offset = (addr - pool).checked_sub(POOL_OVERHEAD)?;
    if class == UNUSED || class as usize >= NUM_CLASSES {
        return None;
    }
    let index = ((offset as u64 * RECIPROCAL[class as usize]) >> 32) as usize;
    let pool_no = (addr & (ARENA_SIZE - 1)) >> POOL_SHIFT;
    let region = region(arena as usize)?;
    // SAFETY: pool_no < POOLS_PER_ARENA and index < MAX_BLOCKS (a block of this class lies
    // inside the pool), so the word is inside the region, which is never unmapped.
    Some(unsafe { &*region.add(pool_no * MAX_BLOCKS + index) })
}

/// The region of arena descriptor `arena`, mapped on first use.
#[inline]
fn region(arena: usize) -> Option<*const AtomicU64> {
    if arena >= MAX_REGIONS {
        return None;
    }
    let table = table()?;
    // SAFETY: arena < MAX_REGIONS, inside the table mapping, which is never unmapped.
    let entry = unsafe { &*table.add(arena) };
    let r = entry.load(Ordering::Acquire);
    if !r.is_null() {
        return Some(r);
    }
    map_region(entry)
}

#[cold]
fn map_region(entry: &AtomicPtr<AtomicU64>) -> Option<*const AtomicU64> {
    install(entry, REGION_BYTES).map(|p| p as *const AtomicU64)
}

#[inline]
fn table() -> Option<*const AtomicPtr<AtomicU64>> {
    let t = REGIONS.load(Ordering::Acquire);
    if !t.is_null() {
        return Some(t);
    }
    map_table()
}

#[cold]
fn map_table() -> Option<*const AtomicPtr<AtomicU64>> {
    let bytes = MAX_REGIONS * core::mem::size_of::<AtomicPtr<AtomicU64>>();
    install(&REGIONS, bytes).map(|p| p as *const AtomicPtr<AtomicU64>)
}

/// Maps `bytes` of zeroed memory and publishes it in `slot` unless another thread did first
/// (then ours is unmapped and theirs returned).
fn install<T>(slot: &AtomicPtr<T>, bytes: usize) -> Option<*mut T> {
    let fresh = os::map(bytes) as *mut T;
    if fresh.is_null() {
        return None;
    }
    match slot.compare_exchange(
        core::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: `fresh` is our own mapping that nobody else saw.
            unsafe { os::unmap(fresh as *mut u8, bytes) };
            Some(winner)
        }
    }
}

/// Calls `f(block address, word)` for every non-zero trace word of a block of a pool in use.
/// Runs under the arena lock: `f` must not allocate through the global allocator. Words change
/// under it as other threads allocate and free (each word is read once, atomically).
pub fn for_each_trace(mut f: impl FnMut(usize, u64)) {
    let Some(table) = table() else { return };
    crate::arena::visit_arenas(|arena, base, carved| {
        // SAFETY: arena < MAX_REGIONS (the arena table holds no more), inside the table.
        let region = unsafe { (*table.add(arena)).load(Ordering::Acquire) };
        if region.is_null() {
            return;
        }
        for pool_no in 0..carved {
            let pool = base + pool_no * POOL_SIZE;
            // SAFETY: `visit_arenas` gives live arenas and their carved pools have headers.
            let class = unsafe { (*(pool as *const Pool)).class.load(Ordering::Relaxed) };
            if class == UNUSED || class as usize >= NUM_CLASSES {
                continue;
            }
            let size = block_size(class as usize);
            for i in 0..blocks_per_pool(class as usize) {
                // SAFETY: pool_no * MAX_BLOCKS + i is inside the region.
                let w = unsafe { (*region.add(pool_no * MAX_BLOCKS + i)).load(Ordering::Relaxed) };
                if w != 0 {
                    f(pool + POOL_OVERHEAD + i * size, w);
                }
            }
        }
    });
}

/// Zeroes every trace word (the tracer stopped: no block has a trace any more) and gives the
/// regions' memory back to the OS; the regions stay mapped.
pub fn clear_all() {
    let Some(table) = table() else { return };
    for arena in 0..crate::arena::descriptors_used() {
        // SAFETY: arena < MAX_REGIONS, inside the table.
        let region = unsafe { (*table.add(arena)).load(Ordering::Acquire) };
        if !region.is_null() {
            // SAFETY: the region is our own private anonymous mapping; MADV_DONTNEED makes its
            // pages read as zero again. A word stored concurrently by a thread still inside
            // its hook may survive or not, as with any trace made while tracing stops.
            unsafe {
                libc::madvise(
                    region as *mut libc::c_void,
                    REGION_BYTES,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

/// Bytes of address space mapped for trace words (resident: only the pages in use).
pub fn mapped_bytes() -> usize {
    let Some(table) = table() else { return 0 };
    (0..crate::arena::descriptors_used())
        .filter(|&a| {
            // SAFETY: a < MAX_REGIONS, inside the table.
            !unsafe { (*table.add(a)).load(Ordering::Relaxed) }.is_null()
        })
        .count()
        * REGION_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_divides_exactly_for_every_offset_of_every_class() {
        for (c, &reciprocal) in RECIPROCAL.iter().enumerate() {
            let size = block_size(c);
            for offset in 0..POOL_SIZE - POOL_OVERHEAD {
                let index = ((offset as u64 * reciprocal) >> 32) as usize;
                assert_eq!(index, offset / size, "class {c} offset {offset}");
            }
            assert!(blocks_per_pool(c) <= MAX_BLOCKS);
        }
    }
}
