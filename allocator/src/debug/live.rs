//! The registry of every debug block that the inner allocators still hold: live blocks and
//! blocks waiting in a quarantine. `check_heap` walks it.
//!
//! It is a table of slots, one word per block, in mappings of our own (so registering never
//! allocates through the global allocator). A block's header remembers its slot. A slot holds:
//!
//! - 0: never used;
//! - a header address (even): a registered block;
//! - `(next + 1) << 1 | 1` (odd): a free slot, linked into one thread's stack of free slots.
//!
//! Why a table and not a locked list: registering and unregistering are plain stores by the
//! thread that does them, into slots that no other thread writes (a thread takes fresh slots
//! [`GRAB`] at a time from a global counter, and reuses the slots it freed itself), so the
//! allocation and free paths take no lock and execute no atomic read-modify-write.
//!
//! The only reader from other threads is `check_heap`. It must not read a block whose memory
//! goes back to the inner allocator under it, so unregistering a block and returning it both
//! happen under [`RELEASE`], which `check_heap` holds while it walks; evictions are batched
//! (see `quarantine.rs`), so the lock is taken once per batch, not once per free. A block
//! being registered is seen either not at all or fully initialized (the slot is written with
//! release ordering after the header).

use super::layout::Header;
use super::local::Local;
use crate::sync::SpinLock;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Slots per mapping (512 KiB of slots).
const CHUNK_SLOTS: usize = 1 << 16;
/// Mappings at most: 2^30 registered blocks (a header keeps its slot in 32 bits).
const MAX_CHUNKS: usize = 1 << 14;
const _: () = assert!(MAX_CHUNKS * CHUNK_SLOTS <= 1 << 32);
/// Fresh slots a thread takes at once (divides `CHUNK_SLOTS`, so a grab is in one mapping).
pub const GRAB: usize = 1024;

static CHUNKS: [AtomicPtr<AtomicUsize>; MAX_CHUNKS] =
    [const { AtomicPtr::new(null_mut()) }; MAX_CHUNKS];
/// Slots handed out so far (fresh slots come from here).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Held while blocks are unregistered and returned to their inner allocator, and by
/// `check_heap` while it walks the table.
pub static RELEASE: SpinLock<()> = SpinLock::new(());

/// The slot at `index`.
///
/// # Safety
/// `index` was handed out by `grab` (so its mapping exists).
#[inline]
unsafe fn slot<'a>(index: usize) -> &'a AtomicUsize {
    let chunk = CHUNKS[index / CHUNK_SLOTS].load(Ordering::Acquire);
    // SAFETY: the mapping of a handed-out index exists and holds CHUNK_SLOTS slots; mappings
    // are never unmapped.
    unsafe { &*chunk.add(index % CHUNK_SLOTS) }
}

/// Takes `GRAB` fresh slots for `l`; false when out of slots or memory.
#[cold]
fn grab(l: &mut Local) -> bool {
    let start = NEXT.fetch_add(GRAB, Ordering::Relaxed);
    let chunk = start / CHUNK_SLOTS;
    if chunk >= MAX_CHUNKS {
        return false;
    }
    let cell = &CHUNKS[chunk];
    if cell.load(Ordering::Acquire).is_null() {
        let bytes = CHUNK_SLOTS * core::mem::size_of::<AtomicUsize>();
        // Zero-filled by the kernel: every slot starts as 0 (never used).
        let fresh = crate::os::map(bytes) as *mut AtomicUsize;
        if fresh.is_null() {
            return false;
        }
        if cell
            .compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: our own mapping, which nobody else has seen.
            unsafe { libc::munmap(fresh as *mut libc::c_void, bytes) };
        }
    }
    l.slot_next = start;
    l.slot_end = start + GRAB;
    true
}

/// Registers a freshly initialized block; false when there is no slot for it (out of memory).
///
/// # Safety
/// `h` is a valid header not yet registered.
#[inline]
pub unsafe fn insert(l: &mut Local, h: *mut Header) -> bool {
    let index = if l.free_slot != 0 {
        let index = l.free_slot - 1;
        // SAFETY: a slot on this thread's free stack; only this thread writes it.
        l.free_slot = unsafe { slot(index) }.load(Ordering::Relaxed) >> 1;
        index
    } else {
        if l.slot_next == l.slot_end && !grab(l) {
            return false;
        }
        l.slot_next += 1;
        l.slot_next - 1
    };
    // SAFETY: `h` is valid; the slot is ours (just popped or fresh). Release: `check_heap`
    // sees the header initialized if it sees the address.
    unsafe {
        // Fits: at most MAX_CHUNKS * CHUNK_SLOTS = 2^30 slots.
        (*h).slot = index as u32;
        slot(index).store(h as usize, Ordering::Release);
    }
    l.count(1);
    true
}

/// Whether the slot `h`'s header names holds `h`: false when a write before the block
/// changed the header's slot, which `remove` would otherwise clear (another block's, or one
/// past the table).
///
/// # Safety
/// `h` is readable.
pub unsafe fn registered(h: *mut Header) -> bool {
    // SAFETY: guaranteed by the caller.
    let index = unsafe { (*h).slot } as usize;
    if index >= NEXT.load(Ordering::Acquire).min(MAX_CHUNKS * CHUNK_SLOTS) {
        return false;
    }
    let chunk = CHUNKS[index / CHUNK_SLOTS].load(Ordering::Acquire);
    // SAFETY: a mapping holds CHUNK_SLOTS slots and is never unmapped.
    !chunk.is_null()
        && unsafe { &*chunk.add(index % CHUNK_SLOTS) }.load(Ordering::Acquire) == h as usize
}

/// Unregisters a block before its memory goes back to the inner allocator; its slot joins
/// the calling thread's free stack.
///
/// # Safety
/// `h` is a registered header; the caller holds [`RELEASE`].
#[inline]
pub unsafe fn remove(l: &mut Local, h: *mut Header) {
    // SAFETY: a registered header's slot holds its address; nobody else writes that slot
    // until it is free again.
    unsafe {
        let index = (*h).slot as usize;
        slot(index).store((l.free_slot << 1) | 1, Ordering::Relaxed);
    }
    // SAFETY: as above.
    l.free_slot = unsafe { (*h).slot } as usize + 1;
    l.count(-1);
}

/// Unregisters a block without a thread state to take its slot (out of memory): the slot is
/// left unused for good.
///
/// # Safety
/// As for [`remove`].
pub unsafe fn remove_leaking_slot(h: *mut Header) {
    // SAFETY: as for `remove`.
    unsafe { slot((*h).slot as usize).store(0, Ordering::Relaxed) };
}

/// Calls `visit` on every registered header until it returns `Some`. The caller holds
/// [`RELEASE`], so no visited block is returned to its allocator meanwhile; `visit` must not
/// allocate through the debug layer.
pub fn find_map<T>(mut visit: impl FnMut(*mut Header) -> Option<T>) -> Option<T> {
    let end = NEXT.load(Ordering::Acquire);
    let used = end.div_ceil(CHUNK_SLOTS).min(MAX_CHUNKS);
    for (chunk, cell) in CHUNKS.iter().enumerate().take(used) {
        let base = cell.load(Ordering::Acquire);
        if base.is_null() {
            // Handed out a moment ago, not mapped yet: nothing registered there.
            continue;
        }
        let n = (end - chunk * CHUNK_SLOTS).min(CHUNK_SLOTS);
        for i in 0..n {
            // SAFETY: `i` is inside the mapping.
            let v = unsafe { &*base.add(i) }.load(Ordering::Acquire);
            if v != 0 && v & 1 == 0 {
                if let Some(t) = visit(v as *mut Header) {
                    return Some(t);
                }
            }
        }
    }
    None
}

/// The number of registered blocks (live and quarantined).
pub fn count() -> usize {
    super::local::total_count()
}
