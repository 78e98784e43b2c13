//! The ordering clock `SEQ` (see "Ordering" in the parent module): frees and reallocs
//! advance it, allocations read it.
//!
//! Advancing it with `fetch_add` (a `lock xadd`) is a full barrier: the free waits for every
//! store the program has pending, in a heap-bound program often a cache miss, and nothing
//! after it starts early. On the benchmark's churn that was a quarter of the untraced run's
//! time. While a single thread records, nobody else writes the clock, so that thread advances
//! it with a plain load and store: the clock is *solo*.
//!
//! The second thread to record makes the clock *shared* for good, before its first event: it
//! marks the clock shared, runs `membarrier` (each running thread executes a full barrier,
//! so its next event sees the mark; a thread not running sees it when it runs again), then
//! waits until no other slot is busy (an event begun before the barrier may still store the
//! clock plainly; once it has ended, every store to the clock is a `fetch_add`). Without
//! `membarrier` (old kernels) the clock is shared from the start.

use super::{fence_all_threads, register_fence, ThreadBuf, THREADS};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The ordering clock.
pub static SEQ: AtomicU64 = AtomicU64::new(0);

/// No thread has claimed a slot yet.
const UNCLAIMED: u8 = 0;
/// One thread records: it advances the clock with a load and a store.
const SOLO: u8 = 1;
/// Several threads record (or `membarrier` is missing): `fetch_add`.
const SHARED: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNCLAIMED);

/// A free's or realloc's key: the clock advanced by one. The caller's slot is busy.
#[inline(always)]
pub fn advance() -> u64 {
    if MODE.load(Ordering::Relaxed) == SOLO {
        let next = SEQ.load(Ordering::Relaxed) + 1;
        SEQ.store(next, Ordering::Relaxed);
        next
    } else {
        SEQ.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A thread claims a slot (before its first event; its own slot `mine` is not busy): the
/// first one makes the clock solo, the second one shared.
#[cold]
pub fn on_claim(mine: *const ThreadBuf) {
    let first = register_fence()
        && MODE
            .compare_exchange(UNCLAIMED, SOLO, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    if !first && MODE.swap(SHARED, Ordering::SeqCst) != SHARED {
        fence_all_threads();
        wait_until_idle(mine);
    }
}

/// Waits until no slot but `mine` is in the middle of an event (at most 2 s: a thread
/// stopped inside one for good must not hang this one; its late plain store could then
/// order one event wrongly, nothing worse).
fn wait_until_idle(mine: *const ThreadBuf) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut cur = THREADS.load(Ordering::Acquire);
    while !cur.is_null() {
        // SAFETY: registry entries are never freed.
        let slot = unsafe { &*cur };
        while !core::ptr::eq(cur, mine)
            && slot.busy.load(Ordering::Acquire) != 0
            && std::time::Instant::now() < deadline
        {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        cur = slot.next;
    }
}

/// In a child made by `fork`, where only the forking thread exists: the clock starts at 0,
/// solo if that thread has a slot (and the fence works), else waiting for a first claim.
pub fn reset_after_fork(has_slot: bool) {
    let mode = match (has_slot, register_fence()) {
        (false, _) => UNCLAIMED,
        (true, true) => SOLO,
        (true, false) => SHARED,
    };
    MODE.store(mode, Ordering::SeqCst);
    SEQ.store(0, Ordering::SeqCst);
}
