//! Allocating a small block: the fast path pops the heap's class cache; the slow path refills
//! it from the pools.

use crate::heap::{bump_used, current, sentinel_heap, Heap};
use crate::pool::{sentinel, Block, Pool};
use crate::thread::thread_init;
use core::ptr;

/// Allocates a block of `class`, or returns null when out of memory.
///
/// # Safety
/// `class < NUM_CLASSES`.
#[inline(always)]
pub unsafe fn alloc(class: usize) -> *mut u8 {
    // SAFETY: `class` is in range (caller).
    match unsafe { pop(current(), class) } {
        Some(block) => block,
        None => alloc_slow(class),
    }
}

/// Pops the class cache of `heap`: the whole fast path.
///
/// # Safety
/// `heap` is this thread's heap or the sentinel (whose caches are empty, so it is only read);
/// `class < NUM_CLASSES`.
#[inline(always)]
unsafe fn pop(heap: *mut Heap, class: usize) -> Option<*mut u8> {
    // SAFETY: guaranteed by the caller; cached blocks are free blocks this heap holds.
    unsafe {
        let cache = (*heap).cache.get_unchecked_mut(class);
        let block = cache.head;
        if block.is_null() {
            return None;
        }
        cache.head = (*block).next;
        cache.set_count(cache.len() - 1);
        Some(block as *mut u8)
    }
}

/// Allocates a zero-filled block of `class`, skipping the memset for never-used memory.
///
/// # Safety
/// `class < NUM_CLASSES`.
#[inline]
pub unsafe fn alloc_zeroed(class: usize) -> *mut u8 {
    // SAFETY: as in `alloc`; a block is at least `block_size(class)` bytes.
    unsafe {
        if let Some(block) = pop(current(), class) {
            ptr::write_bytes(block, 0, crate::size_class::block_size(class));
            return block;
        }
        let Some(heap) = own_heap() else {
            return ptr::null_mut();
        };
        let Some((block, fresh)) = take_from_pools(&mut *heap, class) else {
            return ptr::null_mut();
        };
        if !fresh {
            ptr::write_bytes(block, 0, crate::size_class::block_size(class));
        }
        block
    }
}

/// The calling thread's real heap, made on first use; `None` when out of memory.
#[inline]
fn own_heap() -> Option<*mut Heap> {
    let heap = current();
    if heap != sentinel_heap() {
        return Some(heap);
    }
    let heap = thread_init();
    (!heap.is_null()).then_some(heap)
}

/// The cache of `class` is empty: take one block for the caller and refill the cache from
/// the pool that served it.
#[cold]
#[inline(never)]
fn alloc_slow(class: usize) -> *mut u8 {
    let Some(heap) = own_heap() else {
        return ptr::null_mut();
    };
    // SAFETY: `heap` is this thread's own heap; every pool reached from it is owned by it.
    unsafe {
        let heap = &mut *heap;
        // Blocks this thread freed for others go out; blocks others freed for this heap
        // come before anything else.
        heap.send_outboxes();
        if heap.take_remote_batch(class) {
            if let Some(block) = pop(heap, class) {
                return block;
            }
        }
        let Some((block, _)) = take_from_pools(heap, class) else {
            return ptr::null_mut();
        };
        refill(heap, class);
        block
    }
}

/// Moves up to half the cache's limit of free blocks of the current pool into the empty
/// cache: a prefix of the pool's free list as it is, then never-used blocks in ascending
/// address order. Address order matters: a program that allocates a structure in one go (a
/// tree, a list) and then walks it in allocation order touches memory sequentially, as with a
/// bump allocator (measured on bintrees: blocks handed out in descending batches ran 1.5x
/// slower in wall time for the same instructions and simulated cache misses). An array of
/// pointers instead of a list (jemalloc's tcache bins) was tried too: 5-7% slower on bintrees
/// and churn here.
unsafe fn refill(heap: &mut Heap, class: usize) {
    let pool = heap.current[class];
    let batch = heap.cache[class].limit / 2;
    // SAFETY: the current pool is owned by this heap; its free blocks and never-used blocks
    // are ours to move.
    unsafe {
        let head = (*pool).free;
        let mut tail: *mut Block = ptr::null_mut();
        let mut rest = head;
        let mut taken = 0;
        while taken < batch && !rest.is_null() {
            tail = rest;
            rest = (*rest).next;
            taken += 1;
        }
        (*pool).free = rest;
        bump_used(pool, taken);
        let mut head = if tail.is_null() {
            ptr::null_mut()
        } else {
            head
        };
        if !tail.is_null() {
            (*tail).next = ptr::null_mut();
        }
        while taken < batch {
            let block = Pool::carve(pool) as *mut Block;
            if block.is_null() {
                break;
            }
            (*block).next = ptr::null_mut();
            if tail.is_null() {
                head = block;
            } else {
                (*tail).next = block;
            }
            tail = block;
            taken += 1;
        }
        let cache = &mut heap.cache[class];
        cache.head = head;
        cache.set_count(taken);
    }
}

/// Takes one block of `class` from the pools: the current pool's free list, its never-used
/// blocks, a partly used pool, or an empty pool. Returns the block and whether it is known
/// zero (never used since the arena was mapped).
unsafe fn take_from_pools(heap: &mut Heap, class: usize) -> Option<(*mut u8, bool)> {
    // SAFETY: every pool reached from `heap` is owned by it.
    unsafe {
        let pool = heap.current[class];
        if pool != sentinel() {
            if let Some(found) = take_block(pool) {
                return Some(found);
            }
        }
        let next = match heap.partial_or_empty_pool(class, false) {
            Some(pool) => pool,
            None => {
                // Before mapping a new arena: every block other threads gave back, of any
                // class, goes to its pool, which may free whole pools for this class. Only
                // here, not on every new pool: walking the inbox touches every block in it
                // (on xthread, doing it per pool walked the inbox 12,000 times).
                heap.collect_all_remote();
                heap.partial_or_empty_pool(class, true)?
            }
        };
        let old = heap.current[class];
        if old != sentinel() {
            // The old current pool has neither free nor never-used blocks: it is full. It
            // rejoins the partial list when one of its blocks comes back.
            (*old).full = true;
        }
        heap.current[class] = next;
        take_block(next)
    }
}

impl Heap {
    /// A partly used pool of `class`, else an empty one (mapping an arena only when `grow`).
    unsafe fn partial_or_empty_pool(&mut self, class: usize, grow: bool) -> Option<*mut Pool> {
        let next = self.partial[class];
        if !next.is_null() {
            // SAFETY: pools on our partial list are ours.
            unsafe { self.unlink_partial(class, next) };
            return Some(next);
        }
        // SAFETY: as above.
        unsafe { self.empty_pool(class, grow) }
    }
}

/// Takes a block from a pool owned by the caller: from its free list, else never-used.
unsafe fn take_block(pool: *mut Pool) -> Option<(*mut u8, bool)> {
    // SAFETY: the caller owns `pool`.
    unsafe {
        let block = (*pool).free;
        if !block.is_null() {
            (*pool).free = (*block).next;
            bump_used(pool, 1);
            return Some((block as *mut u8, false));
        }
        let block = Pool::carve(pool);
        (!block.is_null()).then_some((block, (*pool).fresh))
    }
}
