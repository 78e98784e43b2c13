//! `tidemark run`'s machinery end to end: real programs (C built without frame pointers,
//! threads, fork and exec, heap corruption, CPython) run with the preload library in the
//! roles `tidemark run` sets through the environment (`TIDEMARK_PRELOAD_*`, see
//! `cli/preload/src/role.rs`), and the captures they leave read back with the report API.

use std::path::Path;
use std::process::{Command, Output};
use tidemark_tests::{
    captures_in, compile_c, preload_library, python_executable, scratch_dir, site, text,
    tidemark_cli, tidemark_run, Capture, SiteView,
};
use tidemark_tracer::report::{self, AnalyzeOptions};

/// C flags of code as distributions build it: no frame pointers (stacks need DWARF). Sibling
/// calls are kept as calls so each known frame exists.
const NO_FP: [&str; 3] = [
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];

/// `program args` on the preload with `env` (the `TIDEMARK_PRELOAD_*` protocol).
fn run_preloaded(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LD_PRELOAD", preload_library());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("program runs")
}

#[test]
fn sites_of_a_c_program_without_frame_pointers() {
    let kept_site = site("run_sites.c", "make_kept", "kept");
    let dir = scratch_dir("run-sites");
    let exe = compile_c("run_sites.c", &dir, &NO_FP);
    let out_pattern = dir.join("sites.%p.tdm");
    let out = run_preloaded(
        &exe,
        &["100", "3"],
        &[("TIDEMARK_PRELOAD_OUTPUT", out_pattern.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "sum 4950\n");
    let files = captures_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let pid = name.trim_start_matches("sites.").trim_end_matches(".tdm");
    assert!(pid.parse::<u32>().is_ok(), "%p became the pid: {name}");
    let c = Capture::read(&files[0]);
    assert!(c.complete, "the capture ends with its end marker");
    // make_kept (line 9) called through level3 <- level2 <- level1 <- main: DWARF unwinding
    // recovers every frame of code built without frame pointers.
    let kept: Vec<&SiteView> = c.at(&kept_site).collect();
    assert!(!kept.is_empty(), "no {kept_site} in\n{}", c.describe());
    let frames = &kept[0].frames;
    let pos = |name: &str| {
        frames
            .iter()
            .position(|f| f.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} missing from {frames:?}"))
    };
    assert!(pos("make_kept") < pos("level3"));
    assert!(pos("level3") < pos("level2"));
    assert!(pos("level2") < pos("level1"));
    assert!(pos("level1") < pos("main"));
    let kept_count: u64 = kept.iter().map(|s| s.total_count).sum();
    let kept_bytes: u64 = kept.iter().map(|s| s.total_bytes).sum();
    assert_eq!(kept_count, 100);
    assert_eq!(kept_bytes, (1000..1100).sum::<u64>());
    // Exit code 3 skips the frees: those blocks are the leaks.
    assert_eq!(
        kept.iter().map(|s| s.cur_bytes).sum::<u64>(),
        (1000..1100).sum::<u64>()
    );
    // calloc at line 13, each block freed.
    assert_eq!(
        c.count_at(&site("run_sites.c", "make_temp", "temp")),
        100,
        "{}",
        c.describe()
    );
    assert_eq!(
        c.at(&site("run_sites.c", "make_temp", "temp"))
            .map(|s| s.cur_bytes)
            .sum::<u64>(),
        0
    );
    // realloc at line 19 (NULL → 10 bytes, then 10 → 5000).
    assert!(
        c.count_at(&site("run_sites.c", "grow", "grow")) >= 1,
        "{}",
        c.describe()
    );
    assert!(c.allocs >= 202);
}

#[test]
fn exit_paths_leave_complete_captures() {
    let kept_site = site("run_sites.c", "make_kept", "kept");
    let dir = scratch_dir("run-exits");
    let exe = compile_c("run_sites.c", &dir, &NO_FP);
    // _exit: no exit handlers run, the preload's _exit flushes.
    let path = dir.join("exit.tdm");
    let out = run_preloaded(
        &exe,
        &["20", "5", "_exit"],
        &[("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(5));
    let c = Capture::read(&path);
    assert!(c.complete, "_exit flushed the capture");
    assert_eq!(c.count_at(&kept_site), 20, "{}", c.describe());

    // exit: the preload's exit handler flushes.
    let path = dir.join("normal.tdm");
    let out = run_preloaded(
        &exe,
        &["20"],
        &[("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap())],
    );
    assert!(out.status.success());
    let c = Capture::read(&path);
    assert!(c.complete);
    assert_eq!(c.at(&kept_site).map(|s| s.cur_bytes).sum::<u64>(), 0);
}

#[test]
fn killed_by_a_signal_still_reads() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch_dir("run-signals");
    let exe = compile_c("run_sites.c", &dir, &NO_FP);
    for (sig, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGKILL, "KILL"),
    ] {
        let path = dir.join(format!("{name}.tdm"));
        // TERM and INT go through the preload's handler (flush, then the default action);
        // KILL leaves what the writer wrote by then (chunks are self-delimiting).
        let out = run_preloaded(
            &exe,
            &["30", "0", name],
            &[("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap())],
        );
        assert_eq!(out.status.signal(), Some(sig), "{}", text(&out.stderr));
        let a = report::analyze(&path, &AnalyzeOptions::default());
        let a = a.unwrap_or_else(|e| panic!("SIG{name}: capture unreadable: {e}"));
        assert!(
            a.totals.allocs >= 60,
            "SIG{name}: allocations were recorded"
        );
        if sig != libc::SIGKILL {
            assert!(a.end.is_some(), "SIG{name}: flushed with the end marker");
        }
    }
}

#[test]
fn threads_on_every_backend() {
    let thread_site = site("run_threads.c", "thread_site", "thread");
    let dir = scratch_dir("run-threads");
    let exe = compile_c("run_threads.c", &dir, &NO_FP);
    for backend in ["malloc", "pymalloc", "pymalloc_debug"] {
        let path = dir.join(format!("{backend}.tdm"));
        let out = run_preloaded(
            &exe,
            &[],
            &[
                ("TIDEMARK_PRELOAD_ALLOCATOR", backend),
                ("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap()),
            ],
        );
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "freed 10000\n");
        let c = Capture::read(&path);
        assert!(c.complete, "{backend}");
        assert_eq!(
            c.count_at(&thread_site),
            20_000,
            "{backend}: {}",
            c.describe()
        );
        assert_eq!(
            c.at(&thread_site).map(|s| s.cur_bytes).sum::<u64>(),
            0,
            "{backend}: every block was freed (half of them by the main thread)"
        );
        let threads: std::collections::BTreeSet<u32> =
            c.at(&thread_site).map(|s| s.thread).collect();
        assert_eq!(threads.len(), 4, "{backend}: one site per worker thread");
        assert!(c.threads >= 5, "{backend}");
    }
}

#[test]
fn fork_and_exec_without_and_with_follow_fork() {
    let kept_site = site("run_sites.c", "make_kept", "kept");
    let parent_site = site("run_fork.c", "parent_site", "parent");
    let child_site = site("run_fork.c", "child_site", "child");
    let dir = scratch_dir("run-fork");
    let fork = compile_c("run_fork.c", &dir, &NO_FP);
    let sites = compile_c("run_sites.c", &dir, &NO_FP);

    // Not followed: the child stops recording, exits normally (7), and the program it execs
    // runs without the preload.
    let out_dir = dir.join("plain");
    std::fs::create_dir_all(&out_dir).unwrap();
    let pattern = out_dir.join("f.%p.tdm");
    let out = run_preloaded(
        &fork,
        &[],
        &[("TIDEMARK_PRELOAD_OUTPUT", pattern.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "child preload=no\nparent saw child exit 7\n"
    );
    let files = captures_in(&out_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let c = Capture::read(&files[0]);
    assert!(c.complete);
    assert_eq!(c.count_at(&parent_site), 1, "{}", c.describe());
    assert_eq!(c.count_at(&child_site), 0, "the child is not traced");

    let out = run_preloaded(
        &fork,
        &[sites.to_str().unwrap(), "10"],
        &[("TIDEMARK_PRELOAD_OUTPUT", pattern.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "child preload=no\nsum 45\nparent saw child exit 0\n"
    );
    assert_eq!(
        captures_in(&out_dir).len(),
        2,
        "one more run, no child capture"
    );

    // Followed: the child records from the fork to its exec into FILE.<pid>, and the program
    // it execs keeps the preload and records into FILE.<pid>.1, beside the parent's.
    let out_dir = dir.join("follow");
    std::fs::create_dir_all(&out_dir).unwrap();
    let main = out_dir.join("g.tdm");
    let out = run_preloaded(
        &fork,
        &[sites.to_str().unwrap(), "10"],
        &[
            ("TIDEMARK_PRELOAD_OUTPUT", main.to_str().unwrap()),
            ("TIDEMARK_PRELOAD_FOLLOW_FORK", "1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "child preload=yes\nsum 45\nparent saw child exit 0\n"
    );
    let files = captures_in(&out_dir);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[0], main);
    assert!(files[1]
        .to_string_lossy()
        .starts_with(&format!("{}.", main.display())));
    assert_eq!(
        files[2].to_string_lossy(),
        format!("{}.1", files[1].display())
    );
    let parent = Capture::read(&files[0]);
    let child = Capture::read(&files[1]);
    let exec = Capture::read(&files[2]);
    assert!(parent.complete && exec.complete);
    assert_eq!(parent.count_at(&parent_site), 1);
    assert_eq!(child.exec.as_deref(), Some(sites.to_str().unwrap()));
    assert_eq!(child.count_at(&child_site), 1, "{}", child.describe());
    assert_eq!(exec.pid, child.pid);
    assert_eq!(exec.count_at(&kept_site), 10, "{}", exec.describe());
}

#[test]
fn debug_allocator_reports_corruption_with_c_frames() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch_dir("run-debug");
    let exe = compile_c("run_corrupt.c", &dir, &NO_FP);
    let debug = [("TIDEMARK_PRELOAD_ALLOCATOR", "pymalloc_debug")];
    let line_of = |function: &str, marker: &str| {
        let s = site("run_corrupt.c", function, marker);
        s.rsplit(':').next().unwrap().to_string()
    };
    let alloc_line = line_of("make_buffer", "alloc");
    for (what, headline) in [
        (
            "overflow",
            "Fatal error: tidemark debug free: bad trailing pad byte",
        ),
        ("double", "Fatal error: tidemark debug free: double free"),
    ] {
        let free_line = line_of("main", what);
        let out = run_preloaded(&exe, &[what], &debug);
        let err = text(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{what}: {err}");
        assert!(err.contains(headline), "{what}: {err}");
        assert!(err.contains("Debug memory block at address p="), "{err}");
        assert!(
            err.contains("Memory block allocated at (most recent call first):"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "run_corrupt.c\", line {alloc_line}, in make_buffer"
            )),
            "{what}: allocation traceback in C frames: {err}"
        );
        assert!(
            err.contains(&format!("run_corrupt.c\", line {free_line}, in main")),
            "{what}: free traceback: {err}"
        );
        assert!(!text(&out.stdout).contains("survived"));
    }
    let out = run_preloaded(&exe, &["fine"], &debug);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "survived fine\n");
}

/// `tidemark run --debug` checks the heap at exit: a write after free whose block is still in
/// the quarantine when the program ends is reported with both tracebacks, and the run ends by
/// SIGABRT. `TIDEMARK_CHECK_AT_EXIT=0` turns the check off (the program then survives).
#[test]
fn run_debug_finds_a_write_after_free_at_exit() {
    let dir = scratch_dir("run-debug-exit");
    let exe = compile_c("run_corrupt.c", &dir, &NO_FP);
    let line_of = |function: &str, marker: &str| {
        let s = site("run_corrupt.c", function, marker);
        s.rsplit(':').next().unwrap().to_string()
    };
    let args = ["--debug", "--", exe.to_str().unwrap(), "after_free"];
    let out = tidemark_run(&dir, &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGABRT), "{err}");
    for line in [
        "The byte at p+10 changed after the free: 0x5a *** OUCH".to_string(),
        "Fatal error: tidemark check_heap: write after free".to_string(),
        format!(
            "run_corrupt.c\", line {}, in make_buffer",
            line_of("make_buffer", "alloc")
        ),
        format!(
            "run_corrupt.c\", line {}, in main",
            line_of("main", "after_free")
        ),
    ] {
        assert!(err.contains(&line), "{line}: {err}");
    }
    let out = Command::new(tidemark_cli())
        .arg("run")
        .args(args)
        .env("TIDEMARK_CHECK_AT_EXIT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "survived after_free\n");
}

/// Runs `run_corrupt.c CASE` under `--debug`, which must die of its invalid free with the
/// report that says `reason` and the call's line (`SITE CASE` in main); returns its stderr.
fn assert_invalid_free_report(case: &str, reason: &str) -> String {
    let dir = scratch_dir(&format!("run-debug-{case}"));
    let exe = compile_c("run_corrupt.c", &dir, &NO_FP);
    let out = tidemark_run(&dir, &["--debug", "--", exe.to_str().unwrap(), case]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGABRT), "{err}");
    let line = site("run_corrupt.c", "main", case);
    let line = line.rsplit(':').next().unwrap();
    for expected in [
        format!(
            ": not a tidemark debug block\n    free was called with a pointer tidemark did not \
             hand out:\n    {reason}.\n"
        ),
        format!("run_corrupt.c\", line {line}, in main"),
        "Fatal error: tidemark debug free: invalid free".to_string(),
    ] {
        assert!(err.contains(&expected), "{expected}: {err}");
    }
    err
}

/// Under the debug hooks, `free` of a stack buffer is reported (glibc would only say
/// "free(): invalid pointer") with the call's traceback.
#[test]
fn run_debug_reports_a_free_of_a_stack_buffer() {
    assert_invalid_free_report("stack", "it points into the calling thread's stack");
}

/// So is `free` of a global buffer.
#[test]
fn run_debug_reports_a_free_of_a_global_buffer() {
    assert_invalid_free_report(
        "global",
        "it points into the memory of a loaded program or library (a global or static \
         variable, or code), not the heap",
    );
}

/// And `free` of a pointer inside a block over 512 bytes (which glibc backs): handed to
/// glibc, its free could take it for a chunk and give it out again while the block is live.
/// The traceback has no C library entry frames.
#[test]
fn run_debug_reports_a_free_inside_a_big_block() {
    let err = assert_invalid_free_report(
        "interior_big",
        "it points inside a debug block of over 512 bytes (in glibc's memory), not at its start",
    );
    for entry in ["in _start", "__libc_start"] {
        assert!(!err.contains(entry), "{entry}: {err}");
    }
    // Which block, and where it was made.
    assert!(
        err.contains("\n    It points 32 bytes into the 1000-byte debug block at 0x"),
        "{err}"
    );
    let alloc_line = site("run_corrupt.c", "make_buffer", "alloc");
    let alloc_line = alloc_line.rsplit(':').next().unwrap();
    let made = err
        .split("\nThat block was allocated at (most recent call first):\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no allocation traceback: {err}"));
    assert!(
        made.lines().next().unwrap_or("").ends_with(&format!(
            "run_corrupt.c\", line {alloc_line}, in make_buffer"
        )),
        "{made}"
    );
}

/// A block over 512 bytes (in glibc's memory) whose header's tag a write before it damaged:
/// reported as such, not as a pointer inside a debug block (nor handed to glibc).
#[test]
fn run_debug_reports_a_damaged_header_of_a_big_block() {
    let dir = scratch_dir("run-debug-underflow-big");
    let exe = compile_c("run_corrupt.c", &dir, &NO_FP);
    let out = tidemark_run(
        &dir,
        &["--debug", "--", exe.to_str().unwrap(), "underflow_big"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGABRT), "{err}");
    let line = site("run_corrupt.c", "main", "underflow_big");
    let line = line.rsplit(':').next().unwrap();
    for expected in [
        ": its header is damaged\n".to_string(),
        format!("run_corrupt.c\", line {line}, in main"),
        "Fatal error: tidemark debug free: damaged block header".to_string(),
    ] {
        assert!(err.contains(&expected), "{expected}: {err}");
    }
}

/// A second free of a block over 512 bytes long after the first (glibc's free has since
/// written its list links into the block's first bytes): still reported as a double free,
/// with both tracebacks (the header sits past what glibc writes).
#[test]
fn run_debug_reports_a_late_double_free_of_a_big_block() {
    let dir = scratch_dir("run-debug-double-big");
    let exe = compile_c("run_double_big.c", &dir, &NO_FP);
    let out = tidemark_run(&dir, &["--debug", "--", exe.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGABRT), "{err}");
    let line = site("run_double_big.c", "main", "double_big");
    let line = line.rsplit(':').next().unwrap();
    for expected in [
        "    2000 bytes originally requested, align 16\n".to_string(),
        "    The block was freed and has already left the quarantine: its memory went back to \
         the inner allocator.\n"
            .to_string(),
        "Memory block allocated at (most recent call first):\n".to_string(),
        "Memory block freed at (most recent call first):\n".to_string(),
        format!("run_double_big.c\", line {line}, in main"),
        "Fatal error: tidemark debug free: double free".to_string(),
    ] {
        assert!(err.contains(&expected), "{expected}: {err}");
    }
}

/// The debug reports' tracebacks after a thousand rounds from the same stacks, which the
/// express lane answers (recent stacks): the block's own allocation and first free, with the
/// lines of the loop that made and freed it.
#[test]
fn debug_tracebacks_of_repeated_stacks_name_the_right_lines() {
    let dir = scratch_dir("run-debug-repeated");
    let exe = compile_c("run_corrupt.c", &dir, &NO_FP);
    let debug = [("TIDEMARK_PRELOAD_ALLOCATOR", "pymalloc_debug")];
    let out = run_preloaded(&exe, &["repeated"], &debug);
    let err = text(&out.stderr);
    assert!(
        err.contains("Fatal error: tidemark debug free: double free"),
        "{err}"
    );
    // The first two frames under each heading, as `function:line`.
    let frames_under = |heading: &str| -> Vec<String> {
        let start = err
            .find(heading)
            .unwrap_or_else(|| panic!("{heading}: {err}"));
        err[start..]
            .lines()
            .skip(1)
            .take(2)
            .map(|l| {
                let (_, rest) = l.split_once("run_corrupt.c\", line ").unwrap_or(("", l));
                let (line, function) = rest.split_once(", in ").unwrap_or((rest, ""));
                format!("{function}:{line}")
            })
            .collect()
    };
    assert_eq!(
        frames_under("Memory block allocated at (most recent call first):"),
        [
            site("run_corrupt.c", "make_buffer", "alloc"),
            site("run_corrupt.c", "main", "repeated_alloc")
        ],
        "{err}"
    );
    assert_eq!(
        frames_under("Memory block freed at (most recent call first):"),
        [
            site("run_corrupt.c", "release", "free"),
            site("run_corrupt.c", "main", "repeated_free")
        ],
        "{err}"
    );
}

#[test]
fn python_allocations_are_all_seen() {
    let Some(py) = python_executable() else {
        eprintln!("python3 not installed: skipped");
        return;
    };
    let dir = scratch_dir("run-python");
    let script = dir.join("alloc.py");
    std::fs::write(
        &script,
        "kept = [bytes(1234) for _ in range(20000)]\nprint(len(kept))\n",
    )
    .unwrap();
    let path = dir.join("py.tdm");
    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .env("PYTHONMALLOC", "malloc")
        .env("LD_PRELOAD", preload_library())
        .env("TIDEMARK_PRELOAD_OUTPUT", &path);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "20000\n");
    let c = Capture::read(&path);
    assert!(c.complete);
    // Each bytes(1234) is one malloc of 1234 + the object header, from _PyBytes_FromSize.
    let bytes_sites: u64 = c
        .sites
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.starts_with("_PyBytes_FromSize")))
        .filter(|s| s.total_bytes >= s.total_count * 1234)
        .map(|s| s.total_count)
        .sum();
    assert!(
        bytes_sites >= 20_000,
        "bytes objects seen: {bytes_sites}\n{}",
        c.describe()
    );
    assert!(c.allocs > 20_000);
}

#[test]
fn pymalloc_role_runs_programs_unchanged() {
    let dir = scratch_dir("run-pymalloc");
    let exe = compile_c("run_sites.c", &dir, &NO_FP);
    let glibc = Command::new(&exe).args(["300", "4"]).output().unwrap();
    for backend in ["pymalloc", "pymalloc_debug"] {
        let out = run_preloaded(
            &exe,
            &["300", "4"],
            &[("TIDEMARK_PRELOAD_ALLOCATOR", backend)],
        );
        assert_eq!(
            out.status.code(),
            Some(4),
            "{backend}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.stdout, glibc.stdout, "{backend}");
        assert!(captures_in(&dir).is_empty(), "no capture without an output");
    }
}

/// Also once the module is unloaded before the recording ends (`close`): the preload's
/// `dlclose` has the modules noted first (a short run has no tick between the load and the
/// unload that could list it).
#[test]
fn modules_loaded_mid_run_unwind_and_symbolize() {
    let dir = scratch_dir("run-dlopen");
    let plugin = compile_c(
        "run_plugin.c",
        &dir,
        &["-shared", "-fPIC", "-fomit-frame-pointer"],
    );
    let exe = compile_c("run_dlopen.c", &dir, &["-ldl"]);
    for unload in ["keep", "close"] {
        let path = dir.join(format!("dl-{unload}.tdm"));
        let out = run_preloaded(
            &exe,
            &[plugin.to_str().unwrap(), unload],
            &[("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap())],
        );
        assert!(out.status.success(), "{unload}: {}", text(&out.stderr));
        let c = Capture::read(&path);
        let plugin_site = site("run_plugin.c", "plugin_alloc", "plugin");
        let sites: Vec<&SiteView> = c.at(&plugin_site).collect();
        assert_eq!(
            sites.iter().map(|s| s.total_count).sum::<u64>(),
            50,
            "{unload}: {}",
            c.describe()
        );
        assert!(
            sites[0].frames.iter().any(|f| f.starts_with("main:")),
            "{unload}: the walk continues through the plugin into main: {:?}",
            sites[0].frames
        );
    }
}

/// The preload's constructor runs before every other object's (`-z initfirst`): the blocks a
/// linked library's constructor allocates before `main` are the program's and are recorded
/// (libstdc++'s emergency exception pool went unseen before).
#[test]
fn constructors_of_linked_libraries_are_recorded() {
    let dir = scratch_dir("run-ctor");
    let lib = compile_c("run_ctor_lib.c", &dir, &["-shared", "-fPIC"]);
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let exe = compile_c("run_ctor.c", &dir, &[lib.to_str().unwrap(), &rpath]);
    let path = dir.join("ctor.tdm");
    let out = run_preloaded(
        &exe,
        &[],
        &[("TIDEMARK_PRELOAD_OUTPUT", path.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = Capture::read(&path);
    let ctor = site("run_ctor_lib.c", "allocate_early", "ctor");
    assert_eq!(c.totals_at(&ctor), (3, 3 * 7777, 0), "{}", c.describe());
}
