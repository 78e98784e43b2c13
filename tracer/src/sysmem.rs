//! Memory for the tracer's own tables, straight from the kernel.
//!
//! The tracer's tables must never go through the traced global allocator (that would recurse
//! into the hook), and under the LD_PRELOAD shim not even through libc malloc (which is the
//! shim). So every table here lives in anonymous `mmap` memory. Tables are few and grow
//! geometrically, so page granularity costs nothing that matters.

use core::ptr::null_mut;

/// Maps `bytes` (rounded up to pages) of zeroed memory; null on failure.
pub(crate) fn map_zeroed(bytes: usize) -> *mut u8 {
    if bytes == 0 {
        return null_mut();
    }
    // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p as *mut u8
    }
}

/// Unmaps memory from `map_zeroed` with the same `bytes`.
///
/// # Safety
/// `p` must come from `map_zeroed(bytes)` and not be used afterwards.
pub(crate) unsafe fn unmap(p: *mut u8, bytes: usize) {
    if !p.is_null() && bytes != 0 {
        // SAFETY: the caller passes a live mapping of exactly this length.
        unsafe { libc::munmap(p as *mut libc::c_void, bytes) };
    }
}

/// A growable array of `Copy` values in mmap'd memory. Growth failure is reported (push
/// returns false), never a panic.
pub(crate) struct MapVec<T: Copy> {
    ptr: *mut T,
    len: usize,
    cap: usize,
}

// SAFETY: MapVec owns its mapping; T is plain data.
unsafe impl<T: Copy + Send> Send for MapVec<T> {}

impl<T: Copy> MapVec<T> {
    pub(crate) const fn new() -> Self {
        MapVec {
            ptr: null_mut(),
            len: 0,
            cap: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub(crate) fn push(&mut self, value: T) -> bool {
        if self.len == self.cap && !self.grow() {
            return false;
        }
        // SAFETY: len < cap after grow, so the slot lies inside the mapping.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
        true
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the first `len` elements are initialized and the mapping is live.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn grow(&mut self) -> bool {
        let size = core::mem::size_of::<T>().max(1);
        let new_cap = if self.cap == 0 {
            (4096 / size).max(4)
        } else {
            self.cap * 2
        };
        let Some(bytes) = new_cap.checked_mul(size) else {
            return false;
        };
        let p = map_zeroed(bytes) as *mut T;
        if p.is_null() {
            return false;
        }
        if !self.ptr.is_null() {
            // SAFETY: both regions are live, distinct, and hold at least `len` elements.
            unsafe {
                core::ptr::copy_nonoverlapping(self.ptr, p, self.len);
                unmap(self.ptr as *mut u8, self.cap * size);
            }
        }
        self.ptr = p;
        self.cap = new_cap;
        true
    }
}

impl<T: Copy> Drop for MapVec<T> {
    fn drop(&mut self) {
        // SAFETY: ptr/cap describe our own mapping (or null).
        unsafe {
            unmap(
                self.ptr as *mut u8,
                self.cap * core::mem::size_of::<T>().max(1),
            )
        };
    }
}
