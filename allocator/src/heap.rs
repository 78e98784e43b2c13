//! A heap: what one thread allocates from — a small cache of free blocks per size class in
//! front of one current pool per class.
//!
//! ```text
//!   alloc ──► cache[class] ──(empty)──► refill from current pool ──► partial pools ──► arenas
//!   free  ──► cache[class] ──(full)───► flush half back to their pools
//!   free by another thread ──► owner's remote stack ──(owner runs dry)──► owner's caches
//! ```
//!
//! Why a cache in front of the pools: with many live objects, frees land in random pools, so
//! pools other than the current one hold a few free blocks each, and allocating from pools
//! alone would switch pool every few blocks. The per-class LIFO cache hands a freed block
//! straight back to the next allocation of its class (still hot in the CPU cache), and moves
//! blocks between cache and pools in batches. Pools still know exactly which of their blocks
//! are out (`used` counts blocks in caches too), so an empty pool is still detected and
//! returned — only a bounded number of blocks (`size_class::cache_limit`, 32 KiB of blocks per class)
//! waits in a cache.
//!
//! The fast paths (`alloc.rs`, `free.rs`) touch only the calling thread's heap, the block and,
//! on free, the block's pool header (to learn its owner and class), with no atomic
//! read-modify-write and no lock.
//!
//! Threads start on `SENTINEL_HEAP`, whose caches are empty and whose pools are the sentinel,
//! so the fast path never tests for an uninitialized heap: the first allocation falls into the
//! slow path, which makes (or adopts) a real heap. When a thread exits, a pthread key
//! destructor drains its caches, gives empty pools back and puts the heap on the abandoned
//! list; the next new thread adopts it with its pools. Heaps are never unmapped, so a pool's
//! `owner` pointer stays valid for remote frees at any time.

use crate::arena;
use crate::pool::{Block, Pool, UNUSED};
use crate::remote::{Inbox, Outbox};
use crate::size_class::NUM_CLASSES;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Empty pools a heap keeps for reuse before giving them back to the arenas.
const EMPTY_POOL_CACHE: u32 = 4;

/// Raw-path (system allocator) counters. Each heap keeps its own so that the raw path stays
/// free of shared cache lines; a block freed by another thread makes one heap's count go
/// "negative" (wrapping) and another's positive, and only the sum means anything.
#[derive(Default)]
pub struct RawCounters {
    pub allocs_total: AtomicU64,
    pub live_count: AtomicU64,
    pub live_bytes: AtomicU64,
}

impl RawCounters {
    pub const fn new() -> Self {
        RawCounters {
            allocs_total: AtomicU64::new(0),
            live_count: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
        }
    }

    /// Adds to a counter only this thread writes: a plain load and store, no locked RMW.
    #[inline(always)]
    fn bump(counter: &AtomicU64, delta: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }
}

/// Free blocks of one class kept by a heap, LIFO.
#[repr(C)]
pub struct ClassCache {
    pub head: *mut Block,
    /// Blocks on the list (written by the owner only; read by statistics).
    pub count: AtomicU32,
    /// `size_class::cache_limit` of this class, kept beside the count the free path
    /// compares it with.
    pub limit: u32,
}

impl ClassCache {
    pub const fn empty(class: usize) -> ClassCache {
        ClassCache {
            head: ptr::null_mut(),
            count: AtomicU32::new(0),
            limit: crate::size_class::cache_limit(class),
        }
    }

    /// The caches of every class, empty.
    pub const fn all_empty() -> [ClassCache; NUM_CLASSES] {
        let mut caches = [const { ClassCache::empty(0) }; NUM_CLASSES];
        let mut class = 1;
        while class < NUM_CLASSES {
            caches[class] = ClassCache::empty(class);
            class += 1;
        }
        caches
    }

    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        self.count.store(n, Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn len(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A thread's heap.
#[repr(C)]
pub struct Heap {
    /// Per-class caches: the allocation fast path reads only these.
    pub cache: [ClassCache; NUM_CLASSES],
    /// The pool each class refills from (the sentinel when none).
    pub current: [*mut Pool; NUM_CLASSES],
    /// Heads of the doubly linked lists of partly used pools, per class.
    pub partial: [*mut Pool; NUM_CLASSES],
    /// Empty pools kept for reuse, linked through `next`.
    pub empty: *mut Pool,
    pub empty_count: u32,
    /// All heaps ever made (for statistics), and the abandoned list.
    pub next_all: *mut Heap,
    pub next_abandoned: *mut Heap,
    pub raw: RawCounters,
    /// Blocks other threads freed for this heap, sorted by class and batched by them (see
    /// `remote.rs`): the owner's side of it.
    pub inbox: Inbox,
    /// Blocks this thread freed for other heaps, not yet sent: the sender's side.
    pub outbox: [Outbox; NUM_CLASSES],
    /// Bit `class` set when that outbox may hold blocks.
    pub outbox_pending: u32,
}

/// The heap of threads that have not allocated yet. Never written: its caches are empty and
/// its pools are the sentinel, and it owns no pool, so frees from such threads go remote.
pub struct SentinelHeap(#[allow(dead_code)] Heap);
// SAFETY: never written after construction.
unsafe impl Sync for SentinelHeap {}

pub static SENTINEL_HEAP: SentinelHeap = SentinelHeap(Heap::new(ptr::null_mut()));

#[inline(always)]
pub fn sentinel_heap() -> *mut Heap {
    &SENTINEL_HEAP as *const SentinelHeap as *mut Heap
}

// The thread's heap pointer, read on every allocation and free. In an executable a
// `thread_local!` is one instruction; in a shared library it is a `__tls_get_addr` call
// (about a dozen), so the preload library, built with the `initial-exec-tls` feature, reaches
// the pointer in the initial-exec model instead (`tls.rs`): two instructions and a select,
// since such a cell starts zeroed and null has to stand for the sentinel heap.
#[cfg(not(feature = "initial-exec-tls"))]
thread_local! {
    static HEAP: Cell<*mut Heap> =
        const { Cell::new(&SENTINEL_HEAP as *const SentinelHeap as *mut Heap) };
}

#[cfg(feature = "initial-exec-tls")]
crate::initial_exec_tls!(fn heap_cell() -> Cell<*mut Heap>, "tidemark_alloc_thread_heap");

/// The calling thread's heap (the sentinel heap before its first allocation).
#[inline(always)]
pub fn current() -> *mut Heap {
    #[cfg(not(feature = "initial-exec-tls"))]
    {
        HEAP.with(|h| h.get())
    }
    #[cfg(feature = "initial-exec-tls")]
    {
        // SAFETY: the calling thread's cell, valid while it runs.
        let heap = unsafe { (*heap_cell()).get() };
        if heap.is_null() {
            sentinel_heap()
        } else {
            heap
        }
    }
}

/// Makes `heap` the calling thread's heap.
#[inline]
pub fn set_current(heap: *mut Heap) {
    #[cfg(not(feature = "initial-exec-tls"))]
    HEAP.with(|h| h.set(heap));
    #[cfg(feature = "initial-exec-tls")]
    // SAFETY: the calling thread's cell, valid while it runs.
    unsafe {
        (*heap_cell()).set(heap)
    };
}

/// Raw-path counters of threads without a heap.
pub static ORPHAN_RAW: RawCounters = RawCounters::new();

/// Counts raw-path allocations: `allocs` new ones, `live` and `bytes` deltas (wrapping).
#[inline(always)]
pub fn count_raw(allocs: u64, live: u64, bytes: u64) {
    let heap = current();
    if heap == sentinel_heap() {
        ORPHAN_RAW.allocs_total.fetch_add(allocs, Ordering::Relaxed);
        ORPHAN_RAW.live_count.fetch_add(live, Ordering::Relaxed);
        ORPHAN_RAW.live_bytes.fetch_add(bytes, Ordering::Relaxed);
    } else {
        // SAFETY: a real heap is owned by this thread and never unmapped.
        let raw = unsafe { &(*heap).raw };
        RawCounters::bump(&raw.allocs_total, allocs);
        RawCounters::bump(&raw.live_count, live);
        RawCounters::bump(&raw.live_bytes, bytes);
    }
}

/// Adds `delta` (wrapping) to a pool's `used`; only the owner writes it.
///
/// # Safety
/// The caller owns `pool`.
#[inline(always)]
pub unsafe fn bump_used(pool: *mut Pool, delta: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let used = &(*pool).used;
        used.store(
            used.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }
}

impl Heap {
    /// A heap with no pools, linked in front of `next_all`.
    pub const fn new(next_all: *mut Heap) -> Heap {
        Heap {
            cache: ClassCache::all_empty(),
            current: [&crate::pool::SENTINEL as *const crate::pool::Sentinel as *mut Pool;
                NUM_CLASSES],
            partial: [ptr::null_mut(); NUM_CLASSES],
            empty: ptr::null_mut(),
            empty_count: 0,
            next_all,
            next_abandoned: ptr::null_mut(),
            raw: RawCounters::new(),
            inbox: Inbox::new(),
            outbox: [const { Outbox::new() }; NUM_CLASSES],
            outbox_pending: 0,
        }
    }

    /// An empty pool made ready for `class`, from the cache or the arenas; a new arena is
    /// mapped only when `grow`.
    pub unsafe fn empty_pool(&mut self, class: usize, grow: bool) -> Option<*mut Pool> {
        let (pool, fresh) = if !self.empty.is_null() {
            let pool = self.empty;
            // SAFETY: cached pools are ours and unused.
            self.empty = unsafe { (*pool).next };
            self.empty_count -= 1;
            (pool, false)
        } else {
            arena::take_pool(grow)?
        };
        // SAFETY: the pool is empty and now ours alone.
        unsafe { Pool::init(pool, class, self, fresh) };
        Some(pool)
    }

    /// Puts an empty pool that is in no list into the empty-pool cache, or back to the arenas.
    pub unsafe fn retire(&mut self, pool: *mut Pool) {
        // SAFETY: the pool is empty and in no list; we own it.
        unsafe {
            (*pool).class.store(UNUSED, Ordering::Relaxed);
            if self.empty_count < EMPTY_POOL_CACHE {
                (*pool).next = self.empty;
                self.empty = pool;
                self.empty_count += 1;
            } else {
                (*pool).next = ptr::null_mut();
                arena::give_back(pool);
            }
        }
    }

    pub unsafe fn push_partial(&mut self, class: usize, pool: *mut Pool) {
        let head = self.partial[class];
        // SAFETY: `pool` and `head` are pools this heap owns.
        unsafe {
            (*pool).prev = ptr::null_mut();
            (*pool).next = head;
            if !head.is_null() {
                (*head).prev = pool;
            }
        }
        self.partial[class] = pool;
    }

    pub unsafe fn unlink_partial(&mut self, class: usize, pool: *mut Pool) {
        // SAFETY: `pool` is on this heap's partial list of `class`.
        unsafe {
            let (prev, next) = ((*pool).prev, (*pool).next);
            if prev.is_null() {
                self.partial[class] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*pool).prev = ptr::null_mut();
            (*pool).next = ptr::null_mut();
        }
    }
}
