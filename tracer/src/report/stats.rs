//! The stats report: totals, peak, leaks, size histogram, API mix, temporary allocations,
//! and the top sites by bytes and by count (over the whole run, or, with `leaks`, of the
//! memory live at exit), as text or JSON.

use super::analysis::Analysis;
use super::replay::IntMap;
use super::symbols::Symbols;
use super::text;
use super::Moment;
use serde_json::{json, Value};
use std::fmt::Write;

/// Stats options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rows in each top-N list.
    pub top: usize,
    /// Rank the sites by what they left live at exit (the leaks), not by all they allocated.
    pub leaks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            top: 10,
            leaks: false,
        }
    }
}

/// Names of the API codes recorded in events.
pub const API_NAMES: [&str; 4] = ["rust (GlobalAlloc)", "C malloc family", "realloc", "other"];

/// Per allocation site (most recent frame): (location, bytes, count) of everything it
/// allocated over the run, or (`leaks`) of what it left live at exit; sites with none left
/// out.
fn site_totals(a: &Analysis, syms: &mut Symbols, leaks: bool) -> Vec<(String, u64, u64)> {
    let mut by: IntMap<u32, (u64, u64)> = IntMap::default();
    for s in &a.sites {
        let (bytes, count) = if leaks {
            Moment::End.value(s)
        } else {
            (s.total_bytes, s.total_count)
        };
        if count == 0 {
            continue;
        }
        let e = by.entry(syms.location_id(a, s.stack)).or_default();
        e.0 += bytes;
        e.1 += count;
    }
    by.into_iter()
        .map(|(l, (b, c))| (syms.label_text(l).to_string(), b, c))
        .collect()
}

fn top_by(mut v: Vec<(String, u64, u64)>, n: usize, by_count: bool) -> Vec<(String, u64, u64)> {
    v.sort_by(|x, y| {
        let (kx, ky) = if by_count { (x.2, y.2) } else { (x.1, y.1) };
        ky.cmp(&kx).then(x.0.cmp(&y.0))
    });
    v.truncate(n);
    v
}

/// Histogram buckets with at least one allocation: (lower bound, upper bound, count, bytes).
pub fn histogram(a: &Analysis) -> Vec<(u64, u64, u64, u64)> {
    a.totals
        .size_histogram
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| *c > 0)
        .map(|(b, &(c, bytes))| {
            let lo = if b == 0 { 0 } else { 1u64 << (b - 1) };
            let hi = if b == 0 {
                0
            } else {
                (1u128 << b).min(u64::MAX as u128) as u64 - 1
            };
            (lo, hi, c, bytes)
        })
        .collect()
}

/// The text report.
pub fn render_text(a: &Analysis, syms: &mut Symbols, opts: &Options) -> String {
    let mut o = String::new();
    let t = &a.totals;
    let _ = writeln!(o, "📏 Total allocations:\n\t{}", text::count(t.allocs));
    let _ = writeln!(
        o,
        "📦 Total memory allocated:\n\t{}",
        text::bytes(t.alloc_bytes)
    );
    let _ = writeln!(
        o,
        "📈 Peak memory usage ({}):\n\t{} at {}",
        text::peak_moment(a).trim_start_matches("the "),
        text::bytes(a.peak_bytes),
        text::duration(a.peak_time_ns)
    );
    if a.window_ns.is_some_and(|w| w != (0, u64::MAX)) {
        let _ = writeln!(
            o,
            "\t(only the peak is the window's: the totals, leaks and sites are the whole run's)"
        );
    }
    let _ = writeln!(
        o,
        "💧 Leaked (live at exit):\n\t{} in {}",
        text::bytes(a.leaked_bytes),
        text::counted(a.leaked_count, "block", "blocks")
    );
    let pct = if t.allocs > 0 {
        100.0 * t.temporary as f64 / t.allocs as f64
    } else {
        0.0
    };
    let temporary = if a.meta.aggregate {
        "n/a (an aggregate capture keeps totals per site, not the order of events)".to_string()
    } else {
        format!("{} ({pct:.1}%)", text::count(t.temporary))
    };
    let _ = writeln!(
        o,
        "⏱  Temporary allocations (freed right after, by the next event of the thread):\n\t{temporary}"
    );
    let _ = writeln!(o, "🕑 Duration:\n\t{}", text::duration(a.duration_ns));
    let _ = writeln!(
        o,
        "🧵 Threads:\n\t{}",
        a.threads.len().max(t.threads_seen as usize)
    );
    if t.unmatched_frees > 0 {
        let _ = writeln!(
            o,
            "❔ Frees of blocks allocated before recording:\n\t{}",
            text::count(t.unmatched_frees)
        );
    }
    if let Some(e) = &a.end {
        if e.dropped > 0 {
            let _ = writeln!(
                o,
                "⚠  Events dropped while recording: {}",
                text::count(e.dropped)
            );
        }
    }
    if let Some(why) = &a.truncated {
        let state = if a.end.is_some() {
            "damaged"
        } else {
            "incomplete"
        };
        let _ = writeln!(o, "⚠  Capture {state}: {why}");
    } else if let (None, Some(exec)) = (&a.end, &a.exec) {
        let _ = writeln!(
            o,
            "🔚 Recording ends where the program exec'd {} (at {})",
            exec.program,
            text::duration(exec.time_ns)
        );
    } else if a.end.is_none() {
        let _ = writeln!(
            o,
            "⚠  Capture has no end marker (the run did not stop cleanly)"
        );
    }
    let hist = histogram(a);
    if !hist.is_empty() {
        let _ = writeln!(o, "\n📊 Allocation size histogram (log scale):");
        let max = hist.iter().map(|h| h.2).max().unwrap_or(1).max(1);
        for (lo, hi, c, _) in &hist {
            let bar = ((*c as f64).ln_1p() / (max as f64).ln_1p() * 40.0).round() as usize;
            let _ = writeln!(
                o,
                "\t{:>10} – {:<10} {:<40} {}",
                text::bytes(*lo),
                text::bytes(*hi),
                "▇".repeat(bar.max(1)),
                text::count(*c)
            );
        }
    }
    let apis: Vec<(usize, u64)> = t
        .api_counts
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .collect();
    if !apis.is_empty() {
        let _ = writeln!(o, "\n🔌 Allocations by API:");
        for (i, c) in apis {
            let _ = writeln!(o, "\t{:<20} {}", API_NAMES[i], text::count(c));
        }
    }
    let sites = site_totals(a, syms, opts.leaks);
    let (what, blocks) = if opts.leaks {
        (" of the memory live at exit (leaks)", ("block", "blocks"))
    } else {
        ("", ("allocation", "allocations"))
    };
    let _ = writeln!(o, "\n🥇 Top {} allocation sites by bytes{what}:", opts.top);
    for (loc, b, c) in top_by(sites.clone(), opts.top, false) {
        let _ = writeln!(
            o,
            "\t- {loc} -> {} in {}",
            text::bytes(b),
            text::counted(c, blocks.0, blocks.1)
        );
    }
    let _ = writeln!(o, "\n🥇 Top {} allocation sites by count{what}:", opts.top);
    for (loc, b, c) in top_by(sites, opts.top, true) {
        let _ = writeln!(
            o,
            "\t- {loc} -> {} ({})",
            text::counted(c, blocks.0, blocks.1),
            text::bytes(b)
        );
    }
    o
}

/// The JSON report (same content as the text one, numbers in bytes and nanoseconds).
pub fn render_json(a: &Analysis, syms: &mut Symbols, opts: &Options) -> Value {
    let t = &a.totals;
    let sites = site_totals(a, syms, opts.leaks);
    let list = |v: Vec<(String, u64, u64)>| {
        v.into_iter()
            .map(|(l, b, c)| json!({"location": l, "bytes": b, "count": c}))
            .collect::<Vec<_>>()
    };
    json!({
        "capture": a.path,
        "command": a.meta.command,
        "pid": a.meta.pid,
        "duration_ns": a.duration_ns,
        "total_allocations": t.allocs,
        "total_bytes": t.alloc_bytes,
        "frees": t.frees,
        // An aggregate capture keeps totals per site only: what it cannot know is null.
        "reallocs": (!a.meta.aggregate).then_some(t.reallocs),
        "peak_bytes": a.peak_bytes,
        "peak_time_ns": a.peak_time_ns,
        // The --temporal window the peak was taken in, [from, to) ns (null: the whole run).
        "peak_window_ns": a.window_ns.map(|(from, to)| [from, to]),
        // The window the peak was taken in: the one asked for, moved to the memory samples
        // (every 10 ms) that date the events; a u64::MAX end runs to the end of the run.
        "peak_window_sampled_ns": a.peak_window_ns.map(|(from, to)| [from, to]),
        "leaked_bytes": a.leaked_bytes,
        "leaked_blocks": a.leaked_count,
        "temporary_allocations": (!a.meta.aggregate).then_some(t.temporary),
        "unmatched_frees": (!a.meta.aggregate).then_some(t.unmatched_frees),
        "threads": a.threads.len().max(t.threads_seen as usize),
        "truncated": a.truncated,
        "complete": a.end.is_some() || a.exec.is_some(),
        "ended_by_exec": a.exec.as_ref().map(|e| &e.program),
        "size_histogram": if a.meta.aggregate { Value::Null } else { histogram(a).into_iter().map(|(lo, hi, c, b)| json!({"min": lo, "max": hi, "count": c, "bytes": b})).collect::<Vec<_>>().into() },
        "api": if a.meta.aggregate { Value::Null } else { t.api_counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| json!({"api": API_NAMES[i], "count": c})).collect::<Vec<_>>().into() },
        "top_sites_of": if opts.leaks { "memory live at exit" } else { "all allocations" },
        "top_by_bytes": list(top_by(sites.clone(), opts.top, false)),
        "top_by_count": list(top_by(sites, opts.top, true)),
    })
}
