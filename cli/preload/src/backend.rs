//! The allocator behind the exports: glibc (tracing role), pymalloc, or pymalloc under the
//! debug hooks. Each function returns what C expects but leaves errno and the `realloc(p, 0)`
//! convention to the exports.
//!
//! Pointers none of tidemark's allocators made (glibc blocks from before the library took
//! over, or from `__libc_malloc` inside glibc) go back to glibc: `Pymalloc` tells by its arena
//! map; under the debug hooks a pointer is the debug layer's when a debug header precedes it,
//! or when it lies in a tidemark arena (then it is an invalid free, which the debug layer
//! reports).

use crate::role::{backend, Backend};
use core::ffi::c_void;
use tidemark_alloc::{debug, Debug, Pymalloc};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

static PYMALLOC: Pymalloc = Pymalloc::new();
static DEBUG: Debug<Pymalloc> = Debug::new(Pymalloc::new());

/// Is `p` (non-null) a block of the debug layer, or at least inside a tidemark arena?
#[inline]
fn debug_owns(p: *mut c_void) -> bool {
    debug::is_debug_block(p as *const u8) || tidemark_alloc::is_ours(p as *const u8)
}

/// `malloc` from glibc (also the exports' short path, without the role's dispatch).
#[inline(always)]
pub fn glibc_malloc(size: usize) -> *mut c_void {
    // SAFETY: __libc_malloc has no preconditions.
    unsafe { __libc_malloc(size) }
}

/// `free` to glibc, without the role's dispatch.
///
/// # Safety
/// `p` is null or a live glibc block.
#[inline(always)]
pub unsafe fn glibc_free(p: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { __libc_free(p) }
}

/// `malloc` from pymalloc, without the role's dispatch.
#[inline(always)]
pub fn pymalloc_malloc(size: usize) -> *mut c_void {
    PYMALLOC.c_malloc(size) as *mut c_void
}

/// `free` on the pymalloc role, without the role's dispatch.
///
/// # Safety
/// As for `free`.
#[inline(always)]
pub unsafe fn pymalloc_free(p: *mut c_void) {
    // SAFETY: guaranteed by the caller; c_free takes null, and glibc's blocks to glibc.
    unsafe { PYMALLOC.c_free(p as *mut u8) }
}

#[inline]
pub fn malloc(size: usize) -> *mut c_void {
    match backend() {
        Backend::Glibc => glibc_malloc(size),
        Backend::Pymalloc => pymalloc_malloc(size),
        // SAFETY: the result is released through this module only.
        Backend::PymallocDebug => unsafe { DEBUG.c_malloc(size) as *mut c_void },
    }
}

#[inline]
pub fn calloc(count: usize, size: usize) -> *mut c_void {
    match backend() {
        // SAFETY: __libc_calloc has no preconditions.
        Backend::Glibc => unsafe { __libc_calloc(count, size) },
        Backend::Pymalloc => PYMALLOC.c_calloc(count, size) as *mut c_void,
        // SAFETY: as for malloc.
        Backend::PymallocDebug => unsafe { DEBUG.c_calloc(count, size) as *mut c_void },
    }
}

/// `align` is a power of two, at least `size_of::<usize>()`.
#[inline]
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    match backend() {
        // SAFETY: `align` is a power of two.
        Backend::Glibc => unsafe { __libc_memalign(align, size) },
        Backend::Pymalloc => PYMALLOC.c_memalign(align, size) as *mut c_void,
        // SAFETY: as for malloc.
        Backend::PymallocDebug => unsafe { DEBUG.c_aligned_alloc(align, size) as *mut c_void },
    }
}

/// # Safety
/// `p` is null or a live block of this library or of glibc.
#[inline]
pub unsafe fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: guaranteed by the caller; foreign pointers are routed to glibc.
    unsafe {
        match backend() {
            Backend::Glibc => glibc_free(p),
            Backend::Pymalloc => pymalloc_free(p),
            Backend::PymallocDebug if debug_owns(p) => DEBUG.c_free(p as *mut u8),
            Backend::PymallocDebug => {
                refuse_invalid_pointer(p, false);
                glibc_free(p)
            }
        }
    }
}

/// Under the debug hooks, a pointer the layer does not know goes to glibc (a block from
/// before the library took over), unless it points into the calling thread's stack, into a
/// loaded object's memory (a global buffer), or into a debug block (`free(p + 32)` of a block over 512 bytes, which glibc backs: glibc could
/// take it for a chunk and hand it out again while the block is live). Those are bugs the
/// program's `free` or `realloc` would otherwise leave to glibc, so they get the debug
/// report, with the call's traceback.
#[cold]
fn refuse_invalid_pointer(p: *mut c_void, realloc: bool) {
    let (low, high) = tidemark_tracer::thread_stack_bounds();
    if (low..high).contains(&(p as usize)) {
        debug::invalid_pointer(
            p as usize,
            realloc,
            "it points into the calling thread's stack",
        );
    }
    // A debug block over 512 bytes that `p` points inside, or whose header a write before it
    // damaged (its tag unrecognizable).
    debug::refuse_registered(p as usize, realloc);
    // SAFETY: dladdr only reads the loader's list of objects; `info` is written on success.
    let in_an_object = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        libc::dladdr(p, &mut info) != 0
    };
    if in_an_object {
        debug::invalid_pointer(
            p as usize,
            realloc,
            "it points into the memory of a loaded program or library (a global or static \
             variable, or code), not the heap",
        );
    }
}

/// Plain `realloc` semantics (`realloc(p, 0)` frees and returns null).
///
/// # Safety
/// As for `free`.
#[inline]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller; foreign pointers are routed to glibc.
    unsafe {
        match backend() {
            Backend::Glibc => __libc_realloc(p, size),
            Backend::Pymalloc => PYMALLOC.c_realloc(p as *mut u8, size) as *mut c_void,
            Backend::PymallocDebug if p.is_null() || debug_owns(p) => {
                DEBUG.c_realloc(p as *mut u8, size) as *mut c_void
            }
            Backend::PymallocDebug => realloc_foreign_into_debug(p, size),
        }
    }
}

/// A glibc block reallocated under the debug hooks: the new block is a debug block (so the
/// program's later free of it is checked), the old one goes back to glibc.
///
/// # Safety
/// `p` is a live glibc block.
unsafe fn realloc_foreign_into_debug(p: *mut c_void, size: usize) -> *mut c_void {
    refuse_invalid_pointer(p, true);
    if size == 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { __libc_free(p) };
        return core::ptr::null_mut();
    }
    // SAFETY: `p` is a live glibc block, so its usable size is readable.
    let old = unsafe { PYMALLOC.c_usable_size(p as *mut u8) };
    // SAFETY: as for malloc.
    let new = unsafe { DEBUG.c_malloc(size) };
    if !new.is_null() {
        // SAFETY: both blocks hold at least min(old, size) bytes and do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(p as *const u8, new, old.min(size));
            __libc_free(p);
        }
    }
    new as *mut c_void
}

/// # Safety
/// As for `free`.
#[inline]
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: guaranteed by the caller; Pymalloc answers for glibc blocks too.
    unsafe {
        match backend() {
            Backend::PymallocDebug if debug_owns(p) => DEBUG.c_usable_size(p as *mut u8),
            _ => PYMALLOC.c_usable_size(p as *mut u8),
        }
    }
}
