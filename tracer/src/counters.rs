//! Traced bytes now and at the peak, counted per thread without a locked instruction per call.
//!
//! One global `fetch_add` per allocation and another per free cost two locked instructions
//! (about 5 ns each here) and bounce one cache line between every allocating thread. Instead
//! each thread counts into its own slot (a plain load and store on a line only it writes):
//! `delta` = bytes it added minus bytes it removed since its last flush (negative when it frees
//! other threads' blocks). It flushes `delta` into the global `FLUSHED` (one `fetch_add`) when
//! `|delta|` reaches `FLUSH_AT`, and when it exits.
//!
//! The peak is checked on every allocation against `FLUSHED + delta`: two relaxed loads of lines
//! that are read far more often than written (so they stay in every core's cache), and a locked
//! `fetch_max` only when the peak actually rises.
//!
//! What the numbers mean:
//! - current = `FLUSHED + Σ delta` over the threads' slots: exact whenever no thread is in the
//!   middle of an update.
//! - peak: **with one thread allocating (or threads taking turns, each flushing or exiting
//!   before the next starts) exactly tracemalloc's peak**: `FLUSHED + delta` is then the current
//!   size, checked after every allocation. With threads allocating at the same time there is
//!   no single order of their calls to take a maximum over (tracemalloc has the GIL for that);
//!   a thread's check sees the others' flushed bytes but not their unflushed `delta`s, so a peak
//!   reached only by adding up several threads' unflushed growth can be reported low by at most
//!   (threads − 1) × `FLUSH_AT` bytes. It is never reported above a current size some thread
//!   saw, and never below the current size at the time of the query.
//!
//! `clear` bumps an epoch; a slot from an older epoch holds no bytes (its owner zeroes it at its
//! next update), so `clear` never writes other threads' slots. Threads beyond `SLOTS` (or whose
//! thread-locals are gone) update the globals directly.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering, Ordering::Relaxed};

/// Bytes a thread may move before it flushes.
const FLUSH_AT: isize = 64 << 10;
const SLOTS: usize = 256;

static FLUSHED: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Bumped by `clear`: slots of an older epoch hold no bytes.
static EPOCH: AtomicUsize = AtomicUsize::new(0);

#[repr(C, align(128))]
struct Slot {
    in_use: AtomicBool,
    epoch: AtomicUsize,
    delta: AtomicIsize,
}

static SLOT_TABLE: [Slot; SLOTS] = [const {
    Slot {
        in_use: AtomicBool::new(false),
        epoch: AtomicUsize::new(0),
        delta: AtomicIsize::new(0),
    }
}; SLOTS];

/// This thread's slot index + 1 (0 = none yet, usize::MAX = none available). Owns the claim:
/// its destructor flushes the slot and gives it back when the thread exits.
struct Mine(Cell<usize>);

impl Drop for Mine {
    fn drop(&mut self) {
        let i = self.0.replace(usize::MAX);
        // From now on this thread counts into the globals (frees during the rest of its exit).
        FAST.with(|f| f.set(NO_SLOT));
        if i != 0 && i != usize::MAX {
            let s = &SLOT_TABLE[i - 1];
            flush(s);
            s.in_use.store(false, Ordering::Release);
        }
    }
}

/// `FAST`'s value once the thread has no slot to use (the table was full, or `Mine` is gone).
const NO_SLOT: *const Slot = core::ptr::dangling();

thread_local! {
    static MINE: Mine = const { Mine(Cell::new(0)) };
    /// The slot `MINE` owns, for every call: a thread-local without a destructor is one plain
    /// load, where `MINE` (which has one) checks its registration state on each access. Null
    /// before the first claim, `NO_SLOT` when there is none.
    static FAST: Cell<*const Slot> = const { Cell::new(core::ptr::null()) };
}

#[inline]
fn my_slot() -> Option<&'static Slot> {
    let p = FAST.with(|f| f.get());
    if p as usize > NO_SLOT as usize {
        // SAFETY: FAST only ever holds null, NO_SLOT, or a pointer into the static SLOT_TABLE.
        return Some(unsafe { &*p });
    }
    if p.is_null() {
        return MINE.try_with(claim).ok().flatten();
    }
    None
}

#[cold]
fn claim(m: &Mine) -> Option<&'static Slot> {
    for (i, s) in SLOT_TABLE.iter().enumerate() {
        if !s.in_use.load(Relaxed)
            && s.in_use
                .compare_exchange(false, true, Ordering::Acquire, Relaxed)
                .is_ok()
        {
            s.delta.store(0, Relaxed);
            s.epoch
                .store(EPOCH.load(Ordering::Acquire), Ordering::Release);
            m.0.set(i + 1);
            FAST.with(|f| f.set(s));
            return Some(s);
        }
    }
    m.0.set(usize::MAX);
    FAST.with(|f| f.set(NO_SLOT));
    None
}

/// The owner's delta, zeroed first if a `clear` happened since its last update.
#[inline]
fn delta_now(s: &Slot) -> isize {
    let now = EPOCH.load(Ordering::Acquire);
    if s.epoch.load(Relaxed) != now {
        s.delta.store(0, Relaxed);
        s.epoch.store(now, Ordering::Release);
        return 0;
    }
    s.delta.load(Relaxed)
}

#[inline]
fn raise_peak(now: isize) {
    if now > 0 && now as usize > PEAK.load(Relaxed) {
        PEAK.fetch_max(now as usize, Relaxed);
    }
}

/// `size` bytes became traced.
#[inline]
pub(crate) fn add(size: usize) {
    let Some(s) = my_slot() else {
        raise_peak(FLUSHED.fetch_add(size as isize, Relaxed) + size as isize);
        return;
    };
    let d = delta_now(s).wrapping_add(size as isize);
    s.delta.store(d, Relaxed);
    if d >= FLUSH_AT {
        flush(s);
    } else {
        raise_peak(FLUSHED.load(Relaxed).wrapping_add(d));
    }
}

/// `size` bytes stopped being traced.
#[inline]
pub(crate) fn sub(size: usize) {
    let Some(s) = my_slot() else {
        FLUSHED.fetch_sub(size as isize, Relaxed);
        return;
    };
    let d = delta_now(s).wrapping_sub(size as isize);
    s.delta.store(d, Relaxed);
    if d <= -FLUSH_AT {
        flush(s);
    }
}

/// Moves a slot's delta into `FLUSHED` (by its owner).
#[cold]
fn flush(s: &Slot) {
    let d = delta_now(s);
    s.delta.store(0, Relaxed);
    raise_peak(FLUSHED.fetch_add(d, Relaxed).wrapping_add(d));
}

fn current() -> usize {
    let now = EPOCH.load(Ordering::Acquire);
    let mut cur = FLUSHED.load(Relaxed);
    for s in &SLOT_TABLE {
        if s.in_use.load(Ordering::Acquire) && s.epoch.load(Ordering::Acquire) == now {
            cur = cur.wrapping_add(s.delta.load(Relaxed));
        }
    }
    cur.max(0) as usize
}

/// (current, peak) as described at the top.
pub(crate) fn traced_memory() -> (usize, usize) {
    let cur = current();
    // A current size seen here (other threads' unflushed growth included) is a peak candidate
    // too: remember it, so that a later query never reports a lower peak than this one did.
    raise_peak(cur as isize);
    (cur, PEAK.load(Relaxed).max(cur))
}

/// Forgets all counts (the table was cleared).
pub(crate) fn clear() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    FLUSHED.store(0, Relaxed);
    PEAK.store(0, Relaxed);
}

/// Peak := current.
pub(crate) fn reset_peak() {
    PEAK.store(current(), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread: current and peak exact through flushes, reset and clear; a free by another
    /// thread counts once it exits. (The counters are global; this is the only unit test that
    /// touches them.)
    #[test]
    fn one_thread_is_exact() {
        clear();
        add(100);
        add(50);
        sub(100);
        assert_eq!(traced_memory(), (50, 150));
        add(3 * FLUSH_AT as usize); // flushes
        sub(3 * FLUSH_AT as usize); // flushes
        assert_eq!(traced_memory(), (50, 50 + 3 * FLUSH_AT as usize));
        reset_peak();
        assert_eq!(traced_memory(), (50, 50));
        add(10);
        sub(10);
        assert_eq!(traced_memory(), (50, 60));
        // Another thread frees what this one allocated; exiting flushes its batch.
        std::thread::spawn(|| sub(50)).join().unwrap();
        assert_eq!(traced_memory(), (0, 60));
        clear();
        assert_eq!(traced_memory(), (0, 0));
        add(7);
        assert_eq!(traced_memory(), (7, 7));
        clear();
    }
}
