//! Event encodings: rows on the allocation path, columns in the file.
//!
//! **Rows** (what `buffers` writes into a block; one event after another):
//!
//! ```text
//! tag: bits 0-1 kind (0 alloc, 1 free, 2 realloc), bit 2 seq delta == 1,
//!      bit 3 same stack as the previous event, bits 4-5 api,
//!      bit 6 pointer delta is a multiple of 16 and stored ÷16, bit 7 zero
//! [seq delta]  unless bit 2 (never for the first event)
//! ptr          zigzag delta from the previous event's pointer
//! size         alloc, realloc
//! [stack]      zigzag delta from the previous stack, alloc/realloc unless bit 3
//! old ptr      realloc: zigzag (old - new)
//! ```
//!
//! **Columns** (an `Events` chunk in the file). The writer thread re-encodes each block so that
//! fields of one kind sit together (zstd's entropy coder then sees homogeneous data) and so
//! that an allocation reusing one of the last 256 freed addresses of the block — what every
//! LIFO free list does — costs a one-byte distance instead of a pointer delta:
//!
//! ```text
//! thread first_seq count len(tags) len(seqs) len(ptrs) len(sizes)
//! tags[count]   as in rows, plus bit 7 "recent": an alloc at one of the last 256 freed
//!               addresses, or a free of one of the last 256 allocated ones
//! seqs          seq deltas of events without bit 2
//! ptrs          planes: pointer deltas of events without bit 7
//! sizes         planes: sizes of allocs and reallocs
//! misc          per event in order: recent distance, stack delta, realloc old ptr
//! ```
//!
//! `planes` = `n width byte-plane[width]`: the values as `width`-byte little-endian numbers,
//! all lowest bytes first, then all second bytes, and so on. Random pointer deltas have
//! random low bytes and nearly constant high ones; planes let the entropy coder see that.
//!
//! Every chunk decodes on its own (delta state starts from zero), so a reader needs nothing
//! from earlier chunks and a damaged chunk stays a local problem.

use super::format::*;

/// How far back a "recent" distance may reach.
const RECENT: usize = 256;

/// Decodes the row encoding of one block (`count` events from `first_seq`).
pub fn decode_rows(
    thread: u32,
    first_seq: u64,
    count: usize,
    rows: &[u8],
    mut sink: impl FnMut(Event),
) -> DecodeResult<()> {
    let mut d = Decoder::new(rows);
    let (mut seq, mut ptr, mut stack) = (first_seq, 0u64, 0u32);
    for i in 0..count {
        let tag = d.u8()?;
        if tag & TAG_RECENT_FREE != 0 {
            return Err("unknown event tag");
        }
        if i > 0 {
            let delta = if tag & TAG_SEQ_NEXT != 0 {
                1
            } else {
                d.varint()?
            };
            seq = seq.checked_add(delta).ok_or("sequence number overflows")?;
        }
        ptr = ptr.wrapping_add(ptr_delta(tag, d.varint()?));
        let kind = match tag & 3 {
            EV_FREE => EventKind::Free {
                ptr,
                api: (tag >> TAG_API_SHIFT) & 3,
            },
            kind @ (EV_ALLOC | EV_REALLOC) => {
                let size = d.varint()?;
                if tag & TAG_SAME_STACK == 0 {
                    stack = stack_add(stack, d.varint()?)?;
                }
                if kind == EV_ALLOC {
                    EventKind::Alloc {
                        ptr,
                        size,
                        api: (tag >> TAG_API_SHIFT) & 3,
                        stack,
                    }
                } else {
                    let old = ptr.wrapping_add(unzigzag(d.varint()?) as u64);
                    EventKind::Realloc {
                        old,
                        new: ptr,
                        size,
                        stack,
                    }
                }
            }
            _ => return Err("unknown event kind"),
        };
        sink(Event { seq, thread, kind });
    }
    if !d.is_empty() {
        return Err("trailing bytes after the last event");
    }
    Ok(())
}

#[inline]
fn ptr_delta(tag: u8, v: u64) -> u64 {
    let delta = unzigzag(v);
    (if tag & TAG_ALIGNED16 != 0 {
        delta.wrapping_shl(4)
    } else {
        delta
    }) as u64
}

#[inline]
fn stack_add(stack: u32, v: u64) -> DecodeResult<u32> {
    u32::try_from((stack as i64).wrapping_add(unzigzag(v))).map_err(|_| "stack id out of range")
}

/// Encodes the events of one thread (sorted by `seq`) as an `Events` chunk payload.
pub fn encode_events(thread: u32, events: &[Event], out: &mut Encoder) {
    let mut tags = Vec::with_capacity(events.len());
    let (mut seqs, mut misc) = (Encoder::default(), Encoder::default());
    let (mut ptrs, mut sizes) = (
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
    );
    let (mut prev_ptr, mut prev_stack, mut prev_seq) = (0u64, 0u32, 0u64);
    // Address → index of its latest free (alloc) in this chunk, direct-mapped: a lost entry
    // only costs a full pointer delta instead of a distance.
    let mut freed = RecentTable::new();
    let mut allocated = RecentTable::new();
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
            if delta == 1 {
                tag |= TAG_SEQ_NEXT;
            } else {
                seqs.varint(delta);
            }
        }
        let recent = match kind {
            EV_ALLOC => freed.get(ptr).map(|at| frees - 1 - at),
            EV_FREE => allocated.get(ptr).map(|at| allocs - 1 - at),
            _ => None,
        }
        .filter(|&distance| distance < RECENT);
        if let Some(distance) = recent {
            tag |= TAG_RECENT_FREE;
            misc.varint(distance as u64);
        } else {
            let delta = ptr.wrapping_sub(prev_ptr) as i64;
            if delta & 15 == 0 {
                tag |= TAG_ALIGNED16;
                ptrs.push(zigzag(delta >> 4));
            } else {
                ptrs.push(zigzag(delta));
            }
        }
        if kind == EV_FREE {
            freed.insert(ptr, frees);
            frees += 1;
        } else {
            if kind == EV_ALLOC {
                allocated.insert(ptr, allocs);
                allocs += 1;
            }
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
        prev_ptr = ptr;
        prev_seq = ev.seq;
    }
    let (ptrs, sizes) = (planes(&ptrs), planes(&sizes));
    out.varint(thread as u64);
    out.varint(events.first().map_or(0, |ev| ev.seq));
    out.varint(events.len() as u64);
    out.varint(tags.len() as u64);
    out.varint(seqs.buf.len() as u64);
    out.varint(ptrs.len() as u64);
    out.varint(sizes.len() as u64);
    out.buf.extend_from_slice(&tags);
    out.buf.extend_from_slice(&seqs.buf);
    out.buf.extend_from_slice(&ptrs);
    out.buf.extend_from_slice(&sizes);
    out.buf.extend_from_slice(&misc.buf);
}

/// Address → index of its latest occurrence, direct-mapped (1024 entries, no allocation
/// per insert).
struct RecentTable {
    slots: Vec<(u64, usize)>,
}

impl RecentTable {
    const LEN: usize = 1024;

    fn new() -> RecentTable {
        RecentTable {
            slots: vec![(u64::MAX, 0); Self::LEN],
        }
    }

    #[inline]
    fn slot(ptr: u64) -> usize {
        ((ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize & (Self::LEN - 1)
    }

    #[inline]
    fn get(&self, ptr: u64) -> Option<usize> {
        let (p, at) = self.slots[Self::slot(ptr)];
        (p == ptr).then_some(at)
    }

    #[inline]
    fn insert(&mut self, ptr: u64, at: usize) {
        self.slots[Self::slot(ptr)] = (ptr, at);
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

/// A column of `planes` inside a chunk: read value `i` without unpacking the column.
#[derive(Default)]
struct Planes {
    start: usize,
    n: usize,
    width: usize,
    next: usize,
}

impl Planes {
    fn parse(raw: &[u8], start: usize, len: usize) -> DecodeResult<Planes> {
        let mut d = Decoder::new(
            raw.get(start..start + len)
                .ok_or("column runs past the end of its chunk")?,
        );
        let n = d.varint()?;
        let width = d.u8()? as u64;
        if !(1..=8).contains(&width) {
            return Err("bad column width");
        }
        let header = len - d.remaining();
        if n.checked_mul(width) != Some((len - header) as u64) {
            return Err("column length disagrees with its values");
        }
        Ok(Planes {
            start: start + header,
            n: n as usize,
            width: width as usize,
            next: 0,
        })
    }

    #[inline]
    fn next(&mut self, raw: &[u8]) -> DecodeResult<u64> {
        if self.next >= self.n {
            return Err("column too short");
        }
        let mut v = 0u64;
        for plane in 0..self.width {
            v |= (raw[self.start + plane * self.n + self.next] as u64) << (8 * plane);
        }
        self.next += 1;
        Ok(v)
    }
}

/// The last 256 addresses of one kind (frees or allocations) in a chunk.
struct History {
    ring: Box<[u64; RECENT]>,
    count: u64,
}

impl History {
    fn new() -> History {
        History {
            ring: Box::new([0; RECENT]),
            count: 0,
        }
    }
    fn push(&mut self, ptr: u64) {
        self.ring[(self.count % RECENT as u64) as usize] = ptr;
        self.count += 1;
    }
    fn back(&self, distance: u64) -> DecodeResult<u64> {
        if distance >= RECENT as u64 || distance >= self.count {
            return Err("recent distance out of range");
        }
        Ok(self.ring[((self.count - 1 - distance) % RECENT as u64) as usize])
    }
}

/// Streams the events of one decompressed `Events` chunk, one at a time, holding only the
/// chunk's bytes and two 256-entry histories: a reader merging many chunks stays small.
pub struct EventCursor {
    raw: Vec<u8>,
    thread: u32,
    remaining: u64,
    first: bool,
    tags: (usize, usize),
    seqs: (usize, usize),
    misc: (usize, usize),
    ptrs: Planes,
    sizes: Planes,
    seq: u64,
    ptr: u64,
    stack: u32,
    frees: History,
    allocs: History,
}

impl EventCursor {
    /// Parses the chunk header and checks that the columns fit.
    pub fn new(raw: Vec<u8>) -> DecodeResult<EventCursor> {
        let mut d = Decoder::new(&raw);
        let thread = d.u32()?;
        let seq = d.varint()?;
        let count = d.varint()?;
        let lens = [d.varint()?, d.varint()?, d.varint()?, d.varint()?];
        if lens[0] != count {
            return Err("event count and tag column disagree");
        }
        let mut at = raw.len() - d.remaining();
        let mut spans = [(0usize, 0usize); 4];
        for (span, &len) in spans.iter_mut().zip(&lens) {
            let end = (at as u64)
                .checked_add(len)
                .filter(|&e| e <= raw.len() as u64);
            let end = end.ok_or("column runs past the end of its chunk")? as usize;
            *span = (at, end);
            at = end;
        }
        let ptrs = Planes::parse(&raw, spans[2].0, spans[2].1 - spans[2].0)?;
        let sizes = Planes::parse(&raw, spans[3].0, spans[3].1 - spans[3].0)?;
        Ok(EventCursor {
            thread,
            remaining: count,
            first: true,
            tags: spans[0],
            seqs: spans[1],
            misc: (at, raw.len()),
            ptrs,
            sizes,
            seq,
            ptr: 0,
            stack: 0,
            frees: History::new(),
            allocs: History::new(),
            raw,
        })
    }

    /// The thread these events belong to.
    pub fn thread(&self) -> u32 {
        self.thread
    }

    fn varint(raw: &[u8], span: &mut (usize, usize)) -> DecodeResult<u64> {
        let mut d = Decoder::new(&raw[span.0..span.1]);
        let v = d.varint()?;
        span.0 = span.1 - d.remaining();
        Ok(v)
    }

    /// The next event, `Ok(None)` after the last (and then every column must be used up).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> DecodeResult<Option<Event>> {
        let raw = &self.raw;
        if self.remaining == 0 {
            let used = self.tags.0 == self.tags.1
                && self.seqs.0 == self.seqs.1
                && self.misc.0 == self.misc.1
                && self.ptrs.next == self.ptrs.n
                && self.sizes.next == self.sizes.n;
            return if used {
                Ok(None)
            } else {
                Err("trailing bytes after the last event")
            };
        }
        self.remaining -= 1;
        let tag = raw[self.tags.0];
        self.tags.0 += 1;
        if !self.first {
            let delta = if tag & TAG_SEQ_NEXT != 0 {
                1
            } else {
                Self::varint(raw, &mut self.seqs)?
            };
            self.seq = self
                .seq
                .checked_add(delta)
                .ok_or("sequence number overflows")?;
        }
        self.first = false;
        let api = (tag >> TAG_API_SHIFT) & 3;
        if tag & TAG_RECENT_FREE != 0 {
            let distance = Self::varint(raw, &mut self.misc)?;
            self.ptr = match tag & 3 {
                EV_ALLOC => self.frees.back(distance)?,
                EV_FREE => self.allocs.back(distance)?,
                _ => return Err("recent flag on a realloc"),
            };
        } else {
            self.ptr = self.ptr.wrapping_add(ptr_delta(tag, self.ptrs.next(raw)?));
        }
        let ptr = self.ptr;
        let kind = match tag & 3 {
            EV_FREE => {
                self.frees.push(ptr);
                EventKind::Free { ptr, api }
            }
            kind @ (EV_ALLOC | EV_REALLOC) => {
                let size = self.sizes.next(raw)?;
                if size > MAX_ALLOCATION {
                    return Err("allocation size beyond 16 TiB (corrupt event)");
                }
                if tag & TAG_SAME_STACK == 0 {
                    self.stack = stack_add(self.stack, Self::varint(raw, &mut self.misc)?)?;
                }
                let stack = self.stack;
                if kind == EV_ALLOC {
                    self.allocs.push(ptr);
                    EventKind::Alloc {
                        ptr,
                        size,
                        api,
                        stack,
                    }
                } else {
                    let old = ptr.wrapping_add(unzigzag(Self::varint(raw, &mut self.misc)?) as u64);
                    EventKind::Realloc {
                        old,
                        new: ptr,
                        size,
                        stack,
                    }
                }
            }
            _ => return Err("unknown event kind"),
        };
        Ok(Some(Event {
            seq: self.seq,
            thread: self.thread,
            kind,
        }))
    }
}

/// Decodes a whole `Events` chunk payload, calling `sink` for each event in order.
pub fn decode_events(raw: &[u8], mut sink: impl FnMut(Event)) -> DecodeResult<()> {
    let mut cursor = EventCursor::new(raw.to_vec())?;
    while let Some(e) = cursor.next()? {
        sink(e);
    }
    Ok(())
}
