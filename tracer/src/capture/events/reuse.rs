//! The reuse model of the allocation pointer: which recently freed block an allocation takes.
//!
//! Size-segregated allocators (pymalloc pools, mimalloc pages, jemalloc slabs) hand an
//! allocation the most recently freed block of its size class, so the block an allocation
//! gets is nearly always the latest free *of its size bucket* — but a free event carries no
//! size. [`Reuse`] learns the bucket of each 16 KiB page from the allocations it sees there
//! (a page serves one size class in those allocators), files a free under its page's bucket,
//! and keeps per bucket the latest freed addresses not allocated again. An allocation found
//! there is stored as its position in its bucket's list, 0 nearly always (churn on pymalloc:
//! about one bit an allocation, where a distance among all recent frees took seven). The same
//! knowledge names a free in a learned page by its block index (`block`).
//!
//! glibc mixes sizes within a page, so there the learned buckets are mostly wrong and
//! allocations fall back to the distance among all recent frees (a C churn under the
//! preload: about a quarter hit the bucket lists; its capture is as big as with format 2).
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
pub(super) const EMPTY: u64 = u64::MAX;

/// What the model knows of a page: which one it is (the slot is shared), the chunk that
/// wrote the slot (slots of earlier chunks count as empty, so a new chunk needs no clearing
/// of the table), the bucket of its latest allocation, and that allocation's offset in the
/// page modulo the bucket's class size (pymalloc's pools put their blocks at a fixed offset
/// from the pool header, so every block of a page has the same one).
#[derive(Clone, Copy, Default)]
struct Page {
    page: u64,
    chunk: u32,
    phase: u16,
    bucket: u8,
}

/// What [`Reuse::class`] knows of the page of an address: its bucket and phase.
pub(super) type PageClass = Option<(u8, u16)>;

/// Per bucket, the latest freed addresses not allocated again, most recent first: a ring of
/// [`WAYS`] entries whose front is at `heads[bucket]`, padded with [`EMPTY`]. A free goes in
/// front and an allocation usually takes the front, both O(1) in a ring.
pub(super) struct Reuse {
    pages: Box<[Page; PAGES]>,
    /// The chunk being coded (0 marks the slots no chunk wrote).
    chunk: u32,
    frees: Box<[[u64; WAYS]; BUCKETS]>,
    heads: [u8; BUCKETS],
}

/// The class size blocks of `bucket` are laid out by, for the buckets of 16-byte classes.
#[inline]
fn class_size(bucket: u8) -> Option<u64> {
    (1..=32).contains(&bucket).then_some(bucket as u64 * 16)
}

impl Reuse {
    pub(super) fn new() -> Reuse {
        Reuse {
            pages: vec![Page::default(); PAGES]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
            chunk: 1,
            frees: Box::new([[EMPTY; WAYS]; BUCKETS]),
            heads: [0; BUCKETS],
        }
    }

    /// Forgets everything, for the next chunk: O(buckets), not O(pages).
    pub(super) fn reset(&mut self) {
        if self.chunk == u32::MAX {
            self.pages.fill(Page::default());
            self.chunk = 0;
        }
        self.chunk += 1;
        *self.frees = [[EMPTY; WAYS]; BUCKETS];
        self.heads = [0; BUCKETS];
    }

    #[inline]
    fn page(&mut self, ptr: u64) -> (u64, &mut Page) {
        let page = ptr >> PAGE_SHIFT;
        let i =
            (page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PAGES.trailing_zeros())) as usize;
        (page, &mut self.pages[i])
    }

    /// The bucket and phase of the page `ptr` lies in, if known.
    #[inline]
    pub(super) fn class(&mut self, ptr: u64) -> PageClass {
        let chunk = self.chunk;
        let (page, p) = self.page(ptr);
        (p.page == page && p.chunk == chunk).then_some((p.bucket, p.phase))
    }

    /// Files a free of `ptr` at the front of its page's bucket list (nowhere if the page's
    /// bucket is unknown).
    #[inline]
    pub(super) fn freed(&mut self, ptr: u64) {
        let class = self.class(ptr);
        self.freed_in(class, ptr);
    }

    /// [`Reuse::freed`] with the page's class already looked up.
    #[inline]
    pub(super) fn freed_in(&mut self, class: PageClass, ptr: u64) {
        if let Some((b, _)) = class {
            // (Buckets are below BUCKETS: the mask only spares the bounds checks.)
            let b = b as usize & (BUCKETS - 1);
            let head = (self.heads[b] as usize + WAYS - 1) % WAYS;
            self.heads[b] = head as u8;
            self.frees[b][head] = ptr;
        }
    }

    /// Where `ptr` first is in the list of `bucket` (an [`EMPTY`] `ptr` finds padding).
    #[inline]
    pub(super) fn find(&self, bucket: usize, ptr: u64) -> Option<usize> {
        let bucket = bucket & (BUCKETS - 1);
        let (ring, head) = (&self.frees[bucket], self.heads[bucket] as usize);
        (0..WAYS).find(|&k| ring[(head + k) % WAYS] == ptr)
    }

    /// Where `ptr` is in the list of the bucket of `size`, if it is there.
    #[cfg(test)]
    pub(super) fn position(&self, size: u64, ptr: u64) -> Option<usize> {
        if ptr == EMPTY {
            return None;
        }
        self.find(bucket(size), ptr)
    }

    /// The address at `position` in the list of the bucket of `size`.
    #[inline]
    pub(super) fn at(&self, size: u64, position: usize) -> Option<u64> {
        let b = bucket(size);
        let ptr = self.frees[b][(self.heads[b] as usize + position.min(WAYS)) % WAYS];
        (position < WAYS && ptr != EMPTY).then_some(ptr)
    }

    /// A freed block's place inside its 1 MiB region as `block index << 6 | page in region`,
    /// when its page's class size and phase are known and `ptr` sits on a block boundary:
    /// about 12 bits where the offset takes 16. See [`Reuse::unblock`].
    #[cfg(test)]
    pub(super) fn block(&mut self, ptr: u64) -> Option<u64> {
        let class = self.class(ptr);
        block_in(class, ptr)
    }

    /// The address [`Reuse::block`] gave `code` for, in the region starting at `region`.
    #[inline]
    pub(super) fn unblock(&mut self, region: u64, code: u64) -> Option<u64> {
        let page = region + ((code & (PAGES_PER_REGION - 1)) << PAGE_SHIFT);
        let (b, phase) = self.class(page)?;
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
        let found = self.find(b, ptr);
        self.allocated_at(b, found, ptr);
    }

    /// [`Reuse::allocated`] with the bucket and `find(bucket, ptr)` already at hand.
    #[inline]
    pub(super) fn allocated_at(&mut self, b: usize, found: Option<usize>, ptr: u64) {
        let b = b & (BUCKETS - 1);
        if let Some(i) = found {
            // The `i` entries in front of it move back one place, over it; the front place
            // becomes the padding at the end.
            let (ring, head) = (&mut self.frees[b], self.heads[b] as usize);
            for k in (0..i).rev() {
                ring[(head + k + 1) % WAYS] = ring[(head + k) % WAYS];
            }
            ring[head] = EMPTY;
            self.heads[b] = ((head + 1) % WAYS) as u8;
        }
        let phase = class_size(b as u8).map_or(0, |c| (ptr & PAGE_MASK) % c) as u16;
        let chunk = self.chunk;
        let (page, p) = self.page(ptr);
        *p = Page {
            page,
            chunk,
            phase,
            bucket: b as u8,
        };
    }
}

/// [`Reuse::block`] with the page's class already looked up.
#[inline]
pub(super) fn block_in(class: PageClass, ptr: u64) -> Option<u64> {
    let (b, phase) = class?;
    let size = class_size(b)?;
    let offset = (ptr & PAGE_MASK).checked_sub(phase as u64)?;
    (offset % size == 0).then(|| (offset / size) << PAGES_PER_REGION_BITS | page_in_region(ptr))
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
        // Taken from the middle, the rest close up; a new chunk forgets pages and lists.
        r.allocated(48, page + 1024 + 16 * 5);
        assert_eq!(r.at(48, 4), Some(page + 1024 + 16 * 4));
        assert_eq!(r.at(48, 6), Some(page + 1024 + 16 * 2));
        assert_eq!(r.at(48, 7), None);
        assert_eq!(r.block(page + 48), Some(1 << 6 | 7));
        r.reset();
        assert_eq!(r.at(48, 0), None);
        assert_eq!(r.block(page + 48), None);
    }
}
