//! What tracing costs an allocation-heavy loop: `cargo run --release -p tidemark-tracer
//! --example trace_overhead`.
//!
//! One churn workload (a ring of 4096 slots; each step frees a random slot and allocates 8 to
//! 512 bytes into it, with one in 64 allocations of 513 to 4096 bytes), run at a call depth of
//! about 25 frames, through three paths of the same `Traced<Pymalloc>` global allocator:
//! its inner `Pymalloc` directly (untraced), the wrapper with tracing off, and the wrapper
//! tracing 32 frames. Runs are interleaved; the median of each is reported, with ratios.
//!
//! `trace_overhead one <untraced|off|traced> [steps]` runs a single path once (for
//! `valgrind --tool=callgrind`, whose instruction counts are repeatable where times are not).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;
use tidemark_alloc::Pymalloc;
use tidemark_tracer::Traced;

#[global_allocator]
static GLOBAL: Traced<Pymalloc> = Traced::new(Pymalloc::new());

const STEPS: usize = 1_000_000;
static STEPS_NOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(STEPS);
const SLOTS: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Untraced,
    TracingOff,
    Tracing32,
}

fn churn<A: GlobalAlloc>(a: &A) -> f64 {
    let mut slots: Vec<(*mut u8, Layout)> =
        vec![(std::ptr::null_mut(), Layout::new::<u8>()); SLOTS];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let steps = STEPS_NOW.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % SLOTS;
        let size = if x >> 58 == 0 {
            513 + (x >> 20) as usize % 3584
        } else {
            8 + (x >> 20) as usize % 505
        };
        let (p, l) = slots[i];
        if !p.is_null() {
            // SAFETY: p was allocated by `a` with layout l.
            unsafe { a.dealloc(p, l) };
        }
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: size is non-zero.
        let p = unsafe { a.alloc(l) };
        slots[i] = (black_box(p), l);
    }
    let ns = t.elapsed().as_nanos() as f64 / steps as f64;
    for (p, l) in slots {
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { a.dealloc(p, l) };
        }
    }
    ns
}

#[inline(never)]
fn at_depth(depth: usize, path: Path) -> f64 {
    if depth > 0 {
        return black_box(at_depth(depth - 1, path));
    }
    match path {
        Path::Untraced => churn(GLOBAL.inner()),
        Path::TracingOff => churn(&GLOBAL),
        Path::Tracing32 => {
            tidemark_tracer::start(32).unwrap();
            let ns = churn(&GLOBAL);
            tidemark_tracer::stop();
            ns
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("one") {
        let path = match args.get(1).map(String::as_str) {
            Some("untraced") => Path::Untraced,
            Some("off") => Path::TracingOff,
            Some("traced") => Path::Tracing32,
            _ => {
                eprintln!("usage: trace_overhead one <untraced|off|traced> [steps]");
                std::process::exit(2);
            }
        };
        if let Some(n) = args.get(2).and_then(|s| s.parse().ok()) {
            STEPS_NOW.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        println!("{:.1} ns/step", at_depth(20, path));
        return;
    }
    let paths = [Path::Untraced, Path::TracingOff, Path::Tracing32];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); 3];
    at_depth(20, Path::Tracing32); // warm up the arenas and the stack table
    for _round in 0..9 {
        for (k, &p) in paths.iter().enumerate() {
            results[k].push(at_depth(20, p));
        }
    }
    let m: Vec<f64> = results.into_iter().map(median).collect();
    println!("churn, {STEPS} alloc+free steps, median of 9 interleaved runs");
    println!("  untraced (Pymalloc)        {:6.1} ns/step", m[0]);
    println!(
        "  Traced, tracing off        {:6.1} ns/step  {:.3}x",
        m[1],
        m[1] / m[0]
    );
    println!(
        "  Traced, tracing 32 frames  {:6.1} ns/step  {:.3}x",
        m[2],
        m[2] / m[0]
    );
}
