//! Arenas: 1 MiB of address space from `mmap`, cut into 64 pools, shared by all threads.
//!
//! Heaps take empty pools from here and give them back when all their blocks are free. Like
//! obmalloc, we take pools from the *fullest* arena that has one free, so that lightly used
//! arenas drain and can be returned to the OS with `munmap`.
//!
//! Wholly free arenas are kept for reuse, up to `RETAINED_FREE_ARENAS` (64 MiB), before any
//! is unmapped. obmalloc keeps one spare; that makes a program that repeatedly builds and drops
//! a structure of a few dozen MiB unmap and re-fault every page on every round (measured on
//! the bintrees benchmark: 60k page faults where jemalloc took 9k). jemalloc and mimalloc hold
//! freed memory for a while too (time-based decay); a count bound keeps this deterministic,
//! and a program that frees a GiB still sees its RSS drop by over 90%.
//!
//! Arenas sit in buckets by their number of free pools (1..=64); a bitmap of non-empty buckets
//! finds the fullest usable arena in one `trailing_zeros`. Arenas with no free pool are in no
//! bucket. Arena descriptors live in a table reserved with `mmap` (never through the global
//! allocator), indexed by the `arena` field of each pool header.
//!
//! Everything here runs under one lock, on the slow path only: a heap comes here once per
//! 16 KiB pool it fills or drains, not per block.

use crate::arena_map;
use crate::os;
use crate::pool::{Pool, UNUSED};
use crate::size_class::{ARENA_SIZE, POOLS_PER_ARENA, POOL_SIZE};
use crate::sync::SpinLock;
use core::ptr;
use core::sync::atomic::Ordering;

/// Wholly free arenas kept mapped for reuse before further ones are unmapped.
const RETAINED_FREE_ARENAS: u32 = 64;

/// Upper bound on arenas alive at once (1 TiB of small blocks). The descriptor table is
/// reserved for all of them but only touched as arenas are made.
const MAX_ARENAS: usize = 1 << 20;
const NIL: u32 = u32::MAX;

struct Arena {
    /// Base address; 0 while the descriptor is unused.
    base: usize,
    /// Free pools: those on `free_pools` plus those never carved.
    nfree: u32,
    /// Pools carved so far; pools at and above this index have never been touched.
    ncarved: u32,
    /// Pools given back, linked through their headers.
    free_pools: *mut Pool,
    /// Links in the bucket of arenas with the same `nfree`, or in the unused-descriptor list.
    prev: u32,
    next: u32,
}

/// Counters reported by `stats()`.
#[derive(Clone, Copy, Default)]
pub struct ArenaCounters {
    pub allocated_total: usize,
    pub reclaimed: usize,
    pub highwater: usize,
    pub current: usize,
}

struct Arenas {
    table: *mut Arena,
    /// Descriptors ever used (the table's high-water mark).
    len: u32,
    /// Head of the unused-descriptor list.
    unused: u32,
    /// `buckets[k]`: arenas with exactly `k` free pools (k in 1..=64).
    buckets: [u32; POOLS_PER_ARENA + 1],
    /// Bit `k - 1` set when `buckets[k]` is non-empty.
    nonempty: u64,
    /// Arenas in `buckets[POOLS_PER_ARENA]`: wholly free, kept for reuse.
    free_arenas: u32,
    counters: ArenaCounters,
}

// SAFETY: the raw pointers point into our own mappings; all access is under the lock.
unsafe impl Send for Arenas {}

static ARENAS: SpinLock<Arenas> = SpinLock::new(Arenas::new());

/// Holds the arena lock across `fork` (see `thread::register_fork_handlers`).
pub fn fork_prepare() {
    // SAFETY: released by `fork_release` in the parent and in the child.
    unsafe { ARENAS.force_lock() }
}

/// Releases the lock taken by `fork_prepare`.
pub fn fork_release() {
    // SAFETY: taken by `fork_prepare` before the fork.
    unsafe { ARENAS.force_unlock() }
}

/// Takes an empty pool, mapping a new arena when none has one and `grow` allows it. Returns
/// the pool header and whether its memory is fresh from `mmap` (all zero), or `None` when out
/// of memory (or no pool is free and `grow` is false).
pub fn take_pool(grow: bool) -> Option<(*mut Pool, bool)> {
    ARENAS.with(|arenas| arenas.take_pool(grow))
}

/// Gives back pools linked through `next` (their class already set to `UNUSED`).
///
/// # Safety
/// Every pool on the list must be empty and no longer referenced by any heap.
pub unsafe fn give_back(list: *mut Pool) {
    ARENAS.with(|arenas| {
        let mut pool = list;
        while !pool.is_null() {
            // SAFETY: the caller hands over each pool on the list.
            unsafe {
                let next = (*pool).next;
                arenas.give_back(pool);
                pool = next;
            }
        }
    });
}

/// Visits every carved pool of every arena (for statistics), with the arena counters and the
/// number of never-carved pools. Runs under the arena lock: `visit` must not allocate.
pub fn visit(mut visit: impl FnMut(&Pool)) -> (ArenaCounters, usize) {
    ARENAS.with(|arenas| {
        let mut uncarved = 0;
        for index in 0..arenas.len {
            // SAFETY: `index < len`, inside the part of the table that has been touched.
            let arena = unsafe { &*arenas.table.add(index as usize) };
            if arena.base == 0 {
                continue;
            }
            uncarved += POOLS_PER_ARENA - arena.ncarved as usize;
            for p in 0..arena.ncarved as usize {
                // SAFETY: carved pools of a live arena have initialized headers.
                visit(unsafe { &*((arena.base + p * POOL_SIZE) as *const Pool) });
            }
        }
        (arenas.counters, uncarved)
    })
}

/// Visits every live arena as `(descriptor index, base, pools carved)`, under the arena lock:
/// `visit` must not allocate. Pools at and above the carved count have never been touched.
pub fn visit_arenas(mut visit: impl FnMut(usize, usize, usize)) {
    ARENAS.with(|arenas| {
        for index in 0..arenas.len {
            // SAFETY: `index < len`, inside the part of the table that has been touched.
            let arena = unsafe { &*arenas.table.add(index as usize) };
            if arena.base != 0 {
                visit(index as usize, arena.base, arena.ncarved as usize);
            }
        }
    })
}

/// Arena descriptors ever used: every descriptor index handed out so far is below this.
pub fn descriptors_used() -> usize {
    ARENAS.with(|arenas| arenas.len as usize)
}

impl Arenas {
    const fn new() -> Self {
        Arenas {
            table: ptr::null_mut(),
            len: 0,
            unused: NIL,
            buckets: [NIL; POOLS_PER_ARENA + 1],
            nonempty: 0,
            free_arenas: 0,
            counters: ArenaCounters {
                allocated_total: 0,
                reclaimed: 0,
                highwater: 0,
                current: 0,
            },
        }
    }

    fn arena(&mut self, index: u32) -> &mut Arena {
        // SAFETY: indices handed around are below `len`, inside the touched table.
        unsafe { &mut *self.table.add(index as usize) }
    }

    fn take_pool(&mut self, grow: bool) -> Option<(*mut Pool, bool)> {
        if self.nonempty == 0 {
            if !grow {
                return None;
            }
            self.new_arena()?;
        }
        let k = self.nonempty.trailing_zeros() + 1;
        let index = self.buckets[k as usize];
        self.unlink(index, k);
        let arena = self.arena(index);
        arena.nfree -= 1;
        let (pool, fresh) = if !arena.free_pools.is_null() {
            let pool = arena.free_pools;
            // SAFETY: pools on the free list are ours and unused.
            arena.free_pools = unsafe { (*pool).next };
            (pool, false)
        } else {
            let pool = (arena.base + arena.ncarved as usize * POOL_SIZE) as *mut Pool;
            arena.ncarved += 1;
            // SAFETY: a never-carved pool of a live arena: fresh mapped memory, ours alone.
            unsafe { (*pool).arena = index };
            (pool, true)
        };
        let nfree = arena.nfree;
        if nfree > 0 {
            self.link(index, nfree);
        }
        Some((pool, fresh))
    }

    /// # Safety
    /// `pool` must be an empty pool of a live arena that nobody references.
    unsafe fn give_back(&mut self, pool: *mut Pool) {
        // SAFETY: guaranteed by the caller.
        let index = unsafe {
            (*pool).class.store(UNUSED, Ordering::Relaxed);
            (*pool).arena
        };
        let arena = self.arena(index);
        let old = arena.nfree;
        // SAFETY: as above; the pool joins the arena's free list.
        unsafe { (*pool).next = arena.free_pools };
        arena.free_pools = pool;
        arena.nfree = old + 1;
        if old > 0 {
            self.unlink(index, old);
        }
        if old + 1 == POOLS_PER_ARENA as u32 && self.free_arenas >= RETAINED_FREE_ARENAS {
            // Wholly free, and enough are kept already: return it to the OS.
            self.release(index);
        } else {
            self.link(index, old + 1);
        }
    }

    fn new_arena(&mut self) -> Option<()> {
        if self.table.is_null() {
            if !arena_map::ensure_reserved() {
                return None;
            }
            self.table = os::map(MAX_ARENAS * core::mem::size_of::<Arena>()) as *mut Arena;
            if self.table.is_null() {
                return None;
            }
        }
        let index = if self.unused != NIL {
            let index = self.unused;
            self.unused = self.arena(index).next;
            index
        } else if (self.len as usize) < MAX_ARENAS {
            self.len += 1;
            self.len - 1
        } else {
            return None;
        };
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE);
        if base.is_null() {
            self.arena(index).next = self.unused;
            self.unused = index;
            return None;
        }
        *self.arena(index) = Arena {
            base: base as usize,
            nfree: POOLS_PER_ARENA as u32,
            ncarved: 0,
            free_pools: ptr::null_mut(),
            prev: NIL,
            next: NIL,
        };
        arena_map::insert(base as usize);
        self.link(index, POOLS_PER_ARENA as u32);
        let c = &mut self.counters;
        c.allocated_total += 1;
        c.current += 1;
        c.highwater = c.highwater.max(c.current);
        Some(())
    }

    fn release(&mut self, index: u32) {
        let base = self.arena(index).base;
        arena_map::remove(base);
        // SAFETY: every pool of the arena is free and unreferenced; the map no longer claims it.
        unsafe { os::unmap(base as *mut u8, ARENA_SIZE) };
        let unused = self.unused;
        let arena = self.arena(index);
        arena.base = 0;
        arena.next = unused;
        self.unused = index;
        self.counters.reclaimed += 1;
        self.counters.current -= 1;
    }

    fn link(&mut self, index: u32, k: u32) {
        if k == POOLS_PER_ARENA as u32 {
            self.free_arenas += 1;
        }
        let head = self.buckets[k as usize];
        if head != NIL {
            self.arena(head).prev = index;
        }
        let arena = self.arena(index);
        arena.prev = NIL;
        arena.next = head;
        self.buckets[k as usize] = index;
        self.nonempty |= 1 << (k - 1);
    }

    fn unlink(&mut self, index: u32, k: u32) {
        if k == POOLS_PER_ARENA as u32 {
            self.free_arenas -= 1;
        }
        let (prev, next) = {
            let arena = self.arena(index);
            (arena.prev, arena.next)
        };
        if prev != NIL {
            self.arena(prev).next = next;
        } else {
            self.buckets[k as usize] = next;
            if next == NIL {
                self.nonempty &= !(1 << (k - 1));
            }
        }
        if next != NIL {
            self.arena(next).prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private set of arenas (the global one serves the rest of the test binary).
    fn take(arenas: &mut Arenas, n: usize) -> Vec<*mut Pool> {
        (0..n)
            .map(|_| arenas.take_pool(true).expect("memory").0)
            .collect()
    }

    fn arena_base(pool: *mut Pool) -> usize {
        pool as usize & !(ARENA_SIZE - 1)
    }

    #[test]
    fn pools_come_fresh_then_reused_and_fullest_arena_first() {
        let mut arenas = Arenas::new();
        let first = take(&mut arenas, POOLS_PER_ARENA);
        assert!(first.iter().all(|&p| arena_base(p) == arena_base(first[0])));
        assert!(crate::arena_map::contains(first[0] as *const u8));
        let second = take(&mut arenas, 2);
        assert_ne!(arena_base(second[0]), arena_base(first[0]));
        assert_eq!(arenas.counters.current, 2);

        // Free 3 pools of the first arena: it has 3 free, the second 62, so the first (the
        // fuller) serves next, and its pools are no longer fresh.
        for &p in &first[..3] {
            // SAFETY: pools taken above, unused.
            unsafe { arenas.give_back(p) };
        }
        let (again, fresh) = arenas.take_pool(true).unwrap();
        assert_eq!(arena_base(again), arena_base(first[0]));
        assert!(!fresh);
        let (_, fresh) = {
            let rest = take(&mut arenas, 2);
            assert!(rest.iter().all(|&p| arena_base(p) == arena_base(first[0])));
            arenas.take_pool(true).unwrap()
        };
        assert!(
            fresh,
            "the first arena is full again, so the second's fresh pools serve"
        );
    }

    #[test]
    fn wholly_free_arenas_are_kept_up_to_the_bound_then_unmapped() {
        let mut arenas = Arenas::new();
        let n = RETAINED_FREE_ARENAS as usize + 3;
        let pools = take(&mut arenas, n * POOLS_PER_ARENA);
        assert_eq!(arenas.counters.current, n);
        let bases: Vec<usize> = (0..n)
            .map(|i| arena_base(pools[i * POOLS_PER_ARENA]))
            .collect();
        for &p in &pools {
            // SAFETY: pools taken above, unused.
            unsafe { arenas.give_back(p) };
        }
        assert_eq!(arenas.free_arenas, RETAINED_FREE_ARENAS);
        assert_eq!(arenas.counters.current, RETAINED_FREE_ARENAS as usize);
        assert_eq!(arenas.counters.reclaimed, 3);
        assert_eq!(arenas.counters.highwater, n);
        // The kept arenas are still claimed by the arena map. (The unmapped ones may already
        // have been mapped again by other tests' allocations, so they prove nothing.)
        let kept = &bases[..RETAINED_FREE_ARENAS as usize];
        assert!(kept
            .iter()
            .all(|&b| crate::arena_map::contains(b as *const u8)));
    }
}
