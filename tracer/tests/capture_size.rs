//! Capture size on the churn workload (the allocator benchmark's: a population of live
//! objects, each step frees a random one and allocates a replacement of 8..=512 bytes),
//! recorded for real through `Traced<Pymalloc>`.
//!
//! `TIDEMARK_CHURN_OPS=N` sets the number of steps (default 200,000) and
//! `TIDEMARK_CHURN_KEEP=path` keeps the capture (the benchmark uses this for the 5M-allocation
//! render figures). The figure printed is compressed bytes per alloc+free pair.

use tidemark_tracer::capture::{self, RecordOptions};
use tidemark_tracer::report::{self, AnalyzeOptions};

#[global_allocator]
static GLOBAL: tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
    tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new());

#[path = "../examples/shared/churn.rs"]
mod churn_workload;
use churn_workload::churn;

#[test]
fn churn_capture_is_compact_and_exact() {
    let ops: usize = std::env::var("TIDEMARK_CHURN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let live = 100_000.min(ops / 2).max(1);
    let keep = std::env::var("TIDEMARK_CHURN_KEEP").ok();
    let path = keep
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("tidemark-churn-{}.tdm", std::process::id()))
        });
    // Baseline: the same population without churn, to subtract the fill and fixed overhead.
    let base_path = path.with_extension("base.tdm");
    // Chunks are cut at the writer's ticks, and smaller chunks compress worse: with ticks
    // far apart, chunks are cut by how much the threads wrote (the same in every build and
    // on every machine), not by how fast they wrote it.
    let steady = RecordOptions {
        sample_interval_ms: 60_000,
        ..RecordOptions::default()
    };
    let guard = capture::record(&base_path, steady.clone()).unwrap();
    std::hint::black_box(churn(live, 0));
    guard.stop().unwrap();
    let level = std::env::var("TIDEMARK_CHURN_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok());
    let options = RecordOptions {
        compression_level: level.unwrap_or(RecordOptions::default().compression_level),
        ..steady
    };
    let guard = capture::record(&path, options).unwrap();
    std::hint::black_box(churn(live, ops));
    let summary = guard.stop().unwrap();
    assert_eq!(summary.dropped, 0);
    let size = std::fs::metadata(&path).unwrap().len();
    let base = std::fs::metadata(&base_path).unwrap().len();
    let per_pair = (size.saturating_sub(base)) as f64 / ops as f64;
    println!(
        "churn: {ops} steps, {} events, capture {size} bytes (baseline {base}): {per_pair:.2} bytes per alloc+free pair",
        summary.events
    );
    let a = report::analyze(&path, &AnalyzeOptions::default()).unwrap();
    // Every step is one object allocation and one free, plus the population fill and the
    // slots vector; the allocations of the churn loop are all seen.
    assert!(
        a.totals.allocs >= (live + ops) as u64,
        "{} allocations",
        a.totals.allocs
    );
    assert!(a.totals.frees >= ops as u64);
    // A regression guard, not the goal: random frees among 100k live blocks carry ~17 bits
    // each and random sizes ~9, 3.2 bytes a pair at best. Format 3 writes 4.33 at this
    // length, format 2 wrote over 5.
    assert!(per_pair < 4.5, "{per_pair:.2} bytes per pair");
    std::fs::remove_file(&base_path).ok();
    if keep.is_none() {
        std::fs::remove_file(&path).ok();
    }
}

/// Recording overhead on churn: the same run with the hook idle and with a recording on,
/// interleaved, medians of 5. A measurement, not a check: run it explicitly with
/// `cargo test --release --test capture_size -- --ignored --nocapture`.
#[test]
#[ignore]
fn churn_recording_overhead() {
    let ops: usize = std::env::var("TIDEMARK_CHURN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let path = std::env::temp_dir().join(format!("tidemark-overhead-{}.tdm", std::process::id()));
    let (mut idle, mut recorded, mut stopping) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = std::time::Instant::now();
        std::hint::black_box(churn(100_000, ops));
        idle.push(t.elapsed().as_secs_f64());
        let guard = capture::record(&path, RecordOptions::default()).unwrap();
        let t = std::time::Instant::now();
        std::hint::black_box(churn(100_000, ops));
        recorded.push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let summary = guard.stop().unwrap();
        stopping.push(t.elapsed().as_secs_f64());
        assert_eq!(summary.dropped, 0);
    }
    idle.sort_by(f64::total_cmp);
    recorded.sort_by(f64::total_cmp);
    stopping.sort_by(f64::total_cmp);
    println!(
        "churn {ops} steps: idle hook {:.3} s, recording {:.3} s, then {:.3} s to stop \
         (medians of 5): {:.2}x",
        idle[2],
        recorded[2],
        stopping[2],
        recorded[2] / idle[2]
    );
    std::fs::remove_file(&path).ok();
}
