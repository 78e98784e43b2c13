//! The capture file format, shared by the writer and the reader.
//!
//! ```text
//! file    := header chunk*
//! header  := "TDMKCAP\0" version:u16le flags:u16le reserved:u32le          (16 bytes)
//! chunk   := kind:u8 codec:u8 raw_len:u32le stored_len:u32le crc32:u32le stored[stored_len]
//! ```
//!
//! Chunks are self-delimiting and each carries a CRC-32 of its stored bytes, so a run killed
//! by SIGKILL leaves a file that reads up to its last complete chunk. Each chunk is compressed
//! on its own (zstd) so a reader never holds more than one chunk (≤ [`MAX_CHUNK`]) at a time.
//!
//! Inside chunks every integer is a LEB128 varint; signed deltas are zigzag coded.
//!
//! Events carry no timestamp. They carry an ordering key instead (`Event::seq`): a global
//! clock that frees and reallocs advance and allocations only read, so the key is unique for
//! frees and reallocs and shared by the allocations between them (the writer advances it
//! too, at each sample, so allocations never share a key across one). Events sort by
//! `(seq, order_rank)` — at equal keys frees and reallocs come first — which is a valid replay
//! order across threads (the argument is in the `buffers` module). Each thread's events are
//! stored in that order; the writer emits a [`ChunkKind::Samples`] record every 10 ms holding
//! the wall time and the clock at that moment, so any event's time is known to within one
//! sample interval (heaptrack does the same with its `c` lines). A timestamp per event would
//! cost more than the rest of the event; the key usually costs one tag bit.
//!
//! Version history: 1 had a unique sequence number per event (one atomic increment each);
//! 2 has the shared-key clock above and a new pointer model in `Events` chunks; 4 adds the
//! `Exec` chunk (readers of 4 also read 3, which is 4 without it).
//!
//! Events are encoded twice: compactly in rows on the allocation path (`buffers`), and in
//! columns in the file (see [`super::events`]), which the writer thread converts to.

use std::fmt;

/// First 8 bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"TDMKCAP\0";
/// Format version written by this build.
pub const VERSION: u16 = 4;
/// Oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 3;
/// Header flag: the file holds aggregated data (no per-event records).
pub const FLAG_AGGREGATE: u16 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 16;
/// Chunk frame size in bytes (before the stored bytes).
pub const CHUNK_HEADER_LEN: usize = 14;
/// Largest chunk (raw or stored) a reader accepts; keeps reader memory bounded.
pub const MAX_CHUNK: u32 = 64 << 20;

/// Largest allocation size a reader accepts (keeps every sum far from overflowing).
pub const MAX_ALLOCATION: u64 = 1 << 44;

/// Codec of a chunk's stored bytes.
pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

/// Event kinds in the tag byte (bits 0-1).
pub const EV_ALLOC: u8 = 0;
pub const EV_FREE: u8 = 1;
pub const EV_REALLOC: u8 = 2;
/// In an `Events` chunk only: a free stored as a block index in a page of known size class
/// (see `events::reuse`).
pub const EV_FREE_BLOCK: u8 = 3;
pub const TAG_SEQ_NEXT: u8 = 1 << 2;
pub const TAG_SAME_STACK: u8 = 1 << 3;
pub const TAG_API_SHIFT: u8 = 4;
pub const TAG_ALIGNED16: u8 = 1 << 6;
/// File encoding only: an allocation at a recently freed address, or a free of a recently
/// allocated one (a distance follows instead of a pointer).
pub const TAG_RECENT_FREE: u8 = 1 << 7;

/// Tie-break among events with equal keys: frees and reallocs (0) before allocations (1).
#[inline]
pub fn order_rank(kind: &EventKind) -> u8 {
    matches!(kind, EventKind::Alloc { .. }) as u8
}

/// The key delta that costs nothing (bit [`TAG_SEQ_NEXT`]): an allocation usually reads the
/// clock its thread's previous event left, a free or realloc advances it by one.
#[inline]
pub fn expected_seq_delta(kind_bits: u8) -> u64 {
    (kind_bits & 3 != EV_ALLOC) as u64
}

/// What a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    /// Run metadata: always the first chunk.
    Meta = 1,
    /// Allocation events of one thread.
    Events = 2,
    /// New stack trie nodes `(ip, parent)`.
    Stacks = 3,
    /// Loaded modules, for symbolization after the run.
    Modules = 4,
    /// Memory samples; each is also an ordering barrier (see the module docs).
    Samples = 5,
    /// Thread index → OS thread id and name.
    Threads = 6,
    /// Aggregated per-stack totals (aggregate mode).
    Aggregate = 7,
    /// Clean end of the recording.
    End = 8,
    /// The process called `exec`: what this image did is all above it. The last chunk of
    /// the file when the exec succeeded; events after it mean it failed and the run went on.
    Exec = 9,
}

impl ChunkKind {
    pub fn from_u8(value: u8) -> Option<ChunkKind> {
        Some(match value {
            1 => ChunkKind::Meta,
            2 => ChunkKind::Events,
            3 => ChunkKind::Stacks,
            4 => ChunkKind::Modules,
            5 => ChunkKind::Samples,
            6 => ChunkKind::Threads,
            7 => ChunkKind::Aggregate,
            8 => ChunkKind::End,
            9 => ChunkKind::Exec,
            _ => return None,
        })
    }
}

/// The run's metadata (the `Meta` chunk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub pid: u32,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    pub sample_interval_ms: u32,
    /// The command line, arguments separated by spaces.
    pub command: String,
    pub executable: String,
    pub aggregate: bool,
}

/// One loaded module (executable or shared object) at record time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleRecord {
    pub path: String,
    pub build_id: Vec<u8>,
    pub base: u64,
    /// Mapped address ranges `[start, end)`.
    pub segments: Vec<(u64, u64)>,
}

/// A memory sample: wall time since start, the global sequence number at that time, the
/// resident set size, and (aggregate mode only) the traced heap in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub time_ns: u64,
    pub seq: u64,
    pub rss: u64,
    pub heap: u64,
}

/// A thread seen during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadRecord {
    pub index: u32,
    pub os_tid: u32,
    pub name: String,
}

/// What happened at one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Alloc {
        ptr: u64,
        size: u64,
        api: u8,
        stack: u32,
    },
    Free {
        ptr: u64,
        api: u8,
    },
    Realloc {
        old: u64,
        new: u64,
        size: u64,
        stack: u32,
    },
}

/// One allocation event, as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub thread: u32,
    pub kind: EventKind,
}

/// Per-(stack, thread) totals kept by aggregate mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregateEntry {
    pub stack: u32,
    pub thread: u32,
    pub peak_bytes: u64,
    pub peak_count: u64,
    pub end_bytes: u64,
    pub end_count: u64,
    pub total_bytes: u64,
    pub total_count: u64,
}

/// The aggregate chunk: run totals plus per-site entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregateRecord {
    pub peak_bytes: u64,
    pub peak_time_ns: u64,
    pub total_allocs: u64,
    pub total_bytes: u64,
    pub total_frees: u64,
    pub entries: Vec<AggregateEntry>,
}

/// The end marker: the recording stopped cleanly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndRecord {
    pub time_ns: u64,
    pub events: u64,
    /// Events dropped because the writer could not keep up or memory ran out.
    pub dropped: u64,
}

/// The process called `exec` (the `Exec` chunk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRecord {
    pub time_ns: u64,
    /// The ordering key at that moment: every event of this image is below it.
    pub seq: u64,
    /// The program it asked to run (as passed to `exec`, lossily UTF-8).
    pub program: String,
}

/// A problem reading a capture: which file, where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureError {
    pub path: String,
    pub offset: u64,
    pub problem: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (at byte {})",
            self.path, self.problem, self.offset
        )
    }
}

impl std::error::Error for CaptureError {}

/// CRC-32 (IEEE), the chunk checksum. The writer checksums every byte it writes and the
/// reader every byte it reads: crc32fast folds 64 bytes a step with carry-less multiplies
/// where the CPU has them (about 0.2 instructions a byte, where slicing-by-8 tables took
/// 3.5: 2% of the writer's instructions on churn).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Writes `v` as LEB128 into `out` at `*pos`; the caller guarantees 10 bytes of room.
#[inline]
pub fn put_varint(out: &mut [u8], pos: &mut usize, mut v: u64) {
    while v >= 0x80 {
        out[*pos] = (v as u8) | 0x80;
        *pos += 1;
        v >>= 7;
    }
    out[*pos] = v as u8;
    *pos += 1;
}

/// A growable encoder for the writer thread (never used on allocation paths).
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// A bounds-checked decoder over one chunk's bytes: every read returns `Err(problem)` rather
/// than panicking on short or malformed input.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

pub type DecodeResult<T> = Result<T, &'static str>;

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or("record runs past the end of its chunk")?;
        self.pos += 1;
        Ok(b)
    }
    #[inline]
    pub fn varint(&mut self) -> DecodeResult<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err("varint overflows 64 bits");
            }
        }
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        u32::try_from(self.varint()?).map_err(|_| "value does not fit 32 bits")
    }
    /// A count of following items, each at least `min_item_bytes` long: rejects counts the
    /// remaining bytes cannot hold, so corrupt counts never cause huge allocations.
    pub fn count(&mut self, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.varint()?;
        let remaining = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > remaining {
            return Err("item count exceeds the chunk size");
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.varint()?;
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err("byte string runs past the end of its chunk");
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: u64) -> DecodeResult<&'a [u8]> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err("column runs past the end of its chunk");
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }
    pub fn string(&mut self) -> DecodeResult<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

impl Meta {
    pub fn encode(&self, e: &mut Encoder) {
        e.varint(self.pid as u64);
        e.varint(self.start_unix_ms);
        e.varint(self.sample_interval_ms as u64);
        e.varint(self.aggregate as u64);
        e.str(&self.command);
        e.str(&self.executable);
    }
    pub fn decode(d: &mut Decoder) -> DecodeResult<Meta> {
        Ok(Meta {
            pid: d.u32()?,
            start_unix_ms: d.varint()?,
            sample_interval_ms: d.u32()?,
            aggregate: d.varint()? != 0,
            command: d.string()?,
            executable: d.string()?,
        })
    }
}

pub fn encode_modules(modules: &[ModuleRecord], e: &mut Encoder) {
    e.varint(modules.len() as u64);
    for m in modules {
        e.str(&m.path);
        e.bytes(&m.build_id);
        e.varint(m.base);
        e.varint(m.segments.len() as u64);
        for &(start, end) in &m.segments {
            e.varint(start);
            e.varint(end.wrapping_sub(start));
        }
    }
}

pub fn decode_modules(d: &mut Decoder) -> DecodeResult<Vec<ModuleRecord>> {
    let n = d.count(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let path = d.string()?;
        let build_id = d.bytes()?.to_vec();
        let base = d.varint()?;
        let nseg = d.count(2)?;
        let mut segments = Vec::with_capacity(nseg);
        for _ in 0..nseg {
            let start = d.varint()?;
            let len = d.varint()?;
            segments.push((start, start.wrapping_add(len)));
        }
        out.push(ModuleRecord {
            path,
            build_id,
            base,
            segments,
        });
    }
    Ok(out)
}

pub fn encode_samples(samples: &[Sample], e: &mut Encoder) {
    e.varint(samples.len() as u64);
    for s in samples {
        e.varint(s.time_ns);
        e.varint(s.seq);
        e.varint(s.rss);
        e.varint(s.heap);
    }
}

pub fn decode_samples(d: &mut Decoder) -> DecodeResult<Vec<Sample>> {
    let n = d.count(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Sample {
            time_ns: d.varint()?,
            seq: d.varint()?,
            rss: d.varint()?,
            heap: d.varint()?,
        });
    }
    Ok(out)
}

pub fn encode_threads(threads: &[ThreadRecord], e: &mut Encoder) {
    e.varint(threads.len() as u64);
    for t in threads {
        e.varint(t.index as u64);
        e.varint(t.os_tid as u64);
        e.str(&t.name);
    }
}

pub fn decode_threads(d: &mut Decoder) -> DecodeResult<Vec<ThreadRecord>> {
    let n = d.count(3)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(ThreadRecord {
            index: d.u32()?,
            os_tid: d.u32()?,
            name: d.string()?,
        });
    }
    Ok(out)
}

/// Stack nodes `[first, first + n)`: ip as a zigzag delta from the previous node's ip,
/// parent as `id - parent` (parents always precede children in the trie).
pub fn encode_stacks(first: u32, nodes: &[(u64, u32)], e: &mut Encoder) {
    e.varint(first as u64);
    e.varint(nodes.len() as u64);
    let mut prev_ip = 0u64;
    for (i, &(ip, parent)) in nodes.iter().enumerate() {
        let id = first as u64 + i as u64;
        e.varint(zigzag(ip.wrapping_sub(prev_ip) as i64));
        e.varint(zigzag(id as i64 - parent as i64));
        prev_ip = ip;
    }
}

pub fn decode_stacks(d: &mut Decoder) -> DecodeResult<(u32, Vec<(u64, u32)>)> {
    let first = d.u32()?;
    let n = d.count(2)?;
    let mut nodes = Vec::with_capacity(n);
    let mut prev_ip = 0u64;
    for i in 0..n {
        let id = first as i64 + i as i64;
        let ip = prev_ip.wrapping_add(unzigzag(d.varint()?) as u64);
        let parent = id.wrapping_sub(unzigzag(d.varint()?));
        let parent = u32::try_from(parent).map_err(|_| "stack node parent out of range")?;
        nodes.push((ip, parent));
        prev_ip = ip;
    }
    Ok((first, nodes))
}

pub fn encode_aggregate(a: &AggregateRecord, e: &mut Encoder) {
    e.varint(a.peak_bytes);
    e.varint(a.peak_time_ns);
    e.varint(a.total_allocs);
    e.varint(a.total_bytes);
    e.varint(a.total_frees);
    e.varint(a.entries.len() as u64);
    for x in &a.entries {
        for v in [
            x.stack as u64,
            x.thread as u64,
            x.peak_bytes,
            x.peak_count,
            x.end_bytes,
            x.end_count,
            x.total_bytes,
            x.total_count,
        ] {
            e.varint(v);
        }
    }
}

pub fn decode_aggregate(d: &mut Decoder) -> DecodeResult<AggregateRecord> {
    let mut a = AggregateRecord {
        peak_bytes: d.varint()?,
        peak_time_ns: d.varint()?,
        total_allocs: d.varint()?,
        total_bytes: d.varint()?,
        total_frees: d.varint()?,
        entries: Vec::new(),
    };
    let n = d.count(8)?;
    a.entries.reserve(n);
    for _ in 0..n {
        let entry = AggregateEntry {
            stack: d.u32()?,
            thread: d.u32()?,
            peak_bytes: d.varint()?,
            peak_count: d.varint()?,
            end_bytes: d.varint()?,
            end_count: d.varint()?,
            total_bytes: d.varint()?,
            total_count: d.varint()?,
        };
        let fields = [
            entry.peak_bytes,
            entry.end_bytes,
            entry.total_bytes,
            entry.total_count,
        ];
        if fields.iter().any(|&v| v > MAX_ALLOCATION) {
            return Err("aggregate entry beyond 16 TiB (corrupt)");
        }
        a.entries.push(entry);
    }
    Ok(a)
}

pub fn encode_end(end: &EndRecord, e: &mut Encoder) {
    e.varint(end.time_ns);
    e.varint(end.events);
    e.varint(end.dropped);
}

pub fn decode_end(d: &mut Decoder) -> DecodeResult<EndRecord> {
    Ok(EndRecord {
        time_ns: d.varint()?,
        events: d.varint()?,
        dropped: d.varint()?,
    })
}

pub fn encode_exec(exec: &ExecRecord, e: &mut Encoder) {
    e.varint(exec.time_ns);
    e.varint(exec.seq);
    e.str(&exec.program);
}

pub fn decode_exec(d: &mut Decoder) -> DecodeResult<ExecRecord> {
    Ok(ExecRecord {
        time_ns: d.varint()?,
        seq: d.varint()?,
        program: d.string()?,
    })
}

#[cfg(test)]
mod tests {
    use super::crc32;

    /// CRC-32 one bit at a time: the definition, with no tables to get wrong.
    fn crc32_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0xEDB8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32_matches_the_definition() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..4099)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099] {
            assert_eq!(
                crc32(&data[..len]),
                crc32_bitwise(&data[..len]),
                "len {len}"
            );
        }
    }
}
