//! Folded stacks (`outer;...;inner bytes`): the merged per-stack values that the flamegraph,
//! the folded export and the diff all draw from, built once here so that all three merge
//! stacks the same way.
//!
//! Stacks are kept as folded-text ids ([`FoldedTexts`]) until a line is needed: a CPython
//! capture has a few thousand distinct stacks of a hundred frames or more, and their lines
//! (about 50 MB for a 5M-allocation capture) should exist at most once, and only when a
//! caller wants text.

use super::analysis::Analysis;
use super::symbols::{folded_text, Symbols};
use super::Moment;
use std::collections::HashMap;

/// Stacks as folded-text ids, outermost frame first (innermost first when inverted), with
/// their bytes and blocks.
pub(super) type MergedStacks = HashMap<Vec<u32>, (u64, u64)>;

/// Folded stacks (`outer;...;inner`, or inner first when `inverted`) with their bytes at
/// `moment`, merged and sorted; only stacks with a non-zero value. Runtime plumbing (std's
/// start-up, iterator adapters, thread start) is left out unless the symbols keep it.
///
/// This is the exact data (nothing pruned): `export --format folded` writes it for other
/// tools.
pub fn folded_stacks(
    a: &Analysis,
    syms: &mut Symbols,
    moment: Moment,
    inverted: bool,
    thread: Option<u32>,
) -> Vec<(String, u64)> {
    let mut texts = FoldedTexts::default();
    let merged = merged_stacks(a, syms, &mut texts, moment, inverted, thread);
    let mut out: Vec<(String, u64)> = merged
        .into_iter()
        .filter(|(_, (bytes, _))| *bytes > 0)
        .map(|(stack, (bytes, _))| (texts.join(&stack), bytes))
        .collect();
    out.sort();
    out
}

/// Every site of `thread` (all threads when `None`) with something live at `moment`, merged
/// by folded stack. A site with blocks but no bytes (zero-size allocations) is kept: the
/// diff counts its blocks; byte-only callers drop it.
pub(super) fn merged_stacks(
    a: &Analysis,
    syms: &mut Symbols,
    texts: &mut FoldedTexts,
    moment: Moment,
    inverted: bool,
    thread: Option<u32>,
) -> MergedStacks {
    let mut merged = MergedStacks::new();
    let mut ids = Vec::new();
    for s in &a.sites {
        if thread.is_some_and(|t| t != s.thread) {
            continue;
        }
        let (bytes, count) = moment.value(s);
        if bytes == 0 && count == 0 {
            continue;
        }
        syms.user_frame_ids(a, s.stack, &mut ids);
        let mut stack: Vec<u32> = ids
            .iter()
            .map(|&f| {
                let l = syms.label_id(f);
                texts.of_label(l, syms)
            })
            .collect();
        if stack.is_empty() {
            let l = syms.unknown_label();
            stack.push(texts.of_label(l, syms));
        }
        if !inverted {
            stack.reverse();
        }
        let e = merged.entry(stack).or_default();
        e.0 += bytes;
        e.1 += count;
    }
    merged
}

/// Labels made safe for folded lines ([`folded_text`]), interned: two labels that differ
/// only in what that replaces share an id, so stacks merge exactly as their lines would,
/// and two stacks are the same line exactly when their ids are equal.
#[derive(Default)]
pub(super) struct FoldedTexts {
    /// Per label id: its folded-text id (`u32::MAX` until needed).
    of_label: Vec<u32>,
    ids: HashMap<String, u32>,
    texts: Vec<String>,
}

impl FoldedTexts {
    /// The id of label `label`'s folded text.
    pub(super) fn of_label(&mut self, label: u32, syms: &Symbols) -> u32 {
        let l = label as usize;
        if l >= self.of_label.len() {
            self.of_label.resize(l + 1, u32::MAX);
        }
        if self.of_label[l] == u32::MAX {
            self.of_label[l] = self.intern(&folded_text(syms.label_text(label)));
        }
        self.of_label[l]
    }

    /// The id of `text`, which must already be folded text (no `;`, no newline).
    pub(super) fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.texts.push(text.to_string());
        self.ids.insert(text.to_string(), id);
        id
    }

    /// The ids of a folded stack line's frames (`a;b;c`, without the count).
    pub(super) fn intern_line(&mut self, stack: &str) -> Vec<u32> {
        stack.split(';').map(|t| self.intern(t)).collect()
    }

    /// Interns every text of `self` in `into`; the result maps an id of `self` to the
    /// same text's id there.
    pub(super) fn translate(&self, into: &mut FoldedTexts) -> Vec<u32> {
        self.texts.iter().map(|t| into.intern(t)).collect()
    }

    /// The text of id `id`.
    pub(super) fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }

    /// Appends `stack` as `text;text;...` to `line`.
    pub(super) fn push_stack(&self, line: &mut String, stack: &[u32]) {
        for (i, &t) in stack.iter().enumerate() {
            if i > 0 {
                line.push(';');
            }
            line.push_str(self.text(t));
        }
    }

    /// `stack` as one `text;text;...` string.
    pub(super) fn join(&self, stack: &[u32]) -> String {
        let mut line = String::new();
        self.push_stack(&mut line, stack);
        line
    }
}
