//! The flamegraph HTML in a real browser (headless Chromium, Debian's `chromium` package):
//! it loads from disk with no console errors, a symbol named `<script>alert(1)</script>`
//! shows as text, and a screenshot is kept as an artifact (`target*/tidemark-report.png`).
//! Skipped, with a note, when Chromium is not installed.

use std::process::Command;
use tidemark_tracer::capture::builder::CaptureBuilder;
use tidemark_tracer::capture::format::*;
use tidemark_tracer::capture::CaptureReader;
use tidemark_tracer::report::{self, AnalyzeOptions, Symbols};
use tidemark_tracer::symbolize::Frame;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
}

#[test]
fn flamegraph_html_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("note: chromium not installed; browser check skipped");
        return;
    };
    let mut b = CaptureBuilder::new(&Meta {
        command: "browser-test".into(),
        ..Meta::default()
    });
    b.stacks(1, &[(0x1000, 0), (0x2000, 1), (0x3000, 1)]);
    let ev = |seq, ptr, size, stack| Event {
        seq,
        thread: 0,
        kind: EventKind::Alloc {
            ptr,
            size,
            api: 0,
            stack,
        },
    };
    b.events(0, &[ev(0, 0x10, 4000, 2), ev(1, 0x20, 6000, 3)]);
    b.sample(Sample {
        time_ns: 10_000_000,
        seq: 2,
        rss: 1 << 20,
        heap: 0,
    });
    b.end(EndRecord {
        time_ns: 20_000_000,
        events: 2,
        dropped: 0,
    });
    let r = CaptureReader::new(b.bytes(), "browser.tdm").unwrap();
    let a = report::analysis::analyze_reader(r, &AnalyzeOptions::default()).unwrap();
    let mut syms = Symbols::with_resolver(|ip| {
        let name = match ip {
            0x1000 => "main",
            0x2000 => "<script>alert(1)</script>",
            _ => "known_function",
        };
        vec![Frame::with_function(name, "src/main.rs", 7)]
    });
    let mut html = Vec::new();
    report::flamegraph::write_html(&a, &mut syms, &Default::default(), &mut html).unwrap();
    let dir = std::env::temp_dir().join(format!("tidemark-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
    ];

    let dom = Command::new(browser)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("&lt;script&gt;alert(1)&lt;/script&gt; at src/main.rs:7"),
        "shown as text"
    );
    assert!(!dom_text.contains("<script>alert"), "never as markup");
    assert!(
        dom_text.contains("<iframe class=\"flamegraph\""),
        "the flamegraph frame is present"
    );
    assert!(dom_text.contains("high-water mark"));
    let log = String::from_utf8_lossy(&dom.stderr);
    for line in log.lines() {
        assert!(
            !line.contains("Uncaught") && !line.contains(":CONSOLE"),
            "console error: {line}"
        );
    }

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("tidemark-report.png");
    let out = Command::new(browser)
        .args(common)
        .arg("--window-size=1300,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot at {}",
        shot.display()
    );
    std::fs::remove_dir_all(&dir).ok();
}
