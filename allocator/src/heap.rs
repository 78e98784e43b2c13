//! A heap: the pools one thread allocates from, one current pool per size class.
//!
//! The fast paths (in `alloc.rs` and `free.rs`) touch only the calling thread's heap and the
//! header of one pool, with no atomic read-modify-write and no lock. Everything else lives
//! here, behind named slow paths:
//!
//! - `alloc_slow`: the current pool has no free block. In order: carve a never-used block,
//!   collect blocks other threads freed, switch to a partly used pool, take an empty pool
//!   (from this heap's small cache, else from the arenas).
//! - `free_local_slow`: a free made a full pool usable again, or a pool empty.
//! - remote frees: a block freed by a thread that does not own its pool is pushed on the
//!   owner heap's lock-free `remote` stack; the owner takes the whole stack with one swap when
//!   it next runs out of blocks (mimalloc's thread-free list, kept per heap).
//!
//! Threads start on `SENTINEL_HEAP`, whose slots all point at the sentinel pool, so the fast
//! path never tests for an uninitialized heap: the first allocation falls into `alloc_slow`,
//! which makes (or adopts) a real heap. A thread's heap is handed on when the thread exits:
//! a pthread key destructor drains what it can back to the arenas and puts the heap on the
//! abandoned list, and the next new thread adopts it with all its pools. Heaps are never
//! unmapped, so a pool's `owner` pointer stays valid for remote frees at any time.

use crate::arena;
use crate::os;
use crate::pool::{pool_of, sentinel, Block, Pool, UNUSED};
use crate::size_class::NUM_CLASSES;
use crate::sync::SpinLock;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Empty pools a heap keeps for reuse before giving them back to the arenas.
const EMPTY_CACHE: u32 = 4;

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
    const fn new() -> Self {
        RawCounters {
            allocs_total: AtomicU64::new(0),
            live_count: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
        }
    }

    /// Adds to a counter only this thread writes: a plain load and store, no locked RMW.
    #[inline(always)]
    fn bump(counter: &AtomicU64, delta: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(delta), Ordering::Relaxed);
    }
}

/// A thread's heap.
#[repr(C)]
pub struct Heap {
    /// The pool each class allocates from (the sentinel when none).
    current: [*mut Pool; NUM_CLASSES],
    /// Heads of the doubly linked lists of partly used pools, per class.
    partial: [*mut Pool; NUM_CLASSES],
    /// Empty pools kept for reuse, linked through `next`.
    empty: *mut Pool,
    empty_count: u32,
    /// All heaps ever made (for statistics), and the abandoned list.
    next_all: *mut Heap,
    next_abandoned: *mut Heap,
    pub raw: RawCounters,
    /// Blocks freed by other threads, pushed lock-free; on its own cache line because other
    /// threads write it while the owner works on the fields above.
    remote: RemoteList,
}

#[repr(C, align(128))]
struct RemoteList(AtomicPtr<Block>);

/// The heap of threads that have not allocated yet. Never written: every slot is the sentinel
/// pool, and it owns no pool, so frees from such threads take the remote path.
#[allow(dead_code)] // read only through the pointer cast in `sentinel_heap`
pub struct SentinelHeap(Heap);
// SAFETY: never written after construction.
unsafe impl Sync for SentinelHeap {}

pub static SENTINEL_HEAP: SentinelHeap = SentinelHeap(Heap {
    current: [&crate::pool::SENTINEL as *const crate::pool::Sentinel as *mut Pool; NUM_CLASSES],
    partial: [ptr::null_mut(); NUM_CLASSES],
    empty: ptr::null_mut(),
    empty_count: 0,
    next_all: ptr::null_mut(),
    next_abandoned: ptr::null_mut(),
    raw: RawCounters::new(),
    remote: RemoteList(AtomicPtr::new(ptr::null_mut())),
});

#[inline(always)]
fn sentinel_heap() -> *mut Heap {
    &SENTINEL_HEAP as *const SentinelHeap as *mut Heap
}

thread_local! {
    static HEAP: Cell<*mut Heap> =
        const { Cell::new(&SENTINEL_HEAP as *const SentinelHeap as *mut Heap) };
}

/// The calling thread's heap (the sentinel heap before its first allocation).
#[inline(always)]
pub fn current() -> *mut Heap {
    HEAP.with(|h| h.get())
}

/// Raw-path counters of threads without a heap.
static ORPHAN_RAW: RawCounters = RawCounters::new();

/// Counts a raw-path allocation of `bytes` (negative `live` deltas for frees).
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

// ---------------------------------------------------------------------------------------------
// Fast paths.

/// Allocates a block of `class`, or returns null when out of memory.
///
/// # Safety
/// `class < NUM_CLASSES`.
#[inline(always)]
pub unsafe fn alloc(class: usize) -> *mut u8 {
    let heap = current();
    // SAFETY: `heap` is this thread's heap or the sentinel; `class` is in range; the current
    // pool is owned by this thread (or the sentinel, whose free list is always empty).
    unsafe {
        let pool = *(*heap).current.get_unchecked(class);
        let block = (*pool).free;
        if !block.is_null() {
            (*pool).free = (*block).next;
            bump_used(pool, 1);
            return block as *mut u8;
        }
    }
    alloc_slow(class, false)
}

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
            free_remote(pool, block as *mut Block);
        }
    }
}

#[inline(always)]
unsafe fn bump_used(pool: *mut Pool, delta: u32) {
    // SAFETY: the caller owns `pool`; only the owner writes `used`.
    unsafe {
        let used = &(*pool).used;
        used.store(used.load(Ordering::Relaxed).wrapping_add(delta), Ordering::Relaxed);
    }
}

/// Pushes a block back on its own pool's free list.
#[inline(always)]
unsafe fn free_local(heap: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: the caller owns `pool` through `heap`, and `block` is one of its live blocks.
    unsafe {
        (*block).next = (*pool).free;
        (*pool).free = block;
        bump_used(pool, u32::MAX);
        if (*pool).used.load(Ordering::Relaxed) == 0 || (*pool).full {
            free_local_slow(heap, pool);
        }
    }
}

/// Pushes a block on its owner heap's remote stack.
unsafe fn free_remote(pool: *mut Pool, block: *mut Block) {
    // SAFETY: the pool has a live block, so its owner is a real heap, never unmapped.
    let remote = unsafe { &(*(*pool).owner.load(Ordering::Relaxed)).remote.0 };
    let mut head = remote.load(Ordering::Relaxed);
    loop {
        // SAFETY: the block is ours to reuse as a list node until the owner pops it.
        unsafe { (*block).next = head };
        match remote.compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow paths.

/// The allocation slow path: the current pool of `class` has no free block. When `zeroed`,
/// the block comes back zero-filled (without a memset when it is known fresh).
#[cold]
#[inline(never)]
pub fn alloc_slow(class: usize, zeroed: bool) -> *mut u8 {
    let mut heap = current();
    if heap == sentinel_heap() {
        heap = thread_init();
        if heap.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: `heap` is this thread's own heap; every pool reached from it is owned by it.
    unsafe {
        let heap = &mut *heap;
        let pool = heap.current[class];
        if pool != sentinel() {
            if let Some(block) = take_block(pool, zeroed) {
                return block;
            }
        }
        // Blocks other threads gave back come before new memory.
        if heap.collect_remote() && heap.current[class] != sentinel() {
            if let Some(block) = take_block(heap.current[class], zeroed) {
                return block;
            }
        }
        let next = if !heap.partial[class].is_null() {
            let next = heap.partial[class];
            heap.unlink_partial(class, next);
            next
        } else {
            let Some(next) = heap.empty_pool(class) else {
                return ptr::null_mut();
            };
            next
        };
        let old = heap.current[class];
        if old != sentinel() {
            // The old current pool has neither free nor never-used blocks: it is full. It
            // rejoins the partial list when one of its blocks is freed.
            (*old).full = true;
        }
        heap.current[class] = next;
        take_block(next, zeroed).unwrap_or(ptr::null_mut())
    }
}

/// Takes a block from a pool owned by the caller: from the free list, else never-used.
unsafe fn take_block(pool: *mut Pool, zeroed: bool) -> Option<*mut u8> {
    // SAFETY: the caller owns `pool`.
    unsafe {
        let block = (*pool).free;
        if !block.is_null() {
            (*pool).free = (*block).next;
            bump_used(pool, 1);
            if zeroed {
                ptr::write_bytes(block as *mut u8, 0, (*pool).block_size());
            }
            return Some(block as *mut u8);
        }
        let block = Pool::carve(pool);
        if block.is_null() {
            return None;
        }
        if zeroed && !(*pool).fresh {
            ptr::write_bytes(block, 0, (*pool).block_size());
        }
        Some(block)
    }
}

/// A free made `pool` usable again (it was full) or empty.
#[cold]
#[inline(never)]
unsafe fn free_local_slow(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: the caller owns `pool` through `heap`.
    unsafe {
        let heap = &mut *heap;
        let class = (*pool).class.load(Ordering::Relaxed) as usize;
        let empty = (*pool).used.load(Ordering::Relaxed) == 0;
        if (*pool).full {
            (*pool).full = false;
            if empty {
                heap.retire(pool);
            } else {
                heap.push_partial(class, pool);
            }
        } else if empty && heap.current[class] != pool {
            heap.unlink_partial(class, pool);
            heap.retire(pool);
        }
    }
}

impl Pool {
    /// The block size of this pool's class.
    fn block_size(&self) -> usize {
        crate::size_class::block_size(self.class.load(Ordering::Relaxed) as usize)
    }
}

impl Heap {
    /// Frees every block other threads have pushed on the remote stack. Returns whether any.
    unsafe fn collect_remote(&mut self) -> bool {
        let mut block = self.remote.0.swap(ptr::null_mut(), Ordering::Acquire);
        if block.is_null() {
            return false;
        }
        let me = self as *mut Heap;
        while !block.is_null() {
            // SAFETY: blocks on our remote stack belong to pools this heap owns.
            unsafe {
                let next = (*block).next;
                free_local(me, pool_of(block as *mut u8), block);
                block = next;
            }
        }
        true
    }

    /// An empty pool made ready for `class`, from the cache or the arenas.
    unsafe fn empty_pool(&mut self, class: usize) -> Option<*mut Pool> {
        let (pool, fresh) = if !self.empty.is_null() {
            let pool = self.empty;
            // SAFETY: cached pools are ours and unused.
            self.empty = unsafe { (*pool).next };
            self.empty_count -= 1;
            (pool, false)
        } else {
            arena::take_pool()?
        };
        // SAFETY: the pool is empty and now ours alone.
        unsafe { Pool::init(pool, class, self, fresh) };
        Some(pool)
    }

    /// Puts an empty pool that is in no list into the cache, or back to the arenas.
    unsafe fn retire(&mut self, pool: *mut Pool) {
        // SAFETY: the pool is empty and in no list; we own it.
        unsafe {
            (*pool).class.store(UNUSED, Ordering::Relaxed);
            if self.empty_count < EMPTY_CACHE {
                (*pool).next = self.empty;
                self.empty = pool;
                self.empty_count += 1;
            } else {
                (*pool).next = ptr::null_mut();
                arena::give_back(pool);
            }
        }
    }

    unsafe fn push_partial(&mut self, class: usize, pool: *mut Pool) {
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

    unsafe fn unlink_partial(&mut self, class: usize, pool: *mut Pool) {
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

// ---------------------------------------------------------------------------------------------
// Thread start and exit.

struct Registry {
    all: *mut Heap,
    abandoned: *mut Heap,
    /// Unused space in the current mapping that heaps are cut from.
    chunk: *mut u8,
    chunk_left: usize,
    key: Option<libc::pthread_key_t>,
}

// SAFETY: raw pointers into our own mappings; all access is under the lock.
unsafe impl Send for Registry {}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    all: ptr::null_mut(),
    abandoned: ptr::null_mut(),
    chunk: ptr::null_mut(),
    chunk_left: 0,
    key: None,
});

const HEAP_CHUNK: usize = 256 * 1024;

/// Gives the calling thread a heap: an abandoned one if any, else a new one. Null when out
/// of memory.
#[cold]
fn thread_init() -> *mut Heap {
    let found = REGISTRY.with(|reg| {
        let key = match reg.key {
            Some(key) => key,
            None => {
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: `thread_exit` has the destructor signature; creating a key does not
                // allocate.
                if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
                    return None;
                }
                reg.key = Some(key);
                key
            }
        };
        if !reg.abandoned.is_null() {
            let heap = reg.abandoned;
            // SAFETY: heaps on the abandoned list are unowned and never unmapped.
            reg.abandoned = unsafe { (*heap).next_abandoned };
            return Some((heap, key));
        }
        let size = core::mem::size_of::<Heap>();
        if reg.chunk_left < size {
            let chunk = os::map(HEAP_CHUNK);
            if chunk.is_null() {
                return None;
            }
            reg.chunk = chunk;
            reg.chunk_left = HEAP_CHUNK;
        }
        let heap = reg.chunk as *mut Heap;
        // SAFETY: `size` bytes at `chunk` are unused mapped memory aligned for `Heap` (chunks
        // are page aligned and heap sizes a multiple of its 128-byte alignment).
        unsafe {
            reg.chunk = reg.chunk.add(size);
            reg.chunk_left -= size;
            heap.write(Heap {
                current: [sentinel(); NUM_CLASSES],
                partial: [ptr::null_mut(); NUM_CLASSES],
                empty: ptr::null_mut(),
                empty_count: 0,
                next_all: reg.all,
                next_abandoned: ptr::null_mut(),
                raw: RawCounters::new(),
                remote: RemoteList(AtomicPtr::new(ptr::null_mut())),
            });
        }
        reg.all = heap;
        Some((heap, key))
    });
    let Some((heap, key)) = found else {
        return ptr::null_mut();
    };
    HEAP.with(|h| h.set(heap));
    crate::stats::register_exit_hook_from_env();
    // SAFETY: a key of ours; for keys below PTHREAD_KEY_2NDLEVEL_SIZE glibc stores the value
    // in the thread descriptor without allocating.
    unsafe { libc::pthread_setspecific(key, heap as *const libc::c_void) };
    heap
}

/// The pthread key destructor: runs when a thread exits, after Rust's thread-local
/// destructors. Frees what the heap can give back and leaves it for the next thread.
unsafe extern "C" fn thread_exit(value: *mut libc::c_void) {
    let heap = value as *mut Heap;
    HEAP.with(|h| h.set(sentinel_heap()));
    // SAFETY: the heap belonged to this exiting thread; nobody else uses it until adopted.
    unsafe {
        let h = &mut *heap;
        h.collect_remote();
        for class in 0..NUM_CLASSES {
            let pool = h.current[class];
            if pool != sentinel() && (*pool).used.load(Ordering::Relaxed) == 0 {
                h.current[class] = sentinel();
                h.retire(pool);
            }
        }
        let cached = h.empty;
        h.empty = ptr::null_mut();
        h.empty_count = 0;
        arena::give_back(cached);
    }
    REGISTRY.with(|reg| {
        // SAFETY: as above.
        unsafe { (*heap).next_abandoned = reg.abandoned };
        reg.abandoned = heap;
    });
}

/// Visits every heap ever made (for statistics) and the counters of heapless threads.
pub fn visit_raw_counters(mut visit: impl FnMut(&RawCounters)) {
    visit(&ORPHAN_RAW);
    REGISTRY.with(|reg| {
        let mut heap = reg.all;
        while !heap.is_null() {
            // SAFETY: heaps are never unmapped; the counters are atomics.
            unsafe {
                visit(&(*heap).raw);
                heap = (*heap).next_all;
            }
        }
    });
}

/// Allocates a zero-filled block of `class`, skipping the memset for fresh memory.
///
/// # Safety
/// `class < NUM_CLASSES`.
#[inline]
pub unsafe fn alloc_zeroed(class: usize) -> *mut u8 {
    let heap = current();
    // SAFETY: as in `alloc`.
    unsafe {
        let pool = *(*heap).current.get_unchecked(class);
        let block = (*pool).free;
        if !block.is_null() {
            (*pool).free = (*block).next;
            bump_used(pool, 1);
            ptr::write_bytes(block as *mut u8, 0, crate::size_class::block_size(class));
            return block as *mut u8;
        }
    }
    alloc_slow(class, true)
}
