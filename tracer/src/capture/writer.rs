//! The background writer thread: drains the per-thread blocks, compresses them into chunks,
//! appends stack nodes, modules, thread names and a memory sample every tick, and writes the
//! end marker when recording stops (or an `Exec` record when the process is about to `exec`,
//! see [`super::checkpoint_before_exec`]).
//!
//! The rows are decoded straight into one [`ChunkEncoder`] kept for the whole recording (no
//! list of events in between, no tables cleared or allocated per chunk): the writer competes
//! with the program for the cores, so its cost per event is the cost of recording.
//!
//! Each tick's output goes to the file with a single `write`, so a killed process leaves only
//! whole ticks behind, except at most one partial chunk at the end (which the reader skips).

use super::buffers::{self, Block, EventList, RowSink, RowSpan};
use super::events::ChunkEncoder;
use super::fds::{CaptureFile, Statm};
use super::format::*;
use crate::report::replay::{Replay, ReplayOptions};
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Keep only per-stack totals at the high-water mark and at the end (plus samples), in a
    /// record written now and then (a tenth of the run so far apart) and at the end: the file
    /// stays small however long the run.
    pub aggregate: bool,
    /// Milliseconds between memory samples (and block flushes). Default 10.
    pub sample_interval_ms: u32,
    /// zstd level for the event columns and the other chunks. Default 1 (on churn, 3 gives
    /// the same size at twice the writer's compression time).
    pub compression_level: i32,
    /// Frames captured per recorded stack. Default 64.
    pub max_frames: usize,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            aggregate: false,
            sample_interval_ms: 10,
            compression_level: super::events::DEFAULT_COLUMN_LEVEL,
            max_frames: crate::hook::DEFAULT_RECORD_FRAMES,
        }
    }
}

/// Appends one chunk (compressed when worthwhile) to `out`. A `level` of 0 stores the payload
/// as is (`Events` payloads compress their columns themselves).
pub fn put_chunk(out: &mut Vec<u8>, kind: ChunkKind, payload: &[u8], level: i32) {
    thread_local! {
        // One compression context per thread, reused: creating one per chunk shows up.
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let compressed = if payload.len() >= 64 && level != 0 {
        COMPRESSOR
            .with(|c| {
                let mut c = c.borrow_mut();
                if c.as_ref().is_none_or(|(l, _)| *l != level) {
                    *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
                }
                c.as_mut().and_then(|(_, z)| z.compress(payload).ok())
            })
            .filter(|c| c.len() < payload.len())
    } else {
        None
    };
    let (codec, stored): (u8, &[u8]) = match &compressed {
        Some(c) => (CODEC_ZSTD, c),
        None => (CODEC_RAW, payload),
    };
    out.push(kind as u8);
    out.push(codec);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(stored).to_le_bytes());
    out.extend_from_slice(stored);
}

/// The 16-byte file header.
pub fn header_bytes(aggregate: bool) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    let flags = if aggregate { FLAG_AGGREGATE } else { 0 };
    h[10..12].copy_from_slice(&flags.to_le_bytes());
    h
}

pub(crate) fn module_records() -> Vec<ModuleRecord> {
    crate::symbolize::current_modules()
        .into_iter()
        .map(|m| ModuleRecord {
            path: m.path.to_string_lossy().into_owned(),
            build_id: m.build_id,
            base: m.base,
            segments: m.segments,
        })
        .collect()
}

/// What the writer thread reports when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub events: u64,
    pub dropped: u64,
    pub bytes_written: u64,
    pub duration_ns: u64,
    /// CPU time the writer thread used (decoding, coding, compressing, writing): what
    /// recording costs besides the allocating threads' own share.
    pub writer_cpu_ns: u64,
}

pub(crate) struct Writer {
    file: CaptureFile,
    out: Vec<u8>,
    options: RecordOptions,
    start: Instant,
    stack_nodes_written: u32,
    announced: HashSet<(u32, u32)>,
    replay: Option<(Replay, Vec<Event>)>,
    statm: Option<Statm>,
    page_size: u64,
    bytes_written: u64,
    events: u64,
    /// This tick's rows per thread index, in the order taken.
    batches: Vec<(u32, Vec<RowSpan>)>,
    /// The event encoder (its tables are kept from chunk to chunk) and a payload buffer.
    chunk: ChunkEncoder,
    payload: Vec<u8>,
    /// Aggregate mode: events replayed, when the next `Aggregate` record is due
    /// ([`Writer::aggregate_due`]), and the events replayed when the last one was written.
    replayed: u64,
    next_aggregate_ns: u64,
    replayed_at_aggregate: u64,
    /// The loader's counts of objects loaded and unloaded when the modules were last written.
    module_counts: (u64, u64),
}

/// Aggregate mode keeps its totals in the writer until a record of them is written: every
/// tenth of the time run so far (between 0.1 s and a minute) when events came since the last
/// one, so a run killed by SIGKILL loses at most about the last tenth of its run (at least
/// 0.1 s, at most a minute), while a long run writes a few records per doubling of its
/// length (each holds every site), not one a tick. Readers take the last one.
const AGGREGATE_EVERY_MIN_NS: u64 = 100_000_000;
const AGGREGATE_EVERY_MAX_NS: u64 = 60_000_000_000;

/// The most events one `Events` chunk holds (about 2-4 MiB of columns).
const MAX_EVENTS_PER_CHUNK: usize = 1 << 18;

/// Codes one thread's rows of a tick into `Events` chunks as they are decoded, cutting a
/// chunk every [`MAX_EVENTS_PER_CHUNK`] events.
struct ChunkSink<'a> {
    thread: u32,
    chunk: &'a mut ChunkEncoder,
    payload: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
    level: i32,
}

impl ChunkSink<'_> {
    /// Appends the events coded so far (if any) to `out` as an `Events` chunk.
    fn put(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        self.payload.clear();
        self.chunk.finish(self.thread, self.level, self.payload);
        put_chunk(self.out, ChunkKind::Events, self.payload, 0);
    }
}

impl ChunkSink<'_> {
    /// Cuts a chunk when it is full.
    #[inline(always)]
    fn coded(&mut self) {
        if self.chunk.len() == MAX_EVENTS_PER_CHUNK {
            self.put();
        }
    }
}

impl RowSink for ChunkSink<'_> {
    #[inline(always)]
    fn free(&mut self, seq: u64, api: u8, ptr: u64) {
        self.chunk.push_free(seq, api, ptr);
        self.coded();
    }
    #[inline(always)]
    fn alloc(&mut self, seq: u64, api: u8, ptr: u64, size: u64, stack: u32) {
        self.chunk.push_alloc(seq, api, ptr, size, stack);
        self.coded();
    }
    #[inline(always)]
    fn realloc(&mut self, seq: u64, new: u64, size: u64, stack: u32, old: u64) {
        self.chunk.push_realloc(seq, new, size, stack, old);
        self.coded();
    }
}

impl Writer {
    pub(crate) fn new(mut file: CaptureFile, options: RecordOptions) -> io::Result<Self> {
        let meta = Meta {
            pid: std::process::id(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            sample_interval_ms: options.sample_interval_ms,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            executable: std::env::current_exe()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            aggregate: options.aggregate,
        };
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(&header_bytes(options.aggregate));
        // Stored uncompressed (a few KiB): this runs on the program's thread, and a
        // compression context there would live in a thread-local until the thread's exit,
        // whose frees (zstd's, glibc's destructor list) the preload then records as frees of
        // blocks never allocated (the writer thread compresses everything after this).
        let mut e = Encoder::default();
        meta.encode(&mut e);
        put_chunk(&mut out, ChunkKind::Meta, &e.buf, 0);
        let mut e = Encoder::default();
        encode_modules(&module_records(), &mut e);
        put_chunk(&mut out, ChunkKind::Modules, &e.buf, 0);
        file.write_all(&out)?;
        let bytes_written = out.len() as u64;
        out.clear();
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let replay = options
            .aggregate
            .then(|| (Replay::new(ReplayOptions::default()), Vec::<Event>::new()));
        Ok(Writer {
            file,
            out,
            options,
            start: Instant::now(),
            stack_nodes_written: 1,
            announced: HashSet::new(),
            replay,
            statm: Statm::open(),
            page_size,
            bytes_written,
            events: 0,
            replayed: 0,
            next_aggregate_ns: AGGREGATE_EVERY_MIN_NS,
            replayed_at_aggregate: 0,
            module_counts: crate::symbolize::module_load_counts(),
            batches: Vec::new(),
            chunk: ChunkEncoder::new(),
            payload: Vec::new(),
        })
    }

    fn rss(&mut self) -> u64 {
        self.statm.as_mut().map_or(0, Statm::resident_pages) * self.page_size
    }

    /// Notes the rows `block` committed since the last look in its thread's batch.
    fn drain(&mut self, block: *mut Block) {
        // SAFETY: the writer is the only reader of blocks; `block` is on the FULL list we
        // took or is some slot's current block, and is freed only after this tick.
        let Some(span) = (unsafe { Block::take_rows(block) }) else {
            return;
        };
        let thread = span.thread();
        match self.batches.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, spans)) => spans.push(span),
            None => self.batches.push((thread, vec![span])),
        }
    }

    /// Writes each thread's events of this tick as one `Events` chunk (a few for a very busy
    /// thread): bigger chunks let the column model and the entropy coder see more. The rows
    /// are decoded and coded in one pass, by one encoder.
    fn flush_batches(&mut self) {
        for (thread, spans) in &mut self.batches {
            let mut events = 0;
            match &mut self.replay {
                Some((_, pending)) => {
                    let mut sink = EventList {
                        thread: *thread,
                        events: pending,
                    };
                    for span in spans.iter() {
                        // SAFETY: the writer thread, before `retire` recycles the blocks;
                        // the spans are in the order taken.
                        events += unsafe { span.decode(&mut sink) };
                    }
                }
                None => {
                    let mut sink = ChunkSink {
                        thread: *thread,
                        chunk: &mut self.chunk,
                        payload: &mut self.payload,
                        out: &mut self.out,
                        level: self.options.compression_level,
                    };
                    for span in spans.iter() {
                        // SAFETY: as above.
                        events += unsafe { span.decode(&mut sink) };
                    }
                    sink.put();
                }
            }
            self.events += events as u64;
            spans.clear();
        }
        // Keep the lists of the threads seen lately, not of every thread that ever ran.
        self.batches.truncate(64);
    }

    /// One tick: everything keyed below `barrier` reaches the output.
    pub(crate) fn tick(&mut self, kind: Tick) -> io::Result<()> {
        // The last tick of this process image (an exec nearly always succeeds): every event
        // drained comes before what it writes.
        let last = kind != Tick::Every;
        // The writer advances the clock too: allocations only read it, so without this an
        // allocation-only stretch would share one key until the next free, and be dated by it.
        let barrier = buffers::SEQ.fetch_add(1, Ordering::SeqCst) + 1;
        let mut new_threads = Vec::new();
        // After this, every event keyed below `barrier` is committed to a block that is a
        // slot's current one or on the FULL list (see "Ordering" in `buffers`).
        let slots = buffers::snapshot_slots(|info| {
            if self.announced.insert((info.index, info.os_tid)) {
                new_threads.push(ThreadRecord {
                    index: info.index,
                    os_tid: info.os_tid,
                    name: info.name,
                });
            }
        });
        // Full blocks first (oldest first: each thread's blocks in the order it filled
        // them), then what the current blocks hold beyond that. A block that was current at
        // the snapshot and filled up since is drained to its end here and is empty below.
        let mut full = Vec::new();
        let mut b = buffers::take_full();
        while !b.is_null() {
            full.push(b);
            // SAFETY: the full list is ours now.
            b = unsafe { (*b).next };
        }
        for &b in &full {
            self.drain(b);
        }
        for s in &slots {
            if !s.block.is_null() {
                self.drain(s.block);
            }
        }
        // The rows are decoded here, before their blocks are recycled.
        self.flush_batches();
        buffers::retire(&slots, &full);
        let level = self.options.compression_level;
        let count = crate::stack::stack_node_count();
        if count > self.stack_nodes_written {
            let first = self.stack_nodes_written;
            let nodes: Vec<(u64, u32)> = (first..count).map(crate::stack::stack_node).collect();
            let mut e = Encoder::default();
            encode_stacks(first, &nodes, &mut e);
            put_chunk(&mut self.out, ChunkKind::Stacks, &e.buf, level);
            self.stack_nodes_written = count;
        }
        if !new_threads.is_empty() {
            let mut e = Encoder::default();
            encode_threads(&new_threads, &mut e);
            put_chunk(&mut self.out, ChunkKind::Threads, &e.buf, level);
        }
        let mut heap = 0;
        if let Some((replay, pending)) = &mut self.replay {
            // Stable: each thread's events keep their order among equal keys.
            pending.sort_by_key(|e| (e.seq, order_rank(&e.kind)));
            let ready = if last {
                pending.len()
            } else {
                pending.partition_point(|e| e.seq < barrier)
            };
            for ev in pending.drain(..ready) {
                replay.event(&ev);
            }
            self.replayed += ready as u64;
            heap = replay.heap;
        }
        let time_ns = self.start.elapsed().as_nanos() as u64;
        let sample = Sample {
            time_ns,
            // The last sample (and the exec record) comes after every event.
            seq: if last {
                buffers::SEQ.load(Ordering::SeqCst) + 1
            } else {
                barrier
            },
            rss: self.rss(),
            heap,
        };
        if let Some((replay, _)) = &mut self.replay {
            // Dates a peak the events above reached (else aggregate captures said "at 0 ms").
            replay.clock(time_ns);
        }
        let mut e = Encoder::default();
        encode_samples(&[sample], &mut e);
        put_chunk(&mut self.out, ChunkKind::Samples, &e.buf, level);
        for list in super::take_pending_modules() {
            // Taken before an unload (`note_modules_before_unload`).
            let mut e = Encoder::default();
            encode_modules(&list, &mut e);
            put_chunk(&mut self.out, ChunkKind::Modules, &e.buf, level);
        }
        let counts = crate::symbolize::module_load_counts();
        if last || counts != self.module_counts {
            // What a reader needs if nothing follows: the modules loaded since the start (to
            // symbolize). And whenever the loader loaded or unloaded an object: a library
            // that `dlclose` unloads before the end is then still named in the reports (the
            // reader keeps every module it was told of; one loaded and unloaded between two
            // ticks is noted by the preload's `dlclose`). A frame in an unloaded library whose
            // addresses a later one took is named after the one listed first: the reader
            // cannot tell which it was.
            self.module_counts = counts;
            let mut e = Encoder::default();
            encode_modules(&module_records(), &mut e);
            put_chunk(&mut self.out, ChunkKind::Modules, &e.buf, level);
        }
        if self.aggregate_due(last, time_ns) {
            // The totals so far (every event replayed comes before this tick's sample).
            if let Some((replay, _)) = &self.replay {
                let record = AggregateRecord {
                    peak_bytes: replay.peak_bytes,
                    peak_time_ns: replay.peak_time_ns,
                    total_allocs: replay.totals.allocs,
                    total_bytes: replay.totals.alloc_bytes,
                    total_frees: replay.totals.frees,
                    entries: replay
                        .settled_sites()
                        .map(|s| AggregateEntry {
                            stack: s.stack,
                            thread: s.thread,
                            peak_bytes: s.peak_bytes,
                            peak_count: s.peak_count,
                            end_bytes: s.cur_bytes,
                            end_count: s.cur_count,
                            total_bytes: s.total_bytes,
                            total_count: s.total_count,
                        })
                        .collect(),
                };
                let mut e = Encoder::default();
                encode_aggregate(&record, &mut e);
                put_chunk(&mut self.out, ChunkKind::Aggregate, &e.buf, level);
            }
        }
        match kind {
            Tick::Every => {}
            Tick::Exec(program) => {
                let exec = ExecRecord {
                    time_ns,
                    seq: sample.seq,
                    program,
                };
                let mut e = Encoder::default();
                encode_exec(&exec, &mut e);
                put_chunk(&mut self.out, ChunkKind::Exec, &e.buf, level);
            }
            Tick::Last => {
                let end = EndRecord {
                    time_ns,
                    events: self.events,
                    dropped: buffers::DROPPED.load(Ordering::Relaxed),
                };
                let mut e = Encoder::default();
                encode_end(&end, &mut e);
                put_chunk(&mut self.out, ChunkKind::End, &e.buf, level);
            }
        }
        self.file.write_all(&self.out)?;
        self.bytes_written += self.out.len() as u64;
        self.out.clear();
        if self.out.capacity() > 8 << 20 {
            self.out.shrink_to(1 << 20);
        }
        Ok(())
    }

    /// Aggregate mode: is a record of the totals due in this tick? In the last one, always;
    /// else once its time has come, if events were replayed since the last record.
    fn aggregate_due(&mut self, last: bool, time_ns: u64) -> bool {
        if self.replay.is_none() {
            return false;
        }
        if !last
            && (time_ns < self.next_aggregate_ns || self.replayed == self.replayed_at_aggregate)
        {
            return false;
        }
        self.replayed_at_aggregate = self.replayed;
        self.next_aggregate_ns =
            time_ns + (time_ns / 10).clamp(AGGREGATE_EVERY_MIN_NS, AGGREGATE_EVERY_MAX_NS);
        true
    }

    pub(crate) fn summary(&self) -> RecordSummary {
        RecordSummary {
            events: self.events,
            dropped: buffers::DROPPED.load(Ordering::Relaxed),
            bytes_written: self.bytes_written,
            duration_ns: self.start.elapsed().as_nanos() as u64,
            writer_cpu_ns: thread_cpu_ns(),
        }
    }
}

/// CPU time of the calling thread (0 if the clock is unavailable).
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What a tick writes besides the events and a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing more: the tick every sample interval.
    Every,
    /// The process is about to `exec` this program: like `Last` (every event drained is
    /// written and, in aggregate mode, replayed), with an `Exec` record for the end marker.
    /// The recording goes on: the exec may fail.
    Exec(String),
    /// Recording stops: modules, the aggregate, the end marker.
    Last,
}

/// How long the writer waits after an exec checkpoint before its next tick.
const EXEC_PAUSE: Duration = Duration::from_millis(100);

/// Runs the writer loop until `stop` is set, then writes the last tick.
pub(crate) fn run(writer: Writer, stop: Arc<AtomicBool>) -> io::Result<RecordSummary> {
    buffers::suppress_this_thread();
    block_signals();
    // The writer's own allocations (compression, file buffers) are neither traced nor recorded.
    crate::hook::with_reentrancy_guard(|| run_loop(writer, stop))
}

fn run_loop(mut writer: Writer, stop: Arc<AtomicBool>) -> io::Result<RecordSummary> {
    let interval = Duration::from_millis(writer.options.sample_interval_ms.max(1) as u64);
    let mut next = Instant::now() + interval;
    let mut result = Ok(());
    while !stop.load(Ordering::Acquire) {
        if let Some((ticket, program)) = super::exec_request() {
            let done = writer.tick(Tick::Exec(program));
            super::exec_done(ticket);
            if let Err(e) = done {
                result = Err(e);
                break;
            }
            // No tick while the exec happens: one cut by it would leave a partial chunk
            // after the Exec record, and the reader would call the file truncated. (If the
            // exec failed, the events wait a little longer in their blocks.)
            next = Instant::now() + EXEC_PAUSE;
        }
        let now = Instant::now();
        if now < next {
            std::thread::park_timeout(next - now);
            continue;
        }
        next += interval;
        if next < now {
            next = now + interval;
        }
        if let Err(e) = writer.tick(Tick::Every) {
            result = Err(e);
            break;
        }
    }
    buffers::ACCEPTING.store(false, Ordering::SeqCst);
    let result = result.and_then(|()| writer.tick(Tick::Last));
    if let Err(e) = &result {
        // Whoever stops the recording may drop the error (the preload, at exit): the one
        // place it is sure to be seen is here, when it happens.
        let line = format!(
            "tidemark: pid {}: the recording stopped after {} ms: {e}\n",
            std::process::id(),
            writer.start.elapsed().as_millis()
        );
        let mut err = tidemark_alloc::stderr::Stderr::new();
        err.write_bytes(line.as_bytes());
        err.flush();
    }
    result?;
    Ok(writer.summary())
}

/// Blocks every signal in the writer thread: the program's signals go to its own threads,
/// and a handler that flushes the capture (the preload library's) must never run here, where
/// it would wait for this very thread to finish. A write to a closed pipe then fails with
/// `EPIPE` instead of killing the process.
fn block_signals() {
    // SAFETY: the set is a local; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}
