//! Stack capture cost at depths 10, 30 and 60: `cargo run --release -p tidemark-tracer
//! --example capture_bench`.
//!
//! A recursion builds the depth, then the bottom frame captures its stack many times. Each
//! figure is the median over many runs of the time per capture, divided by the frames the
//! capture walked (the recursion plus the few frames of `main` and the runtime below it). The
//! marginal cost per frame, (t60 - t10) / 50, is printed too, and so is the cost of interning
//! the captured stack (what the allocation hook does after capturing) and, for reference, the
//! DWARF unwinder of the `backtrace` crate on the same stacks.

use std::hint::black_box;
use std::time::Instant;

const RUNS: usize = 201;
const CAPTURES_PER_RUN: usize = 2_000;

#[derive(Clone, Copy)]
enum Work {
    FramePointers,
    FramePointersAndIntern,
    Dwarf,
}

/// Median nanoseconds per capture, and the frames one capture returns.
fn at_depth(depth: usize, work: Work) -> (f64, usize) {
    #[inline(never)]
    fn recurse(depth: usize, work: Work) -> (f64, usize) {
        if depth > 1 {
            let r = recurse(depth - 1, work);
            return black_box(r);
        }
        let mut buf = [0u64; 256];
        let mut samples = Vec::with_capacity(RUNS);
        let mut frames = 0;
        let runs = match work {
            Work::Dwarf => RUNS / 10,
            _ => RUNS,
        };
        for _ in 0..runs {
            let t = Instant::now();
            for _ in 0..CAPTURES_PER_RUN {
                match work {
                    Work::FramePointers => {
                        frames = tidemark_tracer::capture_stack(0, black_box(&mut buf))
                    }
                    Work::FramePointersAndIntern => {
                        frames = tidemark_tracer::capture_stack(0, black_box(&mut buf));
                        black_box(tidemark_tracer::stack::intern(&buf[..frames]));
                    }
                    Work::Dwarf => {
                        let mut n = 0;
                        // SAFETY: nothing else unwinds this thread meanwhile.
                        unsafe {
                            backtrace::trace_unsynchronized(|f| {
                                buf[n] = f.ip() as u64;
                                n += 1;
                                n < buf.len()
                            })
                        };
                        frames = black_box(n);
                    }
                }
            }
            samples.push(t.elapsed().as_nanos() as f64 / CAPTURES_PER_RUN as f64);
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (samples[samples.len() / 2], frames)
    }
    recurse(depth, work)
}

fn main() {
    // Warm up caches, the stack-bounds lookup and the intern table.
    for d in [10, 30, 60] {
        at_depth(d, Work::FramePointersAndIntern);
    }
    println!("stack capture, median of {RUNS} runs x {CAPTURES_PER_RUN} captures");
    println!(
        "{:>6} {:>7} {:>12} {:>10} {:>16} {:>12}",
        "depth", "frames", "ns/capture", "ns/frame", "+intern ns/frame", "dwarf ns/frame"
    );
    let mut per_capture = Vec::new();
    for depth in [10, 30, 60] {
        // Interleave the kinds so drift on a shared machine hits all of them alike.
        let (fp, frames) = at_depth(depth, Work::FramePointers);
        let (fpi, _) = at_depth(depth, Work::FramePointersAndIntern);
        let (dw, dframes) = at_depth(depth, Work::Dwarf);
        per_capture.push((depth, fp, frames));
        println!(
            "{depth:>6} {frames:>7} {fp:>12.1} {:>10.2} {:>16.2} {:>12.1}",
            fp / frames as f64,
            fpi / frames as f64,
            dw / dframes as f64
        );
    }
    let (d0, t0, _) = per_capture[0];
    let (d2, t2, _) = per_capture[2];
    println!(
        "marginal cost per frame (depth {d0} -> {d2}): {:.2} ns",
        (t2 - t0) / (d2 - d0) as f64
    );
}
