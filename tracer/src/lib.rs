//! tidemark-tracer: which code holds how much memory, asked in process (tracemalloc-style
//! snapshots) or recorded to a file (capture + reports).
//!
//! ```text
//!   user code: Box::new / Vec::push / collect / format!
//!        |
//!   Traced<A>            hook.rs      one relaxed load when off; slow paths are #[cold]
//!        |  capture      unwind.rs    frame-pointer walk, bounded by the thread's stack
//!        |               memo.rs      per thread: re-read only the frames that changed
//!        |  intern       stack.rs     trie of (ip, parent) nodes; a stack is one u32 id
//!        |---> TraceTable table.rs    (domain, ptr) → (size, stack id): pool blocks in the
//!        |                            allocator's per-block words, others in 64 locked shards
//!        |               counters.rs  traced bytes now / at the peak, counted per thread
//!        |---> capture   capture/     the capture writer's stream (issue 5)
//!        |---> measure   measure.rs   per-thread counters for `measure(|| ..)`
//!        v
//!   A (Pymalloc, Debug<Pymalloc>, System)
//!
//!   take_snapshot()  tracer.rs    copy the table, then symbolize each distinct stack once
//!   Snapshot         snapshot.rs  statistics / compare_to / filter_traces / dump / load
//!   symbolize.rs     dl_iterate_phdr modules + addr2line + demangling; trims runtime frames
//!     elf_symbols.rs names code without DWARF by the symbol whose size covers it
//!   fork.rs          pthread_atfork: the interner and table locks are free in a child
//! ```
//!
//! Nothing on the allocation path allocates through the global allocator, panics, or waits on a
//! lock that an allocation may hold: the tables live in mmap'd memory, a thread-local flag
//! stops re-entry, and symbolization happens only when a snapshot or report asks.
//!
//! # Example
//!
//! ```
//! use tidemark_tracer::{KeyType, Traced};
//! #[global_allocator]
//! static GLOBAL: Traced<std::alloc::System> = Traced::new(std::alloc::System);
//!
//! tidemark_tracer::start(16).unwrap();
//! let before = tidemark_tracer::take_snapshot().unwrap();
//! let kept: Vec<String> = (0..100).map(|i| i.to_string()).collect();
//! let after = tidemark_tracer::take_snapshot().unwrap();
//! for stat in after.compare_to(&before, KeyType::Lineno, false).unwrap().iter().take(3) {
//!     println!("{stat}");
//! }
//! tidemark_tracer::stop();
//! # drop(kept);
//! ```
//!
//! `TIDEMARK_TRACE=N` in the environment starts tracing with N frames at the first allocation.
//! `measure(|| work())` counts one thread's allocations in a closure, tracing or not.

pub mod capture;
mod counters;
mod filter;
mod fork;
pub mod hook;
mod measure;
mod memo;
pub mod report;
mod snapshot;
pub mod stack;
mod statistics;
pub mod symbolize;
mod sysmem;
mod table;
mod traceback;
mod tracer;
mod unwind;

pub use capture::{record, RecordOptions, RecordingGuard};
pub use filter::{fnmatch, DomainFilter, Filter, TraceFilter};
pub use hook::{with_reentrancy_guard, Traced};
pub use measure::{measure, HeapStats};
pub use snapshot::{Snapshot, SNAPSHOT_FORMAT, SNAPSHOT_VERSION};
pub use stack::StackId;
pub use statistics::{format_size, KeyType, Statistic, StatisticDiff};
pub use symbolize::Frame;
pub use traceback::{Trace, Traceback};
pub use tracer::{
    clear_traces, ignore_environment, is_tracing, lost_traces, object_traceback, reset_peak, start,
    stop, take_snapshot, take_snapshot_with, traceback_limit, traceback_of, traced_memory,
    tracer_memory, track, untrack, SnapshotOptions,
};
pub use unwind::{capture_stack, stack_bounds as thread_stack_bounds};

use std::fmt;
use std::path::{Path, PathBuf};

/// What can go wrong in the tracer API.
#[derive(Debug)]
pub enum TraceError {
    /// `start(n)` with n outside 1..=1024.
    InvalidFrameCount(usize),
    /// The call needs tracing to be on.
    NotTracing,
    /// Cumulative statistics need a per-frame key, not `KeyType::Traceback`.
    CumulativeTraceback,
    /// Reading or writing a snapshot file failed.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A snapshot file is not in the expected format.
    Format { path: PathBuf, message: String },
}

impl TraceError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        TraceError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    fn format(path: &Path, message: String) -> Self {
        TraceError::Format {
            path: path.to_path_buf(),
            message,
        }
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::InvalidFrameCount(n) => {
                write!(
                    f,
                    "the number of frames must be in range [1; 1024], not {n}"
                )
            }
            TraceError::NotTracing => {
                write!(
                    f,
                    "the tracer must be tracing memory allocations (call tidemark_tracer::start)"
                )
            }
            TraceError::CumulativeTraceback => {
                write!(f, "cumulative mode cannot be used with key type Traceback")
            }
            TraceError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            TraceError::Format { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraceError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}
