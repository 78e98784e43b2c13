//! `Pymalloc`: the allocator as a `GlobalAlloc`, plus the C malloc family for the preload.
//!
//! Small requests (≤ 512 bytes, alignment ≤ 16) go to the calling thread's heap; everything
//! else goes to glibc (the raw path). Rust's `dealloc` and `realloc` receive the layout, so
//! they tell the two paths apart by size and alignment alone, with no lookup. That holds
//! because every small layout is served from a pool — `realloc` moves a block between the
//! paths whenever its new layout belongs to the other one. The C entry points have no layout
//! and ask the arena map instead.

use crate::alloc;
use crate::free;
use crate::heap;
use crate::os;
use crate::pool::pool_of;
use crate::size_class::{block_size, class_of, is_small, ALIGNMENT};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::Ordering;

/// The pymalloc-style allocator. All instances share one set of arenas and heaps.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: tidemark_alloc::Pymalloc = tidemark_alloc::Pymalloc::new();
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// ```
#[derive(Clone, Copy, Default, Debug)]
pub struct Pymalloc;

impl Pymalloc {
    pub const fn new() -> Self {
        Pymalloc
    }
}

// SAFETY: small blocks come from pools of the right class, 16-byte aligned and at least the
// requested size; everything else comes from glibc with the requested alignment; frees are
// routed back to where the block came from (see the module docs).
unsafe impl GlobalAlloc for Pymalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_small(layout.size(), layout.align()) {
            // SAFETY: the class of a small size is below NUM_CLASSES.
            unsafe { alloc::alloc(class_of(layout.size())) }
        } else {
            raw_alloc(layout.size(), layout.align(), false)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_small(layout.size(), layout.align()) {
            // SAFETY: a small layout's block came from a pool (the caller passes the layout
            // the block was allocated or last reallocated with).
            unsafe { free::free(ptr) }
        } else {
            // SAFETY: a large layout's block came from glibc.
            unsafe { raw_free(ptr, layout.size()) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_small(layout.size(), layout.align()) {
            // SAFETY: as in `alloc`.
            unsafe { alloc::alloc_zeroed(class_of(layout.size())) }
        } else {
            raw_alloc(layout.size(), layout.align(), true)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let old_small = is_small(layout.size(), align);
        let new_small = is_small(new_size, align);
        if old_small && new_small {
            // SAFETY: `ptr` is a live pool block.
            let capacity = unsafe { block_capacity(ptr) };
            if fits_in_place(new_size, capacity) {
                return ptr;
            }
        } else if !old_small && !new_small && align <= ALIGNMENT {
            // SAFETY: a live glibc block, resized by glibc (alignment ≤ 16 is malloc's own).
            let new = unsafe { os::raw_realloc(ptr, new_size) };
            if !new.is_null() {
                heap::count_raw(0, 0, new_size.wrapping_sub(layout.size()) as u64);
            }
            return new;
        }
        // SAFETY: `align` and `new_size` come from a valid layout resized per the contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: move to a block of the path the new layout belongs to.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Keep a block in place when the new size fits and wastes less than a quarter of it
/// (obmalloc's rule: shrinking by more than 25% moves to a smaller class).
#[inline]
fn fits_in_place(new_size: usize, capacity: usize) -> bool {
    new_size <= capacity && 4 * new_size > 3 * capacity
}

/// The block size of the pool holding `ptr`.
///
/// # Safety
/// `ptr` must be a live pool block.
#[inline]
unsafe fn block_capacity(ptr: *mut u8) -> usize {
    // SAFETY: a live block's pool header is initialized.
    block_size(unsafe { (*pool_of(ptr)).class.load(Ordering::Relaxed) } as usize)
}

#[inline]
fn raw_alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let p = if align <= ALIGNMENT {
        if zeroed {
            os::raw_calloc(size)
        } else {
            os::raw_malloc(size)
        }
    } else {
        let p = os::raw_memalign(align, size);
        if zeroed && !p.is_null() {
            // SAFETY: `p` is a fresh block of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    };
    if !p.is_null() {
        heap::count_raw(1, 1, size as u64);
    }
    p
}

/// # Safety
/// `p` must be a live glibc block of `size` requested bytes.
#[inline]
unsafe fn raw_free(p: *mut u8, size: usize) {
    heap::count_raw(0, u64::MAX, (size as u64).wrapping_neg());
    // SAFETY: guaranteed by the caller.
    unsafe { os::raw_free(p) }
}

/// The C malloc family over the same heaps, for callers that have no layout (the preload).
/// Pointers that are not in a tidemark arena are glibc's and go to glibc.
impl Pymalloc {
    /// C `malloc`: `size` 0 gives a unique minimum block.
    #[inline]
    pub fn c_malloc(&self, size: usize) -> *mut u8 {
        if is_small(size, ALIGNMENT) {
            // SAFETY: the class of a small size is below NUM_CLASSES.
            unsafe { alloc::alloc(class_of(size)) }
        } else {
            c_raw_alloc(size, false)
        }
    }

    /// C `calloc`: null (the caller sets ENOMEM) when `count * size` overflows.
    pub fn c_calloc(&self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return ptr::null_mut();
        };
        if is_small(total, ALIGNMENT) {
            // SAFETY: as in `malloc`.
            unsafe { alloc::alloc_zeroed(class_of(total)) }
        } else {
            c_raw_alloc(total, true)
        }
    }

    /// C `memalign` / `aligned_alloc` / `posix_memalign` (`align` a power of two).
    pub fn c_memalign(&self, align: usize, size: usize) -> *mut u8 {
        if is_small(size, align) {
            // SAFETY: as in `malloc`; pool blocks are 16-byte aligned.
            unsafe { alloc::alloc(class_of(size)) }
        } else {
            let p = os::raw_memalign(align, size);
            if !p.is_null() {
                // SAFETY: a live glibc block.
                heap::count_raw(1, 1, unsafe { os::raw_usable_size(p) } as u64);
            }
            p
        }
    }

    /// C `free`. (Always inlined: the preload's `free` is this and a jump.)
    ///
    /// # Safety
    /// `p` must be null or a live block from this allocator or glibc.
    #[inline(always)]
    pub unsafe fn c_free(&self, p: *mut u8) {
        if crate::arena_map::contains(p) {
            // SAFETY: inside one of our arenas, so a live pool block (per the contract).
            unsafe { free::free(p) }
        } else if !p.is_null() {
            // SAFETY: a live glibc block.
            unsafe {
                heap::count_raw(0, u64::MAX, (os::raw_usable_size(p) as u64).wrapping_neg());
                os::raw_free(p);
            }
        }
    }

    /// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns
    /// null, as glibc does.
    ///
    /// # Safety
    /// `p` must be null or a live block from this allocator or glibc.
    pub unsafe fn c_realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            return self.c_malloc(size);
        }
        if size == 0 {
            // SAFETY: guaranteed by the caller.
            unsafe { self.c_free(p) };
            return ptr::null_mut();
        }
        let ours = crate::arena_map::contains(p);
        if ours {
            // SAFETY: a live pool block.
            let capacity = unsafe { block_capacity(p) };
            if fits_in_place(size, capacity) {
                return p;
            }
        } else if !is_small(size, ALIGNMENT) {
            // SAFETY: a live glibc block, staying with glibc.
            unsafe {
                let old = os::raw_usable_size(p);
                let new = os::raw_realloc(p, size);
                if !new.is_null() {
                    let grown = os::raw_usable_size(new).wrapping_sub(old);
                    heap::count_raw(0, 0, grown as u64);
                }
                return new;
            }
        }
        // SAFETY: a live block of either kind; copy what both blocks hold.
        unsafe {
            let old_size = self.c_usable_size(p);
            let new = self.c_malloc(size);
            if !new.is_null() {
                ptr::copy_nonoverlapping(p, new, old_size.min(size));
                self.c_free(p);
            }
            new
        }
    }

    /// C `malloc_usable_size`.
    ///
    /// # Safety
    /// `p` must be null or a live block from this allocator or glibc.
    pub unsafe fn c_usable_size(&self, p: *mut u8) -> usize {
        if crate::arena_map::contains(p) {
            // SAFETY: a live pool block.
            unsafe { block_capacity(p) }
        } else if p.is_null() {
            0
        } else {
            // SAFETY: a live glibc block.
            unsafe { os::raw_usable_size(p) }
        }
    }
}

fn c_raw_alloc(size: usize, zeroed: bool) -> *mut u8 {
    let p = if zeroed {
        os::raw_calloc(size)
    } else {
        os::raw_malloc(size)
    };
    if !p.is_null() {
        // SAFETY: a live glibc block.
        heap::count_raw(1, 1, unsafe { os::raw_usable_size(p) } as u64);
    }
    p
}
