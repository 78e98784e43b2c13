//! The `tidemark` binary: every verb on a known capture, and one-line errors with status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tidemark_tracer::capture::builder::CaptureBuilder;
use tidemark_tracer::capture::format::*;

fn tidemark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .unwrap()
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tidemark-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A capture with unknown ips (no module): frames show as addresses; numbers are exact.
fn write_capture(path: &Path, leak: u64) {
    let mut b = CaptureBuilder::new(&Meta {
        command: "prog".into(),
        ..Meta::default()
    });
    b.stacks(1, &[(0x1000, 0), (0x2000, 1)]);
    let ev = |seq, kind| Event {
        seq,
        thread: 0,
        kind,
    };
    b.events(
        0,
        &[
            ev(
                0,
                EventKind::Alloc {
                    ptr: 0x10,
                    size: 4096,
                    api: 0,
                    stack: 2,
                },
            ),
            ev(
                1,
                EventKind::Alloc {
                    ptr: 0x20,
                    size: leak,
                    api: 1,
                    stack: 1,
                },
            ),
            ev(2, EventKind::Free { ptr: 0x10, api: 0 }),
        ],
    );
    b.sample(Sample {
        time_ns: 5_000_000,
        seq: 3,
        rss: 1 << 20,
        heap: 0,
    });
    b.end(EndRecord {
        time_ns: 6_000_000,
        events: 3,
        dropped: 0,
    });
    std::fs::write(path, b.bytes()).unwrap();
}

fn stderr_line(o: &Output) -> String {
    let s = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(s.lines().count(), 1, "one line on stderr: {s:?}");
    s
}

#[test]
fn errors_are_one_line_with_status_2() {
    let d = dir();
    let o = tidemark(&["stats", "/nonexistent/run.tdm"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        "tidemark: error: /nonexistent/run.tdm: no such file\n"
    );

    let bad = d.join("corrupt.tdm");
    std::fs::write(&bad, b"this is not a capture").unwrap();
    let o = tidemark(&["flamegraph", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let line = stderr_line(&o);
    assert!(
        line.contains("corrupt.tdm: not a tidemark capture (wrong magic number)"),
        "{line}"
    );

    let empty = d.join("empty.tdm");
    std::fs::write(&empty, b"").unwrap();
    let o = tidemark(&["tree", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("empty file"));

    let o = tidemark(&["stats", "--frobnicate", "x.tdm"]);
    assert_eq!(o.status.code(), Some(2));
    let line = stderr_line(&o);
    assert!(
        line.starts_with("tidemark: error: unexpected argument '--frobnicate'"),
        "{line}"
    );

    // clap's detail stays on the one line: what is missing, the values allowed; a negative
    // count is an invalid value, not an unknown flag.
    for (args, line) in [
        (
            &["stats"][..],
            "the following required arguments were not provided: <CAPTURE>",
        ),
        (
            &["export", "x.tdm"][..],
            "the following required arguments were not provided: --format <FORMAT>",
        ),
        (
            &["run", "--allocator", "jemalloc", "--", "true"][..],
            "invalid value 'jemalloc' for '--allocator <ALLOCATOR>' [possible values: \
             pymalloc, malloc]; tip: a similar value exists: 'malloc'",
        ),
        (
            &["stats", "--top", "-1", "x.tdm"][..],
            "invalid value '-1' for '--top <TOP>': invalid digit found in string",
        ),
        // Zero rows would print headed, empty sections.
        (
            &["stats", "--top", "0", "x.tdm"][..],
            "invalid value '0' for '--top <TOP>': the value must be at least 1",
        ),
        (
            &["summary", "--rows", "0", "x.tdm"][..],
            "invalid value '0' for '--rows <ROWS>': the value must be at least 1",
        ),
        (
            &["diff", "--rows", "0", "a.tdm", "b.tdm"][..],
            "invalid value '0' for '--rows <ROWS>': the value must be at least 1",
        ),
        (
            &["tree", "--min-percent", "nan", "x.tdm"][..],
            "invalid value 'nan' for '--min-percent <MIN_PERCENT>': a percentage from 0 to \
             100 is expected",
        ),
    ] {
        let o = tidemark(args);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(
            stderr_line(&o),
            format!("tidemark: error: {line} (see tidemark --help)\n")
        );
    }

    let o = tidemark(&["run", "--", "no-such-program-tidemark"]);
    assert_eq!(o.status.code(), Some(2));
    let line = stderr_line(&o);
    assert!(
        line.contains("no-such-program-tidemark") && line.contains("not found"),
        "{line}"
    );

    let good = d.join("good.tdm");
    write_capture(&good, 100);
    let o = tidemark(&["flamegraph", "--temporal", "5..1", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("--temporal"));
    // Its one sample is at 5 ms and it ends at 6 ms: a window must hold the sample.
    for (window, line) in [
        (
            "1ms..4ms",
            "--temporal 1ms..4ms: no memory sample falls in the window (one is taken every \
             10 ms; the capture lasts 6.0 ms): widen it",
        ),
        (
            "7ms..",
            "--temporal 7ms..: the window starts after the capture ends (at 6.0 ms)",
        ),
    ] {
        let o = tidemark(&["stats", "--temporal", window, good.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(stderr_line(&o), format!("tidemark: error: {line}\n"));
    }
    let o = tidemark(&["diff", good.to_str().unwrap(), d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        format!(
            "tidemark: error: {}: is a directory, not a capture file\n",
            d.display()
        )
    );
    let o = tidemark(&["stats", "--temporal", "4ms..6ms", good.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = tidemark(&[
        "flamegraph",
        "-o",
        "/nonexistent/dir/x.html",
        good.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("/nonexistent/dir/x.html: cannot write"));
}

/// A capture without its end marker (a killed run) is reported, with one warning line.
#[test]
fn a_capture_without_an_end_marker_is_reported_with_a_warning() {
    let d = dir();
    let path = d.join("killed.tdm");
    let mut b = CaptureBuilder::new(&Meta::default());
    b.stacks(1, &[(0x1000, 0)]);
    let alloc = EventKind::Alloc {
        ptr: 0x10,
        size: 300,
        api: 1,
        stack: 1,
    };
    b.events(
        0,
        &[Event {
            seq: 0,
            thread: 0,
            kind: alloc,
        }],
    );
    std::fs::write(&path, b.bytes()).unwrap();
    let p = path.to_str().unwrap();
    for verb in ["summary", "tree", "stats"] {
        let o = tidemark(&[verb, p]);
        assert!(o.status.success(), "{verb}");
        assert_eq!(
            stderr_line(&o),
            format!(
                "tidemark: warning: {p}: the capture has no end marker (the run was killed, or \
                 is still recording); reporting what was recorded\n"
            ),
            "{verb}"
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("300 B"),
            "{verb}"
        );
    }
}

/// `-o` naming an input is refused before anything is written: the capture stays.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let d = dir();
    let path = d.join("precious.tdm");
    write_capture(&path, 100);
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();
    let other = d.join("other.tdm");
    write_capture(&other, 200);
    for args in [
        vec!["flamegraph", p, "-o", p],
        vec!["export", p, "--format", "folded", "-o", p],
        vec!["diff", other.to_str().unwrap(), p, "-o", p],
    ] {
        let o = tidemark(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr_line(&o),
            format!(
                "tidemark: error: {p}: that is the input ({p}): the output would replace it; \
                 name another file with -o\n"
            ),
            "{args:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{args:?}");
    }
    // A capture read from a pipe: the report goes to the current directory, not to /dev.
    let o = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["flamegraph", "/dev/stdin"])
        .current_dir(&d)
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.join("stdin.flamegraph.html").is_file());
}

/// An error line written into a pipe nobody reads (`tidemark ... 2>&1 | head` after head
/// exited) still ends with status 2: it aborted with SIGABRT (a panic inside the panic hook).
#[test]
fn an_error_into_a_closed_stderr_still_exits_2() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["stats", "/nonexistent/x.tdm"])
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}");
}

/// A `TIDEMARK_RECORD` exported for the user's own program does not make the command record
/// itself over the capture it reads.
#[test]
fn the_commands_own_allocations_ignore_tidemark_record() {
    let d = dir();
    let path = d.join("kept.tdm");
    write_capture(&path, 100);
    let before = std::fs::read(&path).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["stats", "--json", path.to_str().unwrap()])
        .env("TIDEMARK_RECORD", &path)
        .env("TIDEMARK_TRACE", "8")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the capture is untouched"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["total_allocations"], 2);
}

#[test]
fn verbs_on_a_known_capture() {
    let d = dir();
    let cap = d.join("known.tdm");
    write_capture(&cap, 100);
    let c = cap.to_str().unwrap();

    let o = tidemark(&["stats", "--json", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["peak_bytes"], 4196);
    assert_eq!(j["leaked_bytes"], 100);
    assert_eq!(j["total_allocations"], 2);

    let o = tidemark(&["stats", c]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Peak memory usage"));

    let html = d.join("fg.html");
    let o = tidemark(&["flamegraph", "-o", html.to_str().unwrap(), "--leaks", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("memory leaked"));
    // Default output name: next to the capture.
    let o = tidemark(&["flamegraph", c]);
    assert!(o.status.success());
    assert!(d.join("known.flamegraph.html").exists());

    let o = tidemark(&["summary", c]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("4.0 KiB"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = tidemark(&["tree", c]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("100.00 %"));

    // Sorted folded lines; unknown ips show as addresses. `-o -` is standard output too.
    for o in [
        tidemark(&["export", "--format", "folded", c]),
        tidemark(&["export", "--format", "folded", "-o", "-", c]),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "0x1000 100\n0x1000;0x2000 4096\n"
        );
    }
    let out = d.join("dhat.json");
    let o = tidemark(&["export", "--format", "dhat", "-o", out.to_str().unwrap(), c]);
    assert!(o.status.success());
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(j["dhatFileVersion"], 2);
    assert_eq!(j["mode"], "rust-heap");

    let newer = d.join("newer.tdm");
    write_capture(&newer, 300);
    let o = tidemark(&[
        "diff",
        c,
        newer.to_str().unwrap(),
        "-o",
        d.join("diff.html").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("0x1000: size=300 B (+200 B), count=1 (+0)"),
        "{text}"
    );
    assert!(d.join("diff.html").exists());
}

#[test]
fn demo_records_and_renders() {
    let d = dir().join("demo");
    let o = tidemark(&["demo", "-o", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("tidemark-demo.flamegraph.html"), "{text}");
    assert!(
        text.contains("build_index"),
        "the peak's site is named:\n{text}"
    );
    let page = std::fs::read_to_string(d.join("tidemark-demo.flamegraph.html")).unwrap();
    assert!(page.contains("high-water mark"));
    let o = tidemark(&[
        "stats",
        "--json",
        d.join("tidemark-demo.tdm").to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The leak: 2000 strings of 500+ bytes and their vector, never freed.
    assert!(j["leaked_bytes"].as_u64().unwrap() >= 2000 * 500, "{j}");
    assert!(j["peak_bytes"].as_u64().unwrap() >= 50_000 * 256);
    assert!(j["threads"].as_u64().unwrap() >= 5);
}

#[test]
fn diff_of_two_snapshot_files() {
    use tidemark_tracer::{Frame, Snapshot, Trace, Traceback};
    let d = dir();
    let tb = |line| Traceback::new(vec![Frame::with_function("grow", "src/app.rs", line)]);
    let old = Snapshot::from_traces(vec![Trace::new(0, 100, tb(10))], 1);
    let new = Snapshot::from_traces(
        vec![
            Trace::new(0, 100, tb(10)),
            Trace::new(0, 400, tb(10)),
            Trace::new(0, 50, tb(20)),
        ],
        1,
    );
    let (a, b) = (d.join("old.json"), d.join("new.json"));
    old.dump(&a).unwrap();
    new.dump(&b).unwrap();
    let o = tidemark(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1], "grow at src/app.rs:10: size=500 B (+400 B), count=2 (+1)",
        "{text}"
    );
    assert_eq!(
        lines[2], "grow at src/app.rs:20: size=50 B (+50 B), count=1 (+1)",
        "{text}"
    );
    // A size past any allocation (2^64 - 1 wrapped the sums) is refused at load, naming the
    // file and the trace.
    let huge = d.join("huge.json");
    let text = std::fs::read_to_string(&a).unwrap();
    let trace = "[0,100,0]";
    assert!(text.contains(trace), "{text}");
    std::fs::write(
        &huge,
        text.replace(trace, &format!("{trace},[0,{},0]", u64::MAX)),
    )
    .unwrap();
    let o = tidemark(&["diff", a.to_str().unwrap(), huge.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        format!(
            "tidemark: error: {}: trace 1: size 18446744073709551615 is more than any \
             allocation (at most 17592186044416 bytes, 16 TiB)\n",
            huge.display()
        )
    );
    // A snapshot-looking file that is not one: one clear line.
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    let o = tidemark(&["diff", bad.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("bad.json"));
}

/// `diff` reads its inputs from pipes (`cat a.tdm | tidemark diff /dev/stdin b.tdm`): it
/// looked at the first bytes for JSON and opened the file again, and the pipe had lost them.
#[test]
fn diff_reads_a_pipe() {
    use std::io::Write as _;
    use std::process::Stdio;
    use tidemark_tracer::{Frame, Snapshot, Trace, Traceback};
    let d = dir();
    let (old, new) = (d.join("pipe-old.tdm"), d.join("pipe-new.tdm"));
    write_capture(&old, 100);
    write_capture(&new, 300);
    let tb = Traceback::new(vec![Frame::with_function("grow", "src/app.rs", 10)]);
    let (old_json, new_json) = (d.join("pipe-old.json"), d.join("pipe-new.json"));
    Snapshot::from_traces(vec![Trace::new(0, 100, tb.clone())], 1)
        .dump(&old_json)
        .unwrap();
    Snapshot::from_traces(vec![Trace::new(0, 250, tb)], 1)
        .dump(&new_json)
        .unwrap();
    for (piped, other, row) in [
        (&old, &new, "0x1000: size=300 B (+200 B), count=1 (+0)"),
        (
            &old_json,
            &new_json,
            "grow at src/app.rs:10: size=250 B (+150 B), count=1 (+0)",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["diff", "/dev/stdin", other.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let bytes = std::fs::read(piped).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let o = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("/dev/stdin → {}", other.display()));
        assert_eq!(lines[1], row, "{text}");
    }
}

/// `export --format dhat` reads the capture twice (for the program points' maxima): from a
/// pipe, it keeps the bytes of the first read.
#[test]
fn dhat_export_reads_a_pipe() {
    use std::io::Write as _;
    use std::process::Stdio;
    let d = dir();
    let cap = d.join("dhat-pipe.tdm");
    write_capture(&cap, 100);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["export", "--format", "dhat", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&cap).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut points: Vec<(u64, u64)> = j["pps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["tb"].as_u64().unwrap(), p["mb"].as_u64().unwrap()))
        .collect();
    points.sort();
    assert_eq!(points, [(100, 100), (4096, 4096)]);
}
