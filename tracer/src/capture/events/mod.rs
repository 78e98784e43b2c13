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

mod columns;
mod cursor;
mod encoder;
mod reuse;
pub use cursor::{EventCursor, Zstd};
pub use encoder::ChunkEncoder;

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
        self.get_bucket(bucket(size))
    }
    #[inline]
    fn get_bucket(&self, bucket: usize) -> u64 {
        match self.by_bucket[bucket] {
            0 => self.last,
            p => p,
        }
    }
    #[inline]
    fn set(&mut self, size: u64, ptr: u64) {
        self.set_bucket(bucket(size), ptr)
    }
    #[inline]
    fn set_bucket(&mut self, bucket: usize, ptr: u64) {
        self.by_bucket[bucket] = ptr;
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
    let mut chunk = ChunkEncoder::new();
    for ev in events {
        chunk.push(ev);
    }
    chunk.finish(thread, level, &mut out.buf);
}

/// Columns in an `Events` chunk.
const COLUMNS: usize = 8;

/// zstd level for columns (the chunk around them is stored as is). On churn, level 3 gives
/// the same size at twice the writer's compression time.
pub const DEFAULT_COLUMN_LEVEL: i32 = 1;
