//! Streaming reader: one chunk in memory at a time, events handed out in global order.
//!
//! Events of different threads arrive in different chunks, each sorted by (key, rank) (see
//! [`super::format`]).
//! A `Samples` record with sequence `S` is a barrier: the writer wrote every event numbered
//! below `S` before it. So the reader keeps the chunks seen since the last barrier open (as
//! decompressed bytes with a cursor, never as decoded events) and, at a barrier, merges them
//! by (key, rank), releasing events keyed below `S`. Memory stays bounded by the chunks of one
//! writer tick.
//!
//! Every malformed input gives a [`CaptureError`] naming the file, the byte offset and the
//! problem. A file that ends inside a chunk (a killed run) is not an error: reading stops at
//! the last complete chunk and [`CaptureReader::truncated`] says so.

use super::events::EventCursor;
use super::format::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// One thing read from a capture, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    Stacks {
        first: u32,
        nodes: Vec<(u64, u32)>,
    },
    Modules(Vec<ModuleRecord>),
    Sample(Sample),
    Threads(Vec<ThreadRecord>),
    Aggregate(AggregateRecord),
    /// The process called `exec` here (see [`ChunkKind::Exec`]).
    Exec(ExecRecord),
    End(EndRecord),
}

/// What [`CaptureReader::next_batch`] found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch {
    /// A run of events, in the caller's buffer.
    Events,
    /// Anything but an event.
    Item(Item),
}

/// Reads a capture file item by item.
pub struct CaptureReader<R: Read> {
    path: String,
    src: R,
    offset: u64,
    meta: Meta,
    /// Open event chunks (slot → cursor, its next event, the chunk's offset).
    cursors: Vec<Option<(EventCursor, Event, u64)>>,
    free_slots: Vec<usize>,
    /// Next events of the open chunks, smallest `(key, rank)` first.
    heads: BinaryHeap<Reverse<(u64, u8, usize)>>,
    /// The chunk being drained (outside `heads`).
    draining: Option<usize>,
    /// Items waiting for every event numbered below their barrier.
    ready: VecDeque<(u64, Item)>,
    eof: bool,
    truncated: Option<String>,
    ended: Option<EndRecord>,
    stored: Vec<u8>,
    chunks: u64,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// [`CaptureReader::next_item`]'s one-event batch.
    one: Vec<Event>,
}

impl CaptureReader<BufReader<File>> {
    /// Opens `path` and reads its header and metadata.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| CaptureError {
            path: name.clone(),
            offset: 0,
            problem: format!("cannot open: {e}"),
        })?;
        CaptureReader::new(BufReader::with_capacity(1 << 16, file), name)
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum Chunk {
    Eof,
    Some(ChunkKind, Vec<u8>),
}

impl<R: Read> CaptureReader<R> {
    /// Reads the header and the metadata chunk from `src`; `name` names it in errors.
    pub fn new(mut src: R, name: impl Into<String>) -> Result<Self, CaptureError> {
        let path = name.into();
        let err = |offset: u64, problem: String| CaptureError {
            path: path.clone(),
            offset,
            problem,
        };
        let mut header = [0u8; HEADER_LEN];
        let n = read_full(&mut src, &mut header).map_err(|e| err(0, format!("read error: {e}")))?;
        if n == 0 {
            return Err(err(0, "empty file: not a tidemark capture".into()));
        }
        if header[..n.min(8)] != MAGIC[..n.min(8)] {
            return Err(err(0, "not a tidemark capture (wrong magic number)".into()));
        }
        if n < HEADER_LEN {
            return Err(err(n as u64, "truncated header".into()));
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if !(OLDEST_READABLE_VERSION..=VERSION).contains(&version) {
            return Err(err(
                8,
                format!(
                    "unsupported capture format version {version} (this build reads \
                     {OLDEST_READABLE_VERSION} to {VERSION}; read it with the tidemark that \
                     recorded it, or record it again)"
                ),
            ));
        }
        let flags = u16::from_le_bytes([header[10], header[11]]);
        if flags & !FLAG_AGGREGATE != 0 {
            return Err(err(10, format!("unknown header flags {flags:#x}")));
        }
        let mut reader = CaptureReader {
            path: path.clone(),
            src,
            offset: HEADER_LEN as u64,
            meta: Meta::default(),
            cursors: Vec::new(),
            free_slots: Vec::new(),
            heads: BinaryHeap::new(),
            draining: None,
            ready: VecDeque::new(),
            eof: false,
            truncated: None,
            ended: None,
            stored: Vec::new(),
            chunks: 0,
            decompressor: zstd::bulk::Decompressor::new().ok(),
            one: Vec::with_capacity(1),
        };
        let at = reader.offset;
        match reader.read_chunk()? {
            Chunk::Some(ChunkKind::Meta, raw) => {
                let meta = Meta::decode(&mut Decoder::new(&raw))
                    .map_err(|p| err(at, format!("bad metadata chunk: {p}")))?;
                if meta.aggregate != (flags & FLAG_AGGREGATE != 0) {
                    return Err(err(
                        at,
                        "metadata and header disagree on aggregate mode".into(),
                    ));
                }
                reader.meta = meta;
            }
            Chunk::Some(kind, _) => {
                return Err(err(
                    at,
                    format!("first chunk is {kind:?}, expected metadata"),
                ))
            }
            Chunk::Eof => {
                // (`truncated` names the byte too, which the error's offset already says.)
                let why = match reader.truncated {
                    Some(_) => "the file ends inside its first chunk, the run's metadata",
                    None => "the file ends before the run's metadata",
                };
                return Err(err(at, format!("truncated capture: {why}")));
            }
        }
        Ok(reader)
    }

    /// The run's metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The file name used in errors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why reading stopped early (the file ends inside a chunk), once the end was reached.
    pub fn truncated(&self) -> Option<&str> {
        self.truncated.as_deref()
    }

    /// The end marker, once read (absent when the run was killed).
    pub fn end(&self) -> Option<&EndRecord> {
        self.ended.as_ref()
    }

    /// Bytes consumed so far (for progress bars).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn error(&self, offset: u64, problem: impl Into<String>) -> CaptureError {
        CaptureError {
            path: self.path.clone(),
            offset,
            problem: problem.into(),
        }
    }

    fn read_chunk(&mut self) -> Result<Chunk, CaptureError> {
        let start = self.offset;
        let mut h = [0u8; CHUNK_HEADER_LEN];
        let n = read_full(&mut self.src, &mut h)
            .map_err(|e| self.error(start, format!("read error: {e}")))?;
        if n == 0 {
            return Ok(Chunk::Eof);
        }
        if self.ended.is_some() {
            // Nothing is written after the end marker: these bytes are not the recording's
            // (a copy gone wrong, a file appended to). What came before is whole.
            self.truncated = Some(format!(
                "bytes follow the end marker (from byte {start}): not part of the capture, ignored"
            ));
            return Ok(Chunk::Eof);
        }
        if n < CHUNK_HEADER_LEN {
            self.truncated = Some(format!(
                "the file ends inside a chunk header at byte {start}"
            ));
            return Ok(Chunk::Eof);
        }
        let kind = ChunkKind::from_u8(h[0])
            .ok_or_else(|| self.error(start, format!("unknown chunk type {}", h[0])))?;
        let codec = h[1];
        let raw_len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
        let stored_len = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
        let crc = u32::from_le_bytes([h[10], h[11], h[12], h[13]]);
        if codec != CODEC_RAW && codec != CODEC_ZSTD {
            return Err(self.error(start, format!("unknown chunk codec {codec}")));
        }
        if raw_len > MAX_CHUNK || stored_len > MAX_CHUNK {
            let claimed = raw_len.max(stored_len);
            return Err(self.error(
                start,
                format!(
                    "a chunk header claims {claimed} bytes, more than a chunk holds \
                     ({MAX_CHUNK}): corrupt file"
                ),
            ));
        }
        if codec == CODEC_RAW && raw_len != stored_len {
            return Err(self.error(start, "uncompressed chunk with mismatched lengths"));
        }
        self.stored.resize(stored_len as usize, 0);
        let mut stored = std::mem::take(&mut self.stored);
        let got = read_full(&mut self.src, &mut stored)
            .map_err(|e| self.error(start, format!("read error: {e}")));
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                self.stored = stored;
                return Err(e);
            }
        };
        if got < stored.len() {
            let kind = format!("{kind:?}");
            let article = if kind.starts_with(['A', 'E', 'I', 'O', 'U']) {
                "an"
            } else {
                "a"
            };
            self.truncated = Some(format!(
                "the file ends inside {article} {kind} chunk at byte {start} ({got} of {stored_len} bytes present)"
            ));
            self.stored = stored;
            return Ok(Chunk::Eof);
        }
        self.offset += (CHUNK_HEADER_LEN + stored.len()) as u64;
        self.chunks += 1;
        if crc32(&stored) != crc {
            self.stored = stored;
            return Err(self.error(
                start,
                format!("{kind:?} chunk checksum mismatch (corrupt file)"),
            ));
        }
        let raw = if codec == CODEC_ZSTD {
            let decompressed = match self.decompressor.as_mut() {
                Some(z) => z.decompress(&stored, raw_len as usize),
                None => zstd::bulk::decompress(&stored, raw_len as usize),
            };
            match decompressed {
                Ok(raw) if raw.len() == raw_len as usize => raw,
                Ok(_) => {
                    self.stored = stored;
                    return Err(self.error(start, "decompressed chunk has the wrong length"));
                }
                Err(e) => {
                    self.stored = stored;
                    return Err(self.error(start, format!("cannot decompress chunk: {e}")));
                }
            }
        } else {
            stored.clone()
        };
        self.stored = stored;
        Ok(Chunk::Some(kind, raw))
    }

    /// Opens an event chunk for merging.
    fn open_events(&mut self, raw: Vec<u8>, at: u64) -> Result<(), CaptureError> {
        let opened = EventCursor::new(raw, self.decompressor.as_mut());
        let bad = |p: &str| self.error(at, format!("bad Events chunk: {p}"));
        let mut cursor = opened.map_err(bad)?;
        let Some(first) = cursor.next().map_err(bad)? else {
            return Ok(());
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.cursors.push(None);
                self.cursors.len() - 1
            }
        };
        self.heads
            .push(Reverse((first.seq, order_rank(&first.kind), slot)));
        self.cursors[slot] = Some((cursor, first, at));
        Ok(())
    }

    /// Appends to `out` (up to `max` in all) the open chunks' events below `barrier`,
    /// smallest `(key, rank)` first.
    ///
    /// Usually one chunk holds a long run of consecutive events (one thread at a time), so
    /// the chunk being drained stays out of the heap while its events stay below every other
    /// chunk's next one: the run is decoded in a tight loop, with no heap operation per event.
    fn fill_events_below(
        &mut self,
        barrier: u64,
        out: &mut Vec<Event>,
        max: usize,
    ) -> Result<(), CaptureError> {
        while out.len() < max {
            let slot = match self.draining {
                Some(slot) => slot,
                None => {
                    let Some(&Reverse((seq, _, slot))) = self.heads.peek() else {
                        return Ok(());
                    };
                    if seq >= barrier {
                        return Ok(());
                    }
                    self.heads.pop();
                    self.draining = Some(slot);
                    slot
                }
            };
            // The next event of every other open chunk comes at or after this key.
            let other = self
                .heads
                .peek()
                .map_or((u64::MAX, u8::MAX), |r| (r.0 .0, r.0 .1));
            let Some((cursor, event, at)) = self.cursors[slot].as_mut() else {
                self.draining = None;
                return Ok(());
            };
            // The held event, then the chunk's next ones straight from the decoder into `out`:
            // an event goes back to the held place only where the merge stops. (Moving every
            // event through the held place cost a failed store-to-load forward each: a quarter
            // of the reading time.)
            let mut next = *event;
            loop {
                let key = (next.seq, order_rank(&next.kind));
                if next.seq >= barrier || other < key {
                    // Another chunk (or the barrier) comes first: put this one back.
                    *event = next;
                    self.heads.push(Reverse((key.0, key.1, slot)));
                    self.draining = None;
                    break;
                }
                out.push(next);
                match cursor.next() {
                    Ok(Some(e)) => next = e,
                    Ok(None) => {
                        self.cursors[slot] = None;
                        self.free_slots.push(slot);
                        self.draining = None;
                        break;
                    }
                    Err(p) => {
                        let at = *at;
                        return Err(self.error(at, format!("bad Events chunk: {p}")));
                    }
                }
                if out.len() >= max {
                    *event = next;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The next item, `Ok(None)` at the end of the data.
    ///
    /// Readers of whole captures should prefer [`CaptureReader::next_batch`]: one call per
    /// run of events instead of one per event.
    #[allow(clippy::should_implement_trait)]
    pub fn next_item(&mut self) -> Result<Option<Item>, CaptureError> {
        let mut one = std::mem::take(&mut self.one);
        let next = self.next_batch(&mut one, 1);
        let event = one.pop();
        self.one = one;
        Ok(match next? {
            Some(Batch::Events) => event.map(Item::Event),
            Some(Batch::Item(item)) => Some(item),
            None => None,
        })
    }

    /// The next run of events or the next other item, `Ok(None)` at the end of the data.
    ///
    /// `events` is cleared; when events come next, up to `max` of them (at least one) are
    /// put there, in stream order, and the answer is [`Batch::Events`]. Items other than
    /// events are never held back behind a batch: [`Batch::Item`] comes as soon as every
    /// event before it was handed out.
    pub fn next_batch(
        &mut self,
        events: &mut Vec<Event>,
        max: usize,
    ) -> Result<Option<Batch>, CaptureError> {
        events.clear();
        let max = max.max(1);
        loop {
            if let Some(&(barrier, _)) = self.ready.front() {
                self.fill_events_below(barrier, events, max)?;
                if !events.is_empty() {
                    return Ok(Some(Batch::Events));
                }
                return Ok(self.ready.pop_front().map(|(_, item)| Batch::Item(item)));
            }
            if self.eof {
                self.fill_events_below(u64::MAX, events, max)?;
                return Ok((!events.is_empty()).then_some(Batch::Events));
            }
            let at = self.offset;
            let (kind, raw) = match self.read_chunk()? {
                Chunk::Eof => {
                    self.eof = true;
                    continue;
                }
                Chunk::Some(kind, raw) => (kind, raw),
            };
            let path = self.path.clone();
            let bad = |p: &str| CaptureError {
                path: path.clone(),
                offset: at,
                problem: format!("bad {kind:?} chunk: {p}"),
            };
            let mut d = Decoder::new(&raw);
            match kind {
                ChunkKind::Meta => return Err(bad("a second metadata chunk")),
                ChunkKind::Events => {
                    if self.meta.aggregate {
                        return Err(bad("event records in an aggregate capture"));
                    }
                    self.open_events(raw, at)?;
                }
                ChunkKind::Stacks => {
                    let (first, nodes) = decode_stacks(&mut d).map_err(&bad)?;
                    self.ready.push_back((0, Item::Stacks { first, nodes }));
                }
                ChunkKind::Modules => {
                    let m = decode_modules(&mut d).map_err(&bad)?;
                    self.ready.push_back((0, Item::Modules(m)));
                }
                ChunkKind::Samples => {
                    for s in decode_samples(&mut d).map_err(&bad)? {
                        self.ready.push_back((s.seq, Item::Sample(s)));
                    }
                }
                ChunkKind::Threads => {
                    let t = decode_threads(&mut d).map_err(&bad)?;
                    self.ready.push_back((0, Item::Threads(t)));
                }
                ChunkKind::Aggregate => {
                    let a = decode_aggregate(&mut d).map_err(&bad)?;
                    self.ready.push_back((u64::MAX, Item::Aggregate(a)));
                }
                ChunkKind::Exec => {
                    let e = decode_exec(&mut d).map_err(&bad)?;
                    self.ready.push_back((e.seq, Item::Exec(e)));
                }
                ChunkKind::End => {
                    let e = decode_end(&mut d).map_err(&bad)?;
                    self.ended = Some(e);
                    self.ready.push_back((u64::MAX, Item::End(e)));
                }
            }
        }
    }
}
