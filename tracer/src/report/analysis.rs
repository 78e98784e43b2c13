//! One pass over a capture: everything the reports need, in bounded memory.

use super::read_ahead::{self, Batches};
use super::replay::{Replay, ReplayOptions, Site, TimelinePoint, Totals};
use crate::capture::format::{
    CaptureError, EndRecord, ExecRecord, Meta, ModuleRecord, ThreadRecord,
};
use crate::capture::{Batch, CaptureReader, Item};
use std::io::Read;
use std::path::Path;

/// What a capture says, aggregated per (stack, thread).
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// The capture file, as named in messages.
    pub path: String,
    pub meta: Meta,
    pub sites: Vec<Site>,
    pub totals: Totals,
    /// Heap bytes at the high-water mark (inside the window, when one was asked for).
    pub peak_bytes: u64,
    pub peak_time_ns: u64,
    pub leaked_bytes: u64,
    pub leaked_count: u64,
    pub duration_ns: u64,
    pub timeline: Vec<TimelinePoint>,
    /// Stack trie nodes `(ip, parent)`, indexed by id; node 0 is the root.
    pub stack_nodes: Vec<(u64, u32)>,
    pub modules: Vec<ModuleRecord>,
    pub threads: Vec<ThreadRecord>,
    /// Why the data ends early (killed run), if it does.
    pub truncated: Option<String>,
    pub end: Option<EndRecord>,
    /// The recording ended because the process called `exec` (set when the file's last
    /// events come before an `Exec` record: a failed exec is followed by more events).
    pub exec: Option<ExecRecord>,
    pub window_ns: Option<(u64, u64)>,
    /// The window the peak was really taken in: `window_ns` moved to the memory samples
    /// (see [`super::replay::Replay::window_sampled`]); `None` without a window or events.
    pub peak_window_ns: Option<(u64, u64)>,
    /// An aggregate capture's totals are those of its last `Aggregate` record, written at
    /// this time (None: it has none, as a run killed before the first has).
    pub aggregate_ns: Option<u64>,
}

/// How to analyze.
#[derive(Default)]
pub struct AnalyzeOptions<'a> {
    /// Restrict "the peak" to `[from, to)` nanoseconds since the start.
    pub window_ns: Option<(u64, u64)>,
    /// Called now and then with the number of bytes read so far.
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// Reads `path` and aggregates it.
pub fn analyze(path: impl AsRef<Path>, options: &AnalyzeOptions) -> Result<Analysis, CaptureError> {
    let reader = CaptureReader::open(path)?;
    analyze_reader(reader, options)
}

/// Aggregates an open capture. The file is read on a second thread while this one replays
/// it (see `read_ahead`).
pub fn analyze_reader<R: Read + Send>(
    reader: CaptureReader<R>,
    options: &AnalyzeOptions,
) -> Result<Analysis, CaptureError> {
    let path = reader.path().to_string();
    let meta = reader.meta().clone();
    read_ahead::with_batches(reader, |batches| {
        analyze_batches(batches, path, meta, options)
    })
}

/// The replay half of `analyze_reader`.
fn analyze_batches(
    reader: &mut dyn Batches,
    path: String,
    meta: Meta,
    options: &AnalyzeOptions,
) -> Result<Analysis, CaptureError> {
    let mut replay = Replay::new(ReplayOptions {
        window_ns: options.window_ns,
    });
    let mut a = Analysis {
        path,
        meta,
        stack_nodes: vec![(0, 0)],
        window_ns: options.window_ns,
        ..Analysis::default()
    };
    let mut aggregate = None;
    let mut last_progress = 0u64;
    let mut samples_with_heap = Vec::new();
    let mut events = Vec::new();
    while let Some(batch) = reader.next_batch(&mut events)? {
        let item = match batch {
            Batch::Events => {
                replay.events(&events);
                // Events after an exec: it failed and the program went on.
                a.exec = None;
                continue;
            }
            Batch::Item(item) => item,
        };
        match item {
            Item::Event(e) => {
                replay.event(&e);
                a.exec = None;
            }
            Item::Exec(e) => {
                a.duration_ns = a.duration_ns.max(e.time_ns);
                a.exec = Some(e);
            }
            Item::Sample(s) => {
                a.duration_ns = a.duration_ns.max(s.time_ns);
                if a.meta.aggregate {
                    samples_with_heap.push(TimelinePoint {
                        time_ns: s.time_ns,
                        rss: s.rss,
                        heap: s.heap,
                    });
                } else {
                    replay.sample(&s);
                }
                if let Some(p) = options.progress {
                    if reader.offset() - last_progress > 1 << 20 {
                        last_progress = reader.offset();
                        p(last_progress);
                    }
                }
            }
            Item::Stacks { first, nodes } => {
                if first as usize != a.stack_nodes.len() {
                    return Err(CaptureError {
                        path: a.path.clone(),
                        offset: reader.offset(),
                        problem: format!(
                            "stack nodes out of order (got {first}, expected {})",
                            a.stack_nodes.len()
                        ),
                    });
                }
                a.stack_nodes.extend(nodes);
            }
            Item::Modules(m) => {
                for module in m {
                    if !a
                        .modules
                        .iter()
                        .any(|x| x.path == module.path && x.base == module.base)
                    {
                        a.modules.push(module);
                    }
                }
            }
            Item::Threads(t) => a.threads.extend(t),
            Item::Aggregate(agg) => {
                // Written in the tick of the sample before it.
                a.aggregate_ns = Some(a.duration_ns);
                aggregate = Some(agg);
            }
            Item::End(e) => {
                a.duration_ns = a.duration_ns.max(e.time_ns);
                a.end = Some(e);
            }
        }
    }
    a.truncated = reader.truncated();
    replay.finish();
    if let Some(agg) = aggregate {
        a.sites = agg
            .entries
            .iter()
            .map(|e| Site {
                stack: e.stack,
                thread: e.thread,
                cur_bytes: e.end_bytes,
                cur_count: e.end_count,
                peak_bytes: e.peak_bytes,
                peak_count: e.peak_count,
                total_bytes: e.total_bytes,
                total_count: e.total_count,
                ..Site::default()
            })
            .collect();
        a.peak_bytes = agg.peak_bytes;
        a.peak_time_ns = agg.peak_time_ns;
        a.totals = Totals {
            allocs: agg.total_allocs,
            alloc_bytes: agg.total_bytes,
            frees: agg.total_frees,
            size_histogram: vec![(0, 0); 65],
            ..Totals::default()
        };
        a.timeline = samples_with_heap;
    } else {
        a.sites = std::mem::take(&mut replay.sites);
        a.peak_bytes = replay.peak_bytes;
        a.peak_time_ns = replay.peak_time_ns;
        a.peak_window_ns = replay.window_sampled;
        a.totals = std::mem::take(&mut replay.totals);
        a.timeline = std::mem::take(&mut replay.timeline);
    }
    a.leaked_bytes = a
        .sites
        .iter()
        .fold(0u64, |n, s| n.saturating_add(s.cur_bytes));
    a.leaked_count = a
        .sites
        .iter()
        .fold(0u64, |n, s| n.saturating_add(s.cur_count));
    Ok(a)
}

impl Analysis {
    /// The ips of stack `id`, most recent first (bounded, cycle-safe on corrupt input).
    pub fn stack_ips(&self, id: u32) -> Vec<u64> {
        let mut out = Vec::new();
        let mut node = id;
        while node != 0 && out.len() < 4096 {
            let Some(&(ip, parent)) = self.stack_nodes.get(node as usize) else {
                break;
            };
            out.push(ip);
            if parent >= node {
                break;
            }
            node = parent;
        }
        out
    }

    /// The name of thread `index` ("thread N" when unnamed).
    pub fn thread_name(&self, index: u32) -> String {
        match self.threads.iter().find(|t| t.index == index) {
            Some(t) if !t.name.is_empty() => format!("{} (tid {})", t.name, t.os_tid),
            Some(t) => format!("thread {} (tid {})", t.index, t.os_tid),
            None => format!("thread {index}"),
        }
    }

    /// Live bytes and blocks at the peak of `thread` (all threads when `None`).
    pub fn peak_of(&self, thread: Option<u32>) -> (u64, u64) {
        self.sites
            .iter()
            .filter(|s| thread.is_none_or(|t| s.thread == t))
            .fold((0, 0), |(b, c), s| (b + s.peak_bytes, c + s.peak_count))
    }
}
