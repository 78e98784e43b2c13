//! The layer below tidemark: `mmap` for arenas and glibc's own allocator for the raw path.
//!
//! The raw path calls glibc's `__libc_malloc` family rather than `malloc`: when tidemark is
//! preloaded, `malloc` *is* tidemark, and the raw path must reach the real allocator without a
//! `dlsym` bootstrap.

use core::ptr;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut libc::c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut libc::c_void;
    fn __libc_realloc(ptr: *mut libc::c_void, size: usize) -> *mut libc::c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut libc::c_void;
    fn __libc_free(ptr: *mut libc::c_void);
}

/// Maps `size` bytes of fresh, zeroed, read-write memory, or returns null.
pub fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Maps `size` bytes aligned to `align` (a power of two ≥ the page size), or returns null.
///
/// Maps `size + align` and unmaps the unaligned head and tail, so no address space is lost to
/// alignment inside the returned region.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let Some(span) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(span);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = span - head - size;
    // SAFETY: both ranges lie inside the mapping made above and are not used by anyone.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
    }
    aligned as *mut u8
}

/// Returns a mapping made by `map` or `map_aligned`.
///
/// # Safety
/// `[p, p + size)` must be a mapping of ours that nobody uses any more.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(p as *mut libc::c_void, size) };
}

/// glibc `malloc`, bypassing any interposition.
#[inline]
pub fn raw_malloc(size: usize) -> *mut u8 {
    // SAFETY: glibc's malloc accepts any size and returns null on failure.
    unsafe { __libc_malloc(size) as *mut u8 }
}

/// glibc `calloc`, bypassing any interposition.
#[inline]
pub fn raw_calloc(size: usize) -> *mut u8 {
    // SAFETY: glibc's calloc accepts any size and returns null on failure.
    unsafe { __libc_calloc(1, size) as *mut u8 }
}

/// glibc `memalign` (the alignment is a power of two, as Rust's `Layout` guarantees).
#[inline]
pub fn raw_memalign(align: usize, size: usize) -> *mut u8 {
    // SAFETY: glibc's memalign accepts any power-of-two alignment and returns null on failure.
    unsafe { __libc_memalign(align, size) as *mut u8 }
}

/// glibc `realloc`.
///
/// # Safety
/// `p` must be null or a live block from glibc's allocator.
#[inline]
pub unsafe fn raw_realloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    unsafe { __libc_realloc(p as *mut libc::c_void, size) as *mut u8 }
}

/// glibc `free`.
///
/// # Safety
/// `p` must be null or a live block from glibc's allocator.
#[inline]
pub unsafe fn raw_free(p: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { __libc_free(p as *mut libc::c_void) }
}

/// The usable size of a glibc block.
///
/// When tidemark is preloaded, `malloc_usable_size` is tidemark's own export, so glibc's is
/// looked up behind it (`RTLD_NEXT`) once and cached.
///
/// # Safety
/// `p` must be a live block from glibc's allocator.
#[inline]
pub unsafe fn raw_usable_size(p: *mut u8) -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    type UsableSize = unsafe extern "C" fn(*mut libc::c_void) -> usize;
    static GLIBC_USABLE_SIZE: AtomicUsize = AtomicUsize::new(0);
    let mut f = GLIBC_USABLE_SIZE.load(Ordering::Relaxed);
    if f == 0 {
        // SAFETY: a NUL-terminated symbol name; dlsym has no other preconditions.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) } as usize;
        if f == 0 {
            f = libc::malloc_usable_size as UsableSize as usize;
        }
        GLIBC_USABLE_SIZE.store(f, Ordering::Relaxed);
    }
    // SAFETY: `f` is glibc's malloc_usable_size (or the only one there is); `p` is live.
    unsafe { core::mem::transmute::<usize, UsableSize>(f)(p as *mut libc::c_void) }
}
