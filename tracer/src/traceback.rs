//! Tracebacks and traces: symbolic, owned, comparable, the shape tracemalloc gives them.

use crate::symbolize::Frame;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A sequence of frames, most recent call first.
///
/// As in tracemalloc, two tracebacks are equal when their frames are (`total_nframe` is not
/// compared), and they order by their frames compared oldest first; so statistics sort exactly
/// as tracemalloc's do. Frames are shared (`Arc`) between the traces of one stack.
#[derive(Clone, Debug)]
pub struct Traceback {
    frames: Arc<[Frame]>,
    /// Frames on the stack before it was truncated to the traceback limit.
    pub total_nframe: usize,
}

impl Traceback {
    /// A traceback of `frames` (most recent first) that was not truncated.
    pub fn new(frames: Vec<Frame>) -> Traceback {
        let total_nframe = frames.len();
        Traceback {
            frames: frames.into(),
            total_nframe,
        }
    }

    /// A traceback of `frames` (most recent first) cut from a stack of `total_nframe` frames.
    pub fn with_total(frames: Vec<Frame>, total_nframe: usize) -> Traceback {
        Traceback {
            frames: frames.into(),
            total_nframe,
        }
    }

    /// Frames, most recent call first.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The most recent frame (`<unknown>:0` for an empty traceback).
    pub fn most_recent(&self) -> Frame {
        self.frames
            .first()
            .cloned()
            .unwrap_or_else(|| Frame::new("<unknown>", 0))
    }

    /// Lines like Python's: `  File "src/main.rs", line 42, in app::main`, then the source
    /// line, indented, when the file can be read. Oldest first unless `most_recent_first`.
    /// `limit`: `Some(n > 0)` keeps the n most recent frames, `Some(n < 0)` drops the |n|
    /// most recent ones and `Some(0)` keeps none (Python's slicing rules), `None` keeps all.
    pub fn format(&self, limit: Option<isize>, most_recent_first: bool) -> Vec<String> {
        let oldest_first: Vec<&Frame> = self.frames.iter().rev().collect();
        let n = oldest_first.len();
        let slice: &[&Frame] = match limit {
            None => &oldest_first,
            Some(l) if l > 0 => &oldest_first[n.saturating_sub(l as usize)..],
            Some(0) => &[],
            Some(l) => &oldest_first[..n.saturating_sub(l.unsigned_abs())],
        };
        let mut ordered: Vec<&Frame> = slice.to_vec();
        if most_recent_first {
            ordered.reverse();
        }
        let mut lines = Vec::new();
        let mut sources = SourceCache::default();
        for f in ordered {
            if f.function.is_empty() {
                lines.push(format!("  File \"{}\", line {}", f.filename, f.lineno));
            } else {
                lines.push(format!(
                    "  File \"{}\", line {}, in {}",
                    f.filename, f.lineno, f.function
                ));
            }
            if let Some(src) = sources.line(&f.filename, f.lineno) {
                lines.push(format!("    {src}"));
            }
        }
        lines
    }

    /// Compares frames oldest first, as tracemalloc does.
    fn cmp_frames(&self, other: &Traceback) -> Ordering {
        self.frames.iter().rev().cmp(other.frames.iter().rev())
    }
}

impl PartialEq for Traceback {
    fn eq(&self, other: &Self) -> bool {
        self.frames == other.frames
    }
}
impl Eq for Traceback {}
impl Hash for Traceback {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.frames.hash(state)
    }
}
impl PartialOrd for Traceback {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Traceback {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_frames(other)
    }
}

impl fmt::Display for Traceback {
    /// The most recent frame. (tracemalloc prints its `traceback[0]`, the oldest frame; here
    /// frames are most recent first and the allocation site is what a reader wants.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.most_recent())
    }
}

/// Reads source lines for `Traceback::format` (the `linecache` of this crate).
#[derive(Default)]
struct SourceCache {
    files: std::collections::HashMap<String, Option<Vec<String>>>,
}

impl SourceCache {
    fn line(&mut self, filename: &str, lineno: u32) -> Option<String> {
        if lineno == 0 {
            return None;
        }
        let lines = self.files.entry(filename.to_string()).or_insert_with(|| {
            std::fs::read_to_string(filename)
                .ok()
                .map(|t| t.lines().map(str::to_string).collect())
        });
        let line = lines.as_ref()?.get(lineno as usize - 1)?.trim();
        (!line.is_empty()).then(|| line.to_string())
    }
}

/// One live block: its domain (0 = the global allocator), size and allocation traceback.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Trace {
    pub domain: u32,
    pub size: usize,
    pub traceback: Traceback,
}

impl Trace {
    pub fn new(domain: u32, size: usize, traceback: Traceback) -> Trace {
        Trace {
            domain,
            size,
            traceback,
        }
    }
}

impl fmt::Display for Trace {
    /// `src/main.rs:42: 66 B`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.traceback,
            crate::statistics::format_size(self.size as f64, false)
        )
    }
}
