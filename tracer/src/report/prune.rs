//! Folded lines cut down to what inferno draws.
//!
//! inferno reads every folded line, sorts them, merges them into frames (a frame is a run of
//! consecutive lines that share a stack prefix) and only then drops each frame narrower than
//! its `min_width` (a percentage of the total). It keeps every line alive until the SVG is
//! written. A CPython capture has a few thousand stacks of a hundred frames or more: their
//! lines are ~50 MB, for a graph that draws a few thousand frames.
//!
//! So the lines are pruned here first, by running inferno's own rules on the stacks as ids:
//! the same line order (inferno sorts the line text), the same frames, the same width test.
//! Each run of lines inside a frame that will not be drawn, whose parent will, becomes one
//! line that ends at that frame, with the run's bytes: every drawn frame keeps its start,
//! end, depth and name (so its width and position), the undrawn ones stay undrawn, and
//! inferno writes the same SVG from far fewer, far shorter lines.
//!
//! Where the text would not read back as the ids mean (a frame name inferno would trim or
//! read as a count, see [`plain`]) or the shortened lines would not keep inferno's order
//! (a name that is another name plus a character sorting before `;`), every line is given
//! unpruned: the same picture, just the old memory cost.

use super::folded::FoldedTexts;
use std::cmp::Ordering;

/// One folded stack for [`drawn_lines`].
pub(super) struct DrawStack {
    /// Folded-text ids, outermost frame first (as the line reads).
    pub stack: Vec<u32>,
    /// The width: bytes (the new profile's, in a differential graph).
    pub bytes: u64,
    /// Differential graphs only: the old profile's bytes (inferno's first count column).
    pub before: Option<u64>,
}

/// The folded lines (`stack [before] bytes`, one a line) from which inferno, with
/// `min_width` (its option of that name), draws exactly the frames it would draw from all
/// of `stacks`, in the same places. Lines are in inferno's order.
pub(super) fn drawn_lines(stacks: Vec<DrawStack>, texts: &FoldedTexts, min_width: f64) -> String {
    let mut lines: Vec<Line> = stacks.into_iter().map(Line::new).collect();
    lines.sort_unstable_by(|a, b| cmp_lines(texts, a.whole(), b.whole()));
    let total: u64 = lines.iter().map(|l| l.bytes).sum();
    if total == 0 || !all_plain(&lines, texts) {
        return write_lines(texts, lines.iter().map(Line::whole));
    }
    let shared: Vec<usize> = (0..lines.len())
        .map(|i| match i {
            0 => 0,
            _ => common_prefix(&lines[i - 1].stack, &lines[i].stack),
        })
        .collect();
    // inferno's test, with its arithmetic: a frame `w` wide is dropped when
    // `w < min_width / (100 / total)` (a number: `total` is not 0).
    let min_time = min_width / (100.0 / total as f64);
    let drawn_opened = drawn_opened(&lines, &shared, |w| w as f64 >= min_time);
    let cut = cut_lines(&lines, &shared, &drawn_opened);
    let in_order = cut
        .windows(2)
        .all(|w| cmp_lines(texts, w[0].text(&lines), w[1].text(&lines)) == Ordering::Less);
    if !in_order {
        return write_lines(texts, lines.iter().map(Line::whole));
    }
    write_lines(texts, cut.iter().map(|c| c.text(&lines)))
}

/// A stack with its count columns as inferno reads them.
struct Line {
    stack: Vec<u32>,
    bytes: u64,
    /// `bytes - before` for differential lines (inferno's delta), else 0.
    delta: i64,
    differential: bool,
    /// ` bytes` or ` before bytes`: what follows the stack on the line.
    tail: String,
}

impl Line {
    fn new(s: DrawStack) -> Line {
        let (tail, delta) = match s.before {
            Some(before) => (
                format!(" {before} {}", s.bytes),
                s.bytes as i64 - before as i64,
            ),
            None => (format!(" {}", s.bytes), 0),
        };
        Line {
            stack: s.stack,
            bytes: s.bytes,
            delta,
            differential: s.before.is_some(),
            tail,
        }
    }

    fn whole(&self) -> (&[u32], &str) {
        (&self.stack, &self.tail)
    }
}

/// Every frame name reads back as itself from a folded line: inferno trims each line, drops
/// lines starting with `# `, and reads a trailing ` NUMBER` of the stack as a count column.
fn plain(text: &str) -> bool {
    let count_like = match text.rsplit_once(' ') {
        Some((_, last)) => last.chars().all(|c| c.is_ascii_digit() || c == '.'),
        None => false,
    };
    !text.is_empty() && text.trim() == text && !text.starts_with('#') && !count_like
}

fn all_plain(lines: &[Line], texts: &FoldedTexts) -> bool {
    // Per text id: unknown, plain, not plain.
    let mut seen: Vec<u8> = Vec::new();
    lines.iter().flat_map(|l| &l.stack).all(|&t| {
        let t = t as usize;
        if t >= seen.len() {
            seen.resize(t + 1, 0);
        }
        if seen[t] == 0 {
            seen[t] = if plain(texts.text(t as u32)) { 1 } else { 2 };
        }
        seen[t] == 1
    })
}

/// How many leading frames two stacks share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Compares two lines as inferno sorts them: by their text (`stack` joined with `;`, then
/// the tail), without building it.
fn cmp_lines(texts: &FoldedTexts, a: (&[u32], &str), b: (&[u32], &str)) -> Ordering {
    // Up to frame `n` the texts are equal; compare what follows.
    let n = common_prefix(a.0, b.0);
    text_from(texts, a, n).cmp(text_from(texts, b, n))
}

/// The bytes of a line's text from frame `n` on (with the `;` before it).
fn text_from<'a>(
    texts: &'a FoldedTexts,
    (stack, tail): (&'a [u32], &'a str),
    n: usize,
) -> impl Iterator<Item = u8> + 'a {
    stack[n..]
        .iter()
        .enumerate()
        .flat_map(move |(i, &t)| {
            let sep: &[u8] = if n + i > 0 { b";" } else { b"" };
            sep.iter().copied().chain(texts.text(t).bytes())
        })
        .chain(tail.bytes())
}

/// inferno's frames over the sorted `lines` (frame at depth `d` of line `i` runs over the
/// consecutive lines sharing its first `d + 1` names), reported per line as: how many of
/// the frames that line opens (depths `shared[i]..`) are drawn. Those are always the
/// outermost ones: a frame is never wider than its parent.
fn drawn_opened(lines: &[Line], shared: &[usize], drawn: impl Fn(u64) -> bool) -> Vec<usize> {
    let mut opened = vec![0; lines.len()];
    // Per depth: (the line that opened the frame, its width so far).
    let mut open: Vec<(usize, u64)> = Vec::new();
    for i in 0..=lines.len() {
        let keep = shared.get(i).copied().unwrap_or(0);
        while open.len() > keep {
            let depth = open.len() - 1;
            let (start, width) = open.pop().unwrap_or_default();
            if drawn(width) {
                opened[start] = opened[start].max(depth + 1 - shared[start]);
            }
        }
        let Some(line) = lines.get(i) else { break };
        open.resize(line.stack.len().max(open.len()), (i, 0));
        for frame in &mut open {
            frame.1 += line.bytes;
        }
    }
    opened
}

/// A line to hand to inferno: a whole input line, or the first `len` frames of input line
/// `line` standing for a run of lines inside one undrawn frame.
struct Cut {
    line: usize,
    len: usize,
    /// `None` for a whole line; else the run's tail.
    tail: Option<String>,
}

impl Cut {
    fn text<'a>(&'a self, lines: &'a [Line]) -> (&'a [u32], &'a str) {
        let l = &lines[self.line];
        match &self.tail {
            None => l.whole(),
            Some(tail) => (&l.stack[..self.len], tail),
        }
    }
}

/// Walks the sorted lines: a line whose frames are all drawn stays whole; a run of lines
/// inside one undrawn frame (whose parent is drawn) becomes one line ending at that frame.
fn cut_lines(lines: &[Line], shared: &[usize], drawn_opened: &[usize]) -> Vec<Cut> {
    let mut cut: Vec<Cut> = Vec::new();
    // The run being gathered: its undrawn depth, bytes and its most extreme delta.
    let mut run: Option<(usize, u64, i64)> = None;
    let mut run_start = 0;
    // Depth of the previous line's first undrawn frame (its length when all are drawn).
    let mut prev_undrawn = 0;
    let finish = |cut: &mut Vec<Cut>, start: usize, (depth, bytes, delta): (usize, u64, i64)| {
        let l = &lines[start];
        let tail = if l.differential {
            // The run's delta is its most extreme line's: inferno colours by the largest
            // delta of any line, and the run's frames are not drawn. The old bytes never
            // go negative: a positive delta is at most that line's bytes, so the run's.
            format!(" {} {bytes}", bytes as i64 - delta)
        } else {
            format!(" {bytes}")
        };
        cut.push(Cut {
            line: start,
            len: depth + 1,
            tail: Some(tail),
        });
    };
    for (i, line) in lines.iter().enumerate() {
        if i > 0 && prev_undrawn < shared[i] {
            // Inside the previous line's undrawn frame: the same run.
            if let Some(r) = run.as_mut() {
                r.1 += line.bytes;
                if line.delta.unsigned_abs() > r.2.unsigned_abs() {
                    r.2 = line.delta;
                }
            }
            continue;
        }
        if let Some(r) = run.take() {
            finish(&mut cut, run_start, r);
        }
        let undrawn = shared[i] + drawn_opened[i];
        if undrawn >= line.stack.len() {
            cut.push(Cut {
                line: i,
                len: line.stack.len(),
                tail: None,
            });
        } else {
            run = Some((undrawn, line.bytes, line.delta));
            run_start = i;
        }
        prev_undrawn = undrawn;
    }
    if let Some(r) = run.take() {
        finish(&mut cut, run_start, r);
    }
    cut
}

/// The lines' text, one a line.
fn write_lines<'a>(
    texts: &FoldedTexts,
    lines: impl Iterator<Item = (&'a [u32], &'a str)> + Clone,
) -> String {
    let size = lines
        .clone()
        .map(|(stack, tail)| {
            stack
                .iter()
                .map(|&t| texts.text(t).len() + 1)
                .sum::<usize>()
                + tail.len()
        })
        .sum();
    let mut out = String::with_capacity(size);
    for (stack, tail) in lines {
        texts.push_stack(&mut out, stack);
        out.push_str(tail);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(texts: &mut FoldedTexts, stacks: &[(&str, Option<u64>, u64)]) -> Vec<DrawStack> {
        stacks
            .iter()
            .map(|&(stack, before, bytes)| DrawStack {
                stack: texts.intern_line(stack),
                bytes,
                before,
            })
            .collect()
    }

    fn render(lines: &str) -> String {
        let mut opt = inferno::flamegraph::Options::default();
        opt.deterministic = true;
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut opt, lines.lines(), &mut svg).unwrap();
        String::from_utf8(svg).unwrap()
    }

    const MIN_WIDTH: f64 = 0.01;

    #[test]
    fn differential_run_keeps_its_most_extreme_delta() {
        // 100 000 new bytes: frames under 10 are not drawn. `c` is 5 wide; its lines grew
        // by 3 and shrank by 7: the run's line shrinks by 7, so inferno's largest delta
        // (which sets every colour) stays what it was.
        let stacks = [
            ("a;b", Some(40), 60_000),
            ("a;c;x", Some(0), 3),
            ("a;c;y", Some(9), 2),
            ("a;d", Some(0), 39_995),
        ];
        let mut texts = FoldedTexts::default();
        let drawn = drawn_lines(draw(&mut texts, &stacks), &texts, MIN_WIDTH);
        assert_eq!(drawn, "a;b 40 60000\na;c 12 5\na;d 0 39995\n");
        let all: String = stacks
            .iter()
            .map(|(s, b, n)| format!("{s} {} {n}\n", b.unwrap()))
            .collect();
        assert!(render(&drawn) == render(&all), "the same SVG");
    }

    #[test]
    fn names_inferno_would_misread_are_not_pruned() {
        // `f 12` at the end of a line reads as a second count column; ` g` is trimmed.
        for odd in ["f 12", " g", "#h"] {
            let stacks = [("m;x", None, 99_999), (&*format!("m;{odd};y"), None, 1)];
            let mut texts = FoldedTexts::default();
            let drawn = drawn_lines(draw(&mut texts, &stacks), &texts, MIN_WIDTH);
            assert_eq!(drawn.lines().count(), 2, "{odd:?}: {drawn}");
        }
    }
}
