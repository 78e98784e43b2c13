//! The summary report: per function, own and total bytes and blocks at the chosen moment.
//!
//! "Own" counts allocations whose most recent (trimmed) frame is the function; "total"
//! counts allocations with the function anywhere on the stack, once per stack.

use super::analysis::Analysis;
use super::symbols::{label, Symbols};
use super::{text, Moment};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Summary options.
#[derive(Clone, Debug)]
pub struct Options {
    pub moment: Moment,
    /// Rows shown (biggest total first).
    pub max_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            moment: Moment::Peak,
            max_rows: 30,
        }
    }
}

/// One row: a function (with its file and line) and its numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub function: String,
    pub own_bytes: u64,
    pub own_count: u64,
    pub total_bytes: u64,
    pub total_count: u64,
}

/// The rows, biggest total first.
pub fn rows(a: &Analysis, syms: &mut Symbols, opts: &Options) -> Vec<Row> {
    let mut by: HashMap<String, Row> = HashMap::new();
    for s in &a.sites {
        let (bytes, count) = opts.moment.value(s);
        if bytes == 0 && count == 0 {
            continue;
        }
        let frames = syms.user_frames(a, s.stack);
        let mut seen = HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            let name = label(f);
            if !seen.insert(name.clone()) {
                continue; // recursion: count a function once per stack
            }
            let r = by.entry(name.clone()).or_insert_with(|| Row {
                function: name,
                ..Row::default()
            });
            r.total_bytes += bytes;
            r.total_count += count;
            if i == 0 {
                r.own_bytes += bytes;
                r.own_count += count;
            }
        }
    }
    let mut v: Vec<Row> = by.into_values().collect();
    v.sort_by(|x, y| {
        y.total_bytes
            .cmp(&x.total_bytes)
            .then(y.own_bytes.cmp(&x.own_bytes))
            .then(x.function.cmp(&y.function))
    });
    v.truncate(opts.max_rows);
    v
}

/// The table as text.
pub fn render_text(a: &Analysis, syms: &mut Symbols, opts: &Options) -> String {
    let rows = rows(a, syms, opts);
    let mut o = String::new();
    let what = match opts.moment {
        Moment::Peak => format!("at the high-water mark ({})", text::bytes(a.peak_bytes)),
        Moment::End => format!("leaked at exit ({})", text::bytes(a.leaked_bytes)),
    };
    let _ = writeln!(o, "Memory by function {what}\n");
    let _ = writeln!(
        o,
        "{:>12} {:>10} {:>12} {:>10}  function",
        "total", "blocks", "own", "blocks"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>12} {:>10} {:>12} {:>10}  {}",
            text::bytes(r.total_bytes),
            text::count(r.total_count),
            text::bytes(r.own_bytes),
            text::count(r.own_count),
            r.function
        );
    }
    o
}
