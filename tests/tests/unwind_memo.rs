//! The preload's DWARF unwind memo (cli/preload/src/dwarf_memo.rs) must give exactly the stacks
//! a full walk gives. `TIDEMARK_PRELOAD_UNWIND_MEMO=check` makes the preload walk every stack
//! both ways and abort on any difference; these tests run programs whose stacks change deep
//! inside between allocations (binary recursion from two call sites, four threads at once)
//! in that mode, then check the capture holds every call path.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use tidemark_tests::{compile_c, preload_library, scratch_dir, Capture};

/// Built as distributions build C: no frame pointers, so every frame is unwound by DWARF.
const NO_FP: [&str; 3] = [
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];

/// Runs `unwind_paths DEPTH ROUNDS` recording to `capture` with the memo in `mode`; returns
/// (allocations at `leaf_alloc`, distinct stacks there).
fn run(exe: &Path, capture: &Path, mode: &str) -> (u64, usize) {
    // One thread runs on a small stack: 32 KiB with the optimized library (it needs 24); an
    // unoptimized one needs several times the stack for the same calls (160 KiB since the
    // learned unwind steps and framehop's allocation-free unwinding keep their scratch on the
    // stack).
    let small_stack_kib = if cfg!(debug_assertions) { "192" } else { "32" };
    let out = Command::new(exe)
        .args(["8", "4", small_stack_kib])
        .env("LD_PRELOAD", preload_library())
        .env("TIDEMARK_PRELOAD_OUTPUT", capture)
        .env("TIDEMARK_PRELOAD_UNWIND_MEMO", mode)
        // The statistics time every capture (and so keep the memo's express lane closed):
        // only in the run without the memo.
        .env(
            "TIDEMARK_PRELOAD_STATS",
            if mode == "0" { "1" } else { "0" },
        )
        .output()
        .expect("program runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "memo {mode}: {:?}\n{stderr}",
        out.status
    );
    // 2^8 leaves, 4 rounds, 4 threads.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "leaves 4096\n");
    let c = Capture::read(capture);
    if mode == "0" {
        let line = format!("tidemark: {} events, ", c.events);
        assert!(
            c.events > 8192 && stderr.contains(&line),
            "{line:?} in {stderr}"
        );
    }
    let mut count = 0;
    let mut paths = HashSet::new();
    for s in &c.sites {
        if s.frames.iter().any(|f| f.starts_with("leaf_alloc:")) {
            count += s.total_count;
            paths.insert(&s.frames);
        }
    }
    (count, paths.len())
}

#[test]
fn memo_stacks_equal_full_walks() {
    let dir = scratch_dir("unwind-memo");
    let exe = compile_c("unwind_paths.c", &dir, &NO_FP);
    let checked = run(&exe, &dir.join("check.tdm"), "check");
    let plain = run(&exe, &dir.join("plain.tdm"), "0");
    let memo = run(&exe, &dir.join("memo.tdm"), "1");
    assert_eq!(checked.0, 4096);
    // Every leaf is its own path of left/right call lines (256), under `main` or a thread
    // start.
    assert_eq!(plain, (4096, 512));
    assert_eq!(memo, plain);
    assert_eq!(checked, plain);
}
