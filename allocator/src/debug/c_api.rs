//! The C malloc family on top of the debug hooks (API 'c'), for the preload library.
//!
//! C semantics, as glibc has them: `malloc(0)` returns a unique pointer, `free(NULL)` does
//! nothing, `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)` frees `p` and returns NULL,
//! failures return NULL with `errno` set (ENOMEM, or EINVAL for a bad alignment). Blocks made
//! here carry API 'c'; releasing them through the Rust global allocator (or a Rust block
//! through `c_free`) is an API mismatch.

use super::layout::Api;
use super::report::Op;
use super::Debug;
use core::alloc::GlobalAlloc;
use core::ptr::null_mut;

/// glibc's `MALLOC_ALIGNMENT` on 64-bit targets: what plain `malloc` guarantees.
pub const C_MIN_ALIGN: usize = 16;

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

impl<A: GlobalAlloc> Debug<A> {
    /// `malloc(size)`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` because it is an allocator entry point whose result the
    /// caller must release with `c_free`/`c_realloc`.
    pub unsafe fn c_malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: C_MIN_ALIGN is a power of two.
        let p = unsafe { self.alloc_block(size, C_MIN_ALIGN, Api::C, Some(0)) };
        if p.is_null() {
            set_errno(libc::ENOMEM);
        }
        p
    }

    /// `calloc(count, size)`: zeroed, NULL/ENOMEM when the product overflows.
    ///
    /// # Safety
    /// As for `c_malloc`.
    pub unsafe fn c_calloc(&self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            set_errno(libc::ENOMEM);
            return null_mut();
        };
        // SAFETY: C_MIN_ALIGN is a power of two.
        let p = unsafe { self.alloc_block(total, C_MIN_ALIGN, Api::C, None) };
        if p.is_null() {
            set_errno(libc::ENOMEM);
        }
        p
    }

    /// `aligned_alloc(align, size)` (also the core of `posix_memalign`, `memalign`, `valloc`):
    /// EINVAL unless `align` is a power of two.
    ///
    /// # Safety
    /// As for `c_malloc`.
    pub unsafe fn c_aligned_alloc(&self, align: usize, size: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            set_errno(libc::EINVAL);
            return null_mut();
        }
        // SAFETY: checked just above.
        let p = unsafe { self.alloc_block(size, align.max(C_MIN_ALIGN), Api::C, Some(0)) };
        if p.is_null() {
            set_errno(libc::ENOMEM);
        }
        p
    }

    /// `realloc(p, size)`. The block always moves (so stale pointers show up as writes after
    /// free); on failure the old block is untouched.
    ///
    /// # Safety
    /// `p` is NULL or a pointer the program got from this allocator's C API (anything else is
    /// reported where it can be detected).
    pub unsafe fn c_realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            // SAFETY: as for c_malloc.
            return unsafe { self.c_malloc(size) };
        }
        // SAFETY: `checked` validates `p` (aborting on any detected defect); the new block is
        // fresh and at least `keep` bytes long; the old one is live until released.
        unsafe {
            let old = self.checked(Op::CRealloc, p, Api::C, None);
            if size == 0 {
                self.release(old);
                return null_mut();
            }
            let keep = old.size().min(size);
            let new = self.alloc_block(size, old.align(), Api::C, Some(keep));
            if new.is_null() {
                set_errno(libc::ENOMEM);
                return null_mut();
            }
            core::ptr::copy_nonoverlapping(p, new, keep);
            self.release(old);
            new
        }
    }

    /// `free(p)`.
    ///
    /// # Safety
    /// As for `c_realloc`.
    pub unsafe fn c_free(&self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        // SAFETY: `checked` validates `p` and aborts on any detected defect.
        unsafe {
            let b = self.checked(Op::Free, p, Api::C, None);
            self.release(b);
        }
    }

    /// `malloc_usable_size(p)`: the requested size (every byte past it is a guard). 0 for NULL.
    ///
    /// # Safety
    /// As for `c_realloc`.
    pub unsafe fn c_usable_size(&self, p: *mut u8) -> usize {
        if p.is_null() {
            return 0;
        }
        // SAFETY: `checked` validates `p` and aborts on any detected defect.
        unsafe { self.checked(Op::UsableSize, p, Api::C, None).size() }
    }
}
