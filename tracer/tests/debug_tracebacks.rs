//! The tracer's traceback hooks in the debug layer's corruption reports: a double free found
//! by `Debug<Pymalloc>` under `Traced<..>` prints where the block was allocated and where
//! the bad free was called.
//! The defect is committed in a child process (this test binary, re-run on one test).

use std::alloc::{alloc, dealloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use tidemark_alloc::debug::Debug;
use tidemark_alloc::Pymalloc;
use tidemark_tracer::Traced;

#[global_allocator]
static GLOBAL: Traced<Debug<Pymalloc>> = Traced::new(Debug::new(Pymalloc::new()));

const CHILD: &str = "TIDEMARK_TRACEBACK_CHILD";

#[test]
fn double_free_report_shows_allocation_and_free_sites() {
    if std::env::var_os(CHILD).is_some() {
        tidemark_tracer::start(16).unwrap();
        let layout = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: non-zero size. The second dealloc is the defect under test: the debug layer
        // keeps freed blocks in quarantine, finds it, reports and aborts.
        unsafe {
            // black_box: in release builds LLVM may otherwise remove the alloc/dealloc pair.
            let alloc_line = line!() + 1;
            let p = std::hint::black_box(alloc(layout));
            dealloc(p, layout);
            let again_line = line!() + 2;
            println!("LINES {alloc_line} {again_line}");
            dealloc(p, layout);
        }
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "double_free_report_shows_allocation_and_free_sites",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .find_map(|l| l.find("LINES ").map(|i| &l[i + 6..]))
        .unwrap();
    let (alloc_line, again_line) = lines.split_once(' ').unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The allocation site, and the site of the second dealloc ("dealloc called at"). The
    // "freed at" section is not checked here: the debug layer reads the block's free stack
    // after symbolizing the allocation stack, which may have reused the quarantined block.
    for line in [alloc_line, again_line] {
        let site = format!("debug_tracebacks.rs\", line {line}, in ");
        assert!(stderr.contains(&site), "{site} not in:\n{stderr}");
    }
    assert!(stderr.contains("double free"), "{stderr}");
}

/// A report's symbolizing allocates (megabytes of debug information), which pushes older
/// blocks out of the quarantine and verifies them: one written after its free must not cut the
/// report under way short ("heap corruption found while reporting one" and nothing else).
#[test]
fn a_second_defect_found_while_reporting_does_not_cut_the_report() {
    if std::env::var_os(CHILD).is_some() {
        tidemark_tracer::start(16).unwrap();
        let layout = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: non-zero size; the write after the free and the overflow are the defects.
        unsafe {
            let p = std::hint::black_box(alloc(layout));
            dealloc(p, layout);
            *p.add(5) = 0x57; // written after its free: found when it leaves the quarantine
            let q = std::hint::black_box(alloc(layout));
            *q.add(40) = 1; // one byte past the end: found at the dealloc, and reported
            dealloc(q, layout);
        }
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_defect_found_while_reporting_does_not_cut_the_report",
            "--nocapture",
        ])
        .env(CHILD, "1")
        // A quarantine the symbolizer's allocations overflow at once.
        .env("TIDEMARK_QUARANTINE", "4K")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("while reporting one"), "{stderr}");
    assert!(
        stderr.contains("Fatal error: tidemark debug dealloc: bad trailing pad byte"),
        "{stderr}"
    );
    assert!(stderr.contains("debug_tracebacks.rs\", line "), "{stderr}");
}
