//! `tidemark run` as a user runs it: exit codes passed through (128 + N for signal N), the
//! summary and next command after a recording, and one clear error line with status 2 for a
//! missing program, a static binary and a capture path that cannot be written.
//!
//! The binary is `target/<profile>/tidemark` (built on first use, beside the preload library,
//! so `tidemark run` finds the library without any path set), or `TIDEMARK_TEST_CLI` when set.

use std::process::Command;
use tidemark_tests::{compile_c, scratch_dir, text, tidemark_cli as tidemark, tidemark_run};

#[test]
fn records_and_says_what_next() {
    let dir = scratch_dir("cli-record");
    let exe = compile_c("run_sites.c", &dir, &["-fomit-frame-pointer"]);
    let out = tidemark_run(&dir, &["--", exe.to_str().unwrap(), "50", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "sum 1225\n",
        "the program's stdout is untouched"
    );
    let err = text(&out.stderr);
    assert!(err.contains("tidemark: recorded "), "{err}");
    let next = err
        .lines()
        .find_map(|l| l.strip_prefix("tidemark: next: tidemark flamegraph "))
        .unwrap_or_else(|| panic!("no next command in {err}"));
    let capture = dir.join(next);
    assert!(capture.is_file(), "{}", capture.display());
    let name = capture.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("tidemark-run_sites-") && name.ends_with(".tdm"),
        "{name}"
    );

    let out = tidemark_run(
        &dir,
        &[
            "-o",
            "named.tdm",
            "--aggregate",
            "--",
            exe.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("named.tdm").is_file());
    // An aggregate capture keeps no maxima or times: DHAT's format would show zeros.
    let out = Command::new(tidemark())
        .args(["export", "--format", "dhat"])
        .arg(dir.join("named.tdm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "tidemark: error: export --format dhat: {} is an aggregate capture (run --aggregate)",
            dir.join("named.tdm").display()
        )),
        "{}",
        text(&out.stderr)
    );

    // Into /dev/null (timing a run): the program runs as usual, and there is nothing to read.
    let out = tidemark_run(
        &dir,
        &["-o", "/dev/null", "--", exe.to_str().unwrap(), "5", "4"],
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "sum 10\n");
    assert_eq!(
        text(&out.stderr),
        "tidemark: recorded into /dev/null (not a regular file: no summary)\n"
    );
}

#[test]
fn an_empty_capture_says_why() {
    let dir = scratch_dir("cli-noheap");
    let exe = compile_c("run_noheap.c", &dir, &[]);
    let out = tidemark_run(&dir, &["-o", "none.tdm", "--", exe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("tidemark: recorded none.tdm in ")
            && lines[0].ends_with(": 0 allocations, peak 0 B, leaked 0 B"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "tidemark: no call to malloc was recorded: the program needs no heap, or has its own \
         allocator linked in (rustc's jemalloc, a static mimalloc), which the preload cannot see"
    );
    assert_eq!(lines[2], "tidemark: next: tidemark flamegraph none.tdm");
    // No frees either, but one: glibc's entry for the destructor of std's spawn-hook
    // thread-local, made (unrecorded) when the preload started its writer from this thread
    // and freed (recorded) at its exit. Four, when the capture's first chunks were
    // compressed on this thread (zstd's context and two destructor entries).
    use tidemark_tracer::report::{analyze, AnalyzeOptions};
    let a = analyze(dir.join("none.tdm"), &AnalyzeOptions::default()).unwrap();
    assert_eq!((a.totals.frees, a.totals.unmatched_frees), (1, 1));

    // A program that allocates gets no such line.
    let exe = compile_c("run_sites.c", &dir, &[]);
    let out = tidemark_run(
        &dir,
        &["-o", "sites.tdm", "--", exe.to_str().unwrap(), "5", "0"],
    );
    assert!(
        !text(&out.stderr).contains("no call to malloc"),
        "{}",
        text(&out.stderr)
    );
}

/// The allocation count of `tidemark run`'s summary line.
fn summary_allocations(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tidemark: recorded "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    // tidemark: recorded FILE in TIME: 1,234 allocations, peak ...
    let count = line.split(": ").nth(2).and_then(|s| s.split(' ').next());
    let count = count.unwrap_or_else(|| panic!("no count in {line}"));
    count.replace(',', "").parse().unwrap()
}

#[test]
fn the_summary_is_of_this_run_even_over_an_old_capture() {
    // The summary is read while the program runs, from a file that a previous run left at
    // the same path: it must wait for this run's capture, not summarize the old one.
    let dir = scratch_dir("cli-summary");
    let exe = compile_c("run_sites.c", &dir, &["-fomit-frame-pointer"]);
    let exe = exe.to_str().unwrap();
    let mut counts = Vec::new();
    for n in ["400", "50", "50"] {
        let out = tidemark_run(&dir, &["-o", "same.tdm", "--", exe, n]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        counts.push(summary_allocations(&text(&out.stderr)));
    }
    // Each round allocates a kept block and a temporary one.
    assert_eq!(counts[0] - counts[1], 2 * 350, "{counts:?}");
    assert_eq!(counts[1], counts[2], "{counts:?}");
    // And the same as reading the finished file, also for a program killed mid-run (the
    // reader must not wait for an end marker that never comes).
    let out = tidemark_run(&dir, &["-o", "killed.tdm", "--", exe, "50", "0", "KILL"]);
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // (A kill that lands inside the writer's write of a chunk leaves it cut: "ends early".)
    assert!(
        err.contains(" (no end marker: the last events may be missing)\n")
            || err.contains(" (ends early: "),
        "{err}"
    );
    counts.push(summary_allocations(&err));
    for (file, count) in [("same.tdm", counts[2]), ("killed.tdm", counts[3])] {
        let out = Command::new(tidemark())
            .args(["stats", "--json", file])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stats = text(&out.stdout);
        let total = format!("\"total_allocations\": {count},");
        assert!(stats.contains(&total), "{file}: {total} not in {stats}");
    }
    assert_eq!(
        counts[3], counts[1],
        "the killed run allocated as the others"
    );
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let dir = scratch_dir("cli-codes");
    for (script, code) in [("exit 0", 0), ("exit 42", 42), ("kill -KILL $$", 128 + 9)] {
        let out = tidemark_run(
            &dir,
            &["-q", "--allocator", "pymalloc", "--", "sh", "-c", script],
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            text(&out.stderr)
        );
    }
    let exe = compile_c("run_corrupt.c", &dir, &[]);
    let out = tidemark_run(&dir, &["--debug", "--", exe.to_str().unwrap(), "double"]);
    assert_eq!(out.status.code(), Some(128 + 6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("Fatal error: tidemark debug free: double free"),
        "{err}"
    );
    assert!(err.contains("was killed by signal 6 (SIGABRT)"), "{err}");
}

#[test]
fn errors_are_one_line_with_status_2() {
    let dir = scratch_dir("cli-errors");
    let out = tidemark_run(&dir, &["--", "no-such-program-tidemark"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "tidemark: error: no-such-program-tidemark: program not found in PATH\n"
    );

    // An option tidemark does not know, before the program: named, not taken for the program.
    let out = tidemark_run(&dir, &["--no-such-option", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("tidemark: error: unexpected argument '--no-such-option' found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = tidemark_run(&dir, &["-o", "/proc/no/such/x.tdm", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("tidemark: error: cannot write the capture /proc/no/such/x.tdm: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let src = dir.join("static.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let exe = dir.join("static");
    let built = Command::new("cc")
        .args(["-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if built {
        let out = tidemark_run(&dir, &["--", exe.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(
            err.contains("is statically linked: the preload library cannot work"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    } else {
        eprintln!("no static libc to link with: static case skipped");
    }
}

/// A program that takes over descriptors 3 and up (a shell's `exec 3>file`, a daemon closing
/// every descriptor, `dup2` onto small numbers) while it is recorded: the capture's own
/// descriptors sat at 3 and 4, so the capture went into the program's file and its lines into
/// the capture, or the capture ended at the close without its allocations.
#[test]
fn the_programs_descriptors_and_the_captures_stay_apart() {
    use tidemark_tests::{site, Capture};
    const PROGRAM: &str = "run_fds.c";
    let dir = scratch_dir("cli-fds");
    let exe = compile_c(PROGRAM, &dir, &[]);
    let exe = exe.to_str().unwrap();
    let sites = [
        (site(PROGRAM, "before_fds", "before"), (1000, 1000 * 100, 0)),
        (site(PROGRAM, "after_fds", "after"), (2000, 2000 * 200, 0)),
        (site(PROGRAM, "late", "late"), (300, 300 * 300, 0)),
    ];
    let through: String = (3..64).map(|n| format!("through {n}\n")).collect();
    for (how, expected) in [
        ("close", "user line 1\nuser line 2\n".to_string()),
        ("closefrom", "user line 1\nuser line 2\n".to_string()),
        ("dup2", format!("{through}user line 2\n")),
    ] {
        let capture = format!("{how}.tdm");
        let file = format!("{how}.txt");
        let out = tidemark_run(&dir, &["-o", &capture, "--", exe, how, &file]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{how}: {err}");
        assert_eq!(
            text(&std::fs::read(dir.join(&file)).unwrap()),
            expected,
            "{how}: the program's file holds its own bytes only"
        );
        let c = Capture::read(&dir.join(&capture));
        let all = c.describe();
        assert!(
            c.complete,
            "{how}: the capture ends with its end marker: {err}"
        );
        for (frame, totals) in &sites {
            assert_eq!(c.totals_at(frame), *totals, "{how}: {frame}: {all}");
        }
        assert!(!err.contains("stopped"), "{how}: {err}");
    }

    // The program closes the capture's descriptor and puts a file of its own at the capture's
    // path: nothing more is written there, and the recording says why it stopped.
    let out = tidemark_run(&dir, &["-o", "mine.txt", "--", exe, "replace", "mine.txt"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        text(&std::fs::read(dir.join("mine.txt")).unwrap()),
        "user line 1\nuser line 2\n"
    );
    let line = err
        .lines()
        .find(|l| l.contains("the recording stopped after "))
        .unwrap_or_else(|| panic!("no line on the stop in {err}"));
    assert!(
        line.ends_with(&format!(
            ": the program closed the capture's file descriptor (fd 1000), and {} is no \
             longer that file",
            dir.join("mine.txt").display()
        )),
        "{line}"
    );
}

/// An aggregate capture holds totals the writer keeps until it writes a record of them: a run
/// killed by SIGKILL (nothing can flush) keeps those of its last record, the first written
/// 0.1 s into the run. Before, they were written only at the end, and such a run had none.
#[test]
fn a_killed_aggregate_run_keeps_its_totals() {
    use tidemark_tests::{site, Capture};
    const PROGRAM: &str = "run_sites.c";
    let dir = scratch_dir("cli-aggregate-kill");
    let exe = compile_c(PROGRAM, &dir, &["-fomit-frame-pointer"]);
    let exe = exe.to_str().unwrap();
    // Killed 400 ms after its allocations, so that a record of them is due meanwhile.
    let out = tidemark_run(
        &dir,
        &[
            "--aggregate",
            "-o",
            "killed.tdm",
            "--",
            exe,
            "50",
            "0",
            "KILL",
            "400",
        ],
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // (A kill that lands inside the writer's write of a chunk leaves it cut: "ends early".)
    assert!(
        err.contains(": the totals are those written at ")
            && err.contains("; what came after is missing)\n"),
        "{err}"
    );
    let c = Capture::read(&dir.join("killed.tdm"));
    let all = c.describe();
    assert!(!c.complete, "killed: no end marker");
    let kept = 50 * 1000 + 49 * 50 / 2;
    assert_eq!(
        c.totals_at(&site(PROGRAM, "make_kept", "kept")),
        (50, kept, kept),
        "{all}"
    );
    assert_eq!(
        c.totals_at(&site(PROGRAM, "make_temp", "temp")),
        (50, 50 * 100 + 49 * 50 / 2, 0),
        "{all}"
    );
}
