//! `debug_floor`: the least work any debug hook obeying issue 3's rules must do per block, as
//! a benchmark variant. It is the floor the `pymalloc_debug` row is compared with, **not a
//! usable allocator**: it reports nothing but a write after free (by aborting, without a
//! report), keeps no header (so it cannot serve C `free`, detect a double or invalid free, an
//! API or layout mismatch, or say where a block came from), and checks no guard.
//!
//! What it does, and what every debug hook with the same marks and quarantine cannot avoid:
//!
//! - allocation: every user byte is written (CLEANBYTE 0xCD, or zero for `alloc_zeroed`), and
//!   the 8 guard bytes on each side (0xFD);
//! - free: every user byte is written again (DEADBYTE 0xDD), and the block joins a FIFO
//!   quarantine of 4 MiB (counted in inner bytes, as `Debug` counts them) behind one
//!   uncontended lock;
//! - leaving the quarantine: every user byte is read back and compared with DEADBYTE.
//!
//! The guards need 8 bytes in front of the pointer, which alignment 16 rounds up to 16; the
//! size comes from the Rust layout at free, so no header is written or read. Fills and the
//! read-back are `Debug`'s own (`tidemark_alloc::debug::{fill, all_equal}`), so the per-byte
//! work is the same on both rows.
//!
//! Whatever `Debug<A>` spends above this row is bookkeeping (header, serial, registry, checks);
//! what this row spends above the plain allocator is the price of the rules themselves.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use tidemark_alloc::debug::{all_equal, fill, CLEANBYTE, DEADBYTE, FORBIDDENBYTE};

const GUARD: usize = 8;

/// The quarantine bound, `Debug`'s default.
const LIMIT: usize = 4 << 20;
/// Ring entries: enough for 4 MiB of the smallest blocks (16 + 0 + 8 bytes, rounded up to 32
/// by the inner allocator's size classes).
const RING: usize = LIMIT / 32;

/// One quarantined block: the user pointer and its Rust layout.
#[derive(Clone, Copy)]
struct Entry {
    p: *mut u8,
    size: usize,
    align: usize,
}

struct Quarantine {
    ring: [Entry; RING],
    head: usize,
    tail: usize,
    bytes: usize,
}

impl Quarantine {
    /// Takes the oldest entry (the ring is not empty: callers hold bytes or a full ring).
    #[inline]
    fn pop(&mut self) -> Entry {
        let old = self.ring[self.head % RING];
        self.head += 1;
        self.bytes -= inner_layout(old.size, old.align).size();
        old
    }
}

/// The floor hooks around allocator `A` (see the module docs).
pub struct Floor<A: GlobalAlloc> {
    inner: A,
    locked: AtomicBool,
    q: UnsafeCell<Quarantine>,
}

// SAFETY: the quarantine is only reached with `locked` held; its entries are freed blocks
// that any thread may return to the inner allocator (itself `Sync` as a global allocator).
unsafe impl<A: GlobalAlloc + Sync> Sync for Floor<A> {}

impl<A: GlobalAlloc> Floor<A> {
    pub const fn new(inner: A) -> Self {
        const EMPTY: Entry = Entry {
            p: core::ptr::null_mut(),
            size: 0,
            align: 0,
        };
        Floor {
            inner,
            locked: AtomicBool::new(false),
            q: UnsafeCell::new(Quarantine {
                ring: [EMPTY; RING],
                head: 0,
                tail: 0,
                bytes: 0,
            }),
        }
    }
}

/// Bytes from the inner pointer to the user pointer: the front guard, rounded up to keep the
/// alignment.
#[inline]
fn front(align: usize) -> usize {
    align.max(16)
}

#[inline]
fn inner_layout(size: usize, align: usize) -> Layout {
    // SAFETY: the size cannot overflow for any layout a program can make (`Layout` sizes are at
    // most isize::MAX), and the alignment is a power of two.
    unsafe { Layout::from_size_align_unchecked(front(align) + size + GUARD, align.max(16)) }
}

// SAFETY: every block is an inner allocation of `inner_layout`, the user pointer `front(align)`
// bytes in (a multiple of the alignment), with `size` bytes and a guard after it; the inner
// allocator is always called back with the layout it was called with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Floor<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe { self.make(layout, CLEANBYTE) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe { self.make(layout, 0) }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` is a live block of `layout` (the GlobalAlloc contract).
        unsafe {
            fill(p, DEADBYTE, layout.size());
            self.quarantine(Entry {
                p,
                size: layout.size(),
                align: layout.align(),
            });
        }
    }
}

impl<A: GlobalAlloc> Floor<A> {
    /// A fresh block with its user bytes set to `byte` and its guards written.
    ///
    /// # Safety
    /// As for `GlobalAlloc::alloc`.
    #[inline]
    unsafe fn make(&self, layout: Layout, byte: u8) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: a non-zero size (it includes the guards); the writes stay inside it.
        unsafe {
            let base = self.inner.alloc(inner_layout(size, align));
            if base.is_null() {
                return base;
            }
            let p = base.add(front(align));
            (p.sub(GUARD) as *mut u64).write(u64::from_ne_bytes([FORBIDDENBYTE; GUARD]));
            fill(p, byte, size);
            (p.add(size) as *mut u64).write_unaligned(u64::from_ne_bytes([FORBIDDENBYTE; GUARD]));
            p
        }
    }

    /// Runs `f` on the quarantine under the lock (`f` never calls an allocator).
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut Quarantine) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held until the store below, so this is the only reference.
        let r = f(unsafe { &mut *self.q.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// Queues a freed block; evicts (reads back and releases) the oldest while over 4 MiB,
    /// one lock hold per block leaving.
    ///
    /// # Safety
    /// `e` is a freed block of this allocator, filled with DEADBYTE.
    #[inline]
    unsafe fn quarantine(&self, e: Entry) {
        let mut full = self.with(|q| {
            // A full ring (blocks smaller than it was sized for) gives up its oldest first.
            let oldest = (q.tail - q.head == RING).then(|| q.pop());
            q.ring[q.tail % RING] = e;
            q.tail += 1;
            q.bytes += inner_layout(e.size, e.align).size();
            oldest
        });
        // SAFETY: entries that left the ring are ours alone.
        unsafe {
            if let Some(old) = full.take() {
                self.evict(old);
            }
            while let Some(old) = self.with(|q| (q.bytes > LIMIT).then(|| q.pop())) {
                self.evict(old);
            }
        }
    }

    /// Reads back a block leaving the quarantine and returns it to the inner allocator.
    ///
    /// # Safety
    /// `e` left the quarantine and nothing else refers to it.
    #[inline]
    unsafe fn evict(&self, e: Entry) {
        // SAFETY: the block is ours until deallocated below.
        unsafe {
            if !all_equal(e.p, e.size, DEADBYTE) {
                // The floor keeps no header to report from: a write after free just aborts.
                libc::abort();
            }
            let base = e.p.sub(front(e.align));
            self.inner.dealloc(base, inner_layout(e.size, e.align));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_marked_and_cycle_through_the_quarantine() {
        // A static: the ring is too big for a test thread's stack.
        static FLOOR: Floor<std::alloc::System> = Floor::new(std::alloc::System);
        let floor = &FLOOR;
        let layout = Layout::from_size_align(100, 8).unwrap();
        // 4 MiB / 124 B ≈ 34k blocks fit; freeing more makes the oldest leave (and be checked).
        for _ in 0..50_000 {
            let p = unsafe { floor.alloc(layout) };
            assert!(!p.is_null());
            unsafe {
                assert_eq!(*p, CLEANBYTE);
                assert_eq!(*p.add(99), CLEANBYTE);
                assert_eq!(*p.sub(1), FORBIDDENBYTE);
                assert_eq!(*p.add(100), FORBIDDENBYTE);
                floor.dealloc(p, layout);
                assert_eq!(*p, DEADBYTE);
            }
        }
        let q = unsafe { &*floor.q.get() };
        assert!(q.bytes <= LIMIT);
        assert!(q.tail - q.head > 30_000);
    }
}
