//! The summary report: per function, own and total bytes and blocks at the chosen moment.
//!
//! "Own" counts allocations whose most recent (trimmed) frame is the function; "total"
//! counts allocations with the function anywhere on the stack, once per stack.

use super::analysis::Analysis;
use super::symbols::{function_label, Symbols};
use super::{text, Moment};
use std::collections::HashMap;
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

/// One row: a function (with its file) and its numbers.
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
    // One row per function (and file), whatever line of it the stacks pass through, as
    // memray's summary groups them: a function that allocates on four lines is one row with
    // its whole total, not four with parts of it.
    let mut row_of_frame: Vec<u32> = Vec::new();
    let mut row_ids: HashMap<String, u32> = HashMap::new();
    // Per row: the numbers, and the last site that counted it (a function counts once per
    // stack, however often it recurses or however many of its lines the stack holds).
    let mut rows: Vec<(Row, u32)> = Vec::new();
    let mut ids = Vec::new();
    for (n, s) in a.sites.iter().enumerate() {
        let (bytes, count) = opts.moment.value(s);
        if bytes == 0 && count == 0 {
            continue;
        }
        syms.user_frame_ids(a, s.stack, &mut ids);
        for (i, &f) in ids.iter().enumerate() {
            if f as usize >= row_of_frame.len() {
                row_of_frame.resize(f as usize + 1, u32::MAX);
            }
            if row_of_frame[f as usize] == u32::MAX {
                let function = function_label(syms.frame(f));
                row_of_frame[f as usize] = *row_ids.entry(function).or_insert_with_key(|name| {
                    let row = Row {
                        function: name.clone(),
                        ..Row::default()
                    };
                    rows.push((row, u32::MAX));
                    rows.len() as u32 - 1
                });
            }
            let (r, seen) = &mut rows[row_of_frame[f as usize] as usize];
            if *seen == n as u32 {
                continue;
            }
            *seen = n as u32;
            r.total_bytes += bytes;
            r.total_count += count;
            if i == 0 {
                r.own_bytes += bytes;
                r.own_count += count;
            }
        }
    }
    let mut v: Vec<Row> = rows.into_iter().map(|(r, _)| r).collect();
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
        Moment::Peak => format!(
            "at {} ({})",
            text::peak_moment(a),
            text::bytes(a.peak_bytes)
        ),
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
