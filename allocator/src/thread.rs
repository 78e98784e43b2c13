//! Thread start and exit: giving each thread a heap, and handing it on when the thread ends.
//!
//! Heaps are cut from mappings of our own (never the global allocator) and never unmapped. A
//! thread gets a heap at its first allocation — an abandoned one if any, so that 10,000
//! short-lived threads reuse one heap and its pools — and a pthread key destructor abandons it
//! at exit. glibc runs key destructors after Rust's thread-local destructors, so allocations
//! those make still find the heap; an allocation made after ours ran adopts a heap again,
//! which sets the key again, and glibc runs the destructor another round.

use crate::arena;
use crate::exit_key::ExitKey;
use crate::free::drain_cache;
use crate::heap::{sentinel_heap, set_current, Heap};
use crate::os;
use crate::pool::sentinel;
use crate::size_class::NUM_CLASSES;
use crate::sync::SpinLock;
use core::ptr;
use core::sync::atomic::Ordering;

struct Registry {
    all: *mut Heap,
    abandoned: *mut Heap,
    /// Unused space in the current mapping that heaps are cut from.
    chunk: *mut u8,
    chunk_left: usize,
}

// SAFETY: raw pointers into our own mappings; all access is under the lock.
unsafe impl Send for Registry {}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    all: ptr::null_mut(),
    abandoned: ptr::null_mut(),
    chunk: ptr::null_mut(),
    chunk_left: 0,
});

/// Abandons the exiting thread's heap (see the module docs).
static EXIT: ExitKey = ExitKey::new(thread_exit);

const HEAP_CHUNK: usize = 256 * 1024;

/// Gives the calling thread a heap: an abandoned one if any, else a new one. Null when out
/// of memory.
#[cold]
pub fn thread_init() -> *mut Heap {
    if !EXIT.ready() {
        return ptr::null_mut();
    }
    let found = REGISTRY.with(|reg| {
        if !reg.abandoned.is_null() {
            let heap = reg.abandoned;
            // SAFETY: heaps on the abandoned list are unowned and never unmapped.
            reg.abandoned = unsafe { (*heap).next_abandoned };
            return Some(heap);
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
            heap.write(Heap::new(reg.all));
        }
        reg.all = heap;
        Some(heap)
    });
    let Some(heap) = found else {
        return ptr::null_mut();
    };
    set_current(heap);
    // SAFETY: `thread_exit` takes a heap this thread owns.
    unsafe { EXIT.set(heap as *const libc::c_void) };
    register_process_hooks();
    heap
}

/// Once per process, outside every allocator lock (both calls may allocate, which is fine
/// now that this thread has a heap): the `TIDEMARK_MALLOCSTATS` exit hook and the fork
/// handlers.
fn register_process_hooks() {
    use core::sync::atomic::AtomicBool;
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    crate::stats::register_exit_hook_from_env();
    register_fork_handlers();
}

/// Once per process, by pymalloc or the debug layer, whichever comes first (may allocate):
/// the fork handlers, one set for both, so their locks are always taken in one order.
pub(crate) fn register_fork_handlers() {
    use core::sync::atomic::AtomicBool;
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: plain extern "C" functions with no state beyond the locks they take.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release)) };
}

/// Before `fork`: hold the allocator's locks so the child never inherits one mid-update
/// (another thread may be inside an arena or registry operation at the moment of fork). The
/// debug layer's come first: see `debug/fork.rs` for the order.
unsafe extern "C" fn fork_prepare() {
    // SAFETY: released by `fork_release` in both processes.
    unsafe {
        crate::debug::fork_prepare();
        REGISTRY.force_lock();
    }
    arena::fork_prepare();
}

/// After `fork`, in the parent and in the child.
unsafe extern "C" fn fork_release() {
    arena::fork_release();
    // SAFETY: taken by `fork_prepare`.
    unsafe {
        REGISTRY.force_unlock();
        crate::debug::fork_release();
    }
}

/// The pthread key destructor: runs when a thread exits, after Rust's thread-local
/// destructors. Frees what the heap can give back and leaves it for the next thread.
unsafe extern "C" fn thread_exit(value: *mut libc::c_void) {
    let heap = value as *mut Heap;
    set_current(sentinel_heap());
    // SAFETY: the heap belonged to this exiting thread; nobody else uses it until adopted.
    unsafe {
        let h = &mut *heap;
        h.send_outboxes();
        h.collect_all_remote();
        for class in 0..NUM_CLASSES {
            drain_cache(h, class);
        }
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

/// Visits every heap ever made (for statistics). Runs under the registry lock: `visit` must
/// not allocate. Other threads keep working on their heaps meanwhile; read only atomics.
pub fn visit_heaps(mut visit: impl FnMut(&Heap)) {
    REGISTRY.with(|reg| {
        let mut heap = reg.all;
        while !heap.is_null() {
            // SAFETY: heaps are never unmapped.
            unsafe {
                visit(&*heap);
                heap = (*heap).next_all;
            }
        }
    });
}
