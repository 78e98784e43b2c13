//! The exported C functions. Each follows the C standard and glibc's conventions: `errno` is
//! `ENOMEM` when memory runs out, alignments are checked, `realloc(p, 0)` frees.
//!
//! The exports are compiled only into the cdylib's build of this crate (`cfg(not(test))`): a
//! unit-test binary that exported `malloc` would run its own test harness on it.

use core::ffi::c_void;
use core::ptr;
use tidemark_alloc::Pymalloc;

static ALLOC: Pymalloc = Pymalloc::new();

fn set_errno(code: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = code };
}

/// Returns `p`, setting `ENOMEM` when it is null.
#[inline]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p as *mut c_void
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `memalign` with the alignment already validated as a power of two.
fn aligned(align: usize, size: usize) -> *mut c_void {
    or_enomem(ALLOC.c_memalign(align.max(core::mem::size_of::<usize>()), size))
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    or_enomem(ALLOC.c_malloc(size))
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { ALLOC.c_free(p as *mut u8) }
}

#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    or_enomem(ALLOC.c_calloc(count, size))
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    let new = unsafe { ALLOC.c_realloc(p as *mut u8, size) };
    // realloc(p, 0) frees and returns null without it being an error.
    let freed = size == 0 && !p.is_null();
    if new.is_null() && !freed {
        set_errno(libc::ENOMEM);
    }
    new as *mut c_void
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: guaranteed by the caller.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// `out` must be valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let p = ALLOC.c_memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { *out = p as *mut c_void };
    0
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(page_size(), size)
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_add(page - 1) {
        Some(rounded) => aligned(page, rounded & !(page - 1)),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { ALLOC.c_usable_size(p as *mut u8) }
}

/// C23 `free_sized`: the size is a hint we do not need.
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { free(p) }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { free(p) }
}
