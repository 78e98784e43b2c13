//! Exports for other tools: folded stacks (any flamegraph tool) and DHAT's JSON (open it in
//! Valgrind's `dh_view.html`).

use super::analysis::Analysis;
use super::flamegraph::folded_stacks;
use super::symbols::Symbols;
use super::Moment;
use serde_json::{json, Value};
use std::collections::HashMap;

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
pub fn dhat(a: &Analysis, syms: &mut Symbols) -> Value {
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
    let mut pps: HashMap<Vec<usize>, Pp> = HashMap::new();
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
        let pp = pps.entry(fs).or_default();
        pp.tb += s.total_bytes;
        pp.tbk += s.total_count;
        pp.mb += s.max_bytes;
        pp.mbk += s.max_count;
        pp.gb += s.peak_bytes;
        pp.gbk += s.peak_count;
        pp.eb += s.cur_bytes;
        pp.ebk += s.cur_count;
        pp.tl_ns += s.total_lifetime_ns(a.duration_ns);
    }
    let mut pps: Vec<(Vec<usize>, Pp)> = pps.into_iter().collect();
    pps.sort_by(|x, y| y.1.tb.cmp(&x.1.tb).then(x.0.cmp(&y.0)));
    // DHAT's own mode for the C heap is "heap"; dhat-rs writes "rust-heap".
    let mode = if a.totals.api_counts[0] > 0 {
        "rust-heap"
    } else {
        "heap"
    };
    json!({
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhat_mode_follows_the_api() {
        let mut syms = Symbols::with_resolver(|_| Vec::new());
        let mut a = Analysis::default();
        a.totals.api_counts = [0, 5, 0, 0];
        assert_eq!(dhat(&a, &mut syms)["mode"], "heap");
        a.totals.api_counts = [1, 5, 0, 0];
        assert_eq!(dhat(&a, &mut syms)["mode"], "rust-heap");
    }
}
