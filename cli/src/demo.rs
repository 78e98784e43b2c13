//! `tidemark demo`: a small allocation-heavy program recorded by the tracer, with a leak, a
//! clear peak and several threads; then its flamegraph and stats.
//!
//! The binary's global allocator is `Traced<Pymalloc>`, so every allocation below is
//! recorded with its stack while the recording runs.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use tidemark_tracer::capture::{self, RecordOptions};
use tidemark_tracer::report::{self, AnalyzeOptions, Symbols};

pub fn run(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let capture_path = dir.join("tidemark-demo.tdm");
    let html_path = dir.join("tidemark-demo.flamegraph.html");
    let guard =
        capture::record(&capture_path, RecordOptions::default()).map_err(|e| e.to_string())?;
    workload();
    let summary = guard.stop().map_err(|e| e.to_string())?;
    let analysis =
        report::analyze(&capture_path, &AnalyzeOptions::default()).map_err(|e| e.to_string())?;
    let mut syms = Symbols::new(&analysis);
    let mut html = Vec::new();
    report::flamegraph::write_html(&analysis, &mut syms, &Default::default(), &mut html)
        .map_err(|e| e.to_string())?;
    std::fs::write(&html_path, html)
        .map_err(|e| format!("{}: cannot write: {e}", html_path.display()))?;
    let mut text = format!(
        "Recorded {} events into {} ({}).\nFlamegraph of the high-water mark: {}\n\n",
        summary.events,
        capture_path.display(),
        report::text::bytes(summary.bytes_written),
        html_path.display()
    );
    text.push_str(&report::stats::render_text(
        &analysis,
        &mut syms,
        &report::stats::Options {
            top: 5,
            leaks: false,
        },
    ));
    text.push_str(&format!(
        "\nNext: tidemark tree {0}   tidemark flamegraph --leaks {0}\n",
        capture_path.display()
    ));
    crate::print_out(&text)
}

#[inline(never)]
fn workload() {
    load_plugins();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("parser-{i}"))
                .spawn(move || parse_records(i, 20_000))
                .expect("spawn a demo thread")
        })
        .collect();
    let parsed: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    black_box(parsed);
    build_index();
    std::thread::sleep(Duration::from_millis(30));
    render_page();
}

/// Leaks: a registry that is never freed (about 1 MiB).
#[inline(never)]
fn load_plugins() {
    let registry: Vec<String> = (0..2000)
        .map(|i| format!("plugin-{i:04}-{}", "x".repeat(500)))
        .collect();
    Box::leak(Box::new(registry));
}

/// Each worker thread: many short-lived strings, a few kept until the thread ends.
#[inline(never)]
fn parse_records(worker: usize, n: usize) -> usize {
    let mut kept = Vec::new();
    let mut total = 0;
    for i in 0..n {
        let line = format!("{worker},{i},name-{i},{}", i * 7);
        let fields: Vec<&str> = line.split(',').collect();
        total += fields.len();
        if i % 10 == 0 {
            kept.push(line.into_bytes());
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    total + kept.len()
}

/// The peak: a large index built and dropped (about 16 MiB at once).
#[inline(never)]
fn build_index() {
    let mut index: HashMap<u64, Vec<u8>> = HashMap::new();
    for key in 0..50_000u64 {
        index.insert(key, vec![(key % 251) as u8; 256]);
    }
    std::thread::sleep(Duration::from_millis(50));
    black_box(&index);
}

/// Temporary allocations after the peak.
#[inline(never)]
fn render_page() {
    let mut page = String::new();
    for i in 0..10_000 {
        let row = format!("<tr><td>{i}</td></tr>");
        page.push_str(&row);
    }
    black_box(page.len());
}
