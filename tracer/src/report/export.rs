//! Exports for other tools: folded stacks (any flamegraph tool) and DHAT's JSON (open it in
//! Valgrind's `dh_view.html`).

use super::analysis::Analysis;
use super::flamegraph::folded_stacks;
use super::live::LiveTable;
use super::replay::IntMap;
use super::symbols::Symbols;
use super::Moment;
use crate::capture::format::{CaptureError, Event, EventKind};
use crate::capture::{Batch, CaptureReader, Item};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;

/// Export options.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub moment: Moment,
    /// Folded only: allocation site first.
    pub inverted: bool,
}

/// `frame;frame;frame bytes` lines, outermost frame first.
pub fn folded(a: &Analysis, syms: &mut Symbols, opts: &Options) -> String {
    let mut out = String::new();
    for (stack, bytes) in folded_stacks(a, syms, opts.moment, opts.inverted, None) {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&bytes.to_string());
        out.push('\n');
    }
    out
}

/// DHAT's JSON format (`dhatFileVersion` 2, as written by DHAT and dhat-rs): one program
/// point per stack with totals, maximum, at-global-peak and at-end bytes and blocks, and the
/// blocks' summed lifetime in µs (see [`super::replay::Site::total_lifetime_ns`] for its
/// precision). Needs a capture with events: an aggregate capture keeps neither maxima nor
/// times (the CLI refuses it).
///
/// A program point is a list of frames, and several stacks (two calls on one line, one
/// stack on two threads) can symbolize to the same one. Totals add up, but maxima do not:
/// two stacks that each peaked at 1000 bytes, one after the other, never had 2000 live. So
/// `capture`, the same capture `a` was read from, is replayed once more with every stack
/// mapped to its program point, for the points' own maxima.
pub fn dhat<R: Read>(
    a: &Analysis,
    syms: &mut Symbols,
    capture: CaptureReader<R>,
) -> Result<Value, CaptureError> {
    #[derive(Default)]
    struct Pp {
        tb: u64,
        tbk: u64,
        mb: u64,
        mbk: u64,
        gb: u64,
        gbk: u64,
        eb: u64,
        ebk: u64,
        tl_ns: u64,
    }
    let mut ftbl: Vec<String> = vec!["[root]".into()];
    let mut frame_index: HashMap<String, usize> = HashMap::new();
    let mut pps: Vec<(Vec<usize>, Pp)> = Vec::new();
    let mut pp_index: HashMap<Vec<usize>, u32> = HashMap::new();
    let mut pp_of_stack: IntMap<u32, u32> = IntMap::default();
    for s in &a.sites {
        let frames = syms.frames(a, s.stack);
        let fs: Vec<usize> = frames
            .iter()
            .map(|f| {
                let function = if f.function.is_empty() {
                    "???"
                } else {
                    &f.function
                };
                let text = format!("{}:{}:0", f.filename, f.lineno);
                let key = format!("{function} ({text})");
                *frame_index.entry(key).or_insert_with_key(|key| {
                    ftbl.push(format!("0x{:x}: {key}", ftbl.len()));
                    ftbl.len() - 1
                })
            })
            .collect();
        let i = *pp_index.entry(fs).or_insert_with_key(|fs| {
            pps.push((fs.clone(), Pp::default()));
            (pps.len() - 1) as u32
        });
        pp_of_stack.insert(s.stack, i);
        let pp = &mut pps[i as usize].1;
        pp.tb += s.total_bytes;
        pp.tbk += s.total_count;
        pp.gb += s.peak_bytes;
        pp.gbk += s.peak_count;
        pp.eb += s.cur_bytes;
        pp.ebk += s.cur_count;
        pp.tl_ns += s.total_lifetime_ns(a.duration_ns);
    }
    let maxima = point_maxima(capture, &pp_of_stack, pps.len())?;
    for ((_, pp), (mb, mbk)) in pps.iter_mut().zip(maxima) {
        (pp.mb, pp.mbk) = (mb, mbk);
    }
    pps.sort_by(|x, y| y.1.tb.cmp(&x.1.tb).then(x.0.cmp(&y.0)));
    // DHAT's own mode for the C heap is "heap"; dhat-rs writes "rust-heap".
    let mode = if a.totals.api_counts[0] > 0 {
        "rust-heap"
    } else {
        "heap"
    };
    Ok(json!({
        "dhatFileVersion": 2,
        "mode": mode,
        "verb": "Allocated",
        "bklt": true,
        "bkacc": false,
        "tu": "µs",
        "Mtu": "s",
        "tuth": 10,
        "cmd": a.meta.command,
        "pid": a.meta.pid,
        "tg": a.peak_time_ns / 1000,
        "te": a.duration_ns / 1000,
        "pps": pps.iter().map(|(fs, p)| json!({
            "tb": p.tb, "tbk": p.tbk, "tl": p.tl_ns / 1000,
            "mb": p.mb, "mbk": p.mbk,
            "gb": p.gb, "gbk": p.gbk,
            "eb": p.eb, "ebk": p.ebk,
            "fs": fs,
        })).collect::<Vec<_>>(),
        "ftbl": ftbl,
    }))
}

/// Per program point (`point_of_stack`: stack id → point), the most bytes it had live at
/// once and its blocks then, replaying the events of `capture` as [`super::replay`] does
/// (a block allocated again at a live address ends the old one; a realloc frees, then
/// allocates).
fn point_maxima<R: Read>(
    mut capture: CaptureReader<R>,
    point_of_stack: &IntMap<u32, u32>,
    points: usize,
) -> Result<Vec<(u64, u64)>, CaptureError> {
    // Blocks of stacks with no site (none, for the capture the analysis read) go to an
    // extra point, so that their frees still find them.
    let other = points as u32;
    let mut live = LiveTable::new();
    let mut now = vec![(0u64, 0u64); points + 1];
    let mut max = vec![(0u64, 0u64); points + 1];
    let release = |now: &mut Vec<(u64, u64)>, (size, point): (u64, u32)| {
        let n = &mut now[point as usize];
        *n = (n.0.saturating_sub(size), n.1.saturating_sub(1));
    };
    let mut events: Vec<Event> = Vec::new();
    loop {
        let batch = capture.next_batch(&mut events, 4096)?;
        match batch {
            None => break,
            Some(Batch::Events) => {}
            Some(Batch::Item(Item::Event(e))) => events.push(e),
            Some(Batch::Item(_)) => continue,
        }
        for e in &events {
            let (ptr, size, stack) = match e.kind {
                EventKind::Alloc {
                    ptr, size, stack, ..
                } => (ptr, size, stack),
                EventKind::Free { ptr, .. } => {
                    if let Some(block) = live.remove(ptr) {
                        release(&mut now, block);
                    }
                    continue;
                }
                EventKind::Realloc {
                    old,
                    new,
                    size,
                    stack,
                } => {
                    if old != 0 {
                        if let Some(block) = live.remove(old) {
                            release(&mut now, block);
                        }
                    }
                    (new, size, stack)
                }
            };
            let point = point_of_stack.get(&stack).copied().unwrap_or(other);
            if let Some(block) = live.insert(ptr, size, point) {
                release(&mut now, block);
            }
            let n = &mut now[point as usize];
            *n = (n.0 + size, n.1 + 1);
            let m = &mut max[point as usize];
            if n.0 > m.0 {
                *m = *n;
            }
        }
    }
    max.truncate(points);
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhat_mode_follows_the_api() {
        let mut b = crate::capture::builder::CaptureBuilder::new(&Default::default());
        b.end(Default::default());
        let capture = || CaptureReader::new(b.bytes(), "empty.tdm").unwrap();
        let mut syms = Symbols::with_resolver(|_| Vec::new());
        let mut a = Analysis::default();
        a.totals.api_counts = [0, 5, 0, 0];
        assert_eq!(dhat(&a, &mut syms, capture()).unwrap()["mode"], "heap");
        a.totals.api_counts = [1, 5, 0, 0];
        assert_eq!(dhat(&a, &mut syms, capture()).unwrap()["mode"], "rust-heap");
    }
}
