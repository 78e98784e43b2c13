//! The tracer's own work (a snapshot, the symbolizer's line tables, a traceback lookup) is not
//! traced as the program's memory: as with tracemalloc, taking a snapshot changes nothing the
//! next snapshot reports.
//!
//! Other threads of the test harness may allocate while this runs (libtest's main thread
//! prints and waits on a channel): the checks look at what the tracer's own code and this
//! test allocated, by the frames of each trace, not at process-wide totals.

use tidemark_tracer::{Snapshot, SnapshotOptions, Traced};

#[global_allocator]
static GLOBAL: Traced<std::alloc::System> = Traced::new(std::alloc::System);

/// Bytes of the traces with a frame in a file whose path ends with `suffix`.
fn bytes_from(s: &Snapshot, suffix: &str) -> usize {
    s.traces()
        .iter()
        .filter(|t| {
            t.traceback
                .frames()
                .iter()
                .any(|f| f.filename.ends_with(suffix))
        })
        .map(|t| t.size)
        .sum()
}

/// Traces with a frame in the tracer's own source (its `src/` directory) other than the
/// allocation hook, which every trace passes through.
fn tracer_traces(s: &Snapshot) -> Vec<String> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    let own = |f: &tidemark_tracer::Frame| {
        f.filename.starts_with(src) && !f.filename.ends_with("/src/hook.rs")
    };
    s.traces()
        .iter()
        .filter(|t| t.traceback.frames().iter().any(own))
        .map(|t| format!("{} B: {:?}", t.size, t.traceback.frames()))
        .collect()
}

#[test]
fn snapshots_and_the_symbolizer_are_not_traced() {
    tidemark_tracer::start(16).unwrap();
    let every_frame = SnapshotOptions {
        keep_runtime_frames: true,
    };
    let kept = vec![7u8; 1000];
    let first = tidemark_tracer::take_snapshot_with(&every_frame).unwrap();
    let second = tidemark_tracer::take_snapshot_with(&every_frame).unwrap();
    assert!(tidemark_tracer::object_traceback(kept.as_ptr()).is_some());
    let third = tidemark_tracer::take_snapshot_with(&every_frame).unwrap();
    for (name, s) in [("first", &first), ("second", &second), ("third", &third)] {
        // The first snapshot's symbolizer (megabytes of line tables), the second's, and the
        // traceback lookup: none of it is in the next snapshot.
        assert_eq!(tracer_traces(s), Vec::<String>::new(), "{name}");
        assert_eq!(bytes_from(s, "snapshot_untraced.rs"), 1000, "{name}");
    }
    drop((first, second, third, kept));
    tidemark_tracer::stop();
}
