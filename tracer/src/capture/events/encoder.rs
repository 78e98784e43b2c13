//! Building an `Events` chunk one event at a time (the layout and the models are in the
//! parent module's docs): [`ChunkEncoder::push`] codes an event into the columns as it
//! comes, [`ChunkEncoder::finish`] packs them. The writer thread feeds it straight from the
//! per-thread rows, with no list of events in between, and keeps one encoder for the whole
//! recording: its tables (~800 KiB) are not cleared for each chunk but know which entries the
//! current chunk wrote, so a small chunk costs what its events cost.
//!
//! [`EventCursor`](super::EventCursor) keeps the same model state while decoding; the two
//! must make the same model calls in the same order.

use super::super::format::*;
use super::columns::{push_varint, Column, Packer, Values, MAX_VARINT};
use super::reuse::{self, block_in, Reuse, WAYS};
use super::{bucket, AllocRefs, COLUMNS, RECENT, REGION_SHIFT};

/// Events a column makes room for at a time.
const ROOM: usize = 4096;

/// The most bytes of `misc` one event adds: a realloc's stack delta and old pointer, or an
/// allocation's recent code and stack delta.
const MISC_PER_EVENT: usize = 2 * MAX_VARINT;

/// Codes the events of one thread (in `(seq, order_rank)` order) into an `Events` chunk.
pub struct ChunkEncoder {
    // The columns of the chunk being built, and for how many more events each has room.
    tags: Column<u8>,
    seqs: Column<u8>,
    misc: Column<u8>,
    ptrs: Values,
    region_index: Values,
    offsets: Values,
    sizes: Values,
    regions: Regions,
    room: usize,
    first_seq: u64,
    prev_seq: u64,
    prev_stack: u32,
    // The models.
    refs: AllocRefs,
    recent: RecentTable,
    reuse: Reuse,
    /// Frees and allocations this encoder has coded, counted from 1 (so that index 0 marks
    /// an empty table slot), and their counts when the current chunk began.
    frees: u64,
    allocs: u64,
    chunk_frees: u64,
    chunk_allocs: u64,
    // Scratch space for `finish`.
    table: Vec<u8>,
    packed: Vec<u8>,
    packer: Packer,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> ChunkEncoder {
        ChunkEncoder {
            tags: Column::default(),
            seqs: Column::default(),
            misc: Column::default(),
            ptrs: Values::default(),
            region_index: Values::default(),
            offsets: Values::default(),
            sizes: Values::default(),
            regions: Regions::new(),
            room: 0,
            first_seq: 0,
            prev_seq: 0,
            prev_stack: 0,
            refs: AllocRefs::new(),
            recent: RecentTable::new(),
            reuse: Reuse::new(),
            frees: 1,
            allocs: 1,
            chunk_frees: 1,
            chunk_allocs: 1,
            table: Vec::new(),
            packed: Vec::new(),
            packer: Packer::default(),
        }
    }

    /// Events in the chunk being built.
    #[inline]
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tags.len() == 0
    }

    /// Makes room in every column for [`ROOM`] more events.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self) {
        self.tags.reserve(ROOM);
        self.seqs.reserve(ROOM * MAX_VARINT);
        self.misc.reserve(ROOM * MISC_PER_EVENT);
        for values in [
            &mut self.ptrs,
            &mut self.region_index,
            &mut self.offsets,
            &mut self.sizes,
        ] {
            values.reserve(ROOM);
        }
        self.room = ROOM;
    }

    /// Codes one event.
    #[inline]
    pub fn push(&mut self, event: &Event) {
        match event.kind {
            EventKind::Alloc {
                ptr,
                size,
                api,
                stack,
            } => self.push_alloc(event.seq, api, ptr, size, stack),
            EventKind::Free { ptr, api } => self.push_free(event.seq, api, ptr),
            EventKind::Realloc {
                old,
                new,
                size,
                stack,
            } => self.push_realloc(event.seq, new, size, stack, old),
        }
    }

    /// Codes a free of `ptr`.
    #[inline(always)]
    pub fn push_free(&mut self, seq: u64, api: u8, ptr: u64) {
        let mut tag = self.start_event(seq, EV_FREE, api);
        let slot = self.recent.slot(ptr);
        // A free of one of the last RECENT allocations of the chunk: its distance.
        let (at, chunk_allocs) = (slot.allocated_at, self.chunk_allocs);
        let recent = (slot.allocated == ptr && at >= chunk_allocs)
            .then(|| self.allocs - 1 - at)
            .filter(|&distance| distance < RECENT as u64);
        slot.freed = ptr;
        slot.freed_at = self.frees;
        self.frees += 1;
        let class = self.reuse.class(ptr);
        if let Some(distance) = recent {
            tag |= TAG_RECENT_FREE;
            // SAFETY: room for this event (`start_event`).
            unsafe { self.misc.varint(distance) };
        } else {
            // Else its region and its place there (see the module docs).
            let region = self.regions.number(ptr >> REGION_SHIFT);
            let offset = ptr & ((1 << REGION_SHIFT) - 1);
            let place = if let Some(code) = block_in(class, ptr) {
                tag = (tag & !3) | EV_FREE_BLOCK;
                code
            } else if offset & 15 == 0 {
                tag |= TAG_ALIGNED16;
                offset >> 4
            } else {
                offset
            };
            // SAFETY: room for this event (`start_event`).
            unsafe {
                self.region_index.push(region);
                self.offsets.push(place);
            }
        }
        self.reuse.freed_in(class, ptr);
        // SAFETY: room for this event (`start_event`).
        unsafe { self.tags.push(tag) };
    }

    /// Codes an allocation of `size` bytes at `ptr` from `stack`.
    #[inline(always)]
    pub fn push_alloc(&mut self, seq: u64, api: u8, ptr: u64, size: u64, stack: u32) {
        let tag = self.start_event(seq, EV_ALLOC, api);
        let tag = self.allocation(tag, true, ptr, size, stack);
        // SAFETY: room for this event (`start_event`).
        unsafe { self.tags.push(tag) };
    }

    /// Codes a realloc of `old` to `size` bytes at `new` from `stack`.
    #[inline(always)]
    pub fn push_realloc(&mut self, seq: u64, new: u64, size: u64, stack: u32, old: u64) {
        let tag = self.start_event(seq, EV_REALLOC, 0);
        let tag = self.allocation(tag, false, new, size, stack);
        // SAFETY: room for this event (`start_event`).
        unsafe {
            self.misc.varint(zigzag(old.wrapping_sub(new) as i64));
            self.tags.push(tag);
        }
    }

    /// Begins an event: makes sure every column has room for it (one tag, at most one seqs
    /// varint, MISC_PER_EVENT bytes of misc and one value per `planes` column), codes its
    /// key and returns its tag so far.
    #[inline(always)]
    fn start_event(&mut self, seq: u64, kind: u8, api: u8) -> u8 {
        if self.room == 0 {
            self.make_room();
        }
        self.room -= 1;
        let mut tag = kind | ((api & 3) << TAG_API_SHIFT);
        if self.tags.len() == 0 {
            self.first_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.prev_seq);
            if delta == expected_seq_delta(kind) {
                tag |= TAG_SEQ_NEXT;
            } else {
                // SAFETY: room for this event (above).
                unsafe { self.seqs.varint(delta) };
            }
        }
        self.prev_seq = seq;
        tag
    }

    /// The pointer, size and stack of an allocation or realloc (`alloc`: an allocation,
    /// which may take a recently freed block and is remembered for frees).
    #[inline(always)]
    fn allocation(&mut self, mut tag: u8, alloc: bool, ptr: u64, size: u64, stack: u32) -> u8 {
        let first = self.tags.len() == 0;
        let b = bucket(size);
        let found = self.reuse.find(b, ptr);
        let slot = self.recent.slot(ptr);
        // An allocation that takes a recently freed block: its place in its bucket's list,
        // else its distance among the chunk's last RECENT frees.
        let recent = if alloc {
            found
                .filter(|_| ptr != reuse::EMPTY)
                .map(|i| i as u64)
                .or_else(|| {
                    let (at, chunk_frees) = (slot.freed_at, self.chunk_frees);
                    (slot.freed == ptr && at >= chunk_frees)
                        .then(|| self.frees - 1 - at)
                        .filter(|&distance| distance < RECENT as u64)
                        .map(|distance| WAYS as u64 + distance)
                })
        } else {
            None
        };
        if let Some(code) = recent {
            tag |= TAG_RECENT_FREE;
            // SAFETY: room for this event (`start_event`).
            unsafe { self.misc.varint(code) };
        } else {
            let delta = ptr.wrapping_sub(self.refs.get_bucket(b)) as i64;
            let v = if delta & 15 == 0 {
                tag |= TAG_ALIGNED16;
                zigzag(delta >> 4)
            } else {
                zigzag(delta)
            };
            // SAFETY: room for this event (`start_event`).
            unsafe { self.ptrs.push(v) };
        }
        if alloc {
            slot.allocated = ptr;
            slot.allocated_at = self.allocs;
            self.allocs += 1;
        }
        self.reuse.allocated_at(b, found, ptr);
        self.refs.set_bucket(b, ptr);
        // SAFETY: room for this event (`start_event`).
        unsafe { self.sizes.push(size) };
        if stack == self.prev_stack && !first {
            tag |= TAG_SAME_STACK;
        } else {
            let delta = zigzag(stack as i64 - self.prev_stack as i64);
            // SAFETY: room for this event (`start_event`).
            unsafe { self.misc.varint(delta) };
            self.prev_stack = stack;
        }
        tag
    }

    /// Appends the chunk's payload for `thread` to `out`, its columns compressed at zstd
    /// `level` (0: stored as is), and starts the next chunk.
    pub fn finish(&mut self, thread: u32, level: i32, out: &mut Vec<u8>) {
        self.table.clear();
        push_varint(&mut self.table, self.regions.list.len() as u64);
        let mut prev = 0u64;
        for &r in &self.regions.list {
            push_varint(&mut self.table, zigzag(r.wrapping_sub(prev) as i64));
            prev = r;
        }
        let (packed, packer) = (&mut self.packed, &mut self.packer);
        packed.clear();
        let mut column = |bytes: &[u8]| (bytes.len(), packer.column(packed, bytes, level));
        let lens: [(usize, usize); COLUMNS] = [
            column(&self.table),
            column(self.tags.as_slice()),
            column(self.seqs.as_slice()),
            packer.planes(packed, &self.ptrs, level),
            packer.planes(packed, &self.region_index, level),
            packer.planes(packed, &self.offsets, level),
            packer.planes(packed, &self.sizes, level),
            (
                self.misc.len(),
                packer.column(packed, self.misc.as_slice(), level),
            ),
        ];
        push_varint(out, thread as u64);
        push_varint(out, self.first_seq);
        push_varint(out, self.tags.len() as u64);
        for (raw, stored) in lens {
            push_varint(out, raw as u64);
            push_varint(out, stored as u64);
        }
        out.extend_from_slice(packed);
        self.start_chunk();
    }

    /// Empties the columns and the models for the next chunk (every chunk decodes on its own).
    fn start_chunk(&mut self) {
        self.tags.clear();
        self.seqs.clear();
        self.misc.clear();
        self.ptrs.clear();
        self.region_index.clear();
        self.offsets.clear();
        self.sizes.clear();
        self.regions.clear();
        self.first_seq = 0;
        self.prev_seq = 0;
        self.prev_stack = 0;
        self.refs = AllocRefs::new();
        self.reuse.reset();
        self.chunk_frees = self.frees;
        self.chunk_allocs = self.allocs;
    }
}

/// Address → the latest free and the latest allocation there, direct-mapped (8192 slots, no
/// allocation per insert), as indexes among this encoder's frees and allocations: an entry
/// below the chunk's first index is from an earlier chunk, so the table is never cleared. A
/// lost entry only costs a full pointer instead of a distance. Both sit in one slot, one
/// cache line: an event looks up one of them and updates the other at the same address, and
/// the table (256 KiB) is read at random, so two tables cost two cache misses an event where
/// one costs one.
struct RecentTable {
    slots: Box<[RecentSlot; RecentTable::LEN]>,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct RecentSlot {
    freed: u64,
    freed_at: u64,
    allocated: u64,
    allocated_at: u64,
}

impl RecentTable {
    const LEN: usize = 8192;

    fn new() -> RecentTable {
        RecentTable {
            slots: vec![RecentSlot::default(); Self::LEN]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    #[inline]
    fn slot(&mut self, ptr: u64) -> &mut RecentSlot {
        let i = ((ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize & (Self::LEN - 1);
        &mut self.slots[i]
    }
}

/// The chunk's 1 MiB regions in order of first use, and region → its number (open
/// addressing; a region number is below 2^44, so `u64::MAX` marks an empty slot).
struct Regions {
    list: Vec<u64>,
    slots: Vec<(u64, u64)>,
}

impl Regions {
    const EMPTY: u64 = u64::MAX;

    fn new() -> Regions {
        Regions {
            list: Vec::new(),
            slots: vec![(Self::EMPTY, 0); 256],
        }
    }

    /// The number of `region`, numbering it if new.
    #[inline]
    fn number(&mut self, region: u64) -> u64 {
        let mask = self.slots.len() - 1;
        let mut i = (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
        loop {
            let (r, n) = self.slots[i];
            if r == region {
                return n;
            }
            if r == Self::EMPTY {
                return self.insert(i, region);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(never)]
    fn insert(&mut self, i: usize, region: u64) -> u64 {
        let n = self.list.len() as u64;
        self.list.push(region);
        self.slots[i] = (region, n);
        if self.list.len() * 2 > self.slots.len() {
            self.rehash(self.slots.len() * 2);
        }
        n
    }

    fn rehash(&mut self, len: usize) {
        self.slots.clear();
        self.slots.resize(len, (Self::EMPTY, 0));
        for (n, &region) in self.list.iter().enumerate() {
            let mut i = (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & (len - 1);
            while self.slots[i].0 != Self::EMPTY {
                i = (i + 1) & (len - 1);
            }
            self.slots[i] = (region, n as u64);
        }
    }

    fn clear(&mut self) {
        if !self.list.is_empty() {
            self.list.clear();
            self.slots.fill((Self::EMPTY, 0));
        }
    }
}
