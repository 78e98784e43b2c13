//! The tracer on a real program: `Traced<Pymalloc>` is this test binary's global allocator.
//! Allocations of known sizes at known lines must appear in `statistics(Lineno)` at exactly
//! those lines with exactly those sizes and counts.
//!
//! Tests in one binary run on parallel threads and share the global tracer, so every test here
//! that starts or stops tracing holds `SERIAL`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use tidemark_alloc::Pymalloc;
use tidemark_tracer::{
    DomainFilter, KeyType, Snapshot, SnapshotOptions, Statistic, TraceError, Traced,
};

#[global_allocator]
static GLOBAL: Traced<Pymalloc> = Traced::new(Pymalloc::new());

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests that use the global tracer, and starts each from "not tracing" even
/// if an earlier one failed half way.
fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tidemark_tracer::stop();
    g
}

/// The Lineno statistic for `line` of this file, if any.
fn stat_at(snapshot: &Snapshot, line: u32) -> Option<Statistic> {
    snapshot
        .statistics(KeyType::Lineno, false)
        .unwrap()
        .into_iter()
        .find(|s| {
            let f = s.traceback.most_recent();
            f.filename.ends_with("tests/accuracy.rs") && f.lineno == line
        })
}

fn size_count(snapshot: &Snapshot, line: u32) -> (usize, usize) {
    stat_at(snapshot, line)
        .map(|s| (s.size, s.count))
        .unwrap_or((0, 0))
}

#[test]
fn known_sizes_at_known_lines() {
    let _g = serial();
    for nframe in [1, 4, 32] {
        tidemark_tracer::start(nframe).unwrap();
        let mut boxes = Vec::with_capacity(10);
        let l_box = line!() + 2;
        for _ in 0..10 {
            boxes.push(Box::new([7u8; 24]));
        }
        let l_cap = line!() + 1;
        let with_cap: Vec<u64> = Vec::with_capacity(100);
        let l_vec = line!() + 1;
        let v = vec![0u8; 100];
        let l_collect = line!() + 1;
        let collected: Vec<u32> = (0..50u32).collect();
        let l_big = line!() + 1;
        let big = vec![1u16; 100_000];
        let l_string = line!() + 1;
        let s = String::from("a string of exactly 33 bytes long");
        let snapshot = tidemark_tracer::take_snapshot().unwrap();
        let ctx = format!("nframe={nframe}");
        assert_eq!(size_count(&snapshot, l_box), (240, 10), "{ctx}");
        assert_eq!(size_count(&snapshot, l_cap), (800, 1), "{ctx}");
        assert_eq!(size_count(&snapshot, l_vec), (100, 1), "{ctx}");
        assert_eq!(size_count(&snapshot, l_collect), (200, 1), "{ctx}");
        assert_eq!(size_count(&snapshot, l_big), (200_000, 1), "{ctx}");
        assert_eq!(size_count(&snapshot, l_string), (33, 1), "{ctx}");
        for t in snapshot.traces() {
            assert!(t.traceback.len() <= nframe, "{ctx}: {:?}", t.traceback);
        }
        let shown = stat_at(&snapshot, l_vec).unwrap().to_string();
        assert!(
            shown.ends_with(&format!(
                "tests/accuracy.rs:{l_vec}: size=100 B, count=1, average=100 B"
            )),
            "{shown}"
        );
        drop((boxes, with_cap, v, collected, big, s));
        // Freed blocks are gone from the next snapshot.
        let after = tidemark_tracer::take_snapshot().unwrap();
        assert_eq!(size_count(&after, l_box), (0, 0));
        assert_eq!(size_count(&after, l_big), (0, 0));
        tidemark_tracer::stop();
    }
}

#[test]
fn format_hashmap_and_spawn_group_under_their_lines() {
    let _g = serial();
    tidemark_tracer::start(2).unwrap();
    let n = std::hint::black_box(12345);
    let l_format = line!() + 1;
    let s = format!("{n}-{n}-{n}");
    let mut map = std::collections::HashMap::new();
    let l_insert = line!() + 1;
    map.insert(1u64, 2u64);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let l_spawn = line!() + 1;
    let handle = std::thread::spawn(move || rx.recv().ok());
    let snapshot = tidemark_tracer::take_snapshot().unwrap();
    assert_eq!(size_count(&snapshot, l_format), (s.capacity(), 1));
    assert_eq!(size_count(&snapshot, l_insert).1, 1);
    assert!(size_count(&snapshot, l_spawn).1 >= 1);
    tx.send(()).unwrap();
    handle.join().unwrap();
    drop((s, map));
    tidemark_tracer::stop();
}

#[inline(never)]
fn grow_by_pushing(n: usize) -> Vec<u64> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(i as u64); // realloc moves the trace to this line
    }
    v
}

#[test]
fn realloc_moves_the_trace_and_deeper_frames_are_kept() {
    let _g = serial();
    tidemark_tracer::start(3).unwrap();
    let l_call = line!() + 1;
    let v = grow_by_pushing(1000);
    let snapshot = tidemark_tracer::take_snapshot().unwrap();
    let push_line = {
        let stats = snapshot.statistics(KeyType::Traceback, false).unwrap();
        let s = stats
            .iter()
            .find(|s| {
                s.size == v.capacity() * 8
                    && s.traceback.frames()[0].filename.ends_with("accuracy.rs")
            })
            .expect("the vector's trace");
        assert_eq!(s.count, 1);
        let frames = s.traceback.frames();
        assert!(
            frames[0].function.ends_with("grow_by_pushing"),
            "{frames:?}"
        );
        assert_eq!(frames[1].lineno, l_call, "{frames:?}");
        assert!(
            s.traceback.total_nframe >= 3,
            "{}",
            s.traceback.total_nframe
        );
        frames[0].lineno
    };
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/accuracy.rs")).unwrap();
    assert!(src
        .lines()
        .nth(push_line as usize - 1)
        .unwrap()
        .contains("v.push(i as u64)"));
    // Cumulative statistics count the caller's line too.
    let cumulative = snapshot.statistics(KeyType::Lineno, true).unwrap();
    assert!(cumulative
        .iter()
        .any(|s| s.traceback.most_recent().lineno == l_call && s.size >= v.capacity() * 8));
    drop(v);
    tidemark_tracer::stop();
}

#[test]
fn eight_threads_lose_nothing() {
    let _g = serial();
    tidemark_tracer::start(4).unwrap();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 2000;
    static LINES: AtomicUsize = AtomicUsize::new(0);
    let expected_bytes = AtomicUsize::new(0);
    let expected_count = AtomicUsize::new(0);
    let start = Barrier::new(THREADS + 1);
    let done = Barrier::new(THREADS + 1);
    let release = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (expected_bytes, expected_count) = (&expected_bytes, &expected_count);
            let (start, done, release) = (&start, &done, &release);
            s.spawn(move || {
                start.wait();
                let mut kept: Vec<Vec<u8>> = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let size = 8 + (t * 131 + i * 17) % 2000;
                    const CHURN_LINE: u32 = line!() + 1;
                    let churn = vec![0u8; size / 2 + 1]; // freed at once: must leave no trace
                    drop(churn);
                    const KEEP_LINE: u32 = line!() + 1;
                    kept.push(Vec::with_capacity(size));
                    LINES.store(
                        ((CHURN_LINE as usize) << 32) | KEEP_LINE as usize,
                        Ordering::Relaxed,
                    );
                    expected_bytes.fetch_add(size, Ordering::Relaxed);
                    expected_count.fetch_add(1, Ordering::Relaxed);
                }
                done.wait();
                release.wait();
                drop(kept);
            });
        }
        start.wait();
        done.wait();
        let snapshot = tidemark_tracer::take_snapshot().unwrap();
        release.wait();
        let lines = LINES.load(Ordering::Relaxed);
        let (l_churn, l_keep) = ((lines >> 32) as u32, lines as u32);
        assert_eq!(
            size_count(&snapshot, l_keep),
            (
                expected_bytes.load(Ordering::Relaxed),
                expected_count.load(Ordering::Relaxed)
            )
        );
        assert_eq!(expected_count.load(Ordering::Relaxed), THREADS * PER_THREAD);
        assert_eq!(size_count(&snapshot, l_churn), (0, 0), "churn left traces");
    });
    assert_eq!(tidemark_tracer::lost_traces(), 0);
    tidemark_tracer::stop();
}

#[test]
fn start_limits_and_errors() {
    let _g = serial();
    assert!(matches!(
        tidemark_tracer::start(0),
        Err(TraceError::InvalidFrameCount(0))
    ));
    assert!(matches!(
        tidemark_tracer::start(1025),
        Err(TraceError::InvalidFrameCount(1025))
    ));
    assert!(!tidemark_tracer::is_tracing());
    assert!(matches!(
        tidemark_tracer::take_snapshot(),
        Err(TraceError::NotTracing)
    ));
    assert_eq!(tidemark_tracer::traced_memory(), (0, 0));
    tidemark_tracer::start(10).unwrap();
    assert!(tidemark_tracer::is_tracing());
    assert_eq!(tidemark_tracer::traceback_limit(), 10);
    tidemark_tracer::start(3).unwrap();
    assert_eq!(
        tidemark_tracer::traceback_limit(),
        10,
        "starting while tracing keeps the limit"
    );
    tidemark_tracer::stop();
    assert!(!tidemark_tracer::is_tracing());
    tidemark_tracer::start(1024).unwrap();
    assert_eq!(tidemark_tracer::traceback_limit(), 1024);
    let v = Box::new([1u8; 10]);
    let tb = tidemark_tracer::object_traceback(v.as_ptr()).unwrap();
    assert!(tb.len() > 3 && tb.len() <= 1024);
    assert!(tb.total_nframe >= tb.len());
    tidemark_tracer::stop();
}

#[test]
fn traced_memory_clear_and_reset_peak() {
    let _g = serial();
    // Other test threads may allocate a little meanwhile, as Python does internally.
    let max_error = 64 * 1024;
    tidemark_tracer::start(1).unwrap();
    tidemark_tracer::clear_traces();
    let obj_size = 1024 * 1024;
    let obj = vec![0u8; obj_size];
    let (size, peak) = tidemark_tracer::traced_memory();
    assert!(size >= obj_size);
    assert!(peak >= size);
    assert!(size - obj_size <= max_error);
    drop(obj);
    let (size2, peak2) = tidemark_tracer::traced_memory();
    assert!(size2 < size);
    assert!(size - size2 >= obj_size - max_error);
    assert!(peak2 >= peak);

    // clear_traces() resets the counters
    tidemark_tracer::clear_traces();
    let (c, p) = tidemark_tracer::traced_memory();
    assert!(c <= max_error && p <= max_error, "{c} {p}");

    // reset_peak(): after a large temporary, the peak falls back to the current size
    let large: u64 = (0..100_000u64).collect::<Vec<_>>().iter().sum();
    assert!(large > 0);
    let (_, peak1) = tidemark_tracer::traced_memory();
    assert!(peak1 >= 800_000);
    tidemark_tracer::reset_peak();
    let (size2, peak2) = tidemark_tracer::traced_memory();
    assert!(peak2 >= size2);
    assert!(peak2 < peak1);
    let obj = vec![0u8; obj_size];
    let (size3, peak3) = tidemark_tracer::traced_memory();
    assert!(peak3 >= size3);
    assert!(peak3 - peak2 >= obj_size);
    drop(obj);

    // stop() also resets them
    tidemark_tracer::stop();
    assert_eq!(tidemark_tracer::traced_memory(), (0, 0));
}

#[test]
fn object_traceback_and_clear_traces() {
    let _g = serial();
    tidemark_tracer::start(5).unwrap();
    let line = line!() + 1;
    let obj = Box::new([0u64; 12]);
    let tb = tidemark_tracer::object_traceback(obj.as_ptr() as *const u8).expect("traced");
    let top = tb.most_recent();
    assert!(top.filename.ends_with("tests/accuracy.rs"), "{tb:?}");
    assert_eq!(top.lineno, line);
    assert!(
        top.function.ends_with("object_traceback_and_clear_traces"),
        "{top:?}"
    );
    let formatted = tb.format(Some(1), false);
    assert_eq!(formatted[1], "    let obj = Box::new([0u64; 12]);");

    let mem = tidemark_tracer::tracer_memory();
    assert!(mem > 0);
    tidemark_tracer::clear_traces();
    assert!(tidemark_tracer::object_traceback(obj.as_ptr() as *const u8).is_none());
    assert!(tidemark_tracer::tracer_memory() <= mem);
    tidemark_tracer::stop();
    assert!(tidemark_tracer::object_traceback(obj.as_ptr() as *const u8).is_none());
}

#[test]
fn runtime_frames_are_trimmed_unless_asked() {
    let _g = serial();
    tidemark_tracer::start(40).unwrap();
    let line = line!() + 1;
    let v: Vec<u32> = (0..10u32).map(|i| i * 3).collect();
    let trimmed = tidemark_tracer::take_snapshot().unwrap();
    let kept = tidemark_tracer::take_snapshot_with(&SnapshotOptions {
        keep_runtime_frames: true,
    })
    .unwrap();
    assert_eq!(size_count(&trimmed, line), (40, 1));
    let raw = kept
        .traces()
        .iter()
        .find(|t| {
            t.size == 40
                && t.traceback
                    .frames()
                    .iter()
                    .any(|f| f.lineno == line && f.filename.ends_with("accuracy.rs"))
        })
        .expect("the collect trace with runtime frames");
    let top = raw.traceback.most_recent();
    assert!(
        tidemark_tracer::symbolize::is_runtime_frame(&top),
        "{top:?}"
    );
    drop(v);
    tidemark_tracer::stop();
}

#[test]
fn track_and_untrack_custom_domains() {
    let _g = serial();
    let domain = 5;
    let ptr = 0x1234_5670usize;
    assert!(matches!(
        tidemark_tracer::track(domain, ptr, 123),
        Err(TraceError::NotTracing)
    ));
    tidemark_tracer::start(5).unwrap();
    let domain_bytes = || {
        let s = tidemark_tracer::take_snapshot().unwrap();
        let s = s.filter_traces(&[DomainFilter::new(true, domain).into()]);
        s.traces().iter().map(|t| t.size).sum::<usize>()
    };
    let line = line!() + 1;
    tidemark_tracer::track(domain, ptr, 123).unwrap();
    assert_eq!(domain_bytes(), 123);
    let tb = tidemark_tracer::traceback_of(domain, ptr, &SnapshotOptions::default()).unwrap();
    assert_eq!(tb.most_recent().lineno, line, "{tb:?}");
    // tracking again replaces the trace
    tidemark_tracer::track(domain, ptr, 50).unwrap();
    assert_eq!(domain_bytes(), 50);
    // the same address in domain 0 is a different block
    assert!(tidemark_tracer::object_traceback(ptr as *const u8).is_none());
    tidemark_tracer::untrack(domain, ptr).unwrap();
    assert_eq!(domain_bytes(), 0);
    assert!(tidemark_tracer::traceback_of(domain, ptr, &SnapshotOptions::default()).is_none());
    tidemark_tracer::untrack(domain, ptr).unwrap();
    tidemark_tracer::untrack(domain, ptr).unwrap();
    tidemark_tracer::stop();
    assert!(matches!(
        tidemark_tracer::untrack(domain, ptr),
        Err(TraceError::NotTracing)
    ));
}

#[test]
fn real_snapshot_round_trips_and_compares() {
    let _g = serial();
    tidemark_tracer::start(8).unwrap();
    let before = tidemark_tracer::take_snapshot().unwrap();
    let line = line!() + 1;
    let grown: Vec<Box<u64>> = (0..64).map(Box::new).collect();
    let after = tidemark_tracer::take_snapshot().unwrap();
    let diffs = after.compare_to(&before, KeyType::Lineno, false).unwrap();
    let d = diffs
        .iter()
        .find(|d| d.traceback.most_recent().lineno == line)
        .expect("the boxes' line grew");
    // 64 boxes of 8 bytes, and the vector of 64 pointers that holds them.
    assert_eq!((d.size_diff, d.count_diff), (2 * 64 * 8, 65));
    let path = std::env::temp_dir().join(format!("tidemark-accuracy-{}.json", std::process::id()));
    after.dump(&path).unwrap();
    let back = Snapshot::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, after);
    assert_eq!(back.traceback_limit(), 8);
    for (a, b) in back.traces().iter().zip(after.traces()) {
        assert_eq!(a.traceback.total_nframe, b.traceback.total_nframe);
    }
    drop(grown);
    tidemark_tracer::stop();
}

#[test]
fn measure_counts_while_tracing() {
    let _g = serial();
    tidemark_tracer::start(2).unwrap();
    let (v, stats) = tidemark_tracer::measure(|| vec![0u8; 300]);
    assert_eq!(
        (stats.total_blocks, stats.total_bytes, stats.curr_bytes),
        (1, 300, 300)
    );
    drop(v);
    tidemark_tracer::stop();
}
