//! `check_heap()`: verify every debug block the inner allocators still hold.
//!
//! Live blocks must have intact headers, guards and trailers; quarantined blocks must also
//! still be all DEADBYTE.
//! The registry is walked under its release lock (so no block goes back to its allocator while
//! it is being read; allocations and frees go on meanwhile, evictions wait); the first bad
//! block is remembered, the lock dropped, and then the report is written, because the report
//! may call the tracer, which may allocate.

use super::layout::{header_sound, status, Block, DEADBYTE, FREED};
use super::live;
use super::report::{fatal, Defect, Op};
use super::scan::{all_equal, first_not};
use core::sync::atomic::Ordering;

/// Verifies the guards of every live debug block and the guards and DEADBYTE fill of every
/// quarantined one, across all `Debug` allocators in the process. On the first bad block it
/// writes the fatal report and aborts; otherwise it returns the number of blocks checked.
///
/// With `TIDEMARK_CHECK_AT_EXIT=1` in the environment it also runs at exit.
pub fn check_heap() -> usize {
    let mut checked = 0usize;
    let bad = live::RELEASE.with(|()| {
        live::find_map(|h| {
            checked += 1;
            let b = Block {
                p: super::layout::user_of(h),
            };
            // SAFETY: `h` is registered, so its whole inner allocation is still ours and
            // readable; the release lock keeps it from being released meanwhile.
            unsafe { verify(b, status(h).load(Ordering::Acquire) == FREED).map(|d| (b, d)) }
        })
    });
    if let Some((b, defect)) = bad {
        // SAFETY: the block was registered a moment ago. Its owner could release it between
        // the unlock and this read only by freeing it, which would itself have run these same
        // checks and reported first.
        unsafe { fatal(Op::CheckHeap, b.p, defect) };
    }
    checked
}

/// The first defect of a registered block, if any.
///
/// # Safety
/// `b` is a registered block.
pub unsafe fn verify(b: Block, freed: bool) -> Option<Defect> {
    // SAFETY: the block is registered, hence readable.
    unsafe {
        // First: the checks below locate the back guard and the user bytes by the header.
        if !header_sound(b.header()) || !live::registered(b.header()) {
            return Some(Defect::HeaderDamaged);
        }
        if !b.leading_intact() {
            return Some(Defect::LeadingPad);
        }
        let size = b.size();
        if !b.trailing_intact(size) {
            return Some(Defect::TrailingPad);
        }
        if b.serial().is_none() {
            return Some(Defect::TrailerDamaged);
        }
        if freed && !all_equal(b.p, size, DEADBYTE) {
            let offset = first_not(b.p, size, DEADBYTE).unwrap_or(0);
            return Some(Defect::WriteAfterFree { offset });
        }
    }
    None
}
