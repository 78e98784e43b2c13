//! Recording end to end: the real writer (per-thread buffers, writer thread, barriers),
//! then the reader and the reports, with exact byte counts at the peak, at the end, inside a
//! time window and per thread. And a run killed by SIGKILL still reads.
//!
//! Events are fed through the hook entry points (`capture::on_alloc/on_free`) with stacks
//! interned in the real stack table, so the test does not depend on a global allocator.

use std::collections::HashMap;
use std::time::Duration;
use tidemark_tracer::capture::{self, RecordOptions};
use tidemark_tracer::report::{self, AnalyzeOptions, Moment, Symbols};
use tidemark_tracer::symbolize::Frame;

/// Fake return addresses, one per "function".
const MAIN: u64 = 0x10_0000;
const SITE_A: u64 = 0x10_1000;
const SITE_B: u64 = 0x10_2000;
const SITE_C: u64 = 0x10_3000;
const SITE_D: u64 = 0x10_4000;
const SITE_E: u64 = 0x10_5000;

fn names() -> HashMap<u64, &'static str> {
    HashMap::from([
        (MAIN, "main"),
        (SITE_A, "site_a"),
        (SITE_B, "site_b"),
        (SITE_C, "site_c"),
        (SITE_D, "site_d"),
        (SITE_E, "<script>alert(1)</script>"),
    ])
}

fn symbols() -> Symbols {
    let names = names();
    Symbols::with_resolver(move |ip| {
        vec![Frame::with_function(
            names.get(&ip).copied().unwrap_or("?"),
            "src/main.rs",
            (ip >> 12) as u32,
        )]
    })
}

fn stack(site: u64) -> u32 {
    tidemark_tracer::stack::intern(&[site, MAIN])
}

/// One recording per process at a time (`record` refuses a second): the tests that record in
/// this process hold this while they do, since the harness runs tests on parallel threads.
static ONE_RECORDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_recording() -> std::sync::MutexGuard<'static, ()> {
    ONE_RECORDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the known workload under recording and returns the capture path.
fn record_known(dir: &std::path::Path, aggregate: bool) -> std::path::PathBuf {
    let _one = one_recording();
    let path = dir.join(if aggregate {
        "known-agg.tdm"
    } else {
        "known.tdm"
    });
    let guard = capture::record(
        &path,
        RecordOptions {
            aggregate,
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b, c, d, e) = (
        stack(SITE_A),
        stack(SITE_B),
        stack(SITE_C),
        stack(SITE_D),
        stack(SITE_E),
    );
    // Phase 1 (t < ~100 ms): A keeps 10 x 1000 B; thread "worker" allocates B 5 x 4096 and
    // frees them: the run's high-water mark is 10,000 + 20,480 = 30,480 B.
    for i in 0..10 {
        capture::on_alloc(0x7000_0000 + i * 0x1000, 1000, 0, a);
    }
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            for i in 0..5 {
                capture::on_alloc(0x7100_0000 + i * 0x2000, 4096, 1, b);
            }
            for i in 0..5 {
                capture::on_free(0x7100_0000 + i * 0x2000, 1);
            }
        })
        .unwrap()
        .join()
        .unwrap();
    // C: 5000 B, never freed. A temporary allocation at E (freed right away).
    capture::on_alloc(0x7200_0000, 5000, 0, c);
    capture::on_alloc(0x7300_0000, 64, 0, e);
    capture::on_free(0x7300_0000, 0);
    std::thread::sleep(Duration::from_millis(150));
    // Phase 2 (t > 150 ms): D 3 x 2000 B live together, then freed: the window's peak is
    // 10,000 + 5,000 + 6,000 = 21,000 B.
    for i in 0..3 {
        capture::on_alloc(0x7400_0000 + i * 0x1000, 2000, 0, d);
    }
    for i in 0..3 {
        capture::on_free(0x7400_0000 + i * 0x1000, 0);
    }
    std::thread::sleep(Duration::from_millis(30));
    let summary = guard.stop().unwrap();
    assert_eq!(summary.events, 10 + 10 + 1 + 2 + 6);
    assert_eq!(summary.dropped, 0);
    path
}

fn by_site(a: &report::Analysis, moment: Moment) -> HashMap<String, (u64, u64)> {
    let mut syms = symbols();
    let mut m: HashMap<String, (u64, u64)> = HashMap::new();
    for s in &a.sites {
        let loc = syms.frames(a, s.stack)[0].function.clone();
        let v = moment.value(s);
        let e = m.entry(loc).or_default();
        e.0 += v.0;
        e.1 += v.1;
    }
    m.retain(|_, v| v.0 > 0);
    m
}

#[test]
fn known_allocations_end_to_end() {
    let dir = tempdir();
    let path = record_known(&dir, false);
    let a = report::analyze(&path, &AnalyzeOptions::default()).unwrap();
    assert!(a.truncated.is_none());
    assert!(a.end.is_some());
    assert_eq!(a.totals.allocs, 10 + 5 + 1 + 1 + 3);
    assert_eq!(a.totals.alloc_bytes, 10_000 + 20_480 + 5000 + 64 + 6000);
    assert_eq!(a.peak_bytes, 30_480);
    assert_eq!(a.leaked_bytes, 15_000);
    assert_eq!(a.leaked_count, 11);
    assert_eq!(a.totals.temporary, 1);
    assert_eq!(a.totals.api_counts[1], 5);

    let peak = by_site(&a, Moment::Peak);
    assert_eq!(
        peak,
        HashMap::from([
            ("site_a".into(), (10_000, 10)),
            ("site_b".into(), (20_480, 5))
        ])
    );
    let leaks = by_site(&a, Moment::End);
    assert_eq!(
        leaks,
        HashMap::from([
            ("site_a".into(), (10_000, 10)),
            ("site_c".into(), (5000, 1))
        ])
    );

    // Per thread at the peak: the worker holds B, the main thread A.
    let worker = a
        .threads
        .iter()
        .find(|t| t.name == "worker")
        .expect("worker thread named");
    assert_eq!(a.peak_of(Some(worker.index)), (20_480, 5));
    let main_thread = a
        .sites
        .iter()
        .find(|s| s.peak_bytes == 10_000)
        .unwrap()
        .thread;
    assert_eq!(a.peak_of(Some(main_thread)), (10_000, 10));

    // The window after the sleep: its own peak is phase 2's.
    let w = report::analyze(
        &path,
        &AnalyzeOptions {
            window_ns: Some((120_000_000, u64::MAX)),
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(w.peak_bytes, 21_000);
    assert_eq!(
        by_site(&w, Moment::Peak),
        HashMap::from([
            ("site_a".into(), (10_000, 10)),
            ("site_c".into(), (5000, 1)),
            ("site_d".into(), (6000, 3))
        ])
    );

    // The reports show the same numbers.
    let mut syms = symbols();
    let stats = report::stats::render_json(&a, &mut syms, &Default::default());
    assert_eq!(stats["peak_bytes"], 30_480);
    assert_eq!(stats["leaked_bytes"], 15_000);
    assert_eq!(
        stats["top_by_bytes"][0]["location"],
        "site_b at src/main.rs:258"
    );
    // `stats --leaks`: the top sites of what is live at exit, A's 10 blocks then C's one.
    let leaks_only = report::stats::Options {
        leaks: true,
        ..Default::default()
    };
    let stats = report::stats::render_json(&a, &mut syms, &leaks_only);
    assert_eq!(stats["top_sites_of"], "memory live at exit");
    assert_eq!(
        stats["top_by_bytes"],
        serde_json::json!([
            {"location": "site_a at src/main.rs:257", "bytes": 10_000, "count": 10},
            {"location": "site_c at src/main.rs:259", "bytes": 5000, "count": 1},
        ])
    );
    let text = report::stats::render_text(&a, &mut syms, &leaks_only);
    assert!(
        text.contains(
            "by bytes of the memory live at exit (leaks):\n\t- site_a at src/main.rs:257 -> \
             9.8 KiB in 10 blocks\n\t- site_c at src/main.rs:259 -> 4.9 KiB in 1 block\n"
        ),
        "{text}"
    );
    let mut html = Vec::new();
    report::flamegraph::write_html(&a, &mut syms, &Default::default(), &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("29.8 KiB at"), "peak in header");
    assert!(html.contains("high-water mark"));
    let folded = report::export::folded(&a, &mut syms, &Default::default());
    assert!(
        folded.contains("main at src/main.rs:256;site_a at src/main.rs:257 10000\n"),
        "{folded}"
    );
    assert!(
        folded.contains("main at src/main.rs:256;site_b at src/main.rs:258 20480\n"),
        "{folded}"
    );

    // Aggregate mode gives the same per-site numbers from a tiny file.
    let agg_path = record_known(&dir, true);
    let g = report::analyze(&agg_path, &AnalyzeOptions::default()).unwrap();
    assert_eq!(g.peak_bytes, 30_480);
    // Both modes date the peak at the first sample after phase 1 (a tick, ~10 ms in), well
    // before phase 2.
    for (mode, t) in [("events", a.peak_time_ns), ("aggregate", g.peak_time_ns)] {
        assert!((1..120_000_000).contains(&t), "{mode}: peak at {t} ns");
    }
    assert_eq!(g.leaked_bytes, 15_000);
    // An aggregate capture cannot tell temporary allocations: stats says so, not "0".
    let g_stats = report::stats::render_json(&g, &mut syms, &Default::default());
    assert_eq!(g_stats["temporary_allocations"], serde_json::Value::Null);
    assert!(
        report::stats::render_text(&g, &mut syms, &Default::default()).contains(
            "\n\tn/a (an aggregate capture keeps totals per site, not the order of events)\n"
        )
    );
    assert_eq!(by_site(&g, Moment::Peak), peak);
    assert_eq!(by_site(&g, Moment::End), leaks);
    assert!(g.timeline.iter().any(|p| p.heap == 15_000));
}

/// The child half of `sigkill_leaves_a_readable_capture`.
fn child_main(path: &str) -> ! {
    let _guard = capture::record(path, RecordOptions::default()).unwrap();
    let s = stack(SITE_A);
    let mut i = 0usize;
    loop {
        capture::on_alloc(0x9000_0000 + (i % 1000) * 0x100, 100, 0, s);
        if i >= 1000 {
            capture::on_free(0x9000_0000 + ((i - 1000) % 1000) * 0x100, 0);
        }
        i += 1;
        if i.is_multiple_of(10_000) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn sigkill_leaves_a_readable_capture() {
    if let Ok(path) = std::env::var("TIDEMARK_TEST_CHILD_CAPTURE") {
        child_main(&path);
    }
    let dir = tempdir();
    let path = dir.join("killed.tdm");
    let mut child = this_test_alone(
        "sigkill_leaves_a_readable_capture",
        "TIDEMARK_TEST_CHILD_CAPTURE",
        &path,
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let a = report::analyze(&path, &AnalyzeOptions::default())
        .unwrap_or_else(|e| panic!("killed run must read: {e}"));
    assert!(a.end.is_none(), "no end marker after SIGKILL");
    assert!(
        a.totals.allocs > 1000,
        "events up to the last flush: {}",
        a.totals.allocs
    );
    // Every alloc past the first 1000 is paired with a free, so at most 1000 live.
    assert!(a.leaked_count <= 1001, "{}", a.leaked_count);
    assert!(a.duration_ns > 0);
}

/// The child half of `a_checkpoint_before_exec_keeps_every_event`: records, checkpoints and
/// replaces itself with /bin/true (exit status 0), or exits 3 if the checkpoint failed.
fn exec_main(path: &str) -> ! {
    use std::os::unix::process::CommandExt;
    let guard = capture::record(path, RecordOptions::default()).unwrap();
    for i in 0..1234 {
        capture::on_alloc(0x9000_0000 + i * 0x100, 100, 0, stack(SITE_A));
    }
    if !capture::checkpoint_before_exec(b"/bin/true") {
        std::process::exit(3);
    }
    // The exec ends the writer thread as it would any other: the guard is never dropped.
    std::mem::forget(guard);
    let err = std::process::Command::new("/bin/true").exec();
    panic!("exec failed: {err}");
}

#[test]
fn a_checkpoint_before_exec_keeps_every_event() {
    if let Ok(path) = std::env::var("TIDEMARK_TEST_EXEC_CAPTURE") {
        exec_main(&path);
    }
    let path = tempdir().join("exec.tdm");
    let status = this_test_alone(
        "a_checkpoint_before_exec_keeps_every_event",
        "TIDEMARK_TEST_EXEC_CAPTURE",
        &path,
    )
    .stdout(std::process::Stdio::null())
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(0), "the child exec'd /bin/true");
    let a = report::analyze(&path, &AnalyzeOptions::default()).unwrap();
    assert_eq!((a.end, a.truncated), (None, None));
    assert_eq!(a.exec.map(|e| e.program).as_deref(), Some("/bin/true"));
    assert_eq!((a.totals.allocs, a.leaked_bytes), (1234, 123_400));
}

/// The subprocess half of `a_forked_child_forgets_the_parents_recording`; exits with the
/// number of the first check that failed (0: all held).
fn fork_main(dir: &std::path::Path) -> ! {
    let guard = capture::record(dir.join("parent.tdm"), RecordOptions::default()).unwrap();
    for i in 0..100 {
        capture::on_alloc(0xA000_0000 + i * 0x100, 10, 0, stack(SITE_A));
    }
    // SAFETY: the child only touches the capture API (no lock another thread may hold: the
    // fork handler took the capture's back) and leaves by _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let exit_with = |n: i32| -> ! {
            // SAFETY: ends the child without the parent's exit handlers.
            unsafe { libc::_exit(n) }
        };
        if capture::is_recording() {
            exit_with(1);
        }
        if capture::stop().is_some() {
            exit_with(2);
        }
        // Not recorded anywhere: nothing is being recorded in the child.
        capture::on_alloc(0xB000_0000, 20, 0, stack(SITE_B));
        let child = capture::record(dir.join("child.tdm"), RecordOptions::default());
        let Ok(child) = child else { exit_with(3) };
        for i in 0..7 {
            capture::on_alloc(0xC000_0000 + i * 0x100, 30, 0, stack(SITE_C));
        }
        match child.stop() {
            Ok(summary) if summary.events == 7 && summary.dropped == 0 => exit_with(0),
            _ => exit_with(4),
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    for i in 0..50 {
        capture::on_alloc(0xD000_0000 + i * 0x100, 40, 0, stack(SITE_D));
    }
    // A child made without the fork handlers (a raw clone) shares the recording's state:
    // stopping there must not touch it (the writer thread is the parent's).
    // SAFETY: the child calls only `stop` (which reads the pid and returns) and _exit.
    let raw = unsafe {
        let none: libc::c_long = 0;
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_long,
            none,
            none,
            none,
            none,
        )
    };
    if raw == 0 {
        let code = if capture::stop().is_none() { 0 } else { 5 };
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_exit_group, code as libc::c_long) };
    }
    let mut raw_status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(raw as i32, &mut raw_status, 0) };
    guard.stop().unwrap();
    let code = if !libc::WIFEXITED(status) {
        10
    } else if libc::WEXITSTATUS(raw_status) != 0 {
        libc::WEXITSTATUS(raw_status)
    } else {
        libc::WEXITSTATUS(status)
    };
    std::process::exit(code)
}

#[test]
fn a_forked_child_forgets_the_parents_recording() {
    if let Ok(dir) = std::env::var("TIDEMARK_TEST_FORK_CAPTURE") {
        fork_main(std::path::Path::new(&dir));
    }
    let dir = tempdir().join("fork");
    std::fs::create_dir_all(&dir).unwrap();
    // In a process of its own: the test harness's other threads must not be forked.
    let out = this_test_alone(
        "a_forked_child_forgets_the_parents_recording",
        "TIDEMARK_TEST_FORK_CAPTURE",
        &dir,
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "check failed in the forked child (see fork_main): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut syms = symbols();
    let mut counts = |path: &std::path::Path| {
        let a = report::analyze(path, &AnalyzeOptions::default()).unwrap();
        assert!(
            a.end.is_some() && a.truncated.is_none(),
            "{}",
            path.display()
        );
        let mut by: Vec<(String, u64, u64)> = a
            .sites
            .iter()
            .map(|s| {
                let f = syms.frames(&a, s.stack);
                (f[0].function.clone(), s.total_count, s.total_bytes)
            })
            .collect();
        by.sort();
        by
    };
    // The 100 events the parent had buffered at the fork are written once, by the parent.
    assert_eq!(
        counts(&dir.join("parent.tdm")),
        vec![
            ("site_a".to_string(), 100, 1000),
            ("site_d".to_string(), 50, 2000)
        ]
    );
    assert_eq!(
        counts(&dir.join("child.tdm")),
        vec![("site_c".to_string(), 7, 210)]
    );
}

/// A realloc that moves a block frees its old address inside the underlying realloc, and
/// another thread may get that address back before the realloc returns. The event's place
/// in the order is taken before the underlying call (`begin_realloc`), so replay sees the
/// move first and the other thread's block as a new live block: no free of an unknown block,
/// nothing lost.
#[test]
fn a_realloc_is_ordered_before_the_reuse_of_its_old_address() {
    let (path, _one, guard) = recording("realloc-order.tdm");
    let (a, b) = (stack(SITE_A), stack(SITE_B));
    let (old, new) = (0x7500_0000usize, 0x7600_0000usize);
    capture::on_alloc(old, 24, 1, a);
    let ticket = capture::begin_realloc().expect("recording");
    // The underlying realloc runs here: it frees `old`, which another thread takes at once.
    std::thread::spawn(move || capture::on_alloc(old, 24, 1, b))
        .join()
        .unwrap();
    capture::finish_realloc(ticket, 1, old, new, 3000, a);
    capture::on_free(new, 1);
    let summary = guard.stop().unwrap();
    assert_eq!((summary.events, summary.dropped), (4, 0));
    let a = report::analyze(&path, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.totals.unmatched_frees, 0);
    assert_eq!(
        a.totals.allocs, 3,
        "the alloc, the realloc's new block, the reuse"
    );
    // What is live at the end: the other thread's 24 bytes at the old address.
    let live: u64 = a.sites.iter().map(|s| s.cur_bytes).sum();
    assert_eq!(live, 24);
}

/// This test binary running only `test`, with `var=path` in its environment: the test's
/// child half, in a process of its own.
fn this_test_alone(test: &str, var: &str, path: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture"]).env(var, path);
    c
}

/// A recording into `name` in this process's temporary directory, with the one-recording lock
/// held while it runs: its path, the lock and the recording.
fn recording(
    name: &str,
) -> (
    std::path::PathBuf,
    std::sync::MutexGuard<'static, ()>,
    capture::RecordingGuard,
) {
    let path = tempdir().join(name);
    let one = one_recording();
    let guard = capture::record(&path, RecordOptions::default()).unwrap();
    (path, one, guard)
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-capture-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every shape of the per-thread rows comes back as recorded: short rows (a key delta under
/// 256, a pointer under 2^48, a size under 4 GiB) and general ones (a key delta of 300, a
/// pointer with its top bits set, sizes of 4 GiB and more, reallocs), interleaved, so that
/// the key each leaves is the one the next one's delta starts from.
#[test]
fn rows_of_every_width_come_back_as_recorded() {
    use tidemark_tracer::capture::format::{Event, EventKind};
    use tidemark_tracer::capture::reader::{CaptureReader, Item};
    let (path, _one, guard) = recording("row-widths.tdm");
    let (a, b) = (stack(SITE_A), stack(SITE_B));
    let high = 0xFFFF_8000_0000_1000usize;
    let mut want = vec![
        EventKind::Alloc {
            ptr: 0x7000_0000,
            size: 40,
            api: 1,
            stack: a,
        },
        EventKind::Alloc {
            ptr: 0x7000_1000,
            size: 70_000,
            api: 0,
            stack: a,
        },
        EventKind::Alloc {
            ptr: high as u64,
            size: 40,
            api: 1,
            stack: b,
        },
        EventKind::Alloc {
            ptr: 0x7000_2000,
            size: 5 << 32,
            api: 1,
            stack: b,
        },
        EventKind::Alloc {
            ptr: 0x7000_3000,
            size: u32::MAX as u64,
            api: 1,
            stack: a,
        },
        EventKind::Free {
            ptr: 0x7000_0000,
            api: 1,
        },
        EventKind::Free {
            ptr: high as u64,
            api: 0,
        },
    ];
    for kind in &want {
        match *kind {
            EventKind::Alloc {
                ptr,
                size,
                api,
                stack,
            } => capture::on_alloc(ptr as usize, size as usize, api, stack),
            EventKind::Free { ptr, api } => capture::on_free(ptr as usize, api),
            EventKind::Realloc { .. } => unreachable!(),
        }
    }
    // Another thread advances the clock by 300 frees: this thread's next key delta does not
    // fit a short row.
    std::thread::spawn(|| {
        for i in 0..300 {
            capture::on_alloc(0x7100_0000 + i * 16, 16, 1, 0);
            capture::on_free(0x7100_0000 + i * 16, 1);
        }
    })
    .join()
    .unwrap();
    let ticket = capture::begin_realloc().expect("recording");
    capture::finish_realloc(ticket, 1, 0x7000_1000, 0x7000_4000, 80_000, b);
    capture::on_alloc(0x7000_5000, 24, 1, a);
    capture::on_free(0x7000_5000, 1);
    want.extend([
        EventKind::Realloc {
            old: 0x7000_1000,
            new: 0x7000_4000,
            size: 80_000,
            stack: b,
        },
        EventKind::Alloc {
            ptr: 0x7000_5000,
            size: 24,
            api: 1,
            stack: a,
        },
        EventKind::Free {
            ptr: 0x7000_5000,
            api: 1,
        },
    ]);
    let summary = guard.stop().unwrap();
    assert_eq!(
        (summary.events, summary.dropped),
        (want.len() as u64 + 600, 0)
    );

    let mut reader = CaptureReader::open(&path).unwrap();
    let mut events: Vec<Event> = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        if let Item::Event(e) = item {
            events.push(e);
        }
    }
    let main = events[0].thread;
    let mine: Vec<EventKind> = events
        .iter()
        .filter(|e| e.thread == main)
        .map(|e| e.kind)
        .collect();
    assert_eq!(mine, want);
    // The realloc's key follows the other thread's last free (the 300-step delta).
    let last_other = events
        .iter()
        .filter(|e| e.thread != main)
        .map(|e| e.seq)
        .max()
        .unwrap();
    let realloc = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Realloc { .. }))
        .unwrap();
    assert!(
        realloc.seq > last_other,
        "{} after {}",
        realloc.seq,
        last_other
    );
}

/// An allocation is dated by the sample after it, not by the next free: with nothing freed
/// for 300 ms (allocations only read the clock) the writer's samples still advance it.
#[test]
fn allocations_without_frees_are_dated_by_the_next_sample() {
    let dir = tempdir();
    let path = dir.join("sparse.tdm");
    {
        let _one = one_recording();
        let guard = capture::record(&path, RecordOptions::default()).unwrap();
        let (a, c) = (stack(SITE_A), stack(SITE_C));
        capture::on_alloc(0x7500_0000, 10_000, 0, a);
        std::thread::sleep(Duration::from_millis(200));
        capture::on_alloc(0x7600_0000, 5_000, 0, c);
        std::thread::sleep(Duration::from_millis(100));
        capture::on_free(0x7500_0000, 0);
        capture::on_free(0x7600_0000, 0);
        guard.stop().unwrap();
    }
    let a = report::analyze(&path, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.peak_bytes, 15_000);
    // The peak came with the second allocation (at 200 ms), not with the first free (300 ms).
    assert!(
        (200_000_000..290_000_000).contains(&a.peak_time_ns),
        "peak at {} ns",
        a.peak_time_ns
    );
    // Before the second allocation only the first was live.
    let w = report::analyze(
        &path,
        &AnalyzeOptions {
            window_ns: Some((0, 150_000_000)),
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(w.peak_bytes, 10_000);
    assert_eq!(
        by_site(&w, Moment::Peak),
        HashMap::from([("site_a".into(), (10_000, 1))])
    );
}
