//! The diff report: what grew and shrank between two captures (or two snapshot JSON files).
//!
//! A tracemalloc `compare_to`-style table by allocation site, and inferno's differential
//! flamegraph (red = grew, blue = shrank; widths are the new profile).

use super::analysis::Analysis;
use super::folded::{merged_stacks, FoldedTexts, MergedStacks};
use super::prune::{drawn_lines, DrawStack};
use super::symbols::{label, Symbols};
use super::{text, Moment};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

/// One side of a diff: bytes and blocks per folded stack (outermost frame first).
///
/// Stacks are kept as ids of their frames' folded texts: a CPython capture has tens of
/// thousands of live stacks of a hundred frames, and their lines took 80 MB per side where
/// the ids take a tenth of that.
#[derive(Default)]
pub struct Profile {
    pub name: String,
    texts: FoldedTexts,
    /// folded stack (text ids, outermost frame first) → (bytes, blocks)
    stacks: MergedStacks,
}

impl Profile {
    /// The memory of a capture at `moment`: the flamegraph's stacks (see
    /// [`super::flamegraph::folded_stacks`]), with their blocks.
    pub fn from_analysis(a: &Analysis, syms: &mut Symbols, moment: Moment) -> Profile {
        let mut texts = FoldedTexts::default();
        let stacks = merged_stacks(a, syms, &mut texts, moment, false, None);
        Profile {
            name: a.path.clone(),
            texts,
            stacks,
        }
    }

    /// A tracer snapshot (`Snapshot::dump` / `tidemark_tracer::take_snapshot`).
    pub fn from_snapshot(name: &str, snapshot: &crate::Snapshot) -> Profile {
        let mut p = Profile {
            name: name.to_string(),
            ..Profile::default()
        };
        for t in snapshot.traces() {
            let mut stack: Vec<u32> = t
                .traceback
                .frames()
                .iter()
                .map(|f| p.texts.intern(&super::symbols::folded_label(f)))
                .collect();
            if stack.is_empty() {
                stack.push(p.texts.intern("[unknown]"));
            }
            stack.reverse();
            // Sizes are at most MAX_ALLOCATION (`Snapshot::load` refuses more); a sum of a
            // million of those would still wrap, and saturates instead.
            let e = p.stacks.entry(stack).or_default();
            e.0 = e.0.saturating_add(t.size as u64);
            e.1 += 1;
        }
        p
    }

    /// Bytes and blocks per folded stack line (`outer;...;inner`), sorted by line.
    pub fn lines(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = self
            .stacks
            .iter()
            .map(|(stack, &(bytes, blocks))| (self.texts.join(stack), bytes, blocks))
            .collect();
        v.sort();
        v
    }

    /// Bytes of all stacks.
    pub fn total_bytes(&self) -> u64 {
        self.stacks.values().map(|v| v.0).sum()
    }

    /// The allocation site of `stack`: its most recent frame.
    fn site(&self, stack: &[u32]) -> &str {
        stack.last().map_or("", |&t| self.texts.text(t))
    }
}

/// One row of the compare table (tracemalloc's `StatisticDiff`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub site: String,
    pub size: u64,
    pub size_diff: i64,
    pub count: u64,
    pub count_diff: i64,
}

/// Per allocation site (most recent frame), sorted like tracemalloc's compare_to:
/// biggest |size_diff| first, then size, |count_diff|, count, site.
pub fn compare(old: &Profile, new: &Profile) -> Vec<Change> {
    let mut by: HashMap<&str, Change> = HashMap::new();
    for (stack, &(b, c)) in &new.stacks {
        let e = by.entry(new.site(stack)).or_default();
        e.size = e.size.saturating_add(b);
        e.count += c;
        e.size_diff = e.size_diff.saturating_add(signed(b));
        e.count_diff += c as i64;
    }
    for (stack, &(b, c)) in &old.stacks {
        let e = by.entry(old.site(stack)).or_default();
        e.size_diff = e.size_diff.saturating_sub(signed(b));
        e.count_diff -= c as i64;
    }
    let mut v: Vec<Change> = by
        .into_iter()
        .map(|(k, mut c)| {
            c.site = k.to_string();
            c
        })
        .collect();
    v.sort_by(|x, y| {
        (
            y.size_diff.unsigned_abs(),
            y.size,
            y.count_diff.unsigned_abs(),
            y.count,
        )
            .cmp(&(
                x.size_diff.unsigned_abs(),
                x.size,
                x.count_diff.unsigned_abs(),
                x.count,
            ))
            .then(x.site.cmp(&y.site))
    });
    v
}

/// `n` as a difference, saturated rather than wrapped to a negative number.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The compare table as text (`site: size=.. (+..), count=.. (+..)`), `limit` rows, then
/// how many rows were left out (`... and 3 more`) and a `total:` row of every site.
pub fn render_table(changes: &[Change], limit: usize) -> String {
    let mut o = String::new();
    let row = |o: &mut String, c: &Change| {
        let _ = writeln!(
            o,
            "{}: size={} ({}), count={} ({:+})",
            c.site,
            text::bytes(c.size),
            text::signed_bytes(c.size_diff),
            c.count,
            c.count_diff
        );
    };
    for c in changes.iter().take(limit) {
        row(&mut o, c);
    }
    if changes.len() > limit {
        let _ = writeln!(o, "... and {} more", changes.len() - limit);
    }
    let total = changes.iter().fold(
        Change {
            site: "total".into(),
            ..Change::default()
        },
        |t, c| Change {
            size: t.size.saturating_add(c.size),
            size_diff: t.size_diff.saturating_add(c.size_diff),
            count: t.count.saturating_add(c.count),
            count_diff: t.count_diff.saturating_add(c.count_diff),
            ..t
        },
    );
    row(&mut o, &total);
    o
}

/// Diff options.
#[derive(Clone, Debug)]
pub struct Options {
    pub rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { rows: 30 }
    }
}

/// The differential flamegraph SVG (widths from the new profile): inferno's `differential`
/// lines (`stack old new`, for every stack with bytes on either side), pruned to the frames
/// inferno draws (see [`super::prune`]).
pub fn differential_svg(old: &Profile, new: &Profile) -> io::Result<Vec<u8>> {
    if !new.stacks.values().any(|&(bytes, _)| bytes > 0) {
        return super::flamegraph::svg(&[], "differential flamegraph", "");
    }
    // Both sides' stacks in one table of texts, so that equal lines have equal ids.
    let mut texts = FoldedTexts::default();
    let mut both: HashMap<Vec<u32>, (u64, u64)> = HashMap::new();
    for (side, p) in [(0, old), (1, new)] {
        let ids = p.texts.translate(&mut texts);
        for (stack, &(bytes, _)) in &p.stacks {
            let joint = stack.iter().map(|&t| ids[t as usize]).collect();
            let e = both.entry(joint).or_default();
            if side == 0 {
                e.0 += bytes;
            } else {
                e.1 += bytes;
            }
        }
    }
    let stacks = both
        .into_iter()
        .filter(|&(_, (before, bytes))| before > 0 || bytes > 0)
        .map(|(stack, (before, bytes))| DrawStack {
            stack,
            bytes,
            before: Some(before),
        })
        .collect();
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = "differential flamegraph (red grew, blue shrank)".into();
    opt.count_name = "bytes".into();
    opt.deterministic = true;
    opt.image_width = Some(1200);
    let lines = drawn_lines(stacks, &texts, opt.min_width);
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, lines.lines(), &mut out)
        .map_err(|e| io::Error::other(format!("flamegraph rendering failed: {e}")))?;
    Ok(out)
}

/// The HTML diff report: header, compare table, differential flamegraph.
pub fn write_html(
    old: &Profile,
    new: &Profile,
    opts: &Options,
    out: &mut dyn Write,
) -> io::Result<()> {
    let changes = compare(old, new);
    writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tidemark diff</title>")?;
    writeln!(out, "<style>body{{font-family:system-ui,sans-serif;margin:16px}}td{{padding:2px 8px}}td.n{{text-align:right}}iframe{{border:0;width:1220px;height:700px}}</style></head><body>")?;
    writeln!(
        out,
        "<h1>tidemark diff</h1><p>old: {} ({})<br>new: {} ({})</p>",
        text::html(&old.name),
        text::bytes(old.total_bytes()),
        text::html(&new.name),
        text::bytes(new.total_bytes())
    )?;
    writeln!(
        out,
        "<table><tr><th>site</th><th>size</th><th>change</th><th>blocks</th><th>change</th></tr>"
    )?;
    for c in changes.iter().take(opts.rows) {
        writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:+}</td></tr>",
            text::html(&c.site),
            text::bytes(c.size),
            text::signed_bytes(c.size_diff),
            c.count,
            c.count_diff
        )?;
    }
    writeln!(out, "</table>")?;
    let svg = differential_svg(old, new)?;
    writeln!(
        out,
        "<iframe title=\"differential flamegraph\" src=\"data:image/svg+xml;base64,{}\"></iframe>",
        text::base64(&svg)
    )?;
    writeln!(out, "</body></html>")
}

/// Label helper re-exported for callers building profiles by hand.
pub fn frame_label(f: &crate::symbolize::Frame) -> String {
    label(f)
}
