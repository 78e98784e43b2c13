//! The live trace table: (domain, pointer) → (size, stack id, depth).
//!
//! tracemalloc keeps one hash table under the GIL. Here any number of threads allocate at once,
//! so the table is split into 64 shards chosen by a hash of the pointer, each behind its own
//! non-allocating `SpinLock`: two threads collide only when their pointers hash to the same
//! shard, and then only for a few loads. Each shard is an open-addressing table with linear
//! probing and backward-shift deletion (no tombstones, so long runs of churn don't degrade it),
//! stored in mmap'd memory.
//!
//! Blocks of tidemark's own pools (domain 0: the global allocator's) skip the shards: the
//! allocator keeps a word per block for us (`tidemark_alloc::trace_slot`), found from the
//! pointer with a few loads and a multiply, so recording a trace is one store and forgetting it
//! one load and one store, with no lock and no probe into a table as big as the heap. The word
//! packs the trace (see `Word`); a trace that does not fit (a `track` of an odd size) goes to
//! the shards and leaves the `ELSEWHERE` mark in its word.

use crate::counters;
use crate::stack::StackId;
use crate::sysmem::{map_zeroed, unmap, MapVec};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use tidemark_alloc::sync::SpinLock;

/// One live block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct TraceEntry {
    pub ptr: usize, // 0 = empty slot
    pub size: usize,
    pub stack: StackId,
    pub domain: u32,
    /// Frames on the stack when it was captured (before truncation), at most u32::MAX.
    pub total_nframe: u32,
    _pad: u32,
}

impl TraceEntry {
    pub fn new(domain: u32, ptr: usize, size: usize, stack: StackId, total_nframe: u32) -> Self {
        TraceEntry {
            ptr,
            size,
            stack,
            domain,
            total_nframe,
            _pad: 0,
        }
    }
}

struct Shard {
    slots: *mut TraceEntry,
    cap: usize, // 0 or a power of two
    len: usize,
}

// SAFETY: the shard owns its mapping and is only reached through its lock.
unsafe impl Send for Shard {}

#[repr(align(128))]
struct Padded {
    lock: SpinLock<Shard>,
    /// The shard's slots and cap - 1, mirrored (under the lock) for `prefetch`, which reads them
    /// without it: a stale value only prefetches a useless line.
    slots_hint: AtomicPtr<TraceEntry>,
    mask_hint: AtomicUsize,
}

const SHARDS: usize = 64;
static TABLE: [Padded; SHARDS] = [const {
    Padded {
        lock: SpinLock::new(Shard {
            slots: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }),
        slots_hint: AtomicPtr::new(core::ptr::null_mut()),
        mask_hint: AtomicUsize::new(0),
    }
}; SHARDS];

/// Traces dropped because the table could not grow.
static LOST: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn hash(domain: u32, ptr: usize) -> u64 {
    let h = (ptr as u64 ^ ((domain as u64) << 47)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 32)
}

#[inline]
fn padded_of(h: u64) -> &'static Padded {
    &TABLE[(h >> 58) as usize & (SHARDS - 1)]
}

#[inline]
fn shard_of(h: u64) -> &'static SpinLock<Shard> {
    &padded_of(h).lock
}

/// Where the trace of (domain, ptr) lives: the allocator's word for the block, or the shards.
#[derive(Clone, Copy)]
pub(crate) enum Place {
    Word(&'static AtomicU64),
    Shards,
}

/// Finds where (domain, ptr)'s trace will go and starts loading that memory, so that the cache
/// miss (both homes are as big as the number of live blocks, and hit at random) overlaps the
/// stack capture instead of following it. Pass the result to `insert_at`.
#[inline]
pub(crate) fn place(domain: u32, ptr: usize) -> Place {
    let place = match word_of(domain, ptr) {
        Some(w) => Place::Word(w),
        None => Place::Shards,
    };
    #[cfg(target_arch = "x86_64")]
    {
        let target = match place {
            Place::Word(w) => w as *const AtomicU64 as *const i8,
            Place::Shards => {
                let h = hash(domain, ptr);
                let p = padded_of(h);
                let slots = p.slots_hint.load(Ordering::Relaxed);
                if slots.is_null() {
                    return place;
                }
                slots.wrapping_add(h as usize & p.mask_hint.load(Ordering::Relaxed)) as *const i8
            }
        };
        // SAFETY: a prefetch never faults and has no effect on memory, whatever the address
        // (the mapping may have been replaced since the hint was read).
        unsafe { core::arch::x86_64::_mm_prefetch(target, core::arch::x86_64::_MM_HINT_T0) };
    }
    place
}

/// A trace packed into the allocator's word for a block: bit 63 = present, bit 62 = the trace
/// is in the shards instead (`ELSEWHERE`), bits 45..62 = total_nframe (17 bits), bits 32..45 =
/// size (13 bits: a pool block holds at most 512 bytes), bits 0..32 = stack id.
struct Word;

impl Word {
    const PRESENT: u64 = 1 << 63;
    const ELSEWHERE: u64 = 1 << 62;
    const SIZE_BITS: u32 = 13;
    const NFRAME_BITS: u32 = 17;

    fn pack(e: &TraceEntry) -> Option<u64> {
        let fits = e.size < 1 << Self::SIZE_BITS && e.total_nframe < 1 << Self::NFRAME_BITS;
        fits.then_some(
            Self::PRESENT
                | (e.total_nframe as u64) << (32 + Self::SIZE_BITS)
                | (e.size as u64) << 32
                | e.stack as u64,
        )
    }

    #[inline(always)]
    fn size(w: u64) -> usize {
        (w >> 32) as usize & ((1 << Self::SIZE_BITS) - 1)
    }

    fn unpack(ptr: usize, w: u64) -> TraceEntry {
        let size = Self::size(w);
        let nframe = (w >> (32 + Self::SIZE_BITS)) as u32 & ((1 << Self::NFRAME_BITS) - 1);
        TraceEntry::new(0, ptr, size, w as u32, nframe)
    }
}

/// The allocator's word for (domain, ptr), when it has one: domain 0 and a block of our pools.
#[inline]
fn word_of(domain: u32, ptr: usize) -> Option<&'static AtomicU64> {
    if domain != 0 {
        return None;
    }
    tidemark_alloc::trace_slot(ptr as *const u8)
}

impl Padded {
    /// Runs `f` on the locked shard and refreshes the hints if `f` moved its slots.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        self.lock.with(|s| {
            let r = f(s);
            if self.slots_hint.load(Ordering::Relaxed) != s.slots {
                self.slots_hint.store(s.slots, Ordering::Relaxed);
                self.mask_hint
                    .store(s.cap.saturating_sub(1), Ordering::Relaxed);
            }
            r
        })
    }
}

impl Shard {
    #[inline]
    fn find(&self, domain: u32, ptr: usize, h: u64) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let mask = self.cap - 1;
        let mut i = h as usize & mask;
        loop {
            // SAFETY: i is masked to cap; the mapping holds cap slots.
            let e = unsafe { &*self.slots.add(i) };
            if e.ptr == 0 {
                return None;
            }
            if e.ptr == ptr && e.domain == domain {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts or replaces; returns the replaced entry's size, or None if there was none.
    /// Err(()) when the table is full and cannot grow.
    fn insert(&mut self, e: TraceEntry, h: u64) -> Result<Option<usize>, ()> {
        if let Some(i) = self.find(e.domain, e.ptr, h) {
            // SAFETY: i < cap.
            let slot = unsafe { &mut *self.slots.add(i) };
            let old = slot.size;
            *slot = e;
            return Ok(Some(old));
        }
        if (self.len + 1) * 2 > self.cap && !self.grow() && self.len + 1 >= self.cap {
            return Err(());
        }
        let mask = self.cap - 1;
        let mut i = h as usize & mask;
        // SAFETY: i is masked; the table keeps at least one empty slot so the loop ends.
        unsafe {
            while (*self.slots.add(i)).ptr != 0 {
                i = (i + 1) & mask;
            }
            *self.slots.add(i) = e;
        }
        self.len += 1;
        Ok(None)
    }

    fn remove(&mut self, domain: u32, ptr: usize, h: u64) -> Option<TraceEntry> {
        let mut i = self.find(domain, ptr, h)?;
        let mask = self.cap - 1;
        // SAFETY: all indices are masked to cap.
        unsafe {
            let removed = *self.slots.add(i);
            // Backward-shift deletion: pull later members of the probe run into the hole.
            let mut j = i;
            loop {
                j = (j + 1) & mask;
                let e = *self.slots.add(j);
                if e.ptr == 0 {
                    break;
                }
                let home = hash(e.domain, e.ptr) as usize & mask;
                // Move e into the hole at i if its home is not in (i, j] cyclically.
                if !home_in_gap(i, home, j) {
                    *self.slots.add(i) = e;
                    i = j;
                }
            }
            *self.slots.add(i) = TraceEntry::default();
            self.len -= 1;
            Some(removed)
        }
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 { 128 } else { self.cap * 2 };
        let slots = map_zeroed(new_cap * core::mem::size_of::<TraceEntry>()) as *mut TraceEntry;
        if slots.is_null() {
            return false;
        }
        let mask = new_cap - 1;
        for j in 0..self.cap {
            // SAFETY: j < old cap; i masked to new cap, which has free slots.
            unsafe {
                let e = *self.slots.add(j);
                if e.ptr == 0 {
                    continue;
                }
                let mut i = hash(e.domain, e.ptr) as usize & mask;
                while (*slots.add(i)).ptr != 0 {
                    i = (i + 1) & mask;
                }
                *slots.add(i) = e;
            }
        }
        // SAFETY: the old mapping is ours and no longer referenced.
        unsafe {
            unmap(
                self.slots as *mut u8,
                self.cap * core::mem::size_of::<TraceEntry>(),
            )
        };
        self.slots = slots;
        self.cap = new_cap;
        true
    }

    fn release(&mut self) {
        // SAFETY: slots/cap describe our mapping (or null).
        unsafe {
            unmap(
                self.slots as *mut u8,
                self.cap * core::mem::size_of::<TraceEntry>(),
            )
        };
        self.slots = core::ptr::null_mut();
        self.cap = 0;
        self.len = 0;
    }
}

/// Records a live block (replacing any trace of the same (domain, ptr)).
pub(crate) fn insert(e: TraceEntry) {
    let place = match word_of(e.domain, e.ptr) {
        Some(w) => Place::Word(w),
        None => Place::Shards,
    };
    insert_at(place, e);
}

/// `insert`, with the place already found by `place(e.domain, e.ptr)`.
#[inline]
pub(crate) fn insert_at(place: Place, e: TraceEntry) {
    let Place::Word(word) = place else {
        return insert_hashed(e);
    };
    // Only the block's owner (the thread that allocated it, or `track`'s caller) writes its
    // word while it is live: a plain load and store suffice.
    let old = word.load(Ordering::Relaxed);
    if old & Word::ELSEWHERE != 0 {
        remove_hashed(0, e.ptr);
    } else if old != 0 {
        counters::sub(Word::unpack(e.ptr, old).size);
    }
    match Word::pack(&e) {
        Some(w) => {
            word.store(w, Ordering::Relaxed);
            counters::add(e.size);
        }
        None => {
            word.store(Word::PRESENT | Word::ELSEWHERE, Ordering::Relaxed);
            insert_hashed(e);
        }
    }
}

fn insert_hashed(e: TraceEntry) {
    let h = hash(e.domain, e.ptr);
    match padded_of(h).with(|s| s.insert(e, h)) {
        Ok(None) => counters::add(e.size),
        Ok(Some(old)) => {
            counters::sub(old);
            counters::add(e.size);
        }
        Err(()) => {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Forgets a block; returns its trace if it had one.
pub(crate) fn remove(domain: u32, ptr: usize) -> Option<TraceEntry> {
    match take_word(domain, ptr) {
        Taken::Word(w) => Some(Word::unpack(ptr, w)),
        Taken::Untraced => None,
        Taken::Hashed => remove_hashed(domain, ptr),
    }
}

/// Forgets a block whose trace nobody wants back: the free path, which would otherwise build
/// and drop a `TraceEntry` per call.
#[inline]
pub(crate) fn forget(domain: u32, ptr: usize) {
    if let Taken::Hashed = take_word(domain, ptr) {
        remove_hashed(domain, ptr);
    }
}

/// What `take_word` found.
enum Taken {
    /// The trace was in the block's word (now cleared, its bytes uncounted).
    Word(u64),
    /// The block has a word and no trace (allocated before tracing started).
    Untraced,
    /// The trace is in the shards (the block has no word, or its word says `ELSEWHERE`).
    Hashed,
}

/// Clears the allocator's word for (domain, ptr) and uncounts its trace, when the trace lives
/// there. Only the block's owner (the thread freeing it) writes the word: plain load and store.
#[inline(always)]
fn take_word(domain: u32, ptr: usize) -> Taken {
    let Some(word) = word_of(domain, ptr) else {
        return Taken::Hashed;
    };
    let old = word.load(Ordering::Relaxed);
    if old == 0 {
        return Taken::Untraced;
    }
    word.store(0, Ordering::Relaxed);
    if old & Word::ELSEWHERE != 0 {
        return Taken::Hashed;
    }
    counters::sub(Word::size(old));
    Taken::Word(old)
}

fn remove_hashed(domain: u32, ptr: usize) -> Option<TraceEntry> {
    let h = hash(domain, ptr);
    let r = shard_of(h).with(|s| s.remove(domain, ptr, h));
    if let Some(e) = r {
        counters::sub(e.size);
    }
    r
}

pub(crate) fn get(domain: u32, ptr: usize) -> Option<TraceEntry> {
    if let Some(word) = word_of(domain, ptr) {
        let w = word.load(Ordering::Relaxed);
        if w & Word::ELSEWHERE == 0 {
            return (w != 0).then(|| Word::unpack(ptr, w));
        }
    }
    let h = hash(domain, ptr);
    shard_of(h).with(|s| {
        // SAFETY: find returns an index < cap.
        s.find(domain, ptr, h).map(|i| unsafe { *s.slots.add(i) })
    })
}

/// Copies every trace into `out` (mmap'd, so nothing here goes through the traced allocator
/// while a shard lock is held). Returns false if `out` could not grow.
pub(crate) fn collect(out: &mut MapVec<TraceEntry>) -> bool {
    let mut ok = true;
    // Traces kept in the allocator's words carry the block's address (for a wrapped allocator
    // that adds a header, such as `Debug`, the block's start rather than the user pointer).
    tidemark_alloc::for_each_trace(|block, w| {
        if w & Word::ELSEWHERE == 0 && !out.push(Word::unpack(block, w)) {
            ok = false;
        }
    });
    for shard in &TABLE {
        shard.lock.with(|s| {
            for i in 0..s.cap {
                // SAFETY: i < cap.
                let e = unsafe { *s.slots.add(i) };
                if e.ptr != 0 && !out.push(e) {
                    ok = false;
                }
            }
        });
    }
    ok
}

/// Holds every shard's lock across `fork` (see fork.rs), in index order.
pub(crate) fn fork_prepare() {
    for shard in &TABLE {
        // SAFETY: released by `fork_release` in the parent and in the child.
        unsafe { shard.lock.force_lock() }
    }
}

/// Releases the locks taken by `fork_prepare`.
pub(crate) fn fork_release() {
    for shard in TABLE.iter().rev() {
        // SAFETY: taken by `fork_prepare` before the fork, on this thread (or its copy).
        unsafe { shard.lock.force_unlock() }
    }
}

/// Drops every trace and frees the shards; resets the counters.
pub(crate) fn clear() {
    for shard in &TABLE {
        shard.with(|s| s.release());
    }
    tidemark_alloc::clear_trace_slots();
    counters::clear();
}

pub(crate) fn traced_memory() -> (usize, usize) {
    counters::traced_memory()
}

pub(crate) fn reset_peak() {
    counters::reset_peak();
}

pub(crate) fn lost() -> usize {
    LOST.load(Ordering::Relaxed)
}

/// Bytes mapped for the shards and the allocator's trace words.
pub(crate) fn table_bytes() -> usize {
    TABLE
        .iter()
        .map(|s| s.lock.with(|s| s.cap * core::mem::size_of::<TraceEntry>()))
        .sum::<usize>()
        + tidemark_alloc::trace_slot_bytes()
}

/// Backward-shift deletion in a linear-probing table: after a hole at `i`, the entry at `j`
/// whose home slot is `home` may move into the hole unless `home` lies cyclically in `(i, j]`.
pub(crate) fn home_in_gap(i: usize, home: usize, j: usize) -> bool {
    if i <= j {
        home > i && home <= j
    } else {
        home > i || home <= j
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Exercises one private shard (the global table is shared with the tracer tests).
    #[test]
    fn shard_insert_remove_with_collisions() {
        let mut s = Shard {
            slots: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        };
        let n = 5000usize;
        for p in 1..=n {
            let h = hash(0, p * 16);
            assert_eq!(s.insert(TraceEntry::new(0, p * 16, p, 1, 1), h), Ok(None));
        }
        assert_eq!(s.len, n);
        assert!(s.cap >= n * 4 / 3, "grew with the load");
        // Remove every other, then all the rest must still be found.
        for p in (1..=n).step_by(2) {
            assert_eq!(
                s.remove(0, p * 16, hash(0, p * 16)).map(|e| e.size),
                Some(p)
            );
        }
        for p in 1..=n {
            let found = s.find(0, p * 16, hash(0, p * 16)).is_some();
            assert_eq!(found, p % 2 == 0, "{p}");
        }
        // Same pointer, other domain: a separate trace; replace returns the old size.
        let h = hash(7, 32);
        assert_eq!(s.insert(TraceEntry::new(7, 32, 9, 1, 1), h), Ok(None));
        assert_eq!(s.insert(TraceEntry::new(7, 32, 10, 1, 1), h), Ok(Some(9)));
        s.release();
    }
}
