//! Snapshots: the traces live at one moment, with statistics, diffs, filters and a file form.

use crate::capture::format::MAX_ALLOCATION;
use crate::filter::{self, TraceFilter};
use crate::statistics::{self, KeyType, Statistic, StatisticDiff};
use crate::symbolize::Frame;
use crate::traceback::{Trace, Traceback};
use crate::TraceError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The traces of the memory blocks live when it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    traces: Vec<Trace>,
    traceback_limit: usize,
}

/// Identifies the JSON snapshot format; `load` refuses other formats and newer versions.
pub const SNAPSHOT_FORMAT: &str = "tidemark-snapshot";
pub const SNAPSHOT_VERSION: u32 = 1;

/// The file form: frames and tracebacks are stored once and referred to by index.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: String,
    version: u32,
    traceback_limit: usize,
    /// (function, filename, lineno)
    frames: Vec<(String, String, u32)>,
    /// (frame indices most recent first, total_nframe)
    tracebacks: Vec<(Vec<u32>, usize)>,
    /// (domain, size, traceback index)
    traces: Vec<(u32, usize, u32)>,
}

impl Snapshot {
    /// A snapshot made by hand (tests, tools, converted captures).
    pub fn from_traces(traces: Vec<Trace>, traceback_limit: usize) -> Snapshot {
        Snapshot {
            traces,
            traceback_limit,
        }
    }

    pub fn traces(&self) -> &[Trace] {
        &self.traces
    }

    /// Frames per traceback when the snapshot was taken.
    pub fn traceback_limit(&self) -> usize {
        self.traceback_limit
    }

    /// Statistics grouped by `key`, biggest first. With `cumulative`, every frame of a
    /// traceback counts, not only the most recent; that is an error with `KeyType::Traceback`.
    pub fn statistics(&self, key: KeyType, cumulative: bool) -> Result<Vec<Statistic>, TraceError> {
        statistics::statistics(&self.traces, key, cumulative)
    }

    /// What changed since `old`, grouped by `key`, biggest change first.
    pub fn compare_to(
        &self,
        old: &Snapshot,
        key: KeyType,
        cumulative: bool,
    ) -> Result<Vec<StatisticDiff>, TraceError> {
        statistics::compare(&self.traces, &old.traces, key, cumulative)
    }

    /// A new snapshot with the traces the filters let through; no filters copies all traces.
    pub fn filter_traces(&self, filters: &[TraceFilter]) -> Snapshot {
        let traces = if filters.is_empty() {
            self.traces.clone()
        } else {
            filter::apply(&self.traces, filters)
        };
        Snapshot {
            traces,
            traceback_limit: self.traceback_limit,
        }
    }

    /// Writes the snapshot as JSON (format name and version included).
    pub fn dump(&self, path: impl AsRef<Path>) -> Result<(), TraceError> {
        let path = path.as_ref();
        let file = self.to_file();
        let f = std::fs::File::create(path).map_err(|e| TraceError::io(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut w, &file)
            .map_err(|e| TraceError::format(path, e.to_string()))?;
        std::io::Write::flush(&mut w).map_err(|e| TraceError::io(path, e))
    }

    /// Reads a snapshot written by `dump`.
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot, TraceError> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(|e| TraceError::io(path, e))?;
        Snapshot::load_from(std::io::BufReader::new(f), path)
    }

    /// Reads a snapshot written by `dump` from `src`, already open (a pipe cannot be opened
    /// again to be read from its start); `path` names it in errors.
    pub fn load_from(
        src: impl std::io::Read,
        path: impl AsRef<Path>,
    ) -> Result<Snapshot, TraceError> {
        let path = path.as_ref();
        let file: SnapshotFile = serde_json::from_reader(src)
            .map_err(|e| TraceError::format(path, format!("not a tidemark snapshot: {e}")))?;
        Snapshot::from_file(file).map_err(|msg| TraceError::format(path, msg))
    }

    fn to_file(&self) -> SnapshotFile {
        let mut frame_ids: HashMap<&Frame, u32> = HashMap::new();
        let mut frames = Vec::new();
        let mut tb_ids: HashMap<(*const Frame, usize, usize), u32> = HashMap::new();
        let mut tracebacks = Vec::new();
        let mut traces = Vec::with_capacity(self.traces.len());
        for t in &self.traces {
            let tb = &t.traceback;
            let key = (tb.frames().as_ptr(), tb.len(), tb.total_nframe);
            let id = *tb_ids.entry(key).or_insert_with(|| {
                let idx: Vec<u32> = tb
                    .frames()
                    .iter()
                    .map(|f| {
                        *frame_ids.entry(f).or_insert_with(|| {
                            frames.push((f.function.clone(), f.filename.clone(), f.lineno));
                            (frames.len() - 1) as u32
                        })
                    })
                    .collect();
                tracebacks.push((idx, tb.total_nframe));
                (tracebacks.len() - 1) as u32
            });
            traces.push((t.domain, t.size, id));
        }
        SnapshotFile {
            format: SNAPSHOT_FORMAT.to_string(),
            version: SNAPSHOT_VERSION,
            traceback_limit: self.traceback_limit,
            frames,
            tracebacks,
            traces,
        }
    }

    fn from_file(file: SnapshotFile) -> Result<Snapshot, String> {
        if file.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "format is {:?}, expected {SNAPSHOT_FORMAT:?}",
                file.format
            ));
        }
        if file.version > SNAPSHOT_VERSION {
            return Err(format!(
                "format version {} is newer than this reader's {SNAPSHOT_VERSION}",
                file.version
            ));
        }
        let frames: Vec<Frame> = file
            .frames
            .into_iter()
            .map(|(function, filename, lineno)| Frame {
                function,
                filename,
                lineno,
            })
            .collect();
        let mut tracebacks = Vec::with_capacity(file.tracebacks.len());
        for (idx, total) in file.tracebacks {
            let mut fs = Vec::with_capacity(idx.len());
            for i in idx {
                fs.push(
                    frames
                        .get(i as usize)
                        .cloned()
                        .ok_or_else(|| format!("frame index {i} out of range"))?,
                );
            }
            tracebacks.push(Traceback::with_total(fs, total));
        }
        let mut traces = Vec::with_capacity(file.traces.len());
        for (i, (domain, size, tb)) in file.traces.into_iter().enumerate() {
            // The capture reader's cap: sums of sizes past it wrapped in diffs.
            if size as u64 > MAX_ALLOCATION {
                return Err(format!(
                    "trace {i}: size {size} is more than any allocation (at most {MAX_ALLOCATION} \
                     bytes, 16 TiB)"
                ));
            }
            let traceback = tracebacks
                .get(tb as usize)
                .cloned()
                .ok_or_else(|| format!("traceback index {tb} out of range"))?;
            traces.push(Trace {
                domain,
                size,
                traceback,
            });
        }
        Ok(Snapshot {
            traces,
            traceback_limit: file.traceback_limit,
        })
    }
}
