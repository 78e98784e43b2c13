//! Recording overhead and capture size on churn (the allocator benchmark's workload: a
//! population of 100k live objects; each step frees a random one and allocates a replacement
//! of 8..=512 bytes), through `Traced<Pymalloc>`:
//!
//! ```text
//! cargo run --release -p tidemark-tracer --example record_overhead [steps] [rounds]
//! ```
//!
//! Runs the workload with the hook idle and with a recording on, interleaved, `rounds` times
//! (default 5), and prints the medians, their ratio, the writer thread's CPU time, and the
//! capture's bytes per alloc+free pair (the file minus a recording of the population fill alone,
//! over the steps), beside the fewest bytes any lossless capture of the same events could take.
//! `TIDEMARK_ONLY=record` (or `idle`) runs only that variant once (for callgrind).
//! `TIDEMARK_INTERVAL_MS=N` sets the writer's tick: under callgrind a long one (10000) makes
//! the writer take every event in one tick, so its chunks (and instruction counts) do not
//! depend on how the threads were scheduled. `TIDEMARK_KEEP=path` keeps that capture.

use std::time::Instant;
use tidemark_tracer::capture::{self, RecordOptions};

#[global_allocator]
static GLOBAL: tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
    tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new());

#[path = "shared/churn.rs"]
mod churn_workload;
use churn_workload::{churn, MAX_SIZE, MIN_SIZE};

/// The fewest bytes per alloc+free pair any capture that keeps every pointer and size exactly
/// can average on this workload, whatever its encoding (Shannon's source coding bound): each
/// step frees one of `live` blocks chosen uniformly at random, so naming it takes log2(live)
/// bits, and allocates one of `MAX_SIZE - MIN_SIZE + 1` sizes, also uniform. The allocation's
/// own pointer, the thread, the API and the timestamps are counted as free here (an encoder
/// that predicts the allocator's next address exactly pays nothing for them).
fn information_floor(live: usize) -> f64 {
    ((live as f64).log2() + ((MAX_SIZE - MIN_SIZE + 1) as f64).log2()) / 8.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ops: usize = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let rounds: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(5);
    let live = 100_000.min(ops / 2).max(1);
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "tidemark-record-overhead-{}.tdm",
        std::process::id()
    ));
    if std::env::var("TIDEMARK_ONLY").as_deref() == Ok("idle") {
        println!("{}", std::hint::black_box(churn(live, ops)));
        return;
    }
    if std::env::var("TIDEMARK_ONLY").as_deref() == Ok("record") {
        let options = RecordOptions {
            sample_interval_ms: std::env::var("TIDEMARK_INTERVAL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(RecordOptions::default().sample_interval_ms),
            ..RecordOptions::default()
        };
        let keep = std::env::var_os("TIDEMARK_KEEP");
        let path = keep.clone().map_or(path, std::path::PathBuf::from);
        let guard = capture::record(&path, options).unwrap();
        std::hint::black_box(churn(live, ops));
        let s = guard.stop().unwrap();
        println!(
            "{} events, {} bytes, writer CPU {:.3} s",
            s.events,
            s.bytes_written,
            s.writer_cpu_ns as f64 / 1e9
        );
        if keep.is_none() {
            std::fs::remove_file(&path).ok();
        }
        return;
    }
    // The fill alone, to subtract from the churn capture.
    let base_path = path.with_extension("base.tdm");
    let guard = capture::record(&base_path, RecordOptions::default()).unwrap();
    std::hint::black_box(churn(live, 0));
    guard.stop().unwrap();
    let base = std::fs::metadata(&base_path).unwrap().len();
    std::fs::remove_file(&base_path).ok();

    let (mut idle, mut recorded, mut stopping, mut sizes) = (vec![], vec![], vec![], vec![]);
    let mut writer_cpu = vec![];
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(churn(live, ops));
        idle.push(t.elapsed().as_secs_f64());
        let guard = capture::record(&path, RecordOptions::default()).unwrap();
        let t = Instant::now();
        std::hint::black_box(churn(live, ops));
        recorded.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let summary = guard.stop().unwrap();
        stopping.push(t.elapsed().as_secs_f64());
        assert_eq!(summary.dropped, 0);
        writer_cpu.push(summary.writer_cpu_ns as f64 / 1e9);
        let size = std::fs::metadata(&path).unwrap().len();
        sizes.push(size.saturating_sub(base) as f64 / ops as f64);
    }
    let (i, r, s) = (
        median(&mut idle),
        median(&mut recorded),
        median(&mut stopping),
    );
    println!(
        "churn {ops} steps, {live} live, medians of {rounds}: idle hook {i:.3} s, \
         recording {r:.3} s (+{s:.3} s to stop): {:.2}x; writer CPU {:.3} s; \
         capture {:.2} bytes per alloc+free pair (information floor with exact pointers: \
         {:.2})",
        r / i,
        median(&mut writer_cpu),
        median(&mut sizes),
        information_floor(live)
    );
    std::fs::remove_file(&path).ok();
}
