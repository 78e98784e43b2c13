//! Turning samples into medians, ratios and the table (or JSON).

use super::spawn::Sample;
use crate::variants::{Role, Variant};
use serde_json::json;
use std::fmt::Write;

/// All samples of one workload under one variant.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
}

/// The samples of one workload, one cell per variant (same order as the variants run).
pub struct WorkloadResults<'a> {
    pub workload: &'a str,
    pub cells: Vec<(&'a Variant, Cell)>,
}

/// Median of a non-empty list (mean of the two middle values for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Medians and ratios of one cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub time_s: Option<f64>,
    /// (max - min) / median of the times: how noisy the rounds were.
    pub spread: Option<f64>,
    pub rss_mib: Option<f64>,
    pub time_vs_glibc: Option<f64>,
    pub rss_vs_glibc: Option<f64>,
    pub time_vs_best_peer: Option<f64>,
    /// Time over the time of the variant this one wraps (`Variant::plain`): what the debug
    /// hooks cost on top of their allocator.
    pub time_vs_plain: Option<f64>,
}

fn summarize_cell(cell: &Cell) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut times: Vec<f64> = cell.samples.iter().map(|s| s.time.as_secs_f64()).collect();
    let mut rss: Vec<f64> = cell
        .samples
        .iter()
        .map(|s| s.max_rss_kib as f64 / 1024.0)
        .collect();
    let time = median(&mut times);
    let spread = time.map(|m| (times[times.len() - 1] - times[0]) / m);
    (time, spread, median(&mut rss))
}

/// One summary per cell, with the ratios filled in where the divisors exist.
pub fn summarize(results: &WorkloadResults) -> Vec<Summary> {
    let mut rows: Vec<Summary> = results
        .cells
        .iter()
        .map(|(_, cell)| {
            let (time_s, spread, rss_mib) = summarize_cell(cell);
            Summary {
                time_s,
                spread,
                rss_mib,
                ..Summary::default()
            }
        })
        .collect();
    let role_of = |i: usize| results.cells[i].0.role;
    let baseline = (0..rows.len()).find(|&i| role_of(i) == Role::Baseline);
    let (glibc_time, glibc_rss) =
        baseline.map_or((None, None), |i| (rows[i].time_s, rows[i].rss_mib));
    let best_peer_time = (0..rows.len())
        .filter(|&i| role_of(i) == Role::Peer)
        .filter_map(|i| rows[i].time_s)
        .min_by(f64::total_cmp);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let plain_time = |i: usize| {
        let plain = results.cells[i].0.plain?;
        let j = (0..rows.len()).find(|&j| results.cells[j].0.name == plain)?;
        rows[j].time_s
    };
    let plain_times: Vec<Option<f64>> = (0..rows.len()).map(plain_time).collect();
    for (row, plain) in rows.iter_mut().zip(plain_times) {
        row.time_vs_glibc = ratio(row.time_s, glibc_time);
        row.rss_vs_glibc = ratio(row.rss_mib, glibc_rss);
        row.time_vs_best_peer = ratio(row.time_s, best_peer_time);
        row.time_vs_plain = ratio(row.time_s, plain);
    }
    rows
}

const HEADERS: [&str; 9] = [
    "workload",
    "allocator",
    "time (ms)",
    "spread",
    "peak RSS (MiB)",
    "time/glibc",
    "RSS/glibc",
    "time/best-peer",
    "time/plain",
];

/// The aligned text table: one row per (workload, allocator), medians over the rounds.
/// `time/plain` is filled only for wrappers (debug rows: `pymalloc_debug` / `tidemark`,
/// `malloc_debug` / `system`).
pub fn table(all: &[WorkloadResults]) -> String {
    let fmt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
    let mut rows: Vec<[String; 9]> = Vec::new();
    for results in all {
        for ((variant, cell), s) in results.cells.iter().zip(summarize(results)) {
            let failed = cell.samples.is_empty();
            rows.push([
                results.workload.to_owned(),
                variant.name.to_owned(),
                if failed {
                    "failed".to_owned()
                } else {
                    fmt(s.time_s, &|t| format!("{:.1}", t * 1e3))
                },
                fmt(s.spread, &|x| format!("{:.1}%", x * 100.0)),
                fmt(s.rss_mib, &|x| format!("{x:.1}")),
                fmt(s.time_vs_glibc, &|x| format!("{x:.2}")),
                fmt(s.rss_vs_glibc, &|x| format!("{x:.2}")),
                fmt(s.time_vs_best_peer, &|x| format!("{x:.2}")),
                fmt(s.time_vs_plain, &|x| format!("{x:.2}")),
            ]);
        }
    }
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Names left-aligned, numbers right-aligned.
            if i < 2 {
                let _ = write!(out, "{cell:<w$}  ");
            } else {
                let _ = write!(out, "{cell:>w$}  ");
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&HEADERS.map(str::to_owned), &mut out);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(&rule, &mut out);
    let mut previous: Option<&str> = None;
    for row in &rows {
        if previous.is_some_and(|p| p != row[0]) {
            out.push('\n');
        }
        previous = Some(&row[0]);
        line(row, &mut out);
    }
    out
}

/// The same results as JSON (samples included), for scripts.
pub fn to_json(all: &[WorkloadResults], rounds: usize, scale: f64) -> serde_json::Value {
    let mut entries = Vec::new();
    for results in all {
        for ((variant, cell), s) in results.cells.iter().zip(summarize(results)) {
            entries.push(json!({
                "workload": results.workload,
                "allocator": variant.name,
                "time_s_median": s.time_s,
                "time_spread": s.spread,
                "peak_rss_mib_median": s.rss_mib,
                "time_vs_glibc": s.time_vs_glibc,
                "rss_vs_glibc": s.rss_vs_glibc,
                "time_vs_best_peer": s.time_vs_best_peer,
                "time_vs_plain": s.time_vs_plain,
                "samples": cell.samples.iter().map(|x| json!({
                    "time_ns": x.time.as_nanos() as u64,
                    "peak_rss_kib": x.max_rss_kib,
                    "checksum": x.checksum,
                })).collect::<Vec<_>>(),
                "failures": cell.failures,
            }));
        }
    }
    json!({ "rounds": rounds, "scale": scale, "results": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::find;
    use std::time::Duration;

    fn cell(times_ms: &[u64], rss_kib: u64) -> Cell {
        Cell {
            samples: times_ms
                .iter()
                .map(|&t| Sample {
                    time: Duration::from_millis(t),
                    max_rss_kib: rss_kib,
                    checksum: 1,
                })
                .collect(),
            failures: vec![],
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_against_glibc_and_the_best_peer() {
        let results = WorkloadResults {
            workload: "churn",
            cells: vec![
                (find("tidemark").unwrap(), cell(&[50, 60, 40], 2048)),
                (find("system").unwrap(), cell(&[100], 1024)),
                (find("mimalloc").unwrap(), cell(&[80], 1024)),
                (find("jemalloc").unwrap(), cell(&[40], 1024)),
            ],
        };
        let s = summarize(&results);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(s[0].time_vs_glibc, 0.5));
        assert!(close(s[0].rss_vs_glibc, 2.0));
        assert!(close(s[0].time_vs_best_peer, 1.25));
        assert!(close(s[0].spread, 0.4));
        assert!(s[0].time_vs_plain.is_none());
        let text = table(&[results]);
        assert!(text
            .lines()
            .any(|l| l.starts_with("churn") && l.contains("tidemark")));
    }

    #[test]
    fn debug_rows_divide_by_their_plain_allocator() {
        let results = WorkloadResults {
            workload: "strings",
            cells: vec![
                (find("tidemark").unwrap(), cell(&[40], 1024)),
                (find("pymalloc_debug").unwrap(), cell(&[60], 1024)),
                (find("system").unwrap(), cell(&[50], 1024)),
                (find("malloc_debug").unwrap(), cell(&[100], 1024)),
            ],
        };
        let s = summarize(&results);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(s[1].time_vs_plain, 1.5));
        assert!(close(s[3].time_vs_plain, 2.0));
        assert!(s[0].time_vs_plain.is_none() && s[2].time_vs_plain.is_none());
        assert!(table(&[results])
            .lines()
            .next()
            .unwrap()
            .ends_with("time/plain"));
    }
}
