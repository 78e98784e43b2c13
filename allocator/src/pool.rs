//! A pool: 16 KiB of blocks of one size class, owned by one thread's heap.
//!
//! The header sits at the start of the pool, so a block finds its pool by masking its address.
//! Blocks are carved lazily, as obmalloc does: a fresh pool hands out blocks from a bump
//! pointer (`next_offset`) and only freed blocks go on the free list. Untouched blocks are
//! never written, so a pool that came fresh from `mmap` gives out blocks known to be zero
//! (`alloc_zeroed` skips its memset) and never makes its untouched tail resident.
//!
//! Ownership: only the owning thread touches `free`, `next_offset` and the list links; other
//! threads read `owner` (to see that they are not it) and statistics read `used` and `class`,
//! which are atomics for that reason (relaxed: a statistic taken while threads run is a
//! snapshot in motion; taken at rest it is exact).

use crate::heap::Heap;
use crate::size_class::{block_size, blocks_per_pool, POOL_MASK, POOL_OVERHEAD, POOL_SIZE};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
}

/// `Pool::class` of a pool that serves no class (in an arena's free list or a heap's cache).
pub const UNUSED: u32 = u32::MAX;

/// The pool header: two cache lines, so that threads freeing blocks of this pool (which read
/// `owner`) do not contend with the owner updating its free list and counts. Measured on the
/// xthread benchmark, where one thread frees what another allocates.
#[repr(C)]
pub struct Pool {
    // Cache line 0: read by every thread that frees a block of this pool.
    /// The heap whose thread allocates from this pool.
    pub owner: AtomicPtr<Heap>,
    /// Size class, or `UNUSED`.
    pub class: AtomicU32,
    /// Index of the arena descriptor this pool belongs to (set once, when first carved).
    pub arena: u32,
    _read_mostly_end: [u8; 48],

    // Cache line 1: the owner's working state.
    /// Head of the free list (owner only).
    pub free: *mut Block,
    /// Blocks out of this pool: in use, in a class cache or on a remote stack.
    pub used: AtomicU32,
    /// Offset of the next never-used block (bump carving).
    pub next_offset: u32,
    /// Largest offset at which a whole block still fits.
    pub max_offset: u32,
    /// The pool ran out of blocks and was detached from its heap's lists.
    pub full: bool,
    /// The pool's memory has never been written since it was mapped.
    pub fresh: bool,
    /// Links in the owner's partial list, the owner's empty cache or the arena's free list.
    pub next: *mut Pool,
    pub prev: *mut Pool,
}

const _: () = assert!(core::mem::size_of::<Pool>() <= POOL_OVERHEAD);
const _: () = assert!(core::mem::offset_of!(Pool, free) == 64);

/// A pool that never has a free block. Every heap slot starts pointing here, so the
/// allocation fast path needs no null check: it finds no block and takes the slow path, which
/// recognizes the sentinel. Nothing ever writes to it.
pub struct Sentinel(Pool);
// SAFETY: the sentinel is never written after construction; reads from many threads are fine.
unsafe impl Sync for Sentinel {}

pub static SENTINEL: Sentinel = Sentinel(Pool {
    owner: AtomicPtr::new(ptr::null_mut()),
    class: AtomicU32::new(UNUSED),
    arena: u32::MAX,
    _read_mostly_end: [0; 48],
    free: ptr::null_mut(),
    used: AtomicU32::new(0),
    next_offset: 0,
    max_offset: 0,
    full: false,
    fresh: false,
    next: ptr::null_mut(),
    prev: ptr::null_mut(),
});

/// The sentinel pool's address.
#[inline(always)]
pub fn sentinel() -> *mut Pool {
    &SENTINEL.0 as *const Pool as *mut Pool
}

/// The pool holding `block`.
#[inline(always)]
pub fn pool_of(block: *mut u8) -> *mut Pool {
    (block as usize & !POOL_MASK) as *mut Pool
}

impl Pool {
    /// Prepares an empty pool to serve `class` for `owner`.
    ///
    /// # Safety
    /// `pool` must be an unused pool header this thread has exclusive access to.
    pub unsafe fn init(pool: *mut Pool, class: usize, owner: *mut Heap, fresh: bool) {
        // SAFETY: exclusive access is guaranteed by the caller.
        unsafe {
            (*pool).free = ptr::null_mut();
            (*pool).used.store(0, Ordering::Relaxed);
            (*pool).class.store(class as u32, Ordering::Relaxed);
            (*pool).next_offset = POOL_OVERHEAD as u32;
            (*pool).max_offset = (POOL_SIZE - block_size(class)) as u32;
            (*pool).full = false;
            (*pool).fresh = fresh;
            (*pool).owner.store(owner, Ordering::Relaxed);
            (*pool).next = ptr::null_mut();
            (*pool).prev = ptr::null_mut();
        }
    }

    /// Takes a never-used block from the bump area, or null when the pool has none left.
    /// The caller already found the free list empty.
    ///
    /// # Safety
    /// `pool` must be a live pool owned by the calling thread.
    #[inline]
    pub unsafe fn carve(pool: *mut Pool) -> *mut u8 {
        // SAFETY: the caller owns the pool; offsets stay inside its 16 KiB.
        unsafe {
            let offset = (*pool).next_offset;
            if offset > (*pool).max_offset {
                return ptr::null_mut();
            }
            let class = (*pool).class.load(Ordering::Relaxed) as usize;
            (*pool).next_offset = offset + block_size(class) as u32;
            (*pool)
                .used
                .store((*pool).used.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            (pool as *mut u8).add(offset as usize)
        }
    }

    /// Blocks of this pool's class that fit in it.
    pub fn capacity(&self) -> usize {
        blocks_per_pool(self.class.load(Ordering::Relaxed) as usize)
    }
}
