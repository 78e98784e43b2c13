//! The replay's live-block table: address → (size, site) for every block allocated and not
//! yet freed.
//!
//! Replaying a capture is one lookup here per event, and the table is as big as the
//! recorded program's heap in blocks (1.5M live blocks at the peak of the CPython workload),
//! so nearly every lookup is a cache miss: the replay's time is this table's misses. Hence:
//!
//! - a flat power-of-two array of 16-byte slots with linear probing: one miss per lookup
//!   (four slots share a cache line, and the probe usually ends inside it);
//! - Fibonacci hashing of the address (aligned pointers have zero low bits; the product's
//!   high bits do not);
//! - backward-shift deletion instead of tombstones: frees are as common as allocations,
//!   and tombstones would lengthen every probe of a churning heap;
//! - [`LiveTable::prefetch`], so the replay can ask for the slot of an event a few dozen
//!   events ahead and find it in cache when it gets there;
//! - memory straight from `mmap` with `MADV_HUGEPAGE`: a 32 MiB table on 4 KiB pages costs
//!   a TLB miss on top of every cache miss.
//!
//! Address 0 marks an empty slot, so a (corrupt or failed-allocation) block at address 0
//! lives beside the array, and sizes of 4 GiB or more (rare) in a small side map.

use super::replay::IntMap;

/// One slot: a live block, or empty when `ptr` is 0.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    ptr: u64,
    /// The size, or [`BIG_SIZE`] when it is in `big_sizes`.
    size: u32,
    site: u32,
}

/// Slots in a 64-byte cache line (the mapping is page-aligned, so lines hold whole groups).
const SLOTS_PER_LINE: usize = 64 / std::mem::size_of::<Slot>();

/// Marks a size kept in the side map.
const BIG_SIZE: u32 = u32::MAX;

/// The table starts with 2^MIN_BITS slots (256 KiB) and doubles at 3/4 full.
const MIN_BITS: u32 = 14;

/// Live blocks, by address.
pub struct LiveTable {
    slots: SlotArray,
    len: usize,
    /// The block at address 0, if any (0 marks empty slots).
    at_zero: Option<(u64, u32)>,
    big_sizes: IntMap<u64, u64>,
}

impl LiveTable {
    pub fn new() -> LiveTable {
        LiveTable {
            slots: SlotArray::new(MIN_BITS),
            len: 0,
            at_zero: None,
            big_sizes: IntMap::default(),
        }
    }

    /// Live blocks.
    pub fn len(&self) -> usize {
        self.len + self.at_zero.is_some() as usize
    }

    /// Starts loading the cache line where `ptr`'s probe begins, and the next one: at the
    /// load the table runs at (up to 3/4), a removal's backward shift often walks into it.
    #[inline]
    pub fn prefetch(&self, ptr: u64) {
        let home = self.slots.home(ptr);
        self.slots.prefetch(home);
        self.slots.prefetch((home | (SLOTS_PER_LINE - 1)) + 1);
    }

    /// Makes `ptr` live with `size` and `site`; returns what was live there before (a free
    /// the capture lost), if anything.
    pub fn insert(&mut self, ptr: u64, size: u64, site: u32) -> Option<(u64, u32)> {
        if ptr == 0 {
            return self.at_zero.replace((size, site));
        }
        let mut i = self.slots.home(ptr);
        loop {
            let slot = self.slots.get(i);
            if slot.ptr == ptr {
                let old_size = self.take_size(slot);
                let new = self.slot(ptr, size, site);
                *self.slots.get_mut(i) = new;
                return Some((old_size, slot.site));
            }
            if slot.ptr == 0 {
                let new = self.slot(ptr, size, site);
                *self.slots.get_mut(i) = new;
                self.len += 1;
                if self.len * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                return None;
            }
            i = (i + 1) & self.slots.mask;
        }
    }

    /// Ends the life of `ptr`'s block: its size and site, or `None` when it is not live.
    pub fn remove(&mut self, ptr: u64) -> Option<(u64, u32)> {
        if ptr == 0 {
            return self.at_zero.take();
        }
        let mask = self.slots.mask;
        let mut i = self.slots.home(ptr);
        let found = loop {
            let slot = self.slots.get(i);
            if slot.ptr == ptr {
                break slot;
            }
            if slot.ptr == 0 {
                return None;
            }
            i = (i + 1) & mask;
        };
        // Backward shift: pull later entries of the run into the hole when their probe may
        // start at or before it, so no lookup ever stops early at the hole.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let next = self.slots.get(j);
            if next.ptr == 0 {
                break;
            }
            let home = self.slots.home(next.ptr);
            if !crate::table::home_in_gap(hole, home, j) {
                *self.slots.get_mut(hole) = next;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots.get_mut(hole).ptr = 0;
        self.len -= 1;
        Some((self.take_size(found), found.site))
    }

    /// The slot for a new block (its size goes to the side map when it does not fit).
    fn slot(&mut self, ptr: u64, size: u64, site: u32) -> Slot {
        let size = match u32::try_from(size) {
            Ok(size) if size != BIG_SIZE => size,
            _ => {
                self.big_sizes.insert(ptr, size);
                BIG_SIZE
            }
        };
        Slot { ptr, size, site }
    }

    /// The size of a block leaving `slot` (dropping it from the side map).
    fn take_size(&mut self, slot: Slot) -> u64 {
        if slot.size == BIG_SIZE {
            self.big_sizes.remove(&slot.ptr).unwrap_or(0)
        } else {
            slot.size as u64
        }
    }

    /// Doubles the array and re-inserts every block.
    fn grow(&mut self) {
        let bits = self.slots.bits + 1;
        let old = std::mem::replace(&mut self.slots, SlotArray::new(bits));
        for i in 0..old.len() {
            let slot = old.get(i);
            if slot.ptr == 0 {
                continue;
            }
            let mut j = self.slots.home(slot.ptr);
            while self.slots.get(j).ptr != 0 {
                j = (j + 1) & self.slots.mask;
            }
            *self.slots.get_mut(j) = slot;
        }
    }
}

/// A zero-filled array of slots in its own mapping.
struct SlotArray {
    ptr: *mut Slot,
    bits: u32,
    mask: usize,
}

// SAFETY: the array owns its mapping outright (like a `Box<[Slot]>`); nothing else points
// into it, so moving it to another thread (the writer replays in its own thread) is safe.
unsafe impl Send for SlotArray {}

impl SlotArray {
    fn new(bits: u32) -> SlotArray {
        let len = 1usize << bits;
        let bytes = len * std::mem::size_of::<Slot>();
        // Zeroed pages are empty slots, backed by memory only once touched.
        let ptr = crate::sysmem::map_zeroed(bytes);
        if ptr.is_null() {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(bytes, 64)
                    .unwrap_or(std::alloc::Layout::new::<Slot>()),
            );
        }
        // SAFETY: `ptr..ptr+bytes` is the mapping just made. The advice is a hint: failing
        // (no transparent huge pages) leaves ordinary pages, which is fine.
        unsafe { libc::madvise(ptr.cast(), bytes, libc::MADV_HUGEPAGE) };
        SlotArray {
            ptr: ptr.cast(),
            bits,
            mask: len - 1,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.mask + 1
    }

    /// Where the probe for `ptr` starts.
    #[inline]
    fn home(&self, ptr: u64) -> usize {
        (ptr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    #[inline]
    fn get(&self, i: usize) -> Slot {
        // SAFETY: masked with `self.mask`, `i` is inside the mapping.
        unsafe { *self.ptr.add(i & self.mask) }
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> &mut Slot {
        // SAFETY: masked with `self.mask`, `i` is inside the mapping; `&mut self` makes the
        // reference exclusive.
        unsafe { &mut *self.ptr.add(i & self.mask) }
    }

    #[inline]
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint and never faults; the address is inside the
        // mapping anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.ptr.add(i & self.mask).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }
}

impl Drop for SlotArray {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and nothing points into it
        // once the array is dropped.
        unsafe { crate::sysmem::unmap(self.ptr.cast(), self.len() * std::mem::size_of::<Slot>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The table agrees with a `HashMap` through heavy churn, growth, colliding addresses,
    /// address 0 and big sizes.
    #[test]
    fn matches_a_hashmap() {
        let mut table = LiveTable::new();
        let mut model: HashMap<u64, (u64, u32)> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..400_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct addresses, so inserts hit live blocks and removes hit empty ones;
            // now and then address 0, and a size beyond 32 bits.
            let ptr = if step & 1023 == 0 {
                0
            } else {
                (x % 150_000) * 16
            };
            let size = if x >> 58 == 0 { 5 << 32 } else { x % 4096 };
            if (x >> 40) % 3 < 1 {
                assert_eq!(table.remove(ptr), model.remove(&ptr), "remove {ptr:#x}");
            } else {
                let site = step % 1000;
                assert_eq!(
                    table.insert(ptr, size, site),
                    model.insert(ptr, (size, site)),
                    "insert {ptr:#x}"
                );
            }
            assert_eq!(table.len(), model.len());
        }
        for (&ptr, &v) in &model {
            assert_eq!(table.remove(ptr), Some(v));
        }
        assert_eq!(table.len(), 0);
        assert!(table.big_sizes.is_empty());
    }
}
