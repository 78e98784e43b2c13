//! Trace filters, with tracemalloc's rules:
//!
//! - a trace is kept if it matches at least one inclusive filter (when there are any), and
//! - it is dropped if any exclusive filter rejects it;
//! - a `Filter` looks at the most recent frame only, unless `all_frames`;
//! - patterns are fnmatch-style (`*`, `?`, `[seq]`, `[!seq]`), case-sensitive.

use crate::traceback::{Trace, Traceback};

/// Filter on the file (and line, and domain) of traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub inclusive: bool,
    pub filename_pattern: String,
    /// Only this line (None: any line).
    pub lineno: Option<u32>,
    /// Look at every frame, not only the most recent.
    pub all_frames: bool,
    /// Only this domain (None: any domain).
    pub domain: Option<u32>,
}

impl Filter {
    pub fn new(inclusive: bool, filename_pattern: impl Into<String>) -> Filter {
        Filter {
            inclusive,
            filename_pattern: filename_pattern.into(),
            lineno: None,
            all_frames: false,
            domain: None,
        }
    }

    pub fn lineno(mut self, lineno: u32) -> Filter {
        self.lineno = Some(lineno);
        self
    }

    pub fn all_frames(mut self, all_frames: bool) -> Filter {
        self.all_frames = all_frames;
        self
    }

    pub fn domain(mut self, domain: u32) -> Filter {
        self.domain = Some(domain);
        self
    }

    fn match_frame_impl(&self, filename: &str, lineno: u32) -> bool {
        fnmatch(filename, &self.filename_pattern) && self.lineno.is_none_or(|l| l == lineno)
    }

    /// tracemalloc's `_match_frame`: does this filter let a frame through?
    pub fn match_frame(&self, filename: &str, lineno: u32) -> bool {
        self.match_frame_impl(filename, lineno) ^ !self.inclusive
    }

    /// tracemalloc's `_match_traceback`.
    pub fn match_traceback(&self, traceback: &Traceback) -> bool {
        if self.all_frames {
            let any = if traceback.is_empty() {
                self.match_frame_impl("<unknown>", 0)
            } else {
                traceback
                    .frames()
                    .iter()
                    .any(|f| self.match_frame_impl(&f.filename, f.lineno))
            };
            if any {
                self.inclusive
            } else {
                !self.inclusive
            }
        } else {
            let f = traceback.most_recent();
            self.match_frame(&f.filename, f.lineno)
        }
    }

    fn matches(&self, trace: &Trace) -> bool {
        let res = self.match_traceback(&trace.traceback);
        match self.domain {
            None => res,
            Some(d) if self.inclusive => res && trace.domain == d,
            Some(d) => res || trace.domain != d,
        }
    }
}

/// Filter on the domain of traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainFilter {
    pub inclusive: bool,
    pub domain: u32,
}

impl DomainFilter {
    pub fn new(inclusive: bool, domain: u32) -> DomainFilter {
        DomainFilter { inclusive, domain }
    }

    fn matches(&self, trace: &Trace) -> bool {
        (trace.domain == self.domain) ^ !self.inclusive
    }
}

/// Either kind of filter, for `Snapshot::filter_traces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceFilter {
    File(Filter),
    Domain(DomainFilter),
}

impl From<Filter> for TraceFilter {
    fn from(f: Filter) -> Self {
        TraceFilter::File(f)
    }
}

impl From<DomainFilter> for TraceFilter {
    fn from(f: DomainFilter) -> Self {
        TraceFilter::Domain(f)
    }
}

impl TraceFilter {
    pub fn inclusive(&self) -> bool {
        match self {
            TraceFilter::File(f) => f.inclusive,
            TraceFilter::Domain(f) => f.inclusive,
        }
    }

    /// Does this filter let `trace` through?
    pub fn matches(&self, trace: &Trace) -> bool {
        match self {
            TraceFilter::File(f) => f.matches(trace),
            TraceFilter::Domain(f) => f.matches(trace),
        }
    }
}

/// Keeps the traces that the filters let through (tracemalloc's `_filter_trace`).
pub(crate) fn apply(traces: &[Trace], filters: &[TraceFilter]) -> Vec<Trace> {
    let (include, exclude): (Vec<&TraceFilter>, Vec<&TraceFilter>) =
        filters.iter().partition(|f| f.inclusive());
    traces
        .iter()
        .filter(|t| {
            (include.is_empty() || include.iter().any(|f| f.matches(t)))
                && !exclude.iter().any(|f| !f.matches(t))
        })
        .cloned()
        .collect()
}

/// Shell-style pattern match over the whole name: `*` any run, `?` one character, `[abc]`,
/// `[a-z]`, `[!abc]` one character of (or not of) a set. `/` is an ordinary character, as in
/// Python's `fnmatch`.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ni, mut pi) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None; // (pattern index after '*', name index)
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    backtrack = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    ni += 1;
                    pi += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, n[ni]) {
                        if matched {
                            ni += 1;
                            pi = next;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        // An unclosed '[' is a literal.
                        ni += 1;
                        pi += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    ni += 1;
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bn)) => {
                pi = bp;
                ni = bn + 1;
                backtrack = Some((bp, bn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`: Some((matched, index after
/// the class)), or None if the class is not closed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == '!';
    if negate {
        i += 1;
    }
    let mut matched = false;
    let first = i;
    while i < p.len() {
        if p[i] == ']' && i > first {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn classes_and_question_marks() {
        assert!(fnmatch("a1.rs", "a?.rs"));
        assert!(!fnmatch("a.rs", "a?.rs"));
        assert!(fnmatch("b.rs", "[abc].rs"));
        assert!(!fnmatch("d.rs", "[abc].rs"));
        assert!(fnmatch("d.rs", "[!abc].rs"));
        assert!(fnmatch("k.rs", "[a-z].rs"));
        assert!(fnmatch("[x", "[x"));
        assert!(fnmatch("/work/src/main.rs", "*/src/*"));
        assert!(fnmatch("]", "[]]"));
    }
}
