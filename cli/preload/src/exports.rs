//! The exported C functions. Each follows the C standard and glibc's conventions: `errno` is
//! `ENOMEM` when memory runs out, alignments are checked, `realloc(p, 0)` frees.
//!
//! Each call goes to the backend (`backend.rs`) and, while a capture is being recorded, is
//! reported to `trace.rs` (frees before the memory goes back, allocations after they succeed).
//!
//! The exports are compiled only into the cdylib's build of this crate (`cfg(not(test))`): a
//! unit-test binary that exported `malloc` would run its own test harness on it.

use crate::unwind::frame_pointer;
use crate::{backend, role, trace};
use core::ffi::c_void;
use core::ptr;

fn set_errno(code: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = code };
}

/// Returns `p`, setting `ENOMEM` when it is null.
#[inline]
fn or_enomem(p: *mut c_void) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}

/// Reports a new block to the tracer when recording. Inlined into the exports (and the
/// functions `malloc` jumps to), so that the frame record read here holds the program's
/// return address.
#[inline(always)]
fn traced(p: *mut c_void, size: usize) -> *mut c_void {
    if trace::on() && !p.is_null() {
        trace::on_alloc(p, size, frame_pointer());
    }
    p
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `memalign` with the alignment already validated as a power of two.
fn aligned(align: usize, size: usize) -> *mut c_void {
    let p = backend::memalign(align.max(core::mem::size_of::<usize>()), size);
    traced(or_enomem(p), size)
}

// `malloc` and `free` send each call to the function of the library's role (one test of the
// mode byte, `role::mode`): glibc while recording (`tidemark run`), pymalloc alone
// (`--allocator pymalloc`), and the general dispatch for the rest (debug hooks, pymalloc while
// recording, the first call). On x86-64 they are six instructions of assembly that *jump*
// there, so that the role's function runs as if the program had called it: only its own
// registers are saved, and its frame record holds the program's return address, where the
// express lane of a recorded call starts (`unwind::frame_pointer`). A Rust export would
// call it from a frame of its own: 15 more instructions per recorded malloc.

/// The body of a dispatching export on x86-64: jumps to `$recording` while glibc serves and
/// every call is recorded, to `$plain` while pymalloc serves unrecorded, else to `$general`
/// (each takes the export's arguments, untouched: only `eax` and the flags change).
#[cfg(target_arch = "x86_64")]
macro_rules! jump_by_role {
    ($recording:path, $plain:path, $general:path) => {
        core::arch::naked_asm!(
            ".cfi_startproc",
            "movzx eax, byte ptr [rip + {mode}]",
            "cmp eax, {recording}",
            "je {recording_fn}",
            "cmp eax, {plain}",
            "je {plain_fn}",
            "jmp {general_fn}",
            ".cfi_endproc",
            mode = sym role::MODE,
            recording = const role::RECORDING_GLIBC,
            plain = const role::PLAIN_PYMALLOC,
            recording_fn = sym $recording,
            plain_fn = sym $plain,
            general_fn = sym $general,
        )
    };
}

// SAFETY (naked): the body reads the mode byte and jumps, leaving the stack and the argument
// registers as the caller set them; each target is an `extern "C"` function with this
// signature.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    jump_by_role!(malloc_recording, malloc_plain, malloc_general)
}

#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    match role::mode() {
        role::RECORDING_GLIBC => malloc_recording(size),
        role::PLAIN_PYMALLOC => malloc_plain(size),
        _ => malloc_general(size),
    }
}

extern "C" fn malloc_recording(size: usize) -> *mut c_void {
    // (glibc sets errno itself.)
    trace::malloc_recorded(size)
}

extern "C" fn malloc_plain(size: usize) -> *mut c_void {
    or_enomem(backend::pymalloc_malloc(size))
}

extern "C" fn malloc_general(size: usize) -> *mut c_void {
    traced(or_enomem(backend::malloc(size)), size)
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
// SAFETY (naked): as for `malloc`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    jump_by_role!(free_recording, free_plain, free_general)
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match role::mode() {
            role::RECORDING_GLIBC => free_recording(p),
            role::PLAIN_PYMALLOC => free_plain(p),
            _ => free_general(p),
        }
    }
}

/// # Safety
/// As for `free`; while glibc serves, every block is glibc's.
unsafe extern "C" fn free_recording(p: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { trace::free_recorded(p) }
}

/// # Safety
/// As for `free`.
unsafe extern "C" fn free_plain(p: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { backend::pymalloc_free(p) }
}

/// # Safety
/// As for `free`.
unsafe extern "C" fn free_general(p: *mut c_void) {
    if trace::on() && !p.is_null() {
        trace::on_free(p);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { backend::free(p) }
}

#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    traced(
        or_enomem(backend::calloc(count, size)),
        count.wrapping_mul(size),
    )
}

/// # Safety
/// `p` must be null or a live block from this allocator or glibc.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // realloc(p, 0) frees and returns null without it being an error.
    let freeing = size == 0 && !p.is_null();
    if freeing && trace::on() {
        trace::on_free(p);
    }
    // A move frees `p`: the event takes its place in the order before that can happen.
    let ticket = if !freeing && !p.is_null() && trace::on() {
        trace::begin_realloc()
    } else {
        None
    };
    // SAFETY: guaranteed by the caller.
    let new = unsafe { backend::realloc(p, size) };
    if let Some(t) = ticket {
        trace::finish_realloc(t, p, new, size, frame_pointer());
    }
    if new.is_null() {
        if !freeing {
            set_errno(libc::ENOMEM);
        }
    } else if p.is_null() && trace::on() {
        trace::on_alloc(new, size, frame_pointer());
    }
    new
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
    let p = backend::memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { *out = traced(p, size) };
    0
}

/// `aligned_alloc` takes any alignment, as glibc's did up to 2.37 (an alias of `memalign`):
/// a program written against it keeps working. (glibc 2.38 refuses what is not a power of
/// two; giving a block aligned more than asked is never wrong.)
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// glibc's rules: an alignment that is not a power of two is rounded up to one (0 and 1 ask
/// for nothing more than `malloc`'s), and only one no power of two can reach is `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(align) => aligned(align, size),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
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
    unsafe { backend::usable_size(p) }
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

/// `_exit` flushes the capture first (the program's own `_exit` calls; glibc's internal
/// ones do not come here), then ends the process as glibc's would.
#[no_mangle]
pub extern "C" fn _exit(status: i32) -> ! {
    crate::lifecycle::flush_before_exit();
    // SAFETY: exit_group ends every thread of the process; it does not return.
    unsafe {
        libc::syscall(libc::SYS_exit_group, status);
        libc::abort()
    }
}
