//! Per-thread state of the debug layer, so that the common allocation and free touch no
//! shared cache line and execute no atomic read-modify-write (each one is a full barrier on
//! x86, which would also make the thread wait for the stores of the fills before it):
//!
//! - a range of serial numbers taken from the global counter [`SERIAL_BATCH`] at a time
//!   (serials stay unique and roughly ordered; within a thread they increase);
//! - the thread's registry slots (see `live.rs`): a stack of free slots and a range of fresh
//!   ones;
//! - its share of the block count.
//!
//! The `Local`s are cut from mappings of our own and never unmapped (so `block_count` can read
//! every one of them). A thread adopts one at its first call (an abandoned one if any, so
//! short-lived threads reuse the same few and their free slots), and a pthread key destructor
//! abandons it at exit, as `thread.rs` does for heaps.

use crate::exit_key::ExitKey;
use crate::sync::SpinLock;
use core::cell::Cell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// Serials a thread takes from the global counter at once.
pub const SERIAL_BATCH: u64 = 1024;

/// Counts allocations through every debug allocator: "made by call #N".
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// One thread's state (only its thread touches it, except `count`, which `block_count` reads).
pub struct Local {
    serial_next: u64,
    serial_end: u64,
    /// Top of the stack of free registry slots (index + 1; 0 = empty).
    pub free_slot: usize,
    /// Fresh registry slots `slot_next..slot_end`.
    pub slot_next: usize,
    pub slot_end: usize,
    /// Blocks this thread registered minus blocks it unregistered (wrapping).
    count: AtomicIsize,
    next_all: *mut Local,
    next_abandoned: *mut Local,
}

impl Local {
    /// The next serial number.
    #[inline]
    pub fn serial(&mut self) -> u64 {
        if self.serial_next == self.serial_end {
            let start = SERIAL.fetch_add(SERIAL_BATCH, Ordering::Relaxed) + 1;
            self.serial_next = start;
            self.serial_end = start + SERIAL_BATCH;
        }
        let s = self.serial_next;
        self.serial_next += 1;
        s
    }

    /// Adds `delta` to this thread's block count (only the owner writes it: no RMW needed).
    #[inline]
    pub fn count(&self, delta: isize) {
        let n = self.count.load(Ordering::Relaxed);
        self.count.store(n.wrapping_add(delta), Ordering::Relaxed);
    }
}

struct Locals {
    all: *mut Local,
    abandoned: *mut Local,
    chunk: *mut u8,
    chunk_left: usize,
}

// SAFETY: raw pointers into our own mappings; all access is under the lock.
unsafe impl Send for Locals {}

static LOCALS: SpinLock<Locals> = SpinLock::new(Locals {
    all: null_mut(),
    abandoned: null_mut(),
    chunk: null_mut(),
    chunk_left: 0,
});

/// Abandons the exiting thread's `Local`.
static EXIT: ExitKey = ExitKey::new(abandon);

const CHUNK: usize = 64 * 1024;

// The thread's `Local`, read on every debug allocation and free. No destructor (a `Cell` of a
// pointer), so it is usable even while the thread exits. In the preload (feature
// `initial-exec-tls`) it is reached in the initial-exec model, as the heap pointer is
// (`heap.rs`): a `thread_local!` there calls `__tls_get_addr` on every access.
#[cfg(not(feature = "initial-exec-tls"))]
thread_local! {
    static LOCAL: Cell<*mut Local> = const { Cell::new(null_mut()) };
}

#[cfg(feature = "initial-exec-tls")]
crate::initial_exec_tls!(fn local_cell() -> Cell<*mut Local>, "tidemark_alloc_debug_local");

/// Runs `f` on the calling thread's `Local` pointer cell.
#[inline(always)]
fn with_local<R>(f: impl FnOnce(&Cell<*mut Local>) -> R) -> R {
    #[cfg(not(feature = "initial-exec-tls"))]
    {
        LOCAL.with(f)
    }
    #[cfg(feature = "initial-exec-tls")]
    {
        // SAFETY: the calling thread's cell (all-zero bytes: a null pointer), valid while it
        // runs.
        f(unsafe { &*local_cell() })
    }
}

/// The calling thread's state, or `None` when there is no memory for it.
#[inline]
pub fn local<'a>() -> Option<&'a mut Local> {
    let mut l = with_local(|c| c.get());
    if l.is_null() {
        l = adopt();
    }
    // SAFETY: a `Local` belongs to the thread that adopted it until that thread abandons it,
    // and it is never unmapped.
    unsafe { l.as_mut() }
}

#[cold]
fn adopt() -> *mut Local {
    if !EXIT.ready() {
        return null_mut();
    }
    let found = LOCALS.with(|reg| {
        if !reg.abandoned.is_null() {
            let l = reg.abandoned;
            // SAFETY: abandoned `Local`s are unowned and never unmapped.
            reg.abandoned = unsafe { (*l).next_abandoned };
            return Some(l);
        }
        let size = core::mem::size_of::<Local>();
        if reg.chunk_left < size {
            let chunk = crate::os::map(CHUNK);
            if chunk.is_null() {
                return None;
            }
            reg.chunk = chunk;
            reg.chunk_left = CHUNK;
        }
        let l = reg.chunk as *mut Local;
        // SAFETY: `size` unused bytes of our mapping, aligned for `Local` (the mapping is page
        // aligned and `Local`'s size is a multiple of its alignment).
        unsafe {
            reg.chunk = reg.chunk.add(size);
            reg.chunk_left -= size;
            l.write(Local {
                serial_next: 0,
                serial_end: 0,
                free_slot: 0,
                slot_next: 0,
                slot_end: 0,
                count: AtomicIsize::new(0),
                next_all: reg.all,
                next_abandoned: null_mut(),
            });
        }
        reg.all = l;
        Some(l)
    });
    let Some(l) = found else {
        return null_mut();
    };
    with_local(|c| c.set(l));
    // SAFETY: `abandon` takes a `Local` this thread owns.
    unsafe { EXIT.set(l as *const libc::c_void) };
    l
}

/// The pthread key destructor: leaves the exiting thread's state (its free slots and serial
/// range included) for the next thread.
unsafe extern "C" fn abandon(value: *mut libc::c_void) {
    let l = value as *mut Local;
    with_local(|c| c.set(null_mut()));
    LOCALS.with(|reg| {
        // SAFETY: the exiting thread owned `l`; nobody uses it until it is adopted again.
        unsafe { (*l).next_abandoned = reg.abandoned };
        reg.abandoned = l;
    });
}

/// Before `fork`: takes the lock of the thread states (see `debug::fork`).
///
/// # Safety
/// Must be followed by [`fork_release`] on this thread, in the parent and in the child.
pub unsafe fn fork_prepare() {
    // SAFETY: released by `fork_release` (guaranteed by the caller).
    unsafe { LOCALS.force_lock() }
}

/// After `fork`, in the parent and in the child. The child's other threads are gone, but
/// their states stay adopted: they are never reused, which costs the child their free slots
/// and serial ranges, nothing else.
///
/// # Safety
/// [`fork_prepare`] took the lock before the fork.
pub unsafe fn fork_release() {
    // SAFETY: held through `fork_prepare` (guaranteed by the caller).
    unsafe { LOCALS.force_unlock() }
}

/// Blocks registered and not yet unregistered, over all threads.
pub fn total_count() -> usize {
    LOCALS.with(|reg| {
        let mut sum = 0isize;
        let mut l = reg.all;
        while !l.is_null() {
            // SAFETY: `Local`s are never unmapped; `count` is only read through its atomic.
            unsafe {
                sum = sum.wrapping_add((*l).count.load(Ordering::Relaxed));
                l = (*l).next_all;
            }
        }
        sum.max(0) as usize
    })
}
