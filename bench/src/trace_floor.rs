//! `trace_floor`: the least work any tracer obeying issue 4's rules must do per call while it
//! traces, as a benchmark variant over pymalloc. It is the floor the `traced_32` row is
//! compared with, **not a usable tracer**: it keeps no stack table (a stack's "id" is its hash,
//! so two stacks may share one), no snapshot can be taken, its traced-memory counters are per
//! thread and never read, and it does not support `measure`, recording or `track`.
//!
//! What it does, and what every exact tracer with frame-pointer stacks cannot avoid:
//!
//! - allocation: mark the thread as inside the hook (a tracer allocates its own tables, and an
//!   allocation made while it does must not be traced: the re-entrancy guard), walk
//!   every frame record from the hook to the thread's first frame (the traceback keeps up to
//!   32 frames of user code, and `total_nframe` counts the rest), each frame pointer checked
//!   against the thread's stack bounds; turn the return addresses into a stack id (here: hash
//!   them, and reuse the last id when the hash repeats, which is cheaper than any exact
//!   interning); store (stack id, size) where the block's trace lives (the allocator's trace
//!   word for the block: the cheapest home any tracer has); add the size to the current
//!   traced memory and raise the peak;
//! - free: find the block's trace word, clear it, take its size off the current traced memory.
//!
//! Whatever `Traced<Pymalloc>` with tracing on spends above this row is its own bookkeeping
//! (exact interning, shared counters, the mode checks, recording support); what this row
//! spends above plain pymalloc is the price of the rules themselves.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::Ordering;

/// A trace word: bit 63 = present, bits 32..45 = size, bits 0..32 = stack id (the layout
/// `Traced` uses).
const PRESENT: u64 = 1 << 63;
const SIZE_MASK: u64 = (1 << 13) - 1;

struct State {
    in_hook: Cell<bool>,
    /// This thread's traced bytes now and at the peak.
    current: Cell<usize>,
    peak: Cell<usize>,
    /// The last stack's hash and the id it was given.
    last_hash: Cell<u64>,
    last_id: Cell<u32>,
}

thread_local! {
    static STATE: State = const {
        State {
            in_hook: Cell::new(false),
            current: Cell::new(0),
            peak: Cell::new(0),
            last_hash: Cell::new(0),
            last_id: Cell::new(0),
        }
    };
}

/// `A` with the floor of tracing on top (see the module docs).
pub struct TraceFloor<A> {
    inner: A,
}

impl<A> TraceFloor<A> {
    pub const fn new(inner: A) -> Self {
        TraceFloor { inner }
    }
}

// SAFETY: every call forwards to `inner` with the caller's arguments and returns its result;
// the hooks only read the stack and write the allocator's trace words.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TraceFloor<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            after_alloc(p, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        before_free(ptr);
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

#[inline(never)]
fn after_alloc(p: *mut u8, size: usize) {
    let _ = STATE.try_with(|s| {
        if s.in_hook.replace(true) {
            return;
        }
        let hash = stack_hash();
        let id = if hash == s.last_hash.get() {
            s.last_id.get()
        } else {
            s.last_hash.set(hash);
            s.last_id.set((hash >> 32) as u32);
            (hash >> 32) as u32
        };
        if let Some(word) = tidemark_alloc::trace_slot(p) {
            word.store(
                PRESENT | (size as u64 & SIZE_MASK) << 32 | id as u64,
                Ordering::Relaxed,
            );
            let now = s.current.get() + size;
            s.current.set(now);
            if now > s.peak.get() {
                s.peak.set(now);
            }
        }
        s.in_hook.set(false);
    });
}

#[inline(never)]
fn before_free(p: *mut u8) {
    let _ = STATE.try_with(|s| {
        if s.in_hook.get() {
            return;
        }
        if let Some(word) = tidemark_alloc::trace_slot(p) {
            let old = word.load(Ordering::Relaxed);
            if old != 0 {
                word.store(0, Ordering::Relaxed);
                let size = ((old >> 32) & SIZE_MASK) as usize;
                s.current.set(s.current.get().wrapping_sub(size));
            }
        }
    });
}

/// Walks this thread's frame records from the caller's frame to the first one and hashes the
/// return addresses. The checks are the ones a walk needs to never fault and always end: each
/// record inside the stack, each frame pointer moving towards the stack's base (an x86-64 load
/// may be misaligned, so alignment is not checked). Every frame is hashed, also past the
/// frames a traceback could keep (32 plus `tidemark_tracer::hook::RUNTIME_SLACK`): the
/// benchmark's stacks are shallower than that, and one loop is the cheapest walk.
#[inline(always)]
fn stack_hash() -> u64 {
    let (lo, hi) = tidemark_tracer::thread_stack_bounds();
    // fp is inside [lo, hi - 16] exactly when fp - lo <= span (unsigned).
    let span = hi.wrapping_sub(lo).wrapping_sub(16);
    let mut fp = frame_address();
    let mut hash = 0u64;
    while fp.wrapping_sub(lo) <= span {
        // SAFETY: [fp, fp + 16) lies inside this thread's mapped stack (checked above).
        let (next, ip) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ip == 0 {
            break;
        }
        hash = (hash ^ ip as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if next <= fp {
            break;
        }
        fp = next;
    }
    hash
}

#[inline(always)]
fn frame_address() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let fp: usize;
        // SAFETY: reads a register, nothing else.
        unsafe {
            core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
        };
        fp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FLOOR: TraceFloor<tidemark_alloc::Pymalloc> =
        TraceFloor::new(tidemark_alloc::Pymalloc::new());

    fn word(p: *mut u8) -> u64 {
        tidemark_alloc::trace_slot(p)
            .expect("a pool block has a trace word")
            .load(Ordering::Relaxed)
    }

    #[inline(never)]
    fn alloc_here(layout: Layout) -> *mut u8 {
        // SAFETY: a non-zero size.
        unsafe { FLOOR.alloc(layout) }
    }

    #[inline(never)]
    fn alloc_there(layout: Layout) -> *mut u8 {
        // SAFETY: a non-zero size.
        unsafe { FLOOR.alloc(layout) }
    }

    #[test]
    fn each_block_carries_its_size_and_stack_until_freed() {
        let layout = Layout::from_size_align(200, 8).unwrap();
        // The same call, twice (a loop the optimizer cannot unroll): the same stack.
        let mut same = Vec::new();
        for _ in 0..std::hint::black_box(2) {
            same.push(alloc_here(layout));
        }
        let (a, b) = (same[0], same[1]);
        let c = alloc_there(layout);
        let (wa, wb, wc) = (word(a), word(b), word(c));
        assert_eq!(wa & PRESENT, PRESENT);
        assert_eq!((wa >> 32) & SIZE_MASK, 200);
        // One call site, one id; another call site, another id.
        assert_eq!(wa as u32, wb as u32);
        assert_ne!(wa as u32, wc as u32);
        let current = STATE.with(|s| s.current.get());
        for p in [a, b, c] {
            // SAFETY: allocated above with this layout.
            unsafe { FLOOR.dealloc(p, layout) };
            assert_eq!(word(p), 0);
        }
        assert_eq!(STATE.with(|s| s.current.get()), current - 600);
    }
}
