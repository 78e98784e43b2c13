//! The reuse model of the allocation pointer: which recently freed block an allocation takes.
//!
//! Size-segregated allocators (pymalloc pools, mimalloc pages, jemalloc slabs, glibc's
//! tcache bins) hand an allocation the most recently freed block of its size class, so the
//! block an allocation gets is nearly always the latest free *of its size bucket* — but a free
//! event carries no size. [`Reuse`] learns the bucket of each 16 KiB page from the
//! allocations it sees there (a page serves one size class in those allocators), files a free
//! under its page's bucket, and keeps per bucket the latest freed addresses not allocated
//! again. An allocation found there is stored as its position in its bucket's list, 0 nearly
//! always (churn on pymalloc: about one bit an allocation, where a distance among all recent
//! frees took seven).
//!
//! Encoder and decoder make the same calls in the same order, so the model is exact however
//! wrong its guesses: a page of mixed sizes or a page that lost its table slot only costs a
//! longer code, never a wrong pointer.

use super::{bucket, BUCKETS, REGION_SHIFT};

/// log2 of the pages whose size class is learned (pymalloc's pool size; mimalloc's small
/// pages are 64 KiB, which this sees as four pages of the same class). At most a region.
const PAGE_SHIFT: u32 = 14;

/// Freed addresses kept per bucket, most recent first.
pub(super) const WAYS: usize = 8;

/// Pages whose bucket is remembered, direct-mapped (a lost page is relearned at its next
/// allocation).
const PAGES: usize = 32768;

/// An address no block has: marks an empty place in a list.
const EMPTY: u64 = u64::MAX;

/// What the model knows of a page: which one it is (the slot is shared), the bucket of its
/// latest allocation (+ 1; 0 for an empty slot), and that allocation's offset in the page
/// modulo the bucket's class size (pymalloc's pools put their blocks at a fixed offset from
/// the pool header, so every block of a page has the same one).
#[derive(Clone, Copy, Default)]
struct Page {
    page: u64,
    bucket: u8,
    phase: u16,
}

pub(super) struct Reuse {
    pages: Box<[Page]>,
    frees: Box<[[u64; WAYS]; BUCKETS]>,
}

/// The class size blocks of `bucket` are laid out by, for the buckets of 16-byte classes.
#[inline]
fn class_size(bucket: u8) -> Option<u64> {
    (1..=32).contains(&bucket).then_some(bucket as u64 * 16)
}

impl Reuse {
    pub(super) fn new() -> Reuse {
        Reuse {
            pages: vec![Page::default(); PAGES].into_boxed_slice(),
            frees: Box::new([[EMPTY; WAYS]; BUCKETS]),
        }
    }

    #[inline]
    fn page(&mut self, ptr: u64) -> (u64, &mut Page) {
        let page = ptr >> PAGE_SHIFT;
        let i =
            (page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PAGES.trailing_zeros())) as usize;
        (page, &mut self.pages[i])
    }

    /// The bucket of the page `ptr` lies in, if known.
    #[inline]
    fn bucket_of(&mut self, ptr: u64) -> Option<(u8, u16)> {
        let (page, p) = self.page(ptr);
        (p.page == page && p.bucket != 0).then(|| (p.bucket - 1, p.phase))
    }

    /// Files a free of `ptr` at the front of its page's bucket list (nowhere if the page's
    /// bucket is unknown).
    #[inline]
    pub(super) fn freed(&mut self, ptr: u64) {
        if let Some((b, _)) = self.bucket_of(ptr) {
            let list = &mut self.frees[b as usize];
            list.copy_within(0..WAYS - 1, 1);
            list[0] = ptr;
        }
    }

    /// Where `ptr` is in the list of the bucket of `size`, if it is there.
    #[inline]
    pub(super) fn position(&self, size: u64, ptr: u64) -> Option<usize> {
        if ptr == EMPTY {
            return None;
        }
        self.frees[bucket(size)].iter().position(|&a| a == ptr)
    }

    /// The address at `position` in the list of the bucket of `size`.
    #[inline]
    pub(super) fn at(&self, size: u64, position: usize) -> Option<u64> {
        let ptr = *self.frees[bucket(size)].get(position)?;
        (ptr != EMPTY).then_some(ptr)
    }

    /// A freed block's place inside its 1 MiB region as `block index << 6 | page in region`,
    /// when its page's class size and phase are known and `ptr` sits on a block boundary:
    /// about 12 bits where the offset takes 16. See [`Reuse::unblock`].
    #[inline]
    pub(super) fn block(&mut self, ptr: u64) -> Option<u64> {
        let (b, phase) = self.bucket_of(ptr)?;
        let size = class_size(b)?;
        let offset = (ptr & PAGE_MASK).checked_sub(phase as u64)?;
        (offset % size == 0).then(|| (offset / size) << PAGES_PER_REGION_BITS | page_in_region(ptr))
    }

    /// The address [`Reuse::block`] gave `code` for, in the region starting at `region`.
    #[inline]
    pub(super) fn unblock(&mut self, region: u64, code: u64) -> Option<u64> {
        let page = region + ((code & (PAGES_PER_REGION - 1)) << PAGE_SHIFT);
        let (b, phase) = self.bucket_of(page)?;
        let offset = (code >> PAGES_PER_REGION_BITS)
            .checked_mul(class_size(b)?)?
            .checked_add(phase as u64)?;
        (offset <= PAGE_MASK).then_some(page | offset)
    }

    /// A block of `size` bytes was allocated at `ptr`: it leaves its bucket's list, and its
    /// page now counts as of that bucket.
    #[inline]
    pub(super) fn allocated(&mut self, size: u64, ptr: u64) {
        let b = bucket(size);
        let list = &mut self.frees[b];
        if let Some(i) = list.iter().position(|&a| a == ptr) {
            list.copy_within(i + 1.., i);
            list[WAYS - 1] = EMPTY;
        }
        let phase = class_size(b as u8).map_or(0, |c| (ptr & PAGE_MASK) % c) as u16;
        let (page, p) = self.page(ptr);
        *p = Page {
            page,
            bucket: b as u8 + 1,
            phase,
        };
    }
}

const PAGE_MASK: u64 = (1 << PAGE_SHIFT) - 1;
const PAGES_PER_REGION_BITS: u32 = REGION_SHIFT - PAGE_SHIFT;
const PAGES_PER_REGION: u64 = 1 << PAGES_PER_REGION_BITS;

#[inline]
fn page_in_region(ptr: u64) -> u64 {
    (ptr >> PAGE_SHIFT) & (PAGES_PER_REGION - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_free_of_a_bucket_comes_first_and_leaves_when_allocated() {
        let mut r = Reuse::new();
        let page = 7 << PAGE_SHIFT;
        // A free in a page of unknown bucket goes nowhere.
        r.freed(page + 32);
        assert_eq!(r.position(48, page + 32), None);
        r.allocated(48, page);
        for offset in [32, 64, 96] {
            r.freed(page + offset);
        }
        assert_eq!(r.position(48, page + 96), Some(0));
        assert_eq!(
            r.position(40, page + 32),
            Some(2),
            "40 and 48 share a bucket"
        );
        assert_eq!(r.position(64, page + 32), None);
        r.allocated(48, page + 64);
        assert_eq!(r.at(48, 0), Some(page + 96));
        assert_eq!(r.at(48, 1), Some(page + 32));
        assert_eq!(r.at(48, 2), None);
        // Only the latest WAYS frees of a bucket are kept.
        for i in 0..WAYS as u64 + 2 {
            r.freed(page + 1024 + 16 * i);
        }
        assert_eq!(r.position(48, page + 32), None);
        assert_eq!(r.at(48, 0), Some(page + 1024 + 16 * (WAYS as u64 + 1)));
    }
}
