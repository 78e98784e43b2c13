//! A thread's framehop rule caches: several of framehop's own, each for its share of the
//! addresses, so that they act as one cache several times the size.
//!
//! framehop remembers the unwind rule of an address in a direct-mapped table of 509 slots
//! (`address % 509`), and a miss costs a binary search of `.eh_frame_hdr` and an evaluation of
//! the CIE and FDE programs (~4,000 instructions). CPython's eval loop has hundreds of call
//! sites that come back between two allocations; with 509 slots they evict each other, and a
//! traced malloc spent about a third of its instructions on misses. framehop does not let
//! the table be made bigger, but a cache may be used with any unwinder (it holds rules and a
//! gimli scratch context only), so the walks pick one of `WAYS` caches by `address / 509`:
//! an address then lands in slot `address % 509` of cache `(address / 509) % WAYS`, the same
//! as slot `address % (509 * WAYS)` of one direct-mapped table. The rules are framehop's,
//! computed the same way, so the walks give the same frames as with one cache.
//!
//! A cache is about 37 KiB (12 KiB of rule slots, the rest gimli's context, touched only on a
//! miss); a way is made when an address first falls in it, so a thread that captures from
//! much code holds ~600 KiB of them. With 8 ways the CPython workload (bench/scripts) still
//! looked up 28,000 rules against 9,400 with 16, most of those the first sight of an address.

use framehop::x86_64::CacheX86_64;
use framehop::MustNotAllocateDuringUnwind;

/// framehop's cache, with gimli's scratch preallocated (see module_set.rs).
pub type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;
use framehop::FrameAddress;

/// framehop's slots per cache (`rule_cache.rs`: `CACHE_ENTRY_COUNT`).
const SLOTS: u64 = 509;
/// Caches per thread.
pub const WAYS: usize = 16;

pub struct RuleCaches {
    /// Each from `Box::into_raw` (freed by `Drop`), or null until first needed, or (when
    /// memory was short then) the same as `ways[0]`, which is always made.
    ways: [*mut Cache; WAYS],
}

extern "C" {
    fn __libc_malloc(size: usize) -> *mut core::ffi::c_void;
    fn __libc_free(ptr: *mut core::ffi::c_void);
}

/// Heap bytes one `CacheX86_64::new()` asks for, rounded up: the rule table (509 slots of
/// 24 bytes), gimli's unwind context (a stack of 4 rows of 192 register rules) and the
/// boxes around them.
const CACHE_HEAP_BYTES: usize = 48 << 10;

/// A new empty cache; None when memory is short.
///
/// framehop allocates inside `CacheX86_64::new` with `Box::new`, which aborts the process when
/// the allocator returns null; so first ask glibc for as much and give it back: when that
/// fails, no cache is made. (The freed block, below glibc's mmap threshold, serves the boxes
/// right after, unless another thread takes the memory in between: the abort is made
/// unlikely, not impossible.)
#[cold]
#[inline(never)]
fn new_cache() -> Option<*mut Cache> {
    // SAFETY: a plain allocation, freed at once.
    unsafe {
        let probe = __libc_malloc(CACHE_HEAP_BYTES);
        if probe.is_null() {
            return None;
        }
        __libc_free(probe);
    }
    Some(Box::into_raw(Box::new(Cache::new_in())))
}

impl RuleCaches {
    /// The first way (the others are made when first needed); None when memory is short.
    #[cold]
    pub fn new() -> Option<RuleCaches> {
        let mut ways = [core::ptr::null_mut(); WAYS];
        ways[0] = new_cache()?;
        Some(RuleCaches { ways })
    }

    /// The cache that holds (or will hold) the rule for `address`. May allocate (the first
    /// time a way is used).
    #[inline(always)]
    pub fn for_address(&mut self, address: FrameAddress) -> &mut Cache {
        let way = (address.address_for_lookup() / SLOTS) as usize % WAYS;
        let mut p = self.ways[way];
        if p.is_null() {
            p = self.make(way);
        }
        // SAFETY: made by `new_cache`, lives until `drop`; `&mut self` makes the borrow
        // exclusive.
        unsafe { &mut *p }
    }

    /// Makes way `way`, or lets way 0 stand in for it when memory is short (its rules are as
    /// good; only its slots are shared).
    #[cold]
    fn make(&mut self, way: usize) -> *mut Cache {
        let p = new_cache().unwrap_or(self.ways[0]);
        self.ways[way] = p;
        p
    }

    /// Lookups that found their rule, and those that did not, over all ways.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.owned().fold((0, 0), |(h, m), w| {
            // SAFETY: as in `for_address`.
            let s = unsafe { &*w }.stats();
            (h + s.hits(), m + s.misses())
        })
    }

    /// Each cache made, once.
    fn owned(&self) -> impl Iterator<Item = *mut Cache> + '_ {
        let first = self.ways[0];
        self.ways
            .iter()
            .enumerate()
            .filter(move |&(i, &w)| !w.is_null() && (i == 0 || w != first))
            .map(|(_, &w)| w)
    }
}

impl Drop for RuleCaches {
    fn drop(&mut self) {
        let owned: [*mut Cache; WAYS] = {
            let mut a = [core::ptr::null_mut(); WAYS];
            for (slot, w) in a.iter_mut().zip(self.owned()) {
                *slot = w;
            }
            a
        };
        for w in owned.into_iter().filter(|w| !w.is_null()) {
            // SAFETY: made by Box::into_raw in `new_cache`; `owned` names each once.
            drop(unsafe { Box::from_raw(w) });
        }
    }
}
