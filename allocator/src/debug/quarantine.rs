//! The quarantine: freed blocks wait here, filled with DEADBYTE, before the inner allocator
//! gets them back, so that a write through a dangling pointer lands in memory nobody else
//! owns and is seen when the block leaves (or by `check_heap`).
//!
//! It is a FIFO bounded by bytes (the inner allocations' sizes): a ring of (header, bytes)
//! entries in a mapping of its own, made at the first push, so it never allocates through the
//! global allocator. A ring rather than a list linked through the headers: the blocks leaving
//! are old and cold in cache, and a list would have to read each one's header (one dependent
//! cache miss after another, under the lock) just to find the next and its size. With the
//! ring, popping reads only the ring, and the evicting thread knows every leaving block up
//! front, so it can prefetch the next ones while it verifies one.
//!
//! Once over its bound, the quarantine is emptied down to [`low_water`] in one go, so the
//! evicting thread takes the registry's release lock once per batch rather than once per
//! free. The lock is held only for the ring operations: the leaving blocks are copied out in
//! a [`Batch`], then verified and returned to the inner allocator after the lock is dropped.
//!
//! One lock, [`LOCK`], guards the quarantines of every `Debug` instance (see [`Locked`]): the
//! `fork` handlers must be able to take every debug lock, and a lock inside an instance could
//! not be found from a static (instances are values: a local one may move or be dropped). A
//! process has one global allocator, so in practice the lock was one per process anyway.

use super::layout::Header;
use crate::sync::SpinLock;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::null_mut;

/// The lock of every quarantine (see the module docs). Held only for ring operations, which
/// never call out (not even into the inner allocator: the ring is a mapping of its own).
static LOCK: SpinLock<()> = SpinLock::new(());

/// A quarantine guarded by [`LOCK`].
pub struct Locked {
    q: UnsafeCell<Quarantine>,
}

// SAFETY: the quarantine inside is only reached through `with`, under `LOCK`; its contents
// (headers of freed blocks, the ring mapping) may be used from any thread.
unsafe impl Sync for Locked {}

impl Locked {
    pub const fn new() -> Self {
        Locked {
            q: UnsafeCell::new(Quarantine::new()),
        }
    }

    /// Runs `f` on the quarantine under the lock. `f` must not call into any allocator.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut Quarantine) -> R) -> R {
        // SAFETY: `LOCK` is held for the whole call, and every access goes through here, so
        // this is the only reference to the quarantine meanwhile.
        LOCK.with(|()| f(unsafe { &mut *self.q.get() }))
    }
}

impl Default for Locked {
    fn default() -> Self {
        Self::new()
    }
}

/// Before `fork`: takes the quarantines' lock (see `debug::fork`).
///
/// # Safety
/// Must be followed by [`fork_release`] on this thread, in the parent and in the child.
pub unsafe fn fork_prepare() {
    // SAFETY: released by `fork_release` (guaranteed by the caller).
    unsafe { LOCK.force_lock() }
}

/// After `fork`, in the parent and in the child.
///
/// # Safety
/// [`fork_prepare`] took the lock before the fork.
pub unsafe fn fork_release() {
    // SAFETY: held through `fork_prepare` (guaranteed by the caller).
    unsafe { LOCK.force_unlock() }
}

/// Default bound: 4 MiB of freed blocks.
pub const DEFAULT_LIMIT: usize = 4 << 20;

/// The most blocks a quarantine holds, whatever its bound in bytes.
pub const MAX_BLOCKS: usize = 1 << 20;

/// The smallest inner block (no user bytes): the ring never needs more entries than
/// `limit / MIN_BLOCK`, so at the default bound it has 131,072 entries (2 MiB of ring) and the
/// bound in bytes is reached first.
const MIN_BLOCK: usize = super::layout::HEAD + super::layout::GUARD + super::layout::TRAILER;

/// Blocks popped at most per lock hold.
pub const BATCH: usize = 256;

/// How far below its bound the quarantine is emptied once it goes over: a sixteenth of the
/// bound, at most 64 KiB (about 200 blocks at the default bound). The bound itself is never
/// exceeded.
pub fn low_water(limit: usize) -> usize {
    limit - (limit / 16).min(64 << 10)
}

/// One queued block.
#[derive(Clone, Copy)]
pub struct Entry {
    pub h: *mut Header,
    /// The inner allocation's size, as accounted.
    pub bytes: usize,
}

/// Blocks popped from the quarantine, oldest first. Lives on the stack of every free, so
/// its entries are left uninitialized until popped into.
pub struct Batch {
    entries: [MaybeUninit<Entry>; BATCH],
    pub len: usize,
}

impl Batch {
    pub const fn new() -> Self {
        Batch {
            entries: [const { MaybeUninit::uninit() }; BATCH],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[Entry] {
        // SAFETY: the first `len` entries were written by `pop_into`; MaybeUninit<Entry> has
        // the layout of Entry.
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr() as *const Entry, self.len) }
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// The FIFO itself (callers reach it through [`Locked`]).
pub struct Quarantine {
    ring: *mut Entry,
    /// Ring capacity - 1 (a power of two minus one).
    mask: usize,
    /// Monotonic positions: `head` is the oldest entry, `tail` the next free one.
    head: usize,
    tail: usize,
    bytes: usize,
}

// SAFETY: the ring and the headers in it belong to the quarantine until popped; the owner
// guards the struct with a lock.
unsafe impl Send for Quarantine {}

impl Quarantine {
    pub const fn new() -> Self {
        Quarantine {
            ring: null_mut(),
            mask: 0,
            head: 0,
            tail: 0,
            bytes: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn at(&self, pos: usize) -> *mut Entry {
        // SAFETY: the ring holds `mask + 1` entries.
        unsafe { self.ring.add(pos & self.mask) }
    }

    /// Appends `h` (accounted as `bytes`); false when there is no memory for the ring (the
    /// caller then releases the block at once, as with the quarantine off). A full ring first
    /// gives up its oldest entry into `out`. `limit` (the bound in bytes) sizes the ring at the
    /// first push.
    ///
    /// # Safety
    /// `h` is a valid freed header not in any quarantine; `out` is empty.
    #[inline]
    pub unsafe fn push(
        &mut self,
        h: *mut Header,
        bytes: usize,
        limit: usize,
        out: &mut Batch,
    ) -> bool {
        if self.ring.is_null() && !self.map_ring(limit) {
            return false;
        }
        if self.len() > self.mask {
            self.pop_into(out);
        }
        // SAFETY: `tail` is a free position of the ring.
        unsafe { self.at(self.tail).write(Entry { h, bytes }) };
        self.tail += 1;
        self.bytes += bytes;
        true
    }

    #[cold]
    fn map_ring(&mut self, limit: usize) -> bool {
        let entries = (limit / MIN_BLOCK)
            .checked_next_power_of_two()
            .unwrap_or(MAX_BLOCKS)
            .clamp(64, MAX_BLOCKS);
        self.ring = crate::os::map(entries * core::mem::size_of::<Entry>()) as *mut Entry;
        self.mask = entries - 1;
        !self.ring.is_null()
    }

    #[inline]
    fn pop_into(&mut self, out: &mut Batch) {
        // SAFETY: the queue is not empty (callers check), so `head` holds an entry.
        let e = unsafe { self.at(self.head).read() };
        self.head += 1;
        self.bytes -= e.bytes;
        out.entries[out.len].write(e);
        out.len += 1;
    }

    /// If over `limit` bytes, moves the oldest blocks into `out` until at most
    /// `low_water(limit)` bytes remain or `out` is full (call again while it comes back full).
    #[inline]
    pub fn evict_over(&mut self, limit: usize, out: &mut Batch) {
        if self.bytes <= limit {
            return;
        }
        let low = low_water(limit);
        while self.bytes > low && !self.is_empty() && !out.is_full() {
            self.pop_into(out);
        }
    }

    /// Moves up to a batch of the oldest blocks into `out`, whatever the bound.
    pub fn take(&mut self, out: &mut Batch) {
        while !self.is_empty() && !out.is_full() {
            self.pop_into(out);
        }
    }
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(i: usize) -> *mut Header {
        ((i + 1) * 64) as *mut Header
    }

    #[test]
    fn evicts_oldest_first_and_respects_the_bound() {
        let mut q = Quarantine::new();
        let mut evicted = Vec::new();
        for i in 0..6 {
            // sizes 100, 200, ..., 600; limit 1000 (low water 938)
            let mut out = Batch::new();
            assert!(unsafe { q.push(fake(i), (i + 1) * 100, 1000, &mut out) });
            q.evict_over(1000, &mut out);
            evicted.extend(out.as_slice().iter().map(|e| e.bytes));
            assert!(q.bytes() <= 1000);
        }
        // after 100..=400 (1000 bytes), pushing 500 evicts 100, 200, 300 (1500 -> 900);
        // pushing 600 evicts 400 and 500 (1500 -> 600).
        assert_eq!(evicted, vec![100, 200, 300, 400, 500]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), 600);
        let mut out = Batch::new();
        q.take(&mut out);
        assert_eq!(out.len, 1);
        assert_eq!(out.as_slice()[0].h, fake(5));
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn zero_limit_releases_at_once() {
        let mut q = Quarantine::new();
        let mut out = Batch::new();
        assert!(unsafe { q.push(fake(0), 100, 0, &mut out) });
        q.evict_over(0, &mut out);
        assert_eq!(out.len, 1);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn a_big_bound_is_emptied_in_batches() {
        let mut q = Quarantine::new();
        let limit = 4 << 20;
        // 4 MiB of 1 KiB blocks fit; the next one evicts 64 KiB + 1 KiB at once.
        for i in 0..4096 {
            let mut out = Batch::new();
            assert!(unsafe { q.push(fake(i), 1024, limit, &mut out) });
            q.evict_over(limit, &mut out);
            assert_eq!(out.len, 0);
        }
        let mut out = Batch::new();
        assert!(unsafe { q.push(fake(4096), 1024, limit, &mut out) });
        q.evict_over(limit, &mut out);
        assert_eq!(out.len, 65);
        assert_eq!(out.as_slice()[0].h, fake(0));
        assert_eq!(q.bytes(), low_water(limit));
    }

    #[test]
    fn a_full_ring_gives_up_its_oldest() {
        let mut q = Quarantine::new();
        let mut out = Batch::new();
        // A bound of 1024 smallest blocks makes a ring of 1024 entries; blocks accounted as one
        // byte each never reach the bound in bytes.
        let limit = 1024 * MIN_BLOCK;
        for i in 0..1024 {
            assert!(unsafe { q.push(fake(i), 1, limit, &mut out) });
        }
        assert_eq!(out.len, 0);
        assert!(unsafe { q.push(fake(1024), 1, limit, &mut out) });
        assert_eq!(out.len, 1);
        assert_eq!(out.as_slice()[0].h, fake(0));
        assert_eq!(q.len(), 1024);
    }
}
