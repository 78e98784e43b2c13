//! Decoding an `Events` chunk (the layout is in the parent module's docs): [`EventCursor`]
//! unpacks the columns once, then walks them one event at a time, keeping the model state
//! the encoder kept (the last pointer per size bucket, the recent addresses, the stack).

use super::super::format::*;
use super::reuse::{Reuse, WAYS};
use super::{AllocRefs, COLUMNS, RECENT, REGION_SHIFT};

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

/// Appends the column stored in `d` (see `columns`) to `raw`; `len` bounds it.
fn unpack_column(d: &mut Decoder, len: u64, raw: &mut Vec<u8>, z: &mut Zstd) -> DecodeResult<()> {
    let end = raw.len() as u64 + len;
    let n = d.count(2)?;
    for _ in 0..n {
        let seg_len = d.varint()?;
        let stored = d.varint()?;
        if raw.len() as u64 + seg_len > end {
            return Err("column segment longer than its column");
        }
        let bytes = d.take(stored >> 1)?;
        if stored & 1 != 0 {
            let start = raw.len();
            raw.resize(start + seg_len as usize, 0);
            let got = decompress_segment(z, bytes, &mut raw[start..])?;
            // A short segment shows as a short column (checked by the caller).
            raw.truncate(start + got);
        } else {
            raw.extend_from_slice(bytes);
        }
    }
    if !d.is_empty() {
        return Err("trailing bytes in a column");
    }
    Ok(())
}

/// The zstd context column segments are decompressed with: the reader's own, reused for
/// every chunk (a reader unpacks about ten segments per chunk, and creating a context for
/// each was 5% of a report's time). None if one could not be made: then a one-off context.
pub type Zstd<'a> = Option<&'a mut zstd::bulk::Decompressor<'static>>;

/// Decompresses one zstd segment into `out`; returns its length.
fn decompress_segment(z: &mut Zstd, stored: &[u8], out: &mut [u8]) -> DecodeResult<usize> {
    let result = match z {
        Some(z) => z.decompress_to_buffer(stored, out),
        None => zstd::bulk::decompress_to_buffer(stored, out),
    };
    result.map_err(|_| "bad column data")
}

/// A column of `planes` inside a chunk: reads the values in order, straight from the byte
/// planes, without unpacking the column.
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
        let mut at = self.start + self.next;
        for plane in 0..self.width {
            v |= (raw[at] as u64) << (8 * plane);
            at += self.n;
        }
        self.next += 1;
        Ok(v)
    }
}

/// The last [`RECENT`] addresses of one kind (frees or allocations) in a chunk.
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
/// chunk's bytes and two [`RECENT`]-entry histories (32 KiB each): a reader merging many chunks
/// stays small.
pub struct EventCursor {
    raw: Vec<u8>,
    thread: u32,
    remaining: u64,
    first: bool,
    tags: (usize, usize),
    seqs: (usize, usize),
    misc: (usize, usize),
    ptrs: Planes,
    /// Frees: region table, region index and offset columns.
    regions: Vec<u64>,
    region_index: Planes,
    offsets: Planes,
    sizes: Planes,
    seq: u64,
    refs: Box<AllocRefs>,
    stack: u32,
    frees: History,
    allocs: History,
    reuse: Reuse,
}

impl EventCursor {
    /// Parses the chunk header and checks that the columns fit; `z` unpacks the compressed
    /// column segments.
    pub fn new(payload: Vec<u8>, mut z: Zstd) -> DecodeResult<EventCursor> {
        let mut d = Decoder::new(&payload);
        let thread = d.u32()?;
        let seq = d.varint()?;
        let count = d.varint()?;
        let mut lens = [(0u64, 0u64); COLUMNS];
        for len in &mut lens {
            *len = (d.varint()?, d.varint()?);
        }
        if lens[1].0 != count {
            return Err("event count and tag column disagree");
        }
        let total = lens.iter().try_fold(0u64, |sum, l| sum.checked_add(l.0));
        if total.is_none_or(|t| t > MAX_CHUNK as u64) {
            return Err("columns larger than a chunk may be");
        }
        // Unpack the columns one after another into `raw`.
        let mut raw =
            Vec::with_capacity((total.unwrap_or(0) as usize).min(payload.len().saturating_mul(8)));
        let mut spans = [(0usize, 0usize); COLUMNS];
        for (span, &(len, stored)) in spans.iter_mut().zip(&lens) {
            let start = raw.len();
            unpack_column(&mut Decoder::new(d.take(stored)?), len, &mut raw, &mut z)?;
            if (raw.len() - start) as u64 != len {
                return Err("column length disagrees with its data");
            }
            *span = (start, raw.len());
        }
        if !d.is_empty() {
            return Err("trailing bytes after the last column");
        }
        let mut t = Decoder::new(&raw[spans[0].0..spans[0].1]);
        let n = t.count(1)?;
        let mut regions = Vec::with_capacity(n);
        let mut region = 0u64;
        for _ in 0..n {
            region = region.wrapping_add(unzigzag(t.varint()?) as u64);
            regions.push(region);
        }
        if !t.is_empty() {
            return Err("trailing bytes after the region table");
        }
        let plane = |i: usize| Planes::parse(&raw, spans[i].0, spans[i].1 - spans[i].0);
        let (ptrs, region_index, offsets, sizes) = (plane(3)?, plane(4)?, plane(5)?, plane(6)?);
        let at = spans[7].0;
        Ok(EventCursor {
            thread,
            remaining: count,
            first: true,
            tags: spans[1],
            seqs: spans[2],
            misc: (at, raw.len()),
            ptrs,
            regions,
            region_index,
            offsets,
            sizes,
            seq,
            refs: Box::new(AllocRefs::new()),
            stack: 0,
            frees: History::new(),
            allocs: History::new(),
            reuse: Reuse::new(),
            raw,
        })
    }

    /// The thread these events belong to.
    pub fn thread(&self) -> u32 {
        self.thread
    }

    #[inline]
    fn varint(raw: &[u8], span: &mut (usize, usize)) -> DecodeResult<u64> {
        // Most values (stack deltas, recent distances) fit in one byte: read those directly.
        if span.0 < span.1 {
            if let Some(&b) = raw.get(span.0).filter(|&&b| b < 0x80) {
                span.0 += 1;
                return Ok(b as u64);
            }
        }
        let mut d = Decoder::new(&raw[span.0..span.1]);
        let v = d.varint()?;
        span.0 = span.1 - d.remaining();
        Ok(v)
    }

    /// The next event, `Ok(None)` after the last (and then every column must be used up).
    #[allow(clippy::should_implement_trait)]
    #[inline(always)]
    pub fn next(&mut self) -> DecodeResult<Option<Event>> {
        let raw = &self.raw;
        if self.remaining == 0 {
            let used = self.tags.0 == self.tags.1
                && self.seqs.0 == self.seqs.1
                && self.misc.0 == self.misc.1
                && self.ptrs.next == self.ptrs.n
                && self.region_index.next == self.region_index.n
                && self.offsets.next == self.offsets.n
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
                expected_seq_delta(tag)
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
        let (kind, block) = match tag & 3 {
            EV_FREE_BLOCK => (EV_FREE, true),
            kind => (kind, false),
        };
        let size = if kind == EV_FREE {
            0
        } else {
            let size = self.sizes.next(raw)?;
            if size > MAX_ALLOCATION {
                return Err("allocation size beyond 16 TiB (corrupt event)");
            }
            size
        };
        let ptr = if tag & TAG_RECENT_FREE != 0 && !block {
            let code = Self::varint(raw, &mut self.misc)?;
            match kind {
                EV_ALLOC => match code.checked_sub(WAYS as u64) {
                    None => self
                        .reuse
                        .at(size, code as usize)
                        .ok_or("page position out of range")?,
                    Some(distance) => self.frees.back(distance)?,
                },
                EV_FREE => self.allocs.back(code)?,
                _ => return Err("recent flag on a realloc"),
            }
        } else if kind == EV_FREE {
            let region = *usize::try_from(self.region_index.next(raw)?)
                .ok()
                .and_then(|i| self.regions.get(i))
                .ok_or("region index out of range")?;
            let v = self.offsets.next(raw)?;
            if block {
                self.reuse
                    .unblock(region << REGION_SHIFT, v)
                    .ok_or("block index in a page of unknown size class")?
            } else {
                let offset = if tag & TAG_ALIGNED16 != 0 {
                    v.wrapping_shl(4)
                } else {
                    v
                };
                (region << REGION_SHIFT).wrapping_add(offset)
            }
        } else {
            self.refs
                .get(size)
                .wrapping_add(ptr_delta(tag, self.ptrs.next(raw)?))
        };
        let kind = match kind {
            EV_FREE => {
                self.frees.push(ptr);
                self.reuse.freed(ptr);
                EventKind::Free { ptr, api }
            }
            kind @ (EV_ALLOC | EV_REALLOC) => {
                self.reuse.allocated(size, ptr);
                self.refs.set(size, ptr);
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
