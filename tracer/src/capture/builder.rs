//! Building capture files by hand (tools, tests, converters), chunk by chunk.

use super::events::encode_events;
use super::format::*;
use super::writer::{header_bytes, put_chunk};

/// Appends chunks to an in-memory capture.
pub struct CaptureBuilder {
    out: Vec<u8>,
    level: i32,
}

impl CaptureBuilder {
    /// A capture with `meta` (the header's aggregate flag follows `meta.aggregate`).
    pub fn new(meta: &Meta) -> CaptureBuilder {
        let mut b = CaptureBuilder {
            out: header_bytes(meta.aggregate).to_vec(),
            level: 3,
        };
        let mut e = Encoder::default();
        meta.encode(&mut e);
        b.chunk(ChunkKind::Meta, &e.buf);
        b
    }

    fn chunk(&mut self, kind: ChunkKind, payload: &[u8]) -> &mut Self {
        put_chunk(&mut self.out, kind, payload, self.level);
        self
    }

    /// Events of one thread, sorted by sequence number.
    pub fn events(&mut self, thread: u32, events: &[Event]) -> &mut Self {
        let mut e = Encoder::default();
        encode_events(thread, events, &mut e);
        put_chunk(&mut self.out, ChunkKind::Events, &e.buf, 0);
        self
    }

    /// Stack nodes `[first, first + nodes.len())`.
    pub fn stacks(&mut self, first: u32, nodes: &[(u64, u32)]) -> &mut Self {
        let mut e = Encoder::default();
        encode_stacks(first, nodes, &mut e);
        self.chunk(ChunkKind::Stacks, &e.buf)
    }

    pub fn modules(&mut self, modules: &[ModuleRecord]) -> &mut Self {
        let mut e = Encoder::default();
        encode_modules(modules, &mut e);
        self.chunk(ChunkKind::Modules, &e.buf)
    }

    pub fn threads(&mut self, threads: &[ThreadRecord]) -> &mut Self {
        let mut e = Encoder::default();
        encode_threads(threads, &mut e);
        self.chunk(ChunkKind::Threads, &e.buf)
    }

    /// A memory sample; every event numbered below `sample.seq` must already be added.
    pub fn sample(&mut self, sample: Sample) -> &mut Self {
        let mut e = Encoder::default();
        encode_samples(&[sample], &mut e);
        self.chunk(ChunkKind::Samples, &e.buf)
    }

    pub fn aggregate(&mut self, record: &AggregateRecord) -> &mut Self {
        let mut e = Encoder::default();
        encode_aggregate(record, &mut e);
        self.chunk(ChunkKind::Aggregate, &e.buf)
    }

    /// The process called `exec`; every event numbered below `exec.seq` must already be added.
    pub fn exec(&mut self, exec: &ExecRecord) -> &mut Self {
        let mut e = Encoder::default();
        encode_exec(exec, &mut e);
        self.chunk(ChunkKind::Exec, &e.buf)
    }

    pub fn end(&mut self, end: EndRecord) -> &mut Self {
        let mut e = Encoder::default();
        encode_end(&end, &mut e);
        self.chunk(ChunkKind::End, &e.buf)
    }

    /// The capture's bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }
}
