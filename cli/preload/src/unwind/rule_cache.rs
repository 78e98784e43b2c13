//! The thread's framehop rule cache, made without aborting when memory is short.
//!
//! framehop remembers the unwind rule of an address in a direct-mapped table of 509 slots; a
//! miss costs a binary search of `.eh_frame_hdr` and an evaluation of the CIE and FDE
//! programs (~4,000 instructions). The walks rarely ask it: a frame's step comes from its
//! shape (steps.rs), learnt once per return address, so the table only serves the learning,
//! the addresses no shape fits, and the full walks of `TIDEMARK_PRELOAD_UNWIND_MEMO=0` and
//! `check`. (Sixteen such tables, picked by `address / 509`, looked up 8,100 rules on the
//! CPython workload in bench/scripts against 8,200 with one, once the shapes were in front.)

use framehop::x86_64::CacheX86_64;
use framehop::MustNotAllocateDuringUnwind;

/// framehop's cache, with gimli's scratch preallocated (see module_set.rs).
pub type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut core::ffi::c_void;
    fn __libc_free(ptr: *mut core::ffi::c_void);
}

/// Heap bytes `Cache::new_in()` asks for, rounded up: the rule table (509 slots of 24
/// bytes), gimli's unwind context (a stack of 4 rows of 192 register rules) and the boxes
/// around them.
const CACHE_HEAP_BYTES: usize = 48 << 10;

/// The cache, on the heap (`Box::into_raw`; freed by `Drop`).
pub struct RuleCache(*mut Cache);

impl RuleCache {
    /// A new empty cache; None when memory is short.
    ///
    /// framehop allocates inside `new_in` with `Box::new`, which aborts the process when the
    /// allocator returns null; so first ask glibc for as much and give it back: when that
    /// fails, no cache is made (and the thread records its events without stacks). The
    /// freed block, below glibc's mmap threshold, serves the boxes right after, unless
    /// another thread takes the memory in between: the abort is made unlikely, not
    /// impossible.
    #[cold]
    pub fn new() -> Option<RuleCache> {
        // SAFETY: a plain allocation, freed at once.
        unsafe {
            let probe = __libc_malloc(CACHE_HEAP_BYTES);
            if probe.is_null() {
                return None;
            }
            __libc_free(probe);
        }
        Some(RuleCache(Box::into_raw(Box::new(Cache::new_in()))))
    }

    #[inline(always)]
    pub fn get(&mut self) -> &mut Cache {
        // SAFETY: made in `new`, lives until `drop`; `&mut self` makes the borrow exclusive.
        unsafe { &mut *self.0 }
    }

    /// Lookups that found their rule, and those that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        // SAFETY: as in `get`.
        let s = unsafe { &*self.0 }.stats();
        (s.hits(), s.misses())
    }
}

impl Drop for RuleCache {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `new`, dropped once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}
