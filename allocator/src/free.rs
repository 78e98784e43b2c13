//! Freeing a small block: the owner pushes it on its class cache; another thread pushes it on
//! the owner's remote stack. A full cache sends its older half back to the pools, where empty
//! pools are detected and retired.

use crate::heap::{bump_used, current, Heap};
use crate::pool::{pool_of, Block, Pool};
use crate::remote::free_remote;
use core::ptr;
use core::sync::atomic::Ordering;

/// Frees a block handed out by `alloc`.
///
/// # Safety
/// `block` must be a live block from `alloc`.
#[inline(always)]
pub unsafe fn free(block: *mut u8) {
    let pool = pool_of(block);
    let heap = current();
    // SAFETY: a live block's pool header is initialized and its owner is a heap that is never
    // unmapped; only the owner takes the local path.
    unsafe {
        if (*pool).owner.load(Ordering::Relaxed) == heap {
            free_local(heap, pool, block as *mut Block);
        } else {
            free_remote(heap, pool, block as *mut Block);
        }
    }
}

/// Frees a block of a pool this heap owns, onto its class cache.
#[inline(always)]
unsafe fn free_local(heap: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: the caller owns `pool` through `heap`, and `block` is one of its live blocks.
    unsafe {
        let class = (*pool).class.load(Ordering::Relaxed) as usize;
        let cache = (*heap).cache.get_unchecked_mut(class);
        let count = cache.len();
        (*block).next = cache.head;
        cache.head = block;
        cache.set_count(count + 1);
        if count + 1 >= cache.limit {
            flush(&mut *heap, class);
        }
    }
}

/// The cache of `class` is full: keep the most recently freed half (still hot in the CPU
/// cache) and send the older half back to their pools.
#[cold]
#[inline(never)]
unsafe fn flush(heap: &mut Heap, class: usize) {
    let cache = &mut heap.cache[class];
    let keep = cache.limit / 2;
    let mut last_kept = cache.head;
    // SAFETY: the cache holds `limit` blocks, so `keep - 1` links exist.
    let rest = unsafe {
        for _ in 1..keep {
            last_kept = (*last_kept).next;
        }
        let rest = (*last_kept).next;
        (*last_kept).next = ptr::null_mut();
        rest
    };
    cache.set_count(keep);
    // SAFETY: the blocks after the cut are free blocks of pools this heap owns.
    unsafe { return_to_pools(heap, rest) };
}

/// Empties the cache of `class` back into the pools (thread exit).
///
/// # Safety
/// `heap` must be the calling thread's heap (or one it is abandoning).
pub unsafe fn drain_cache(heap: &mut Heap, class: usize) {
    let cache = &mut heap.cache[class];
    let list = cache.head;
    cache.head = ptr::null_mut();
    cache.set_count(0);
    // SAFETY: cached blocks are free blocks of pools this heap owns.
    unsafe { return_to_pools(heap, list) };
}

/// Returns a list of free blocks (linked through `next`) to their pools.
unsafe fn return_to_pools(heap: &mut Heap, mut block: *mut Block) {
    while !block.is_null() {
        // SAFETY: each block belongs to a pool this heap owns.
        unsafe {
            let next = (*block).next;
            return_to_pool(heap, block);
            block = next;
        }
    }
}

/// Pushes a block on its pool's free list; a full pool becomes partial, an empty one retires.
///
/// # Safety
/// `block` is a free block of a pool `heap` owns, counted as out of that pool.
pub unsafe fn return_to_pool(heap: &mut Heap, block: *mut Block) {
    let pool = pool_of(block as *mut u8);
    // SAFETY: the caller owns `pool` through `heap`, and `block` is one of its blocks.
    unsafe {
        (*block).next = (*pool).free;
        (*pool).free = block;
        bump_used(pool, u32::MAX);
        let empty = (*pool).used.load(Ordering::Relaxed) == 0;
        if !empty && !(*pool).full {
            return;
        }
        let class = (*pool).class.load(Ordering::Relaxed) as usize;
        if (*pool).full {
            (*pool).full = false;
            if empty {
                heap.retire(pool);
            } else {
                heap.push_partial(class, pool);
            }
        } else if heap.current[class] != pool {
            heap.unlink_partial(class, pool);
            heap.retire(pool);
        }
    }
}
