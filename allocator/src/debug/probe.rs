//! Invalid-free detection: is there a debug header before a pointer the program hands back?
//! The pointer may be anything, so the bytes before it are read only where that cannot fault.

use super::layout::{header_of, user_of, Api, Block, FREED, GUARD, HEAD, LIVE, MAGIC, RELEASED};
use super::live;

/// What sits before a pointer handed to free/realloc/dealloc.
pub enum Probe {
    /// A debug block header with the right magic.
    Block(Block),
    /// Not one of ours. `reason` says how we could tell.
    Foreign { reason: &'static str },
}

/// Decides whether `p` starts a debug block (live, quarantined, or released with its mark
/// still in place), reading at most the `HEAD` bytes before it and only when that is safe:
///
/// - every debug pointer is 16-aligned, so any other pointer is rejected without reading;
/// - if the header would cross into the previous page, that page is checked first (arena
///   memory through `crate::is_ours`, anything else with `mincore`), so a foreign pointer at
///   the start of a mapping does not fault;
/// - otherwise the header is on the same page as `p`, which the caller claims is mapped.
///
/// A pointer into a page that is not mapped at all still faults, as it would in glibc's free.
#[inline]
pub fn probe(p: *mut u8) -> Probe {
    let addr = p as usize;
    if addr & 15 != 0 {
        return Probe::Foreign {
            reason: "the pointer is not 16-aligned, so tidemark never handed it out",
        };
    }
    if addr < HEAD {
        return Probe::Foreign {
            reason: "the pointer is too small to be a heap address",
        };
    }
    // Pages are at least 4 KiB, so only a pointer in the first HEAD bytes of a 4 KiB frame can
    // have its header on another page; only then is the page size asked for.
    if addr & 4095 < HEAD && !header_page_mapped(addr) {
        return Probe::Foreign {
            reason: "the bytes before the pointer are not mapped, so tidemark never handed it out",
        };
    }
    let h = header_of(p);
    // SAFETY: `h` is 8-aligned (p is 16-aligned, HEAD is a multiple of 16) and its page is
    // mapped (checked above, or it is p's own page). Volatile: the bytes may be anyone's.
    let (magic, api, status) = unsafe {
        (
            core::ptr::addr_of!((*h).magic).read_volatile(),
            core::ptr::addr_of!((*h).api).read_volatile(),
            core::ptr::addr_of!((*h).status).read_volatile(),
        )
    };
    if magic != MAGIC || Api::from_byte(api).is_none() || !matches!(status, LIVE | FREED | RELEASED)
    {
        return Probe::Foreign {
            reason: "no debug block header precedes the pointer (bad magic)",
        };
    }
    Probe::Block(Block { p })
}

/// Whether the header of a pointer near the start of a 4 KiB frame is readable (it may be on
/// the previous page).
#[cold]
fn header_page_mapped(addr: usize) -> bool {
    let start = addr - HEAD;
    start / page_size() == addr / page_size()
        || crate::is_ours(start as *const u8)
        || is_mapped(start, page_size())
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n <= 0 {
        4096
    } else {
        n as usize
    }
}

/// Is the page holding `addr` mapped? (`mincore` fails with ENOMEM for unmapped pages.)
pub fn is_mapped(addr: usize, page: usize) -> bool {
    let mut vec = 0u8;
    // SAFETY: mincore only inspects the mapping; `vec` has room for one page's entry.
    let rc = unsafe { libc::mincore((addr & !(page - 1)) as *mut libc::c_void, 1, &mut vec) };
    rc == 0
}

/// A registered debug block (live or quarantined) found around a pointer that [`probe`] found
/// foreign.
pub enum Holder {
    /// The pointer is the block's own: its header sits right before it, so the tag that made
    /// `probe` say "foreign" was overwritten (a write before the block).
    Damaged,
    /// The pointer lies inside the block (user pointer given), from its header to its back
    /// guard, not at its start.
    Inside(*mut u8),
}

/// The registered block the pointer `addr` belongs to, if any, in one walk of the whole
/// registry (O(blocks)): only for pointers that failed every other check, which are rare
/// (blocks glibc made before the debug layer took over, and bugs). Blocks over 512 bytes live
/// in glibc's memory, and a pointer into one of them (`free(p + 32)`), or one whose header a
/// write damaged, would otherwise go to glibc's `free`, which may take it for a chunk and hand
/// it out again while the block is live.
pub fn holder(addr: usize) -> Option<Holder> {
    let exact = header_of(core::ptr::without_provenance_mut(addr));
    live::RELEASE.with(|()| {
        let mut inside = None;
        // A block whose header is at `exact` wins over one whose (maybe damaged) size
        // stretches over `addr`.
        let damaged = live::find_map(|h| {
            if h == exact {
                return Some(Holder::Damaged);
            }
            let b = Block { p: user_of(h) };
            // SAFETY: `h` is registered, so its header is readable; the release lock keeps it
            // from being returned meanwhile.
            let end = unsafe { b.tail() } as usize + GUARD;
            if inside.is_none() && (h as usize..end).contains(&addr) {
                inside = Some(Holder::Inside(b.p));
            }
            None
        });
        damaged.or(inside)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_rejects_unaligned_and_foreign() {
        #[repr(align(64))]
        struct Buf([u8; 256]);
        let mut buf = Buf([0; 256]);
        let p = buf.0.as_mut_ptr();
        assert!(matches!(probe(p.wrapping_add(3)), Probe::Foreign { .. }));
        assert!(matches!(probe(p.wrapping_add(128)), Probe::Foreign { .. }));
    }
}
