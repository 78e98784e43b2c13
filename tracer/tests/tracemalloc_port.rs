//! CPython's Lib/test/test_tracemalloc.py, the parts about snapshots, statistics, filters and
//! formatting, ported: the same hand-made snapshots and the same expected results.
//!
//! Differences, on purpose: tracebacks here are most recent first (tracemalloc stores them
//! oldest first and prints `traceback[0]`, the oldest frame; we print the most recent frame);
//! there is no `.pyc` → `.py` filename rule.

use tidemark_tracer::{
    fnmatch, DomainFilter, Filter, Frame, KeyType, Snapshot, Statistic, StatisticDiff, Trace,
    TraceError, TraceFilter, Traceback,
};

/// A raw trace as in the Python test: (domain, size, frames most recent first, total_nframe).
fn raw(domain: u32, size: usize, frames: &[(&str, u32)], total: usize) -> Trace {
    let frames = frames.iter().map(|&(f, l)| Frame::new(f, l)).collect();
    Trace::new(domain, size, Traceback::with_total(frames, total))
}

fn create_snapshots() -> (Snapshot, Snapshot) {
    let traceback_limit = 2;
    let raw_traces = vec![
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(1, 2, &[("a.py", 5), ("b.py", 4)], 3),
        raw(2, 66, &[("b.py", 1)], 1),
        raw(3, 7, &[("<unknown>", 0)], 1),
    ];
    let snapshot = Snapshot::from_traces(raw_traces, traceback_limit);
    let raw_traces2 = vec![
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(0, 10, &[("a.py", 2), ("b.py", 4)], 3),
        raw(2, 2, &[("a.py", 5), ("b.py", 4)], 3),
        raw(2, 5000, &[("a.py", 5), ("b.py", 4)], 3),
        raw(4, 400, &[("c.py", 578)], 1),
    ];
    let snapshot2 = Snapshot::from_traces(raw_traces2, traceback_limit);
    (snapshot, snapshot2)
}

/// tracemalloc's `traceback(*frames)` helper: frames most recent first.
fn traceback(frames: &[(&str, u32)]) -> Traceback {
    Traceback::new(frames.iter().map(|&(f, l)| Frame::new(f, l)).collect())
}
fn traceback_lineno(filename: &str, lineno: u32) -> Traceback {
    traceback(&[(filename, lineno)])
}
fn traceback_filename(filename: &str) -> Traceback {
    traceback_lineno(filename, 0)
}
fn stat(tb: &Traceback, size: usize, count: usize) -> Statistic {
    Statistic {
        traceback: tb.clone(),
        size,
        count,
    }
}
fn diff(
    tb: &Traceback,
    size: usize,
    size_diff: isize,
    count: usize,
    count_diff: isize,
) -> StatisticDiff {
    StatisticDiff {
        traceback: tb.clone(),
        size,
        size_diff,
        count,
        count_diff,
    }
}

/// The raw form of a snapshot's traces, for comparisons like the Python test's.
/// (domain, size, frames most recent first, total_nframe)
type RawTrace = (u32, usize, Vec<(String, u32)>, usize);

fn raws(s: &Snapshot) -> Vec<RawTrace> {
    s.traces()
        .iter()
        .map(|t| {
            let frames = t
                .traceback
                .frames()
                .iter()
                .map(|f| (f.filename.clone(), f.lineno))
                .collect();
            (t.domain, t.size, frames, t.traceback.total_nframe)
        })
        .collect()
}

#[test]
fn filter_traces() {
    let (snapshot, _) = create_snapshots();
    let filter1: TraceFilter = Filter::new(false, "b.py").into();
    let filter2: TraceFilter = Filter::new(true, "a.py").lineno(2).into();
    let filter3: TraceFilter = Filter::new(true, "a.py").lineno(5).into();
    let original = raws(&snapshot);

    // exclude b.py
    let snapshot3 = snapshot.filter_traces(&[filter1]);
    let idx = |i: &[usize]| i.iter().map(|&i| original[i].clone()).collect::<Vec<_>>();
    assert_eq!(raws(&snapshot3), idx(&[0, 1, 2, 3, 5]));
    // filter_traces() must not touch the original snapshot
    assert_eq!(raws(&snapshot), original);

    // only include two lines of a.py
    let snapshot4 = snapshot3.filter_traces(&[filter2, filter3]);
    assert_eq!(raws(&snapshot4), idx(&[0, 1, 2, 3]));

    // no filter: a copy
    let snapshot5 = snapshot.filter_traces(&[]);
    assert_eq!(snapshot5, snapshot);
    assert_eq!(raws(&snapshot5), original);
}

#[test]
fn filter_traces_domain() {
    let (snapshot, _) = create_snapshots();
    let filter1: TraceFilter = Filter::new(false, "a.py").domain(1).into();
    let filter2: TraceFilter = Filter::new(true, "a.py").domain(1).into();
    let original = raws(&snapshot);
    let idx = |i: &[usize]| i.iter().map(|&i| original[i].clone()).collect::<Vec<_>>();

    // exclude a.py of domain 1
    assert_eq!(
        raws(&snapshot.filter_traces(&[filter1])),
        idx(&[0, 1, 2, 4, 5])
    );
    // include a.py of domain 1
    assert_eq!(raws(&snapshot.filter_traces(&[filter2])), idx(&[3]));
}

#[test]
fn filter_traces_domain_filter() {
    let (snapshot, _) = create_snapshots();
    let original = raws(&snapshot);
    let idx = |i: &[usize]| i.iter().map(|&i| original[i].clone()).collect::<Vec<_>>();
    // exclude domain 3
    let s = snapshot.filter_traces(&[DomainFilter::new(false, 3).into()]);
    assert_eq!(raws(&s), idx(&[0, 1, 2, 3, 4]));
    // include domain 3
    let s = snapshot.filter_traces(&[DomainFilter::new(true, 3).into()]);
    assert_eq!(raws(&s), idx(&[5]));
}

#[test]
fn snapshot_group_by_line() {
    let (snapshot, snapshot2) = create_snapshots();
    let tb_0 = traceback_lineno("<unknown>", 0);
    let tb_a_2 = traceback_lineno("a.py", 2);
    let tb_a_5 = traceback_lineno("a.py", 5);
    let tb_b_1 = traceback_lineno("b.py", 1);
    let tb_c_578 = traceback_lineno("c.py", 578);

    assert_eq!(
        snapshot.statistics(KeyType::Lineno, false).unwrap(),
        vec![
            stat(&tb_b_1, 66, 1),
            stat(&tb_a_2, 30, 3),
            stat(&tb_0, 7, 1),
            stat(&tb_a_5, 2, 1)
        ]
    );
    assert_eq!(
        snapshot2.statistics(KeyType::Lineno, false).unwrap(),
        vec![
            stat(&tb_a_5, 5002, 2),
            stat(&tb_c_578, 400, 1),
            stat(&tb_a_2, 30, 3)
        ]
    );
    assert_eq!(
        snapshot2
            .compare_to(&snapshot, KeyType::Lineno, false)
            .unwrap(),
        vec![
            diff(&tb_a_5, 5002, 5000, 2, 1),
            diff(&tb_c_578, 400, 400, 1, 1),
            diff(&tb_b_1, 0, -66, 0, -1),
            diff(&tb_0, 0, -7, 0, -1),
            diff(&tb_a_2, 30, 0, 3, 0),
        ]
    );
}

#[test]
fn snapshot_group_by_file() {
    let (snapshot, snapshot2) = create_snapshots();
    let tb_0 = traceback_filename("<unknown>");
    let tb_a = traceback_filename("a.py");
    let tb_b = traceback_filename("b.py");
    let tb_c = traceback_filename("c.py");

    assert_eq!(
        snapshot.statistics(KeyType::Filename, false).unwrap(),
        vec![stat(&tb_b, 66, 1), stat(&tb_a, 32, 4), stat(&tb_0, 7, 1)]
    );
    assert_eq!(
        snapshot2.statistics(KeyType::Filename, false).unwrap(),
        vec![stat(&tb_a, 5032, 5), stat(&tb_c, 400, 1)]
    );
    assert_eq!(
        snapshot2
            .compare_to(&snapshot, KeyType::Filename, false)
            .unwrap(),
        vec![
            diff(&tb_a, 5032, 5000, 5, 1),
            diff(&tb_c, 400, 400, 1, 1),
            diff(&tb_b, 0, -66, 0, -1),
            diff(&tb_0, 0, -7, 0, -1),
        ]
    );
}

#[test]
fn snapshot_group_by_traceback() {
    let (snapshot, snapshot2) = create_snapshots();
    let tb1 = traceback(&[("a.py", 2), ("b.py", 4)]);
    let tb2 = traceback(&[("a.py", 5), ("b.py", 4)]);
    let tb3 = traceback(&[("b.py", 1)]);
    let tb4 = traceback(&[("<unknown>", 0)]);
    assert_eq!(
        snapshot.statistics(KeyType::Traceback, false).unwrap(),
        vec![
            stat(&tb3, 66, 1),
            stat(&tb1, 30, 3),
            stat(&tb4, 7, 1),
            stat(&tb2, 2, 1)
        ]
    );
    let tb5 = traceback(&[("c.py", 578)]);
    assert_eq!(
        snapshot2.statistics(KeyType::Traceback, false).unwrap(),
        vec![stat(&tb2, 5002, 2), stat(&tb5, 400, 1), stat(&tb1, 30, 3)]
    );
    assert_eq!(
        snapshot2
            .compare_to(&snapshot, KeyType::Traceback, false)
            .unwrap(),
        vec![
            diff(&tb2, 5002, 5000, 2, 1),
            diff(&tb5, 400, 400, 1, 1),
            diff(&tb3, 0, -66, 0, -1),
            diff(&tb4, 0, -7, 0, -1),
            diff(&tb1, 30, 0, 3, 0),
        ]
    );
    assert!(matches!(
        snapshot.statistics(KeyType::Traceback, true),
        Err(TraceError::CumulativeTraceback)
    ));
}

#[test]
fn snapshot_group_by_cumulative() {
    let (snapshot, _) = create_snapshots();
    let tb_0 = traceback_filename("<unknown>");
    let tb_a = traceback_filename("a.py");
    let tb_b = traceback_filename("b.py");
    let tb_a_2 = traceback_lineno("a.py", 2);
    let tb_a_5 = traceback_lineno("a.py", 5);
    let tb_b_1 = traceback_lineno("b.py", 1);
    let tb_b_4 = traceback_lineno("b.py", 4);

    assert_eq!(
        snapshot.statistics(KeyType::Filename, true).unwrap(),
        vec![stat(&tb_b, 98, 5), stat(&tb_a, 32, 4), stat(&tb_0, 7, 1)]
    );
    assert_eq!(
        snapshot.statistics(KeyType::Lineno, true).unwrap(),
        vec![
            stat(&tb_b_1, 66, 1),
            stat(&tb_b_4, 32, 4),
            stat(&tb_a_2, 30, 3),
            stat(&tb_0, 7, 1),
            stat(&tb_a_5, 2, 1),
        ]
    );
}

#[test]
fn group_by_function() {
    let f = |func: &str, file: &str, line| Frame::with_function(func, file, line);
    let traces = vec![
        Trace::new(
            0,
            10,
            Traceback::new(vec![
                f("app::load", "src/load.rs", 3),
                f("app::main", "src/main.rs", 9),
            ]),
        ),
        Trace::new(
            0,
            30,
            Traceback::new(vec![
                f("app::load", "src/load.rs", 7),
                f("app::main", "src/main.rs", 9),
            ]),
        ),
        Trace::new(
            0,
            5,
            Traceback::new(vec![f("app::main", "src/main.rs", 11)]),
        ),
    ];
    let s = Snapshot::from_traces(traces, 2);
    let stats = s.statistics(KeyType::Function, false).unwrap();
    let shown: Vec<String> = stats.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        shown,
        [
            "app::load: size=40 B, count=2, average=20 B",
            "app::main: size=5 B, count=1, average=5 B"
        ]
    );
    let cumulative = s.statistics(KeyType::Function, true).unwrap();
    let shown: Vec<String> = cumulative.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        shown,
        [
            "app::main: size=45 B, count=3, average=15 B",
            "app::load: size=40 B, count=2, average=20 B"
        ]
    );
}

#[test]
fn trace_format() {
    let (snapshot, _) = create_snapshots();
    let trace = &snapshot.traces()[0];
    // Most recent frame (tracemalloc would print its oldest frame, b.py:4).
    assert_eq!(trace.to_string(), "a.py:2: 10 B");
    assert_eq!(trace.traceback.to_string(), "a.py:2");
    assert_eq!(trace.traceback.frames()[0].to_string(), "a.py:2");
    assert_eq!(trace.traceback.frames()[1].to_string(), "b.py:4");
}

#[test]
fn statistic_format() {
    let (snapshot, _) = create_snapshots();
    let stats = snapshot.statistics(KeyType::Lineno, false).unwrap();
    assert_eq!(
        stats[0].to_string(),
        "b.py:1: size=66 B, count=1, average=66 B"
    );
}

#[test]
fn statistic_diff_format() {
    let (snapshot, snapshot2) = create_snapshots();
    let stats = snapshot2
        .compare_to(&snapshot, KeyType::Lineno, false)
        .unwrap();
    assert_eq!(
        stats[0].to_string(),
        "a.py:5: size=5002 B (+5000 B), count=2 (+1), average=2501 B"
    );
    // A vanished entry has no average.
    assert_eq!(
        stats[2].to_string(),
        "b.py:1: size=0 B (-66 B), count=0 (-1)"
    );
}

#[test]
fn format_traceback() {
    let (snapshot, _) = create_snapshots();
    let tb = &snapshot.traces()[0].traceback;
    // No source lines: a.py and b.py do not exist (the Python test patches linecache).
    assert_eq!(
        tb.format(None, false),
        ["  File \"b.py\", line 4", "  File \"a.py\", line 2"]
    );
    assert_eq!(tb.format(Some(1), false), ["  File \"a.py\", line 2"]);
    assert_eq!(tb.format(Some(-1), false), ["  File \"b.py\", line 4"]);
    assert_eq!(
        tb.format(None, true),
        ["  File \"a.py\", line 2", "  File \"b.py\", line 4"]
    );
    assert_eq!(tb.format(Some(1), true), ["  File \"a.py\", line 2"]);
    assert_eq!(tb.format(Some(-1), true), ["  File \"b.py\", line 4"]);
    assert!(tb.format(Some(0), false).is_empty());
}

#[test]
fn format_traceback_reads_source_lines() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tracemalloc_port.rs");
    let line = line!();
    let tb = Traceback::new(vec![Frame::with_function("port::here", file, line)]);
    assert_eq!(
        tb.format(None, false),
        [
            format!("  File \"{file}\", line {line}, in port::here"),
            "    let line = line!();".to_string()
        ]
    );
}

#[test]
fn slices() {
    let (snapshot, _) = create_snapshots();
    assert_eq!(
        &snapshot.traces()[..2],
        &[snapshot.traces()[0].clone(), snapshot.traces()[1].clone()]
    );
    let tb = &snapshot.traces()[0].traceback;
    assert_eq!(
        &tb.frames()[..2],
        &[tb.frames()[0].clone(), tb.frames()[1].clone()]
    );
}

#[test]
fn total_nframe_is_kept_but_not_compared() {
    let a = Traceback::with_total(vec![Frame::new("a.py", 2)], 10);
    let b = Traceback::with_total(vec![Frame::new("a.py", 2)], 1);
    assert_eq!(a, b);
    assert_eq!(a.total_nframe, 10);
}

#[test]
fn filter_attributes() {
    let f = Filter::new(true, "abc");
    assert!(f.inclusive);
    assert_eq!(f.filename_pattern, "abc");
    assert_eq!(f.lineno, None);
    assert!(!f.all_frames);
    assert_eq!(f.domain, None);
    let f = Filter::new(false, "test.py").lineno(123).all_frames(true);
    assert!(!f.inclusive);
    assert_eq!(f.filename_pattern, "test.py");
    assert_eq!(f.lineno, Some(123));
    assert!(f.all_frames);
}

#[test]
fn filter_match() {
    // filter without line number
    let f = Filter::new(true, "abc");
    for l in [0, 5, 10] {
        assert!(f.match_frame("abc", l));
        assert!(!f.match_frame("12356", l));
    }
    let f = Filter::new(false, "abc");
    for l in [0, 5, 10] {
        assert!(!f.match_frame("abc", l));
        assert!(f.match_frame("12356", l));
    }
    // filter with line number > 0
    let f = Filter::new(true, "abc").lineno(5);
    assert!(!f.match_frame("abc", 0));
    assert!(f.match_frame("abc", 5));
    assert!(!f.match_frame("abc", 10));
    for l in [0, 5, 10] {
        assert!(!f.match_frame("12356", l));
    }
    let f = Filter::new(false, "abc").lineno(5);
    assert!(f.match_frame("abc", 0));
    assert!(!f.match_frame("abc", 5));
    assert!(f.match_frame("abc", 10));
    for l in [0, 5, 10] {
        assert!(f.match_frame("12356", l));
    }
    // filter with line number 0
    let f = Filter::new(true, "abc").lineno(0);
    assert!(f.match_frame("abc", 0));
    assert!(!f.match_frame("abc", 5));
    assert!(!f.match_frame("abc", 10));
    for l in [0, 5, 10] {
        assert!(!f.match_frame("12356", l));
    }
    let f = Filter::new(false, "abc").lineno(0);
    assert!(!f.match_frame("abc", 0));
    assert!(f.match_frame("abc", 5));
    assert!(f.match_frame("abc", 10));
    for l in [0, 5, 10] {
        assert!(f.match_frame("12356", l));
    }
}

#[test]
fn filter_match_filename() {
    let m = |inclusive, filename: &str, pattern: &str| {
        Filter::new(inclusive, pattern).match_frame(filename, 0)
    };
    assert!(m(true, "abc", "abc"));
    assert!(!m(true, "12356", "abc"));
    assert!(!m(true, "<unknown>", "abc"));
    assert!(!m(false, "abc", "abc"));
    assert!(m(false, "12356", "abc"));
    assert!(m(false, "<unknown>", "abc"));
}

#[test]
fn filter_match_filename_joker() {
    let m = |filename: &str, pattern: &str| Filter::new(true, pattern).match_frame(filename, 0);
    // empty string
    assert!(!m("abc", ""));
    assert!(!m("", "abc"));
    assert!(m("", ""));
    assert!(m("", "*"));
    // no *
    assert!(m("abc", "abc"));
    assert!(!m("abc", "abcd"));
    assert!(!m("abc", "def"));
    // a*
    assert!(m("abc", "a*"));
    assert!(m("abc", "abc*"));
    assert!(!m("abc", "b*"));
    assert!(!m("abc", "abcd*"));
    // a*b
    assert!(m("abc", "a*c"));
    assert!(m("abcdcx", "a*cx"));
    assert!(!m("abb", "a*c"));
    assert!(!m("abcdce", "a*cx"));
    // a*b*c
    assert!(m("abcde", "a*c*e"));
    assert!(m("abcbdefeg", "a*bd*eg"));
    assert!(!m("abcdd", "a*c*e"));
    assert!(!m("abcbdefef", "a*bd*eg"));
    // case sensitive
    assert!(!m("aBC", "ABc"));
    assert!(!m("aBcDe", "Ab*dE"));
    // no alternate separator
    assert!(!m("a/b", "a\\b"));
    assert!(!m("a\\b", "a/b"));
    assert!(!m("a/b\\c", "a\\b/c"));
    assert!(!m("a/b/c", "a\\b\\c"));
    assert!(!m("a.pyo", "a.py"));
    assert!(fnmatch("src/main.rs", "src/*.rs"));
}

#[test]
fn filter_match_trace() {
    let t1 = traceback(&[("a.py", 2), ("b.py", 3)]);
    let t2 = traceback(&[("b.py", 4), ("b.py", 5)]);
    let t3 = traceback(&[("c.py", 5), ("<unknown>", 0)]);
    let unknown = traceback(&[("<unknown>", 0)]);
    let check = |f: Filter, expected: [bool; 4]| {
        let got = [&t1, &t2, &t3, &unknown].map(|t| f.match_traceback(t));
        assert_eq!(got, expected, "{f:?}");
    };
    check(
        Filter::new(true, "b.py").all_frames(true),
        [true, true, false, false],
    );
    check(
        Filter::new(true, "b.py").all_frames(false),
        [false, true, false, false],
    );
    check(
        Filter::new(false, "b.py").all_frames(true),
        [false, false, true, true],
    );
    check(
        Filter::new(false, "b.py").all_frames(false),
        [true, false, true, true],
    );
    check(
        Filter::new(false, "<unknown>").all_frames(false),
        [true, true, true, false],
    );
    check(
        Filter::new(true, "<unknown>").all_frames(true),
        [false, false, true, true],
    );
    check(
        Filter::new(false, "<unknown>").all_frames(true),
        [true, true, false, false],
    );
}

#[test]
fn dump_load_round_trip() {
    let (snapshot, snapshot2) = create_snapshots();
    let dir = std::env::temp_dir().join(format!("tidemark-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in [snapshot, snapshot2].iter().enumerate() {
        let path = dir.join(format!("s{i}.json"));
        s.dump(&path).unwrap();
        let back = Snapshot::load(&path).unwrap();
        assert_eq!(&back, s);
        assert_eq!(raws(&back), raws(s), "total_nframe too");
        assert_eq!(back.traceback_limit(), 2);
    }
    // Wrong format, newer version, garbage: clear errors naming the file.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"format":"x","version":1,"traceback_limit":1,"frames":[],"tracebacks":[],"traces":[]}"#,
    )
    .unwrap();
    let e = Snapshot::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("format"), "{e}");
    std::fs::write(&bad, r#"{"format":"tidemark-snapshot","version":99,"traceback_limit":1,"frames":[],"tracebacks":[],"traces":[]}"#).unwrap();
    let e = Snapshot::load(&bad).unwrap_err().to_string();
    assert!(e.contains("version 99"), "{e}");
    std::fs::write(&bad, "not json").unwrap();
    assert!(matches!(
        Snapshot::load(&bad),
        Err(TraceError::Format { .. })
    ));
    std::fs::write(&bad, r#"{"format":"tidemark-snapshot","version":1,"traceback_limit":1,"frames":[],"tracebacks":[[[3],1]],"traces":[]}"#).unwrap();
    assert!(Snapshot::load(&bad)
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    assert!(matches!(
        Snapshot::load(dir.join("missing.json")),
        Err(TraceError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
