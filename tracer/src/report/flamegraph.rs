//! The flamegraph report: one self-contained HTML file.
//!
//! Header (command, duration, allocations, peak, leaked), an inline-SVG chart of RSS and heap
//! over time with the high-water mark marked, inferno's flamegraph of the memory live at the
//! chosen moment (embedded as a `data:` SVG so its own script runs, no network), and a table
//! of the top allocation sites. Every piece of text from the capture is HTML-escaped.

use super::analysis::Analysis;
use super::folded::{merged_stacks, FoldedTexts};
use super::prune::{drawn_lines, DrawStack};
use super::replay::IntMap;
use super::symbols::Symbols;
use super::text;
use super::Moment;
use std::io::{self, Write};

pub use super::folded::folded_stacks;

/// Flamegraph options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Peak (default; the analysis window decides which peak) or end (leaks).
    pub moment: Moment,
    /// Allocation site at the root instead of `main`.
    pub inverted: bool,
    /// One graph per thread.
    pub per_thread: bool,
    /// Rows in the top-sites table.
    pub top: usize,
    pub title: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            moment: Moment::Peak,
            inverted: false,
            per_thread: false,
            top: 20,
            title: None,
        }
    }
}

/// Renders folded stacks into an inferno SVG (a "nothing live" placeholder when empty).
/// Only the frames inferno draws are handed to it ([`drawn_stacks`]): the picture is the
/// one all of `folded` gives.
pub fn svg(folded: &[(String, u64)], title: &str, subtitle: &str) -> io::Result<Vec<u8>> {
    let (stacks, texts) = draw_stacks(folded);
    svg_of_stacks(stacks, &texts, title, subtitle)
}

/// The folded stacks [`svg`] hands to inferno for `folded`, in inferno's order: inferno
/// draws the same frames from them, in the same places, as from all of `folded`. A run of
/// stacks inside a frame too narrow to draw (below inferno's `min_width`) is one stack
/// that ends at that frame, with the run's bytes, so its drawn parent keeps its width.
pub fn drawn_stacks(folded: &[(String, u64)]) -> Vec<(String, u64)> {
    let (stacks, texts) = draw_stacks(folded);
    let min_width = inferno::flamegraph::Options::default().min_width;
    drawn_lines(stacks, &texts, min_width)
        .lines()
        .filter_map(|line| {
            let (stack, bytes) = line.rsplit_once(' ')?;
            Some((stack.to_string(), bytes.parse().ok()?))
        })
        .collect()
}

/// Folded lines' stacks as folded-text ids (split at `;`, as inferno splits them).
fn draw_stacks(folded: &[(String, u64)]) -> (Vec<DrawStack>, FoldedTexts) {
    let mut texts = FoldedTexts::default();
    let stacks = folded
        .iter()
        .map(|(stack, bytes)| DrawStack {
            stack: texts.intern_line(stack),
            bytes: *bytes,
            before: None,
        })
        .collect();
    (stacks, texts)
}

/// [`svg`] of stacks as folded-text ids.
fn svg_of_stacks(
    stacks: Vec<DrawStack>,
    texts: &FoldedTexts,
    title: &str,
    subtitle: &str,
) -> io::Result<Vec<u8>> {
    if stacks.is_empty() {
        let msg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"60\"><text x=\"10\" \
             y=\"35\" font-family=\"Verdana\" font-size=\"14\">{}: no memory live at this moment</text></svg>",
            text::html(title)
        );
        return Ok(msg.into_bytes());
    }
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = title.to_string();
    opt.subtitle = Some(subtitle.to_string());
    opt.count_name = "bytes".into();
    opt.name_type = "Function:".into();
    opt.colors =
        inferno::flamegraph::color::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    opt.hash = true;
    opt.deterministic = true;
    opt.image_width = Some(1200);
    // One buffer for all lines: inferno keeps slices of every line while it merges them.
    let lines = drawn_lines(stacks, texts, opt.min_width);
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, lines.lines(), &mut out)
        .map_err(|e| io::Error::other(format!("flamegraph rendering failed: {e}")))?;
    Ok(out)
}

/// The memory-over-time chart as inline SVG, the high-water mark marked.
pub fn memory_chart(a: &Analysis) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 70.0;
    let points = &a.timeline;
    if points.is_empty() {
        return "<p>No memory samples in this capture.</p>".to_string();
    }
    let t_max = points.last().map(|p| p.time_ns).unwrap_or(1).max(1) as f64;
    let y_max = points
        .iter()
        .map(|p| p.rss.max(p.heap))
        .max()
        .unwrap_or(1)
        .max(a.peak_bytes)
        .max(1) as f64;
    let x = |t: u64| LEFT + (t as f64 / t_max) * (W - LEFT - 10.0);
    let y = |v: u64| 10.0 + H - (v as f64 / y_max) * H;
    // At most ~2 points per pixel column: keep each bucket's maximum.
    let step = (points.len() / 2000).max(1);
    let mut rss = String::new();
    let mut heap = String::new();
    for chunk in points.chunks(step) {
        let t = chunk[0].time_ns;
        let r = chunk.iter().map(|p| p.rss).max().unwrap_or(0);
        let h = chunk.iter().map(|p| p.heap).max().unwrap_or(0);
        rss.push_str(&format!("{:.1},{:.1} ", x(t), y(r)));
        heap.push_str(&format!("{:.1},{:.1} ", x(t), y(h)));
    }
    let px = x(a.peak_time_ns);
    format!(
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" role="img" aria-label="memory over time">
<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>
<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>
<text x="4" y="18" font-size="11">{ymax}</text><text x="4" y="{bottom}" font-size="11">0</text>
<text x="{right}" y="{label_y}" font-size="11" text-anchor="end">{tmax}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{rss}"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" points="{heap}"/>
<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#d62728" stroke-dasharray="4,3"/>
<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="#d62728"/>
<text x="{pxl:.1}" y="22" font-size="11" fill="#d62728">high-water mark {peak} at {ptime}</text>
<text x="{legend}" y="{label_y}" font-size="11"><tspan fill="#1f77b4">■ RSS</tspan> <tspan fill="#ff7f0e">■ traced heap</tspan></text>
</svg>"##,
        h = H + 40.0,
        top = 10.0,
        bottom = 10.0 + H,
        right = W - 10.0,
        label_y = H + 32.0,
        legend = LEFT,
        ymax = text::bytes(y_max as u64),
        tmax = text::duration(t_max as u64),
        pxl = (px + 4.0).min(W - 260.0),
        py = y(a.peak_bytes),
        peak = text::bytes(a.peak_bytes),
        ptime = text::duration(a.peak_time_ns),
    )
}

/// One row of the top-sites table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopSite {
    pub location: String,
    pub bytes: u64,
    pub count: u64,
    /// The full (trimmed) stack, most recent first.
    pub stack: Vec<String>,
}

/// The `n` biggest allocation sites (by most recent frame) at `moment`.
pub fn top_sites(a: &Analysis, syms: &mut Symbols, moment: Moment, n: usize) -> Vec<TopSite> {
    let mut by_location: IntMap<u32, TopSite> = IntMap::default();
    for s in &a.sites {
        let (bytes, count) = moment.value(s);
        if bytes == 0 && count == 0 {
            continue;
        }
        let ids = syms.frame_ids(a, s.stack);
        let location = match ids.first() {
            Some(&f) => syms.label_id(f),
            None => syms.unknown_label(),
        };
        let e = by_location.entry(location).or_insert_with(|| TopSite {
            location: syms.label_text(location).to_string(),
            bytes: 0,
            count: 0,
            stack: ids
                .iter()
                .map(|&f| {
                    let l = syms.label_id(f);
                    syms.label_text(l).to_string()
                })
                .collect(),
        });
        e.bytes += bytes;
        e.count += count;
    }
    let mut v: Vec<TopSite> = by_location.into_values().collect();
    v.sort_by(|x, y| {
        y.bytes
            .cmp(&x.bytes)
            .then(y.count.cmp(&x.count))
            .then(x.location.cmp(&y.location))
    });
    v.truncate(n);
    v
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:16px;color:#222}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#b00}iframe{border:0;width:1220px}\
details pre{margin:2px 0 6px 12px;font-size:12px}h2{margin-top:24px}";

/// Writes the whole HTML report.
pub fn write_html(
    a: &Analysis,
    syms: &mut Symbols,
    opts: &Options,
    out: &mut dyn Write,
) -> io::Result<()> {
    let what = match opts.moment {
        Moment::End => "memory leaked (live at exit)".to_string(),
        Moment::Peak => format!("memory live at {}", text::peak_moment(a)),
    };
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| format!("tidemark: {what}"));
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    )?;
    writeln!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        text::html(&title)
    )?;
    writeln!(out, "<h1>{}</h1>", text::html(&title))?;
    writeln!(out, "<table class=\"header\">")?;
    let row = |out: &mut dyn Write, k: &str, v: &str| {
        writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            text::html(k),
            text::html(v)
        )
    };
    row(out, "command", &a.meta.command)?;
    row(out, "capture", &a.path)?;
    row(out, "pid", &a.meta.pid.to_string())?;
    row(out, "duration", &text::duration(a.duration_ns))?;
    row(
        out,
        "total allocations",
        &format!(
            "{} ({})",
            text::count(a.totals.allocs),
            text::bytes(a.totals.alloc_bytes)
        ),
    )?;
    row(
        out,
        "peak (high-water mark)",
        &format!(
            "{} at {}",
            text::bytes(a.peak_bytes),
            text::duration(a.peak_time_ns)
        ),
    )?;
    row(
        out,
        "leaked",
        &format!(
            "{} in {}",
            text::bytes(a.leaked_bytes),
            text::counted(a.leaked_count, "block", "blocks")
        ),
    )?;
    writeln!(out, "</table>")?;
    if let Some(t) = &a.truncated {
        let state = if a.end.is_some() {
            "damaged"
        } else {
            "incomplete"
        };
        writeln!(
            out,
            "<p class=\"warn\">Capture {state}: {} — showing data up to there.</p>",
            text::html(t)
        )?;
    }
    writeln!(out, "<h2>Memory over time</h2>\n{}", memory_chart(a))?;
    let graphs: Vec<(String, Option<u32>)> = if opts.per_thread {
        let mut threads: Vec<u32> = a.sites.iter().map(|s| s.thread).collect();
        threads.sort_unstable();
        threads.dedup();
        threads
            .into_iter()
            .map(|t| (a.thread_name(t), Some(t)))
            .collect()
    } else {
        vec![(String::new(), None)]
    };
    // Resolve everything first, then let the debug information go: rendering the SVGs and
    // the page does not need it, and the peak should not hold both.
    let mut texts = FoldedTexts::default();
    let graphs: Vec<(String, Vec<DrawStack>)> = graphs
        .into_iter()
        .map(|(name, thread)| {
            let merged = merged_stacks(a, syms, &mut texts, opts.moment, opts.inverted, thread);
            let stacks = merged
                .into_iter()
                .filter(|(_, (bytes, _))| *bytes > 0)
                .map(|(stack, (bytes, _))| DrawStack {
                    stack,
                    bytes,
                    before: None,
                })
                .collect();
            (name, stacks)
        })
        .collect();
    let top = top_sites(a, syms, opts.moment, opts.top);
    syms.release_debug_info();
    for (name, stacks) in graphs {
        let total: u64 = stacks.iter().map(|s| s.bytes).sum();
        let rows = 1 + stacks.iter().map(|s| s.stack.len()).max().unwrap_or(1);
        let heading = if name.is_empty() {
            what.clone()
        } else {
            format!("{what} — {name}")
        };
        writeln!(out, "<h2>{}</h2>", text::html(&heading))?;
        let svg = svg_of_stacks(
            stacks,
            &texts,
            &heading,
            &format!("{} live", text::bytes(total)),
        )?;
        writeln!(
            out,
            "<iframe class=\"flamegraph\" title=\"flamegraph\" style=\"height:{}px\" src=\"data:image/svg+xml;base64,{}\"></iframe>",
            (rows * 16 + 120).min(4000),
            text::base64(&svg)
        )?;
    }
    writeln!(out, "<h2>Top {} allocation sites</h2>", opts.top)?;
    writeln!(
        out,
        "<table class=\"top\"><tr><th>#</th><th>site</th><th>bytes</th><th>blocks</th></tr>"
    )?;
    for (i, site) in top.iter().enumerate() {
        writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td><details><summary>{}</summary><pre>{}</pre></details></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            i + 1,
            text::html(&site.location),
            text::html(&site.stack.join("\n")),
            text::bytes(site.bytes),
            text::count(site.count)
        )?;
    }
    writeln!(out, "</table>\n</body></html>")?;
    Ok(())
}
