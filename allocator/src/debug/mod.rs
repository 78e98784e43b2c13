//! Debug hooks: `Debug<A>` wraps any `GlobalAlloc` and catches heap misuse with a clear report,
//! in the spirit of CPython's `PYTHONMALLOC=debug` (`_PyMem_DebugRawAlloc`,
//! `_PyObject_DebugDumpAddress`), going beyond it where AddressSanitizer does.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: tidemark_alloc::debug::Debug<tidemark_alloc::Pymalloc> =
//!     tidemark_alloc::debug::Debug::new(tidemark_alloc::Pymalloc::new());
//! ```
//!
//! # What a block looks like
//!
//! ```text
//!  inner allocation (aligned to max(align, 16))
//!  +---------+--------+-------------+------------------+------------+---------+
//!  | padding | header | front guard | user bytes       | back guard | trailer |
//!  | (align) | 24 B   | 8 x 0xFD    | 0xCD when fresh, | 8 x 0xFD   | serial  |
//!  |         |        |             | 0xDD when freed  |            | (u64)   |
//!  +---------+--------+-------------+------------------+------------+---------+
//!                                   ^ p (the pointer the program gets)
//! ```
//!
//! The header (requested size, alignment, API, status, tracer stack ids, registry slot, in
//! 24 bytes) always sits right before the front guard, so `p - 32` finds it from the pointer
//! alone; alignments above 16 are paid for with padding in front. A block costs 48 bytes more
//! than asked (32 in front, 16 behind). See `layout.rs` for the reasons behind each field.
//!
//! # What is detected (each one is a fatal report on stderr, then `abort()`)
//!
//! 1. underwrite: a front guard byte changed ("bad leading pad byte");
//! 2. overwrite: a back guard byte changed ("bad trailing pad byte");
//! 3. API mismatch: made by the Rust global allocator, released by C `free` or the reverse;
//! 4. layout mismatch: Rust `dealloc`/`realloc` got a size or alignment other than the
//!    allocation's;
//! 5. double free: the block is already freed, and waits in the quarantine or has left it
//!    (see "After the quarantine" below);
//! 6. invalid free: no debug header before the pointer (see "Limits" below for what is
//!    read to find out);
//! 7. write after free: a freed block leaves the quarantine (FIFO, `TIDEMARK_QUARANTINE`,
//!    default 4M, 0 = off) no longer all 0xDD; the report names the first changed offset.
//!
//! [`check_heap()`] verifies every live and quarantined block at once
//! (`TIDEMARK_CHECK_AT_EXIT=1` runs it at exit).
//!
//! # After the quarantine
//!
//! A block leaving the quarantine (or freed with the quarantine off) goes back to the inner
//! allocator with a mark in its header, status RELEASED, placed where neither pymalloc nor
//! glibc writes when they take a block back (see `layout::mark_released`). Freeing the same
//! pointer again is then still a double free, reported with the line "The block was freed and
//! has already left the quarantine", its tracebacks when the inner allocator has not written
//! over them, and no dump of its bytes (they are the inner allocator's again).
//!
//! That holds while the inner allocator has not handed the memory out again. Once it has,
//! nothing can tell a stale pointer from a live one in general, as with AddressSanitizer
//! after its quarantine:
//!
//! - if the memory became a new debug block at the same address (pymalloc reuses a free block
//!   of the same size class first), the second free releases that new block, and its owner's
//!   later use of it is reported as a write after free or a double free instead;
//! - if it became part of another block, the header's bytes are someone else's data, and the
//!   second free is most likely reported as an invalid free (bad magic);
//! - if the inner allocator gave the memory back to the OS (an emptied pymalloc arena, a big
//!   glibc block), the second free reads unmapped memory and faults, as it would in glibc;
//! - a glibc block of 1 KiB or more that went into one of glibc's large bins has lost the mark
//!   (glibc links those bins through the header's last bytes), and a second free is reported
//!   as an invalid free.
//!
//! A bigger `TIDEMARK_QUARANTINE` widens the window in which a double free is reported with
//! the block's full dump.
//!
//! # Limits
//!
//! - Invalid free reads the 32 bytes before a 16-aligned pointer (checking the previous page
//!   is mapped when the header would cross into it). A pointer into a page that is not mapped
//!   at all faults, as it does in glibc.
//! - Writes that skip over the guards (more than 8 bytes past the end) are caught only if they
//!   land in the guard, or spoil a neighbour's header (then that block is reported as invalid).
//! - Realloc always moves the block, so stale pointers to the old one are caught as
//!   write-after-free rather than silently working.
//! - The quarantine also holds at most 2^20 blocks (`quarantine::MAX_BLOCKS`), which only
//!   matters for bounds above 64 MiB of tiny blocks.
//!
//! # Speed
//!
//! What the checks need is paid; nothing else is shared:
//!
//! - no lock and no atomic read-modify-write on the allocation path, one uncontended lock per
//!   free (the quarantines' ring lock, one for all instances so the `fork` handlers can take
//!   it, see `fork.rs`) and one per eviction batch: serial numbers come from
//!   per-thread ranges (`local.rs`), the registry is a table of slots that each thread writes
//!   without locking (`live.rs`), and the quarantine is emptied ~64 KiB at a time
//!   (`quarantine.rs`), so the release lock that `check_heap` synchronizes with is taken once
//!   per batch;
//! - the quarantine is a ring of (block, size) entries, so evicting reads no block to find the
//!   next one, and the evicting thread prefetches the blocks it is about to verify;
//! - fills up to 64 bytes are a few inline stores, longer ones `memset`; the write-after-free
//!   check compares 128 bytes per step with AVX2 (detected at run time), 64 with SSE2;
//! - a free is one check (`layout::intact_live`): magic, API and status in one compare of the
//!   header's last word, size and alignment in one compare against the Rust layout, each guard
//!   one word compare; only a block that fails it goes through the full diagnosis, which
//!   names the defect;
//! - a Rust `dealloc` knows the block's size from its layout before reading the header: it
//!   locates the back guard from the layout (checked equal to the header's size), so the
//!   cache misses of a cold block overlap instead of following each other;
//! - the header is 24 bytes, so a block costs 48 bytes more than asked (32 in front, 16
//!   behind).
//!
//! What remains is the work the checks are made of: every allocation writes its user bytes
//! (0xCD), every free reads the header and guards and writes the user bytes again (0xDD), and
//! every block is read back when it leaves the quarantine (4 MiB later, so from L3 or memory).
//! A program that frees blocks it has not touched for a while (the benchmark's `churn`, which
//! only ever writes one byte of each object) pays several cache misses per free where the
//! plain allocator touches one line of the block (its free-list link); and touching every
//! byte makes churn's working set its whole 26 MB live set plus 48 bytes per block and the
//! quarantine, where pymalloc alone touches one line per object (about 6 MB, which stays in
//! cache). `TIDEMARK_QUARANTINE=0` removes the read-back, not the fills.
//!
//! How much of that any hook must pay is measured by the benchmark's `debug_floor` variant
//! (`tidemark_bench::floor`): the fills, the guards, a 4 MiB FIFO quarantine and the read-back,
//! with this module's own fill and compare, and nothing else (no header, serial, registry or
//! check at free). On the project's 2-core VM (2026-12-03, five interleaved runs, medians; the
//! machine was shared, so the ratios moved between runs) it took 3.2–5.0× pymalloc's time on
//! churn and 1.3–2.1× on strings, where `Debug<Pymalloc>` took 4.4–7.5× and 1.6–2.3× (1.1–1.7×
//! the floor's time in the same run). So no hook that obeys these rules gets churn near 1.5×
//! the plain allocator; on strings the floor itself lands on either side of 1.5×.
//! Under callgrind a churn step (one free, one allocation) costs pymalloc ~131 instructions,
//! the floor ~440 and `Debug` ~740: the ~300 between the last two are the header, serial,
//! registry, stack-id hooks and the checks that name each defect; the floor's ~300 over the
//! plain allocator are the bytes themselves.
//!
//! # fork
//!
//! `fork` from a threaded program is safe: `pthread_atfork` handlers take every debug lock
//! before the fork and release them in both processes (see `fork.rs`).
//!
//! Tracebacks come from the tracer through [`crate::hooks`]; without it the report says
//! tracing is off and how to turn it on (`TIDEMARK_TRACE=32`).

mod c_api;
mod check;
mod config;
mod fork;
mod layout;
mod live;
mod local;
mod probe;
mod quarantine;
mod report;
mod scan;

pub use check::check_heap;
pub use config::parse_quarantine;

/// Reports the pointer `addr`, which a caller outside the debug layer found to be no block at
/// all (the preload: a pointer into the thread's stack), as an invalid `free` (or `realloc`)
/// with `reason`, and aborts: the same report the layer writes for an interior pointer.
#[cold]
pub fn invalid_pointer(addr: usize, realloc: bool, reason: &'static str) -> ! {
    let op = if realloc {
        report::Op::CRealloc
    } else {
        report::Op::Free
    };
    // SAFETY: an InvalidFree report reads nothing at `p`.
    unsafe {
        report::fatal(
            op,
            core::ptr::without_provenance_mut(addr),
            report::Defect::InvalidFree { reason },
        )
    }
}
/// Reports `addr` and aborts if it belongs to a registered debug block: one whose header a
/// write before it damaged (`addr` is its own pointer), or one it points inside; returns
/// otherwise. For a caller outside the layer that found no header before a pointer (the
/// preload, whose blocks over 512 bytes lie in glibc's memory, where a pointer without a
/// header is otherwise taken for glibc's own).
pub fn refuse_registered(addr: usize, realloc: bool) {
    let op = if realloc {
        report::Op::CRealloc
    } else {
        report::Op::Free
    };
    let p: *mut u8 = core::ptr::without_provenance_mut(addr);
    match probe::holder(addr) {
        // SAFETY: a registered header is readable, and its front guard after it.
        Some(probe::Holder::Damaged) => unsafe {
            report::fatal(op, p, report::Defect::HeaderDamaged)
        },
        Some(probe::Holder::Inside(_)) => invalid_pointer(
            addr,
            realloc,
            "it points inside a debug block of over 512 bytes (in glibc's memory), not at its start",
        ),
        None => {}
    }
}

pub(crate) use fork::{fork_prepare, fork_release};
pub use layout::{Api, CLEANBYTE, DEADBYTE, FORBIDDENBYTE};
pub use quarantine::DEFAULT_LIMIT as DEFAULT_QUARANTINE;
// The fill and the read-back compare, for the benchmark's `debug_floor` variant: the least any
// debug hook must do is measured with the same per-byte work as `Debug`'s.
pub use layout::fill;
pub use scan::all_equal;

use crate::hooks::traceback_hooks;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::Ordering;
use layout::{
    header_of, header_sound, init_block, inner_layout, intact_live, mark_released, stack_id32,
    status, user_of, Block, FREED, RELEASED,
};
use probe::{probe, Probe};
use quarantine::{Batch, Entry, Locked};
use report::{fatal, Defect, Op};

/// Read the limit from `TIDEMARK_QUARANTINE` at first use.
const LIMIT_FROM_ENV: usize = usize::MAX;

/// The debug hooks around allocator `A`. See the module docs.
pub struct Debug<A: GlobalAlloc> {
    inner: A,
    quarantine: Locked,
    limit: usize,
}

impl<A: GlobalAlloc> Debug<A> {
    /// Wraps `inner`; the quarantine bound comes from `TIDEMARK_QUARANTINE` (default 4 MiB).
    pub const fn new(inner: A) -> Self {
        Debug {
            inner,
            quarantine: Locked::new(),
            limit: LIMIT_FROM_ENV,
        }
    }

    /// Wraps `inner` with a fixed quarantine bound in bytes (0 = off), ignoring the environment.
    pub const fn with_quarantine(inner: A, bytes: usize) -> Self {
        let limit = if bytes == LIMIT_FROM_ENV {
            bytes - 1
        } else {
            bytes
        };
        Debug {
            inner,
            quarantine: Locked::new(),
            limit,
        }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Bytes (of inner allocations) and blocks waiting in the quarantine.
    pub fn quarantined(&self) -> (usize, usize) {
        self.quarantine.with(|q| (q.bytes(), q.len()))
    }

    /// Verifies every quarantined block and returns it to the inner allocator (reporting a
    /// write after free, as an eviction would).
    pub fn flush_quarantine(&self) {
        loop {
            let mut batch = Batch::new();
            self.quarantine.with(|q| q.take(&mut batch));
            if batch.len == 0 {
                return;
            }
            // SAFETY: popped entries are freed debug blocks this allocator made.
            unsafe { self.evict(batch.as_slice()) };
        }
    }

    #[inline]
    fn limit(&self) -> usize {
        if self.limit == LIMIT_FROM_ENV {
            config::quarantine_limit()
        } else {
            self.limit
        }
    }

    /// Makes a block of `size` bytes at `align` for `api`. `clean_from`: see `init_block`.
    ///
    /// # Safety
    /// `align` is a power of two.
    #[inline]
    unsafe fn alloc_block(
        &self,
        size: usize,
        align: usize,
        api: Api,
        clean_from: Option<usize>,
    ) -> *mut u8 {
        let Some(layout) = inner_layout(size, align) else {
            return null_mut();
        };
        // Reads the environment (and registers the at-exit check) on first use.
        let _ = config::quarantine_limit();
        // SAFETY: `layout` has a non-zero size (it includes the header).
        let base = unsafe {
            if clean_from.is_none() {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        };
        if base.is_null() {
            return null_mut();
        }
        let stack = traceback_hooks().map_or(0, |hooks| (hooks.capture)());
        // The thread state is taken after every call out (the inner allocator, the tracer's
        // capture) that might come back into the debug layer, and only plain code runs while
        // it is held.
        let Some(local) = local::local() else {
            // SAFETY: `base` came from the inner allocator with `layout` just above.
            unsafe { self.inner.dealloc(base, layout) };
            return null_mut();
        };
        let serial = local.serial();
        // SAFETY: `base` is a fresh inner allocation of `inner_layout(size, align)`; the new
        // header is valid and not yet registered.
        unsafe {
            let p = init_block(base, size, align, api, clean_from, serial, stack);
            if !live::insert(local, header_of(p)) {
                self.inner.dealloc(base, layout);
                return null_mut();
            }
            p
        }
    }

    /// Validates a pointer handed back through `api` (with the Rust layout, if any); reports
    /// and aborts on any defect.
    ///
    /// # Safety
    /// `p` is non-null and either a debug block or a pointer whose preceding bytes `probe` may
    /// read (see `probe::probe`).
    #[inline]
    unsafe fn checked(&self, op: Op, p: *mut u8, api: Api, layout: Option<Layout>) -> Block {
        // SAFETY: as required by this function (`intact_live` reads before `p` only where
        // `probe` would, and past the header only once it matched).
        if unsafe { intact_live(p, api, layout) } {
            return Block { p };
        }
        // SAFETY: as required by this function.
        unsafe { self.diagnose(op, p, api, layout) }
    }

    /// The full check of a pointer that failed the fast one: finds the defect and reports it,
    /// in the order a user reads them (not ours, freed twice, wrong API, wrong layout, pads).
    /// Returns the block when there is none after all: the fast check leaves pointers near
    /// the start of a 4 KiB frame to `probe`, which knows how to read before them.
    ///
    /// # Safety
    /// As for `checked`.
    #[cold]
    #[inline(never)]
    unsafe fn diagnose(&self, op: Op, p: *mut u8, api: Api, layout: Option<Layout>) -> Block {
        let b = match probe(p) {
            Probe::Block(b) => b,
            // A registered block whose tag was overwritten (a write before the block).
            // SAFETY: a registered header is readable.
            Probe::Foreign { .. }
                if matches!(probe::holder(p as usize), Some(probe::Holder::Damaged)) =>
            unsafe { fatal(op, p, Defect::HeaderDamaged) },
            // SAFETY: InvalidFree reads nothing at p.
            Probe::Foreign { reason } => unsafe { fatal(op, p, Defect::InvalidFree { reason }) },
        };
        // SAFETY: probe found a valid header, so the block's inner allocation is readable,
        // unless the block was released: then only the header is read (by the report).
        unsafe {
            let h = b.header();
            let state = status(h).load(Ordering::Acquire);
            if state == RELEASED {
                // (Its size word went back to the inner allocator with the block.)
                fatal(op, p, Defect::DoubleFree { released: true });
            }
            if !header_sound(h) {
                fatal(op, p, Defect::HeaderDamaged);
            }
            if state == FREED {
                fatal(op, p, Defect::DoubleFree { released: false });
            }
            if (*h).api != api as u8 {
                fatal(op, p, Defect::ApiMismatch { used: api });
            }
            // With a Rust layout, its size (once checked equal to the header's) locates the back
            // guard: the guard's load then does not wait for the header's, and a block the
            // program has not touched for a while costs two overlapping cache misses here
            // rather than one after the other.
            let size = match layout {
                Some(l) => {
                    if l.size() != b.size() || l.align() != b.align() {
                        fatal(
                            op,
                            p,
                            Defect::LayoutMismatch {
                                size: l.size(),
                                align: l.align(),
                            },
                        );
                    }
                    l.size()
                }
                None => b.size(),
            };
            if !b.leading_intact() {
                fatal(op, p, Defect::LeadingPad);
            }
            if !b.trailing_intact(size) {
                fatal(op, p, Defect::TrailingPad);
            }
        }
        b
    }

    /// Marks a checked block freed and queues it; releases what the quarantine evicts.
    ///
    /// # Safety
    /// `b` was returned by `checked` and is not used afterwards.
    #[inline]
    unsafe fn release(&self, b: Block) {
        let h = b.header();
        // SAFETY: the block is live and ours until it is queued or returned below.
        unsafe {
            let bytes = b.inner_layout().size();
            (*h).free_stack = stack_id32(traceback_hooks().map_or(0, |hooks| (hooks.capture)()));
            fill(b.p, DEADBYTE, b.size());
            // Release: `check_heap` reads FREED and then expects the DEADBYTE fill.
            status(h).store(FREED, Ordering::Release);
            let limit = self.limit();
            let one = [Entry { h, bytes }];
            if bytes > limit {
                // Quarantine off, or a block bigger than the whole quarantine.
                self.release_blocks(&one);
                return;
            }
            let mut batch = Batch::new();
            let queued = self.quarantine.with(|q| {
                let queued = q.push(h, bytes, limit, &mut batch);
                q.evict_over(limit, &mut batch);
                queued
            });
            if !queued {
                // No memory for the quarantine's ring.
                self.release_blocks(&one);
            }
            while batch.len > 0 {
                self.evict(batch.as_slice());
                if !batch.is_full() {
                    break;
                }
                batch = Batch::new();
                self.quarantine.with(|q| q.evict_over(limit, &mut batch));
            }
        }
    }

    /// Verifies blocks leaving the quarantine and returns them to the inner allocator.
    ///
    /// # Safety
    /// `batch` holds freed blocks of this allocator, no longer in the quarantine.
    unsafe fn evict(&self, batch: &[Entry]) {
        for (i, e) in batch.iter().enumerate() {
            // The leaving blocks were freed long ago and are cold in cache: start loading the
            // one after next while this one is read.
            if let Some(ahead) = batch.get(i + 2) {
                prefetch(ahead.h as *const u8, ahead.bytes);
            }
            let b = Block { p: user_of(e.h) };
            // SAFETY: the block is registered and owned by this call until it is deallocated.
            if let Some(defect) = unsafe { check::verify(b, true) } {
                // (While this thread reports a defect, the process aborts once it is written:
                // another one found meanwhile, maybe the same block, waits for no report.)
                if !report::reporting_here() {
                    // SAFETY: the block is still ours and readable.
                    unsafe { fatal(Op::Quarantine, b.p, defect) };
                }
            }
        }
        // SAFETY: as required by this function.
        unsafe { self.release_blocks(batch) };
    }

    /// Unregisters freed blocks (under the registry's release lock, once for the whole batch)
    /// and returns them to the inner allocator. Once a block's slot is cleared `check_heap`
    /// can no longer find it, so the inner allocator is called after the lock is dropped (it
    /// may even be another debug layer, which takes the same lock).
    ///
    /// # Safety
    /// `batch` holds freed, registered blocks of this allocator that nothing else refers to.
    unsafe fn release_blocks(&self, batch: &[Entry]) {
        for e in batch {
            // A slot changed since the block was registered (a write before it, while it was
            // live or quarantined) would have `remove` clear another block's slot.
            // SAFETY: the header is ours and readable.
            if unsafe { !live::registered(e.h) } {
                if report::reporting_here() {
                    // The process aborts once the report is written: keep the batch.
                    return;
                }
                // SAFETY: as above; the report reads only the header and the front guard.
                unsafe { fatal(Op::Quarantine, user_of(e.h), Defect::HeaderDamaged) };
            }
        }
        live::RELEASE.with(|()| {
            let mut local = local::local();
            for e in batch {
                // SAFETY: `e.h` is registered and ours.
                unsafe {
                    match local.as_deref_mut() {
                        Some(l) => live::remove(l, e.h),
                        None => live::remove_leaking_slot(e.h),
                    }
                }
            }
        });
        for e in batch {
            let b = Block { p: user_of(e.h) };
            // SAFETY: unregistered above and still ours; the header gives back the inner
            // pointer and layout the block was allocated with (read before the mark, which
            // changes no field they come from).
            unsafe {
                let (base, layout) = (b.base(), b.inner_layout());
                mark_released(e.h);
                self.inner.dealloc(base, layout);
            }
        }
    }
}

/// Asks the CPU to start loading up to 1 KiB from `from` (a header; `bytes` from there to the
/// end of the block, or more: the inner allocation's size). Only a hint: it never faults,
/// whatever the address.
#[inline]
fn prefetch(from: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < bytes.min(1024) {
            // SAFETY: prefetching is only a hint; it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (from, bytes);
}

/// True when `p` starts a block made by a debug allocator (live or quarantined, or released to
/// the inner allocator with its mark still in place: freeing it is a double free). Reads at most
/// the 32 bytes before a 16-aligned `p`, following the rules of invalid-free detection, so a
/// foreign `p` must point into mapped memory. The preload uses it to route `free` of pointers
/// that the debug layer never made.
pub fn is_debug_block(p: *const u8) -> bool {
    !p.is_null() && matches!(probe(p as *mut u8), Probe::Block(_))
}

/// Blocks currently held by all debug allocators (live plus quarantined).
pub fn block_count() -> usize {
    live::count()
}

// SAFETY: every block is sized and aligned as requested (`init_block` puts `p` at a multiple
// of the alignment inside an inner allocation large enough for the user bytes, guards and
// trailer); the inner allocator is only ever called back with the layout it was called with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Debug<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: Layout alignments are powers of two.
        unsafe { self.alloc_block(layout.size(), layout.align(), Api::Rust, Some(0)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { self.alloc_block(layout.size(), layout.align(), Api::Rust, None) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The block is usually cold (a program frees what it has not touched for a while), yet
        // it is not prefetched: the fast check's loads (header word, both guards) do not depend
        // on each other, so their misses overlap anyway, and the fill's stores do not wait for
        // their lines. A prefetch of the whole block cost ~36 instructions per free (churn) and
        // no measurable time.
        // SAFETY: the caller passes a pointer it got from this allocator (that is what is
        // checked); `checked` aborts on anything else it can detect.
        unsafe {
            let b = self.checked(Op::Dealloc, ptr, Api::Rust, Some(layout));
            self.release(b);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in dealloc; the new block is fresh and at least `keep` bytes long, the old
        // one still live until released.
        unsafe {
            let old = self.checked(Op::Realloc, ptr, Api::Rust, Some(layout));
            let keep = old.size().min(new_size);
            let new = self.alloc_block(new_size, layout.align(), Api::Rust, Some(keep));
            if new.is_null() {
                return null_mut();
            }
            core::ptr::copy_nonoverlapping(ptr, new, keep);
            self.release(old);
            new
        }
    }
}

impl<A: GlobalAlloc> Drop for Debug<A> {
    /// Returns the quarantine to the inner allocator (a `static` is never dropped; this is for
    /// local instances in tests and tools).
    fn drop(&mut self) {
        self.flush_quarantine();
    }
}

#[cfg(test)]
mod tests;
