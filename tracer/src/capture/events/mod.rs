//! Event encoding in the file: one thread's events of one writer tick as columns.
//!
//! (The allocation path writes a simpler fixed-layout row format into per-thread blocks;
//! see `buffers`. The writer thread decodes those rows and re-encodes them here.)
//!
//! An `Events` chunk payload:
//!
//! ```text
//! thread first_seq count
//! (raw_len stored_len)[8]        per column: its unpacked and stored sizes
//! column[8]                      each stored as: segments (raw_len stored_len<<1|zstd bytes)*
//! ```
//!
//! The chunk itself is stored uncompressed: each column is compressed on its own, and a
//! `planes` column is split into one segment per byte plane, so every segment gets its own
//! entropy tables (uniform low bytes and skewed high bytes sharing one Huffman table cost
//! ~10% on churn). Unpacked, the columns are:
//!
//! ```text
//! regions   frees' 1 MiB address regions in order of first use: n, zigzag deltas
//! tags      per event: bits 0-1 kind (0 alloc, 1 free, 2 realloc, 3 free stored as a block
//!           index), bit 2 key delta as expected (0 for an alloc, 1 for a free or realloc;
//!           see `format`), bit 3 same stack as the previous alloc/realloc, bits 4-5 api,
//!           bit 6 the offset or pointer delta is stored ÷16, bit 7 "recent": an alloc that
//!           reuses a recently freed block, or a free of one of the last 4096 allocated
//!           addresses (a code in misc)
//! seqs      varint key deltas of events without bit 2
//! ptrs      planes: alloc/realloc pointers not recent, zigzag delta from the last
//!           allocation of the same size bucket in the chunk (else the last allocation)
//! region    planes: frees not recent, index into the region table
//! offset    planes: frees not recent, offset inside the region, or for kind 3
//!           `block index << 6 | page in region` (see `reuse`)
//! sizes     planes: sizes of allocs and reallocs
//! misc      varints per event in order: recent code (for an alloc: its position in its
//!           bucket's list of freed blocks, below 8, else 8 + its distance among all recent
//!           frees; for a free: the distance among recent allocations), stack delta,
//!           realloc old ptr
//! ```
//!
//! `planes` = `n width byte-plane[width]`: the values as `width`-byte little-endian numbers,
//! all lowest bytes first, then all second bytes, and so on.
//!
//! Pointer model, measured on churn (random frees among 100k live blocks of 8..=512 bytes,
//! `Traced<Pymalloc>`): a free of an old block is close to uniformly random over the live
//! heap, which is spread over ~130 MiB of address space in 1 MiB arenas, so it costs a region
//! index (~5 bits) plus its place in the region: a block index in a page whose size class
//! the chunk has learned (~12 bits with the page), else an offset (16 bits at 16-byte
//! alignment). An allocation nearly always reuses the latest free of its size class (~1 bit,
//! see `reuse`), and otherwise lands near the last allocation of its size class (a small
//! delta). Sizes are uniform here (~9 bits). Together 4.2 bytes a pair, where the pointer-exact
//! floor is ~3.2 (17 bits to name one of 100k live blocks, 9 for the size).
//!
//! Every chunk decodes on its own (delta state starts from zero), so a reader needs nothing
//! from earlier chunks and a damaged chunk stays a local problem.

use super::format::*;
use crate::report::replay::IntMap;

mod cursor;
mod reuse;
pub use cursor::{EventCursor, Zstd};
use reuse::Reuse;

/// How far back a "recent" distance may reach.
const RECENT: usize = 4096;

/// Size bucket of an allocation, for the pointer model: size classes of 16 bytes up to 512
/// (what size-segregated allocators group by), then powers of two.
#[inline]
fn bucket(size: u64) -> usize {
    if size <= 512 {
        size.div_ceil(16) as usize
    } else {
        (33 + (63 - size.leading_zeros()) as usize).min(BUCKETS - 1)
    }
}
const BUCKETS: usize = 64;
/// log2 of the address regions frees are indexed by.
const REGION_SHIFT: u32 = 20;

/// The reference a non-recent allocation's pointer is a delta from: the last allocation of
/// the same size bucket in this chunk (allocators carve one size class out of one page or
/// pool, so this is close), else the last allocation of any size, else 0.
struct AllocRefs {
    by_bucket: [u64; BUCKETS],
    last: u64,
}

impl AllocRefs {
    fn new() -> AllocRefs {
        AllocRefs {
            by_bucket: [0; BUCKETS],
            last: 0,
        }
    }
    #[inline]
    fn get(&self, size: u64) -> u64 {
        match self.by_bucket[bucket(size)] {
            0 => self.last,
            p => p,
        }
    }
    #[inline]
    fn set(&mut self, size: u64, ptr: u64) {
        self.by_bucket[bucket(size)] = ptr;
        self.last = ptr;
    }
}

/// Encodes the events of one thread (in `(seq, order_rank)` order) as an `Events` chunk
/// payload.
pub fn encode_events(thread: u32, events: &[Event], out: &mut Encoder) {
    encode_events_at(thread, events, DEFAULT_COLUMN_LEVEL, out)
}

/// [`encode_events`] with the zstd level for the columns (0 stores them uncompressed).
pub fn encode_events_at(thread: u32, events: &[Event], level: i32, out: &mut Encoder) {
    let mut tags = Vec::with_capacity(events.len());
    let (mut seqs, mut misc) = (Encoder::default(), Encoder::default());
    let (mut ptrs, mut sizes, mut fptrs) = (
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
    );
    let (mut prev_stack, mut prev_seq) = (0u32, 0u64);
    let mut refs = AllocRefs::new();
    // Address → index of its latest free (alloc) in this chunk, direct-mapped: a lost entry
    // only costs a full pointer instead of a distance.
    let mut recent_table = RecentTable::new();
    let mut reuse = Reuse::new();
    let (mut frees, mut allocs) = (0usize, 0usize);
    for (i, ev) in events.iter().enumerate() {
        let (kind, api, ptr, size, stack, old) = match ev.kind {
            EventKind::Alloc {
                ptr,
                size,
                api,
                stack,
            } => (EV_ALLOC, api, ptr, size, stack, 0),
            EventKind::Free { ptr, api } => (EV_FREE, api, ptr, 0, 0, 0),
            EventKind::Realloc {
                old,
                new,
                size,
                stack,
            } => (EV_REALLOC, 0, new, size, stack, old),
        };
        let mut tag = kind | ((api & 3) << TAG_API_SHIFT);
        if i > 0 {
            let delta = ev.seq.wrapping_sub(prev_seq);
            if delta == expected_seq_delta(kind) {
                tag |= TAG_SEQ_NEXT;
            } else {
                seqs.varint(delta);
            }
        }
        let recent = match kind {
            EV_ALLOC => reuse.position(size, ptr).or_else(|| {
                let at = recent_table.freed(ptr)?;
                Some(reuse::WAYS + frees - 1 - at).filter(|&d| d < reuse::WAYS + RECENT)
            }),
            EV_FREE => recent_table
                .allocated(ptr)
                .map(|at| allocs - 1 - at)
                .filter(|&distance| distance < RECENT),
            _ => None,
        };
        if let Some(code) = recent {
            tag |= TAG_RECENT_FREE;
            misc.varint(code as u64);
        } else if kind == EV_FREE {
            // The region index is filled in below.
            let offset = ptr & ((1 << REGION_SHIFT) - 1);
            if let Some(code) = reuse.block(ptr) {
                tag = (tag & !3) | EV_FREE_BLOCK;
                fptrs.push((ptr, code));
            } else if offset & 15 == 0 {
                tag |= TAG_ALIGNED16;
                fptrs.push((ptr, offset >> 4));
            } else {
                fptrs.push((ptr, offset));
            }
        } else {
            let delta = ptr.wrapping_sub(refs.get(size)) as i64;
            if delta & 15 == 0 {
                tag |= TAG_ALIGNED16;
                ptrs.push(zigzag(delta >> 4));
            } else {
                ptrs.push(zigzag(delta));
            }
        }
        if kind == EV_FREE {
            recent_table.insert_freed(ptr, frees);
            reuse.freed(ptr);
            frees += 1;
        } else {
            reuse.allocated(size, ptr);
            if kind == EV_ALLOC {
                recent_table.insert_allocated(ptr, allocs);
                allocs += 1;
            }
            refs.set(size, ptr);
            sizes.push(size);
            if stack == prev_stack && i != 0 {
                tag |= TAG_SAME_STACK;
            } else {
                misc.varint(zigzag(stack as i64 - prev_stack as i64));
                prev_stack = stack;
            }
            if kind == EV_REALLOC {
                misc.varint(zigzag(old.wrapping_sub(ptr) as i64));
            }
        }
        tags.push(tag);
        prev_seq = ev.seq;
    }
    // Freed blocks are anywhere in the live heap, which allocators build out of regions of
    // ~1 MiB (arenas, segments) scattered over the address space: a free is stored as the
    // index of its 1 MiB region in a per-chunk table plus its offset inside the region.
    // Regions are numbered in order of first use.
    let mut regions: Vec<u64> = Vec::new();
    let mut numbers: IntMap<u64, u64> = IntMap::default();
    let mut region_index = Vec::with_capacity(fptrs.len());
    let mut offsets = Vec::with_capacity(fptrs.len());
    for &(ptr, offset) in &fptrs {
        let region = ptr >> REGION_SHIFT;
        region_index.push(*numbers.entry(region).or_insert_with(|| {
            regions.push(region);
            regions.len() as u64 - 1
        }));
        offsets.push(offset);
    }
    let mut table = Encoder::default();
    table.varint(regions.len() as u64);
    let mut prev = 0u64;
    for &r in &regions {
        table.varint(zigzag(r.wrapping_sub(prev) as i64));
        prev = r;
    }
    let (ptrs, sizes) = (planes(&ptrs), planes(&sizes));
    let (region_index, offsets) = (planes(&region_index), planes(&offsets));
    out.varint(thread as u64);
    out.varint(events.first().map_or(0, |ev| ev.seq));
    out.varint(events.len() as u64);
    let columns = [
        &table.buf,
        &tags,
        &seqs.buf,
        &ptrs,
        &region_index,
        &offsets,
        &sizes,
        &misc.buf,
    ];
    let packed: Vec<Vec<u8>> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| pack_column(c, PLANE_COLUMNS.contains(&i), level))
        .collect();
    for (column, stored) in columns.iter().zip(&packed) {
        out.varint(column.len() as u64);
        out.varint(stored.len() as u64);
    }
    for stored in &packed {
        out.buf.extend_from_slice(stored);
    }
}

/// Columns stored as `planes`.
const PLANE_COLUMNS: [usize; 4] = [3, 4, 5, 6];

/// Columns in an `Events` chunk.
const COLUMNS: usize = 8;

/// zstd level for columns (the chunk around them is stored as is). On churn, level 3 gives
/// the same size at twice the writer's compression time.
pub const DEFAULT_COLUMN_LEVEL: i32 = 1;

/// Stores one column as `segments (raw_len stored_len<<1|zstd bytes)*`: a `planes` column
/// is split into its header and each byte plane, everything else is one segment, and each
/// segment is zstd-compressed on its own when that pays, so each gets its own entropy tables
/// (one table shared by uniform low bytes and skewed high bytes costs ~10% on churn).
fn pack_column(column: &[u8], is_planes: bool, level: i32) -> Vec<u8> {
    let mut segments = Vec::new();
    let mut rest = column;
    if is_planes {
        let mut d = Decoder::new(column);
        if let (Ok(n), Ok(_)) = (d.varint(), d.u8()) {
            let header = column.len() - d.remaining();
            segments.push(&column[..header]);
            rest = &column[header..];
            while n > 0 && rest.len() as u64 >= n {
                segments.push(&rest[..n as usize]);
                rest = &rest[n as usize..];
            }
        }
    }
    if !rest.is_empty() || segments.is_empty() {
        segments.push(rest);
    }
    let mut out = Encoder::default();
    out.varint(segments.len() as u64);
    for seg in segments {
        let (compressed, stored) = compress_segment(seg, level);
        out.varint(seg.len() as u64);
        out.varint(((stored.len() as u64) << 1) | compressed as u64);
        out.buf.extend_from_slice(&stored);
    }
    out.buf
}

fn compress_segment(column: &[u8], level: i32) -> (bool, Vec<u8>) {
    thread_local! {
        // One context per thread, reused (creating one per segment shows up).
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    if column.len() >= 64 && level != 0 {
        let compressed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            c.as_mut().and_then(|(_, z)| z.compress(column).ok())
        });
        if let Some(z) = compressed.filter(|z| z.len() < column.len()) {
            return (true, z);
        }
    }
    (false, column.to_vec())
}

/// Address → index of its latest free and of its latest allocation, direct-mapped (8192
/// slots, no allocation per insert). Both sit in one slot, one cache line: an event looks up
/// one of them and updates the other at the same address, and the table (256 KiB) is read at
/// random, so two tables cost two cache misses an event where one costs one.
struct RecentTable {
    slots: Vec<RecentSlot>,
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct RecentSlot {
    freed: (u64, usize),
    allocated: (u64, usize),
}

impl RecentTable {
    const LEN: usize = 8192;

    /// The index of an empty slot's entries (no chunk has that many events). Its address
    /// alone cannot mark it: `u64::MAX` is a valid (if unlikely) pointer to find.
    const NONE: usize = usize::MAX;

    fn new() -> RecentTable {
        let empty = (u64::MAX, Self::NONE);
        RecentTable {
            slots: vec![
                RecentSlot {
                    freed: empty,
                    allocated: empty,
                };
                Self::LEN
            ],
        }
    }

    #[inline]
    fn slot(&mut self, ptr: u64) -> &mut RecentSlot {
        let i = ((ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize & (Self::LEN - 1);
        &mut self.slots[i]
    }

    /// Index of the latest free of `ptr`, if this table still holds it.
    #[inline]
    fn freed(&mut self, ptr: u64) -> Option<usize> {
        let (p, at) = self.slot(ptr).freed;
        (p == ptr && at != Self::NONE).then_some(at)
    }

    /// Index of the latest allocation at `ptr`, if this table still holds it.
    #[inline]
    fn allocated(&mut self, ptr: u64) -> Option<usize> {
        let (p, at) = self.slot(ptr).allocated;
        (p == ptr && at != Self::NONE).then_some(at)
    }

    #[inline]
    fn insert_freed(&mut self, ptr: u64, at: usize) {
        self.slot(ptr).freed = (ptr, at);
    }

    #[inline]
    fn insert_allocated(&mut self, ptr: u64, at: usize) {
        self.slot(ptr).allocated = (ptr, at);
    }
}

/// `n width plane*` (see the module docs).
fn planes(values: &[u64]) -> Vec<u8> {
    let max = values.iter().copied().max().unwrap_or(0);
    let width = (8 - max.leading_zeros() as usize / 8).max(1);
    let mut e = Encoder::default();
    e.varint(values.len() as u64);
    e.buf.push(width as u8);
    e.buf.reserve(values.len() * width);
    for plane in 0..width {
        e.buf
            .extend(values.iter().map(|v| (v >> (8 * plane)) as u8));
    }
    e.buf
}
