//! Statistics over traces: grouping, sorting and printing, as tracemalloc does them.

use crate::symbolize::Frame;
use crate::traceback::{Trace, Traceback};
use crate::TraceError;
use std::collections::HashMap;
use std::fmt;

/// How `Snapshot::statistics` groups traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// By the most recent frame (file and line).
    Lineno,
    /// By the most recent frame's file.
    Filename,
    /// By the whole traceback.
    Traceback,
    /// By the most recent frame's function (new in tidemark).
    Function,
}

/// Size and count of the traces sharing one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Statistic {
    pub traceback: Traceback,
    pub size: usize,
    pub count: usize,
}

/// A statistic and how it changed since an older snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatisticDiff {
    pub traceback: Traceback,
    pub size: usize,
    pub size_diff: isize,
    pub count: usize,
    pub count_diff: isize,
}

/// tracemalloc's `_format_size`: `66 B`, `2501 B`, `12.3 KiB`, `+5000 B`, `-1.5 MiB`.
pub fn format_size(size: f64, sign: bool) -> String {
    let mut size = size;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if size.abs() < 100.0 && unit != "B" {
            return if sign {
                format!("{size:+.1} {unit}")
            } else {
                format!("{size:.1} {unit}")
            };
        }
        if size.abs() < 10.0 * 1024.0 || unit == "TiB" {
            // Python's "%.0f" rounds half to even, as Rust's formatting does.
            return if sign {
                format!("{size:+.0} {unit}")
            } else {
                format!("{size:.0} {unit}")
            };
        }
        size /= 1024.0;
    }
    unreachable!("the TiB arm always returns")
}

impl fmt::Display for Statistic {
    /// `src/main.rs:42: size=66 B, count=1, average=66 B`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: size={}, count={}",
            self.traceback,
            format_size(self.size as f64, false),
            self.count
        )?;
        if self.count != 0 {
            let avg = self.size as f64 / self.count as f64;
            write!(f, ", average={}", format_size(avg, false))?;
        }
        Ok(())
    }
}

impl fmt::Display for StatisticDiff {
    /// `a.py:5: size=5002 B (+5000 B), count=2 (+1), average=2501 B`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: size={} ({}), count={} ({:+})",
            self.traceback,
            format_size(self.size as f64, false),
            format_size(self.size_diff as f64, true),
            self.count,
            self.count_diff
        )?;
        if self.count != 0 {
            let avg = self.size as f64 / self.count as f64;
            write!(f, ", average={}", format_size(avg, false))?;
        }
        Ok(())
    }
}

fn key_frame(frame: &Frame, key: KeyType) -> Frame {
    match key {
        KeyType::Traceback => frame.clone(),
        // Lines group without the function: a closure and its parent on one line are one line.
        KeyType::Lineno => Frame::new(frame.filename.clone(), frame.lineno),
        KeyType::Filename => Frame::new(frame.filename.clone(), 0),
        KeyType::Function => {
            let function = if frame.function.is_empty() {
                frame.filename.clone()
            } else {
                frame.function.clone()
            };
            Frame::with_function(function, "", 0)
        }
    }
}

/// Groups traces by key; tracemalloc's `Snapshot._group_by`.
pub(crate) fn group_by(
    traces: &[Trace],
    key: KeyType,
    cumulative: bool,
) -> Result<HashMap<Traceback, (usize, usize)>, TraceError> {
    if cumulative && key == KeyType::Traceback {
        return Err(TraceError::CumulativeTraceback);
    }
    let mut stats: HashMap<Traceback, (usize, usize)> = HashMap::new();
    // Key tracebacks are built once per distinct traceback (or frame), as tracemalloc caches.
    let mut keys: HashMap<*const Frame, Traceback> = HashMap::new();
    let unknown = [Frame::new("<unknown>", 0)];
    for t in traces {
        let frames = if t.traceback.is_empty() {
            &unknown[..]
        } else {
            t.traceback.frames()
        };
        if !cumulative {
            let tb = keys
                .entry(frames.as_ptr())
                .or_insert_with(|| match key {
                    KeyType::Traceback => {
                        Traceback::new(frames.iter().map(|f| key_frame(f, key)).collect())
                    }
                    _ => Traceback::new(vec![key_frame(&frames[0], key)]),
                })
                .clone();
            let e = stats.entry(tb).or_insert((0, 0));
            e.0 += t.size;
            e.1 += 1;
        } else {
            for f in frames {
                let tb = Traceback::new(vec![key_frame(f, key)]);
                let e = stats.entry(tb).or_insert((0, 0));
                e.0 += t.size;
                e.1 += 1;
            }
        }
    }
    Ok(stats)
}

/// Sorted biggest first: by (size, count, traceback), descending.
pub(crate) fn statistics(
    traces: &[Trace],
    key: KeyType,
    cumulative: bool,
) -> Result<Vec<Statistic>, TraceError> {
    let mut v: Vec<Statistic> = group_by(traces, key, cumulative)?
        .into_iter()
        .map(|(traceback, (size, count))| Statistic {
            traceback,
            size,
            count,
        })
        .collect();
    v.sort_by(|a, b| (b.size, b.count, &b.traceback).cmp(&(a.size, a.count, &a.traceback)));
    Ok(v)
}

/// tracemalloc's `compare_to`: sorted by (|size_diff|, size, |count_diff|, count, traceback),
/// descending.
pub(crate) fn compare(
    new: &[Trace],
    old: &[Trace],
    key: KeyType,
    cumulative: bool,
) -> Result<Vec<StatisticDiff>, TraceError> {
    let new_group = group_by(new, key, cumulative)?;
    let mut old_group = group_by(old, key, cumulative)?;
    let mut out = Vec::with_capacity(new_group.len() + old_group.len());
    for (traceback, (size, count)) in new_group {
        let (old_size, old_count) = old_group.remove(&traceback).unwrap_or((0, 0));
        out.push(StatisticDiff {
            traceback,
            size,
            size_diff: size as isize - old_size as isize,
            count,
            count_diff: count as isize - old_count as isize,
        });
    }
    for (traceback, (size, count)) in old_group {
        out.push(StatisticDiff {
            traceback,
            size: 0,
            size_diff: -(size as isize),
            count: 0,
            count_diff: -(count as isize),
        });
    }
    let key = |s: &StatisticDiff| {
        (
            s.size_diff.unsigned_abs(),
            s.size,
            s.count_diff.unsigned_abs(),
            s.count,
        )
    };
    out.sort_by(|a, b| (key(b), &b.traceback).cmp(&(key(a), &a.traceback)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::format_size;

    #[test]
    fn sizes_format_like_tracemalloc() {
        assert_eq!(format_size(0.0, false), "0 B");
        assert_eq!(format_size(66.0, false), "66 B");
        assert_eq!(format_size(10239.0, false), "10239 B");
        assert_eq!(format_size(10240.0, false), "10.0 KiB");
        assert_eq!(format_size(5000.0, true), "+5000 B");
        assert_eq!(format_size(-66.0, true), "-66 B");
        assert_eq!(format_size(0.0, true), "+0 B");
        assert_eq!(format_size(1024.0 * 1024.0 * 150.0, false), "150 MiB");
        // Expected values are what CPython's tracemalloc._format_size prints.
        assert_eq!(
            format_size(1024.0 * 1024.0 * 1024.0 * 3.5, false),
            "3584 MiB"
        );
        assert_eq!(
            format_size(1024.0 * 1024.0 * 1024.0 * 35.0, false),
            "35.0 GiB"
        );
        assert_eq!(format_size(-1536.0 * 1024.0, true), "-1536 KiB");
        assert_eq!(format_size(2.5, false), "2 B");
    }
}
