//! The arena map: "is this pointer inside one of our arenas?" in O(1), reading only our own
//! memory.
//!
//! C's `free(ptr)` and `realloc(ptr, n)` give no size, so the preload must tell tidemark's
//! blocks from glibc's by address alone. obmalloc answers with a radix tree over the address;
//! because our arenas are aligned to their 1 MiB size, one bit per possible arena is enough:
//! a 47-bit user address space has 2^27 arena slots, a 16 MiB bitmap. It is reserved with
//! `MAP_NORESERVE` at the first arena, so only the pages covering used address ranges (one
//! 4 KiB page per 32 GiB of address space) ever become resident.

use crate::os;
use crate::size_class::ARENA_SHIFT;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// User-space addresses on x86-64 and AArch64 Linux stay below 2^47 unless a program asks
/// `mmap` for higher ones with a hint; such pointers are simply never ours.
const ADDRESS_BITS: u32 = 47;
const SLOTS: usize = 1 << (ADDRESS_BITS - ARENA_SHIFT);
const WORDS: usize = SLOTS / 64;

static BITMAP: AtomicPtr<AtomicU64> = AtomicPtr::new(ptr::null_mut());

/// Reserves the bitmap. Called under the arena lock before the first arena is published.
/// Returns false when the reservation fails (then no arena can be made either).
pub fn ensure_reserved() -> bool {
    if !BITMAP.load(Ordering::Acquire).is_null() {
        return true;
    }
    let words = os::map(WORDS * 8) as *mut AtomicU64;
    if words.is_null() {
        return false;
    }
    // Only the arena lock's holder gets here in the allocator, but a compare-exchange keeps
    // two racing first callers (the unit tests' private arena sets) from losing inserts.
    if let Err(winner) =
        BITMAP.compare_exchange(ptr::null_mut(), words, Ordering::AcqRel, Ordering::Acquire)
    {
        debug_assert!(!winner.is_null());
        // SAFETY: our own mapping, never published.
        unsafe { os::unmap(words as *mut u8, WORDS * 8) };
    }
    true
}

#[inline(always)]
fn slot(addr: usize) -> Option<(usize, u64)> {
    let index = addr >> ARENA_SHIFT;
    if index >= SLOTS {
        None
    } else {
        Some((index / 64, 1u64 << (index % 64)))
    }
}

/// Is `ptr` inside one of our arenas?
#[inline]
pub fn contains(ptr: *const u8) -> bool {
    let words = BITMAP.load(Ordering::Acquire);
    if words.is_null() {
        return false;
    }
    match slot(ptr as usize) {
        // SAFETY: `word < WORDS`, inside the bitmap mapping, which is never unmapped.
        Some((word, bit)) => unsafe { (*words.add(word)).load(Ordering::Relaxed) & bit != 0 },
        None => false,
    }
}

/// Marks the arena at `base` as ours (after it is mapped, before any block of it is handed out).
pub fn insert(base: usize) {
    set(base, true);
}

/// Forgets the arena at `base` (before it is unmapped).
pub fn remove(base: usize) {
    set(base, false);
}

fn set(base: usize, present: bool) {
    let words = BITMAP.load(Ordering::Acquire);
    debug_assert!(!words.is_null());
    if let Some((word, bit)) = slot(base) {
        // SAFETY: `word < WORDS`, inside the bitmap mapping reserved by `ensure_reserved`.
        let cell = unsafe { &*words.add(word) };
        if present {
            cell.fetch_or(bit, Ordering::Release);
        } else {
            cell.fetch_and(!bit, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_remove() {
        assert!(ensure_reserved());
        // An address range no arena will use: slot math only, nothing is dereferenced there.
        let base = 0x7000_0000_0000usize & !((1 << ARENA_SHIFT) - 1);
        assert!(!contains(base as *const u8));
        insert(base);
        assert!(contains(base as *const u8));
        assert!(contains((base + 12345) as *const u8));
        assert!(!contains((base + (1 << ARENA_SHIFT)) as *const u8));
        remove(base);
        assert!(!contains(base as *const u8));
        assert!(!contains(usize::MAX as *const u8));
        assert!(!contains(core::ptr::null()));
    }
}
