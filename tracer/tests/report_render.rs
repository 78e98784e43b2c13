//! Every report from one hand-built capture with known numbers: flamegraph HTML (escaping,
//! header, chart, top table, per thread, inverted), stats (text and JSON), summary, tree,
//! exports (folded, DHAT) and diff.

use tidemark_tracer::capture::builder::CaptureBuilder;
use tidemark_tracer::capture::format::*;
use tidemark_tracer::capture::CaptureReader;
use tidemark_tracer::report::{self, Analysis, AnalyzeOptions, Moment, Symbols};
use tidemark_tracer::symbolize::Frame;

const MAIN: u64 = 0x1000;
const PARSE: u64 = 0x2000;
const EVIL: u64 = 0x3000;
const CACHE: u64 = 0x4000;

fn symbols() -> Symbols {
    Symbols::with_resolver(|ip| {
        let name = match ip {
            MAIN => "main",
            PARSE => "parse",
            EVIL => "<script>alert(1)</script>",
            CACHE => "cache",
            _ => "?",
        };
        vec![Frame::with_function(name, "src/lib.rs", (ip >> 12) as u32)]
    })
}

fn ev(seq: u64, thread: u32, kind: EventKind) -> Event {
    Event { seq, thread, kind }
}
fn alloc(ptr: u64, size: u64, stack: u32) -> EventKind {
    EventKind::Alloc {
        ptr,
        size,
        api: 0,
        stack,
    }
}
fn free(ptr: u64) -> EventKind {
    EventKind::Free { ptr, api: 0 }
}

/// Stacks: 1 = main, 2 = main→parse, 3 = main→evil, 4 = main→cache.
/// Thread 0: parse 3 x 100 (seq 0-2), cache 1000 (3); thread 1: evil 50 (4);
/// sample; thread 0 frees the parse blocks (5-7); evil block freed (8).
/// Peak = 1350 (parse 300, cache 1000, evil 50); leaks = cache 1000.
fn capture(cache_size: u64) -> Vec<u8> {
    let mut b = CaptureBuilder::new(&Meta {
        command: "demo <arg>".into(),
        pid: 7,
        ..Meta::default()
    });
    b.stacks(1, &[(MAIN, 0), (PARSE, 1), (EVIL, 1), (CACHE, 1)]);
    b.threads(&[
        ThreadRecord {
            index: 0,
            os_tid: 70,
            name: "main".into(),
        },
        ThreadRecord {
            index: 1,
            os_tid: 71,
            name: "worker".into(),
        },
    ]);
    b.events(
        0,
        &[
            ev(0, 0, alloc(0x100, 100, 2)),
            ev(1, 0, alloc(0x200, 100, 2)),
            ev(2, 0, alloc(0x300, 100, 2)),
            ev(3, 0, alloc(0x400, cache_size, 4)),
        ],
    );
    b.events(1, &[ev(4, 1, alloc(0x500, 50, 3))]);
    b.sample(Sample {
        time_ns: 10_000_000,
        seq: 5,
        rss: 4 << 20,
        heap: 0,
    });
    b.events(
        0,
        &[
            ev(5, 0, free(0x100)),
            ev(6, 0, free(0x200)),
            ev(7, 0, free(0x300)),
        ],
    );
    b.events(1, &[ev(8, 1, free(0x500))]);
    b.sample(Sample {
        time_ns: 20_000_000,
        seq: 9,
        rss: 5 << 20,
        heap: 0,
    });
    b.end(EndRecord {
        time_ns: 25_000_000,
        events: 9,
        dropped: 0,
    });
    b.bytes().to_vec()
}

fn analysis(cache_size: u64) -> Analysis {
    let bytes = capture(cache_size);
    let r = CaptureReader::new(bytes.as_slice(), "known.tdm").unwrap();
    report::analysis::analyze_reader(r, &AnalyzeOptions::default()).unwrap()
}

#[test]
fn flamegraph_html() {
    let a = analysis(1000);
    assert_eq!((a.peak_bytes, a.leaked_bytes), (1350, 1000));
    let mut syms = symbols();
    let mut out = Vec::new();
    report::flamegraph::write_html(&a, &mut syms, &Default::default(), &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    // Self-contained: no network references.
    assert!(!html.contains("https://"), "no network");
    assert!(!html.contains("<script>alert"), "symbol names are escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; at src/lib.rs:3"));
    assert!(
        html.contains("demo &lt;arg&gt;"),
        "command escaped in the header"
    );
    assert!(
        html.contains("1.3 KiB at 0.0 ms") || html.contains("1.3 KiB at"),
        "peak in header"
    );
    assert!(html.contains("high-water mark"));
    assert!(html.contains("<polyline"), "memory chart");
    assert!(
        html.contains("data:image/svg+xml;base64,"),
        "embedded flamegraph"
    );
    // The top table, biggest first: cache 1000, parse 300, evil 50.
    let cache = html
        .find("<summary>cache at src/lib.rs:4</summary>")
        .unwrap();
    let parse = html
        .find("<summary>parse at src/lib.rs:2</summary>")
        .unwrap();
    let evil = html.find("<summary>&lt;script&gt;").unwrap();
    assert!(cache < parse && parse < evil);
    // The embedded SVG is inferno's, with the frames and escaped names.
    let b64 = html
        .split("base64,")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let svg = String::from_utf8(decode_base64(b64)).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.contains("parse at src/lib.rs:2"));
    assert!(!svg.contains("<script>alert"), "escaped inside the SVG too");

    // Per thread: one graph each; leaks: only the cache.
    let mut out = Vec::new();
    let opts = report::flamegraph::Options {
        per_thread: true,
        ..Default::default()
    };
    report::flamegraph::write_html(&a, &mut syms, &opts, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    assert_eq!(html.matches("<iframe").count(), 2);
    assert!(html.contains("worker (tid 71)"));
    let folded = report::flamegraph::folded_stacks(&a, &mut syms, Moment::End, false, None);
    assert_eq!(
        folded,
        vec![(
            "main at src/lib.rs:1;cache at src/lib.rs:4".to_string(),
            1000
        )]
    );
    let inverted = report::flamegraph::folded_stacks(&a, &mut syms, Moment::Peak, true, Some(0));
    assert_eq!(
        inverted,
        vec![
            (
                "cache at src/lib.rs:4;main at src/lib.rs:1".to_string(),
                1000
            ),
            (
                "parse at src/lib.rs:2;main at src/lib.rs:1".to_string(),
                300
            )
        ]
    );
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (val(c) as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn stats_text_and_json() {
    let a = analysis(1000);
    let mut syms = symbols();
    let text = report::stats::render_text(&a, &mut syms, &Default::default());
    assert!(text.contains("Total allocations:\n\t5\n"), "{text}");
    assert!(text.contains("1.3 KiB"), "{text}");
    assert!(
        text.contains("- cache at src/lib.rs:4 -> 1000 B in 1 allocation"),
        "{text}"
    );
    let j = report::stats::render_json(&a, &mut syms, &Default::default());
    assert_eq!(j["total_allocations"], 5);
    assert_eq!(j["total_bytes"], 1350);
    assert_eq!(j["peak_bytes"], 1350);
    assert_eq!(j["leaked_bytes"], 1000);
    assert_eq!(j["leaked_blocks"], 1);
    assert_eq!(j["top_by_count"][0]["location"], "parse at src/lib.rs:2");
    assert_eq!(j["top_by_count"][0]["count"], 3);
    // 50, 100 x3, 1000: buckets [32,63], [64,127], [512,1023].
    let h = j["size_histogram"].as_array().unwrap();
    let counts: Vec<(u64, u64)> = h
        .iter()
        .map(|b| (b["min"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, vec![(32, 1), (64, 3), (512, 1)]);
    // The worker's block is freed by the worker's very next event: temporary (per thread).
    // The main thread's parse blocks are not (the cache allocation comes in between).
    assert_eq!(j["temporary_allocations"], 1);
}

#[test]
fn summary_tree_exports() {
    let a = analysis(1000);
    let mut syms = symbols();
    let rows = report::summary::rows(&a, &mut syms, &Default::default());
    assert_eq!(rows[0].function, "main at src/lib.rs");
    assert_eq!((rows[0].total_bytes, rows[0].own_bytes), (1350, 0));
    let cache = rows
        .iter()
        .find(|r| r.function.starts_with("cache"))
        .unwrap();
    assert_eq!(
        (cache.own_bytes, cache.own_count, cache.total_bytes),
        (1000, 1, 1000)
    );
    // One row per function: two lines of `parse` (where the cache block is allocated too) are
    // one row with both totals.
    let mut same_function = Symbols::with_resolver(|ip| {
        let (name, line) = match ip {
            MAIN => ("main", 1),
            PARSE => ("parse", 2),
            CACHE => ("parse", 9),
            _ => ("evil", 3),
        };
        vec![Frame::with_function(name, "src/lib.rs", line)]
    });
    let rows = report::summary::rows(&a, &mut same_function, &Default::default());
    let parse: Vec<_> = rows
        .iter()
        .filter(|r| r.function.starts_with("parse"))
        .collect();
    assert_eq!(parse.len(), 1, "{rows:?}");
    assert_eq!(
        (
            parse[0].function.as_str(),
            parse[0].own_bytes,
            parse[0].own_count
        ),
        ("parse at src/lib.rs", 1300, 4)
    );

    let tree = report::tree::render_text(&a, &mut syms, &Default::default());
    let lines: Vec<&str> = tree.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("1.3 KiB (5 blocks) 100.00 % main at src/lib.rs:1")),
        "{tree}"
    );
    let cache_line = lines.iter().position(|l| l.contains("cache at")).unwrap();
    let parse_line = lines.iter().position(|l| l.contains("parse at")).unwrap();
    assert!(cache_line < parse_line, "biggest first:\n{tree}");

    let folded = report::export::folded(&a, &mut syms, &Default::default());
    assert_eq!(
        folded,
        "main at src/lib.rs:1;&lt;script&gt;alert(1)&lt;/script&gt; at src/lib.rs:3 50\n"
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            + "main at src/lib.rs:1;cache at src/lib.rs:4 1000\nmain at src/lib.rs:1;parse at src/lib.rs:2 300\n"
    );
    let bytes = capture(1000);
    let r = CaptureReader::new(bytes.as_slice(), "known.tdm").unwrap();
    let dhat = report::export::dhat(&a, &mut syms, r).unwrap();
    assert_eq!(dhat["dhatFileVersion"], 2);
    assert_eq!(dhat["mode"], "rust-heap");
    let pps = dhat["pps"].as_array().unwrap();
    let total: u64 = pps.iter().map(|p| p["tb"].as_u64().unwrap()).sum();
    assert_eq!(total, 1350);
    let gb: u64 = pps.iter().map(|p| p["gb"].as_u64().unwrap()).sum();
    assert_eq!(gb, 1350);
    let eb: u64 = pps.iter().map(|p| p["eb"].as_u64().unwrap()).sum();
    assert_eq!(eb, 1000);
    // Lifetimes, dated by the samples: the three parse blocks and the evil one were allocated
    // before the 10 ms sample and freed after it (10 ms each); the cache block lives from the
    // start to the end (25 ms).
    let tl = |tb: u64| {
        let p = pps.iter().find(|p| p["tb"] == tb).unwrap();
        p["tl"].as_u64().unwrap()
    };
    assert_eq!((tl(300), tl(50), tl(1000)), (30_000, 10_000, 25_000));
    let ftbl = dhat["ftbl"].as_array().unwrap();
    assert_eq!(ftbl[0], "[root]");
    // dh_view parses frames as `0xADDR: function (file:line:col)`.
    assert!(ftbl[1..].iter().all(|f| {
        let f = f.as_str().unwrap();
        f.starts_with("0x") && f.contains(": ") && f.ends_with(":0)")
    }));
}

#[test]
fn diff_of_two_captures() {
    let old = analysis(1000);
    let new = analysis(4000);
    let old = report::diff::Profile::from_analysis(&old, &mut symbols(), Moment::Peak);
    let new = report::diff::Profile::from_analysis(&new, &mut symbols(), Moment::Peak);
    let line = |s: &str, bytes, blocks| (s.to_string(), bytes, blocks);
    assert_eq!(
        new.lines(),
        [
            line(
                "main at src/lib.rs:1;<script>alert(1)</script> at src/lib.rs:3",
                50,
                1
            ),
            line("main at src/lib.rs:1;cache at src/lib.rs:4", 4000, 1),
            line("main at src/lib.rs:1;parse at src/lib.rs:2", 300, 3),
        ]
    );
    assert_eq!(new.total_bytes(), 4350);
    let changes = report::diff::compare(&old, &new);
    assert_eq!(changes[0].site, "cache at src/lib.rs:4");
    assert_eq!(
        (changes[0].size, changes[0].size_diff, changes[0].count_diff),
        (4000, 3000, 0)
    );
    assert_eq!(changes[1].size_diff, 0);
    // One row shown of three, then what is left out and every site's total.
    let table = report::diff::render_table(&changes, 1);
    assert_eq!(
        table,
        "cache at src/lib.rs:4: size=3.9 KiB (+2.9 KiB), count=1 (+0)\n\
         ... and 2 more\n\
         total: size=4.2 KiB (+2.9 KiB), count=5 (+0)\n"
    );
    assert!(report::diff::render_table(&changes, 3)
        .ends_with("count=1 (+0)\ntotal: size=4.2 KiB (+2.9 KiB), count=5 (+0)\n"));
    let mut html = Vec::new();
    report::diff::write_html(&old, &new, &Default::default(), &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("+2.9 KiB"));
    assert!(html.contains("data:image/svg+xml;base64,"));
    assert!(!html.contains("<script>alert"));
}

#[test]
fn temporal_window_and_aggregate_capture() {
    // Window [15 ms, ...): opens at the second sample, after the frees: its peak is what was
    // live then (cache 1000) since nothing is allocated later.
    let bytes = capture(1000);
    let r = CaptureReader::new(bytes.as_slice(), "known.tdm").unwrap();
    let a = report::analysis::analyze_reader(
        r,
        &AnalyzeOptions {
            window_ns: Some((15_000_000, u64::MAX)),
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(a.peak_bytes, 1000);
    assert_eq!(a.peak_of(None), (1000, 1));
    // Every report says which peak it shows.
    let mut syms = symbols();
    let stats = report::stats::render_text(&a, &mut syms, &Default::default());
    assert!(
        stats.contains(
            "📈 Peak memory usage (high-water mark after 20.0 ms, the window 15.0 ms.. moved to the \
             memory samples):\n\t1000 B at 20.0 ms\n\t(only \
             the peak is the window's: the totals, leaks and sites are the whole run's)\n"
        ),
        "{stats}"
    );
    let json = report::stats::render_json(&a, &mut syms, &Default::default());
    assert_eq!(
        json["peak_window_ns"],
        serde_json::json!([15_000_000, u64::MAX])
    );
    let summary = report::summary::render_text(&a, &mut syms, &Default::default());
    assert!(
        summary.starts_with(
            "Memory by function at the high-water mark after 20.0 ms, the window 15.0 ms.. \
             moved to the memory samples (1000 B)\n"
        ),
        "{summary}"
    );
    let tree = report::tree::render_text(&a, &mut syms, &Default::default());
    assert!(
        tree.starts_with(
            "Allocation paths at the high-water mark after 20.0 ms, the window 15.0 ms.. moved \
             to the memory samples\n"
        ),
        "{tree}"
    );

    // An aggregate capture carries per-site numbers only.
    let mut b = CaptureBuilder::new(&Meta {
        aggregate: true,
        ..Meta::default()
    });
    b.stacks(1, &[(MAIN, 0), (CACHE, 1)]);
    b.sample(Sample {
        time_ns: 10,
        seq: 0,
        rss: 100,
        heap: 77,
    });
    b.aggregate(&AggregateRecord {
        peak_bytes: 500,
        peak_time_ns: 10,
        total_allocs: 9,
        total_bytes: 900,
        total_frees: 8,
        entries: vec![AggregateEntry {
            stack: 2,
            thread: 0,
            peak_bytes: 500,
            peak_count: 2,
            end_bytes: 100,
            end_count: 1,
            total_bytes: 900,
            total_count: 9,
        }],
    });
    b.end(EndRecord::default());
    let r = CaptureReader::new(b.bytes(), "agg.tdm").unwrap();
    let g = report::analysis::analyze_reader(r, &AnalyzeOptions::default()).unwrap();
    assert_eq!(
        (g.peak_bytes, g.leaked_bytes, g.totals.allocs),
        (500, 100, 9)
    );
    assert_eq!(g.timeline[0].heap, 77);
    let mut syms = symbols();
    let f = report::flamegraph::folded_stacks(&g, &mut syms, Moment::Peak, false, None);
    assert_eq!(
        f,
        vec![(
            "main at src/lib.rs:1;cache at src/lib.rs:4".to_string(),
            500
        )]
    );
    // What it does not keep is null in the JSON stats, not zero.
    let j = report::stats::render_json(&g, &mut syms, &Default::default());
    for unknown in [
        "reallocs",
        "unmatched_frees",
        "temporary_allocations",
        "api",
        "size_histogram",
    ] {
        assert!(j[unknown].is_null(), "{unknown}: {}", j[unknown]);
    }
    assert_eq!(
        (j["total_allocations"].as_u64(), j["frees"].as_u64()),
        (Some(9), Some(8))
    );
}

/// The flamegraph hands inferno only what it draws: a site below inferno's `min_width`
/// (0.01 % of the total: 10 of these 100 000 bytes) is cut, its bytes stay in its parent,
/// and inferno's SVG is byte for byte the one it draws from every stack.
#[test]
fn flamegraph_prunes_frames_too_narrow_to_draw() {
    let folded: Vec<(String, u64)> = [
        ("main;parse;lex", 60_000),
        // `tiny` is 5 + 3 = 8 bytes wide: not drawn, nor is `deeper`.
        ("main;parse;tiny", 5),
        ("main;parse;tiny;deeper", 3),
        // Below the threshold on its own, one frame under `main`.
        ("main;wee", 2),
        ("main;cache", 39_990),
    ]
    .iter()
    .map(|&(s, n)| (s.to_string(), n))
    .collect();
    let drawn = report::flamegraph::drawn_stacks(&folded);
    let expect: Vec<(String, u64)> = [
        ("main;cache", 39_990),
        ("main;parse;lex", 60_000),
        // One line for the whole undrawn `tiny` frame: `parse` stays 60 008 wide.
        ("main;parse;tiny", 8),
        ("main;wee", 2),
    ]
    .iter()
    .map(|&(s, n)| (s.to_string(), n))
    .collect();
    assert_eq!(drawn, expect);

    let render = |stacks: &[(String, u64)]| {
        let lines: Vec<String> = stacks.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let mut opt = inferno::flamegraph::Options::default();
        opt.deterministic = true;
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut opt, lines.iter().map(|l| l.as_str()), &mut svg)
            .unwrap();
        String::from_utf8(svg).unwrap()
    };
    let all = render(&folded);
    // (assert! rather than assert_eq!: a failure would print two whole SVGs.)
    assert!(
        render(&drawn) == all,
        "inferno draws the same from fewer lines"
    );
    let titles: Vec<&str> = all
        .split("<title>")
        .skip(1)
        .filter_map(|t| t.split("</title>").next())
        .collect();
    assert_eq!(
        titles,
        [
            "cache (39,990 samples, 39.99%)",
            "lex (60,000 samples, 60.00%)",
            "parse (60,008 samples, 60.01%)",
            "all (100,000 samples, 100%)",
            "main (100,000 samples, 100.00%)",
        ]
    );
    // The report's own SVG is rendered from the pruned stacks too.
    let svg = String::from_utf8(report::flamegraph::svg(&folded, "t", "s").unwrap()).unwrap();
    assert!(svg.contains("parse (60,008 bytes, 60.01%)"), "{svg}");
    assert!(!svg.contains("tiny") && !svg.contains("wee"));

    // A name that is another name plus a character sorting before `;` (here `f(`): cutting
    // `r;f;t` to `r;f` would sort it before `r;f(;k`, and inferno would move the frames.
    // Such stacks are handed over whole.
    let tricky: Vec<(String, u64)> = vec![("r;f(;k".into(), 100_000), ("r;f;t".into(), 1)];
    assert_eq!(report::flamegraph::drawn_stacks(&tricky), tricky);
    assert!(render(&report::flamegraph::drawn_stacks(&tricky)) == render(&tricky));
}

/// Blocks of zero bytes (`malloc(0)`) are blocks: the tree counts them, as stats and the
/// flamegraph do.
#[test]
fn tree_counts_zero_byte_blocks() {
    let mut b = CaptureBuilder::new(&Meta::default());
    b.stacks(1, &[(MAIN, 0), (CACHE, 1)]);
    b.events(
        0,
        &[
            ev(0, 0, alloc(0x100, 0, 2)),
            ev(1, 0, alloc(0x200, 0, 2)),
            ev(2, 0, alloc(0x300, 0, 2)),
        ],
    );
    b.end(EndRecord::default());
    let r = CaptureReader::new(b.bytes(), "zero.tdm").unwrap();
    let a = report::analysis::analyze_reader(r, &AnalyzeOptions::default()).unwrap();
    assert_eq!((a.leaked_bytes, a.leaked_count), (0, 3));
    let opts = report::tree::Options {
        moment: Moment::End,
        ..Default::default()
    };
    let tree = report::tree::render_text(&a, &mut symbols(), &opts);
    assert_eq!(
        tree,
        "Allocation paths of leaked memory\n\n\
         📂 0 B (3 blocks) 100.00 % <all>\n\
         └── 0 B (3 blocks) 0.00 % main at src/lib.rs:1\n\
         \x20   └── 0 B (3 blocks) 0.00 % cache at src/lib.rs:4\n"
    );
}

/// A window open at both ends (`--temporal ..`, `0..`) is the whole run; open at one end, it
/// says so, never naming u64::MAX ns as a time.
#[test]
fn open_windows_read_as_open() {
    let peak_line = |window_ns| {
        let bytes = capture(1000);
        let r = CaptureReader::new(bytes.as_slice(), "known.tdm").unwrap();
        let a = report::analysis::analyze_reader(
            r,
            &AnalyzeOptions {
                window_ns: Some(window_ns),
                progress: None,
            },
        )
        .unwrap();
        let stats = report::stats::render_text(&a, &mut symbols(), &Default::default());
        stats.lines().skip(4).take(3).collect::<Vec<_>>().join("\n")
    };
    // The whole run's peak, with no "only the peak is the window's" note.
    assert_eq!(
        peak_line((0, u64::MAX)),
        "📈 Peak memory usage (high-water mark):\n\t1.3 KiB at 10.0 ms\n💧 Leaked (live at exit):"
    );
    assert_eq!(
        peak_line((10_000_000, u64::MAX)),
        "📈 Peak memory usage (high-water mark after 10.0 ms):\n\t1.3 KiB at 10.0 ms\n\t(only \
         the peak is the window's: the totals, leaks and sites are the whole run's)"
    );
}

/// Events are dated by the memory samples (every 10 ms), so a `--temporal` window's ends move
/// to the samples at or after them; every report names the window its peak was taken in, and
/// the peak's date is inside it.
#[test]
fn a_window_is_named_as_the_samples_bound_it() {
    // 100 B live at the 10 ms sample, then 5000 B more allocated and freed before the 20 ms
    // one: the window 5..15 ms opens at 10 ms and takes in the events up to 20 ms.
    let mut b = CaptureBuilder::new(&Meta::default());
    b.stacks(1, &[(MAIN, 0), (CACHE, 1)]);
    b.events(0, &[ev(0, 0, alloc(0x100, 100, 1))]);
    b.sample(Sample {
        time_ns: 10_000_000,
        seq: 1,
        rss: 0,
        heap: 0,
    });
    b.events(0, &[ev(1, 0, alloc(0x200, 5000, 2)), ev(2, 0, free(0x200))]);
    b.sample(Sample {
        time_ns: 20_000_000,
        seq: 3,
        rss: 0,
        heap: 0,
    });
    b.end(EndRecord {
        time_ns: 25_000_000,
        events: 3,
        dropped: 0,
    });
    let r = CaptureReader::new(b.bytes(), "window.tdm").unwrap();
    let a = report::analysis::analyze_reader(
        r,
        &AnalyzeOptions {
            window_ns: Some((5_000_000, 15_000_000)),
            progress: None,
        },
    )
    .unwrap();
    assert_eq!((a.peak_bytes, a.peak_time_ns), (5100, 20_000_000));
    assert_eq!(a.peak_window_ns, Some((10_000_000, 20_000_000)));
    let moment = "the high-water mark between 10.0 ms and 20.0 ms, the window 5.0 ms..15.0 ms \
                  moved to the memory samples";
    let mut syms = symbols();
    let stats = report::stats::render_text(&a, &mut syms, &Default::default());
    assert!(
        stats.contains(&format!(
            "📈 Peak memory usage ({}):\n\t5.0 KiB at 20.0 ms\n",
            &moment[4..]
        )),
        "{stats}"
    );
    let json = report::stats::render_json(&a, &mut syms, &Default::default());
    assert_eq!(
        json["peak_window_sampled_ns"],
        serde_json::json!([10_000_000, 20_000_000])
    );
    let summary = report::summary::render_text(&a, &mut syms, &Default::default());
    assert!(
        summary.starts_with(&format!("Memory by function at {moment} (5.0 KiB)\n")),
        "{summary}"
    );
    let tree = report::tree::render_text(&a, &mut syms, &Default::default());
    assert!(
        tree.starts_with(&format!("Allocation paths at {moment}\n")),
        "{tree}"
    );
    let mut html = Vec::new();
    report::flamegraph::write_html(&a, &mut syms, &Default::default(), &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains(&format!("<title>tidemark: memory live at {moment}</title>")),
        "{html}"
    );
}

/// Stacks that symbolize to one program point are one DHAT entry: its maximum is the most the
/// point had live at once, not the sum of its stacks' maxima (two calls on one line, each
/// with 1000 bytes live in turn, never had 2000 live).
#[test]
fn dhat_maxima_of_merged_stacks() {
    // Stacks 2 (main→parse) and 3 (main→cache) name the same line; thread 1 uses stack 2
    // too. Live at once, at most: 1000 + 10 bytes of stack 3 (2 blocks).
    let mut b = CaptureBuilder::new(&Meta::default());
    b.stacks(1, &[(MAIN, 0), (PARSE, 1), (CACHE, 1)]);
    b.events(
        0,
        &[
            ev(0, 0, alloc(0x100, 1000, 2)),
            ev(1, 0, free(0x100)),
            ev(2, 0, alloc(0x200, 1000, 3)),
            ev(3, 0, alloc(0x300, 10, 3)),
            ev(4, 0, free(0x200)),
            ev(5, 0, free(0x300)),
        ],
    );
    b.events(1, &[ev(6, 1, alloc(0x400, 500, 2)), ev(7, 1, free(0x400))]);
    b.end(EndRecord::default());
    let bytes = b.bytes().to_vec();
    let read = || CaptureReader::new(bytes.as_slice(), "sameline.tdm").unwrap();
    let a = report::analysis::analyze_reader(read(), &AnalyzeOptions::default()).unwrap();
    let mut syms = Symbols::with_resolver(|ip| {
        let (name, line) = if ip == MAIN {
            ("main", 1)
        } else {
            ("parse", 2)
        };
        vec![Frame::with_function(name, "src/lib.rs", line)]
    });
    let dhat = report::export::dhat(&a, &mut syms, read()).unwrap();
    let pps = dhat["pps"].as_array().unwrap();
    assert_eq!(pps.len(), 1, "{dhat}");
    let field = |name: &str| pps[0][name].as_u64().unwrap();
    assert_eq!(
        (field("tb"), field("tbk"), field("mb"), field("mbk")),
        (2510, 4, 1010, 2)
    );
}
