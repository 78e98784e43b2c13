//! The tree report: the biggest allocation paths at the chosen moment, root first, as an
//! indented terminal tree. Small branches are folded into "N more" lines.

use super::analysis::Analysis;
use super::symbols::{label, Symbols};
use super::{text, Moment};
use std::collections::HashMap;
use std::fmt::Write;

/// Tree options.
#[derive(Clone, Debug)]
pub struct Options {
    pub moment: Moment,
    /// Children shown per node (biggest first).
    pub max_children: usize,
    /// Hide branches below this fraction of the total.
    pub min_fraction: f64,
    pub max_depth: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            moment: Moment::Peak,
            max_children: 10,
            min_fraction: 0.005,
            max_depth: 40,
        }
    }
}

/// A node of the call tree.
#[derive(Default, Debug)]
pub struct Node {
    pub name: String,
    pub bytes: u64,
    pub count: u64,
    pub children: Vec<Node>,
    index: HashMap<String, usize>,
}

impl Node {
    fn child(&mut self, name: &str) -> &mut Node {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.children.push(Node {
                    name: name.to_string(),
                    ..Node::default()
                });
                self.index.insert(name.to_string(), self.children.len() - 1);
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }
}

/// The call tree (root = everything).
pub fn build(a: &Analysis, syms: &mut Symbols, moment: Moment) -> Node {
    let mut root = Node {
        name: "<all>".into(),
        ..Node::default()
    };
    for s in &a.sites {
        let (bytes, count) = moment.value(s);
        if bytes == 0 {
            continue;
        }
        root.bytes += bytes;
        root.count += count;
        let frames = syms.user_frames(a, s.stack);
        let mut node = &mut root;
        for f in frames.iter().rev() {
            node = node.child(&label(f));
            node.bytes += bytes;
            node.count += count;
        }
    }
    root
}

/// The tree as text.
pub fn render_text(a: &Analysis, syms: &mut Symbols, opts: &Options) -> String {
    let root = build(a, syms, opts.moment);
    let mut o = String::new();
    let what = match opts.moment {
        Moment::Peak => "Allocation paths at the high-water mark",
        Moment::End => "Allocation paths of leaked memory",
    };
    let _ = writeln!(o, "{what}\n");
    let _ = writeln!(
        o,
        "📂 {} ({} blocks) 100.00 % <all>",
        text::bytes(root.bytes),
        text::count(root.count)
    );
    let total = root.bytes.max(1);
    print_children(&root, "", total, opts, 0, &mut o);
    o
}

fn print_children(
    node: &Node,
    prefix: &str,
    total: u64,
    opts: &Options,
    depth: usize,
    o: &mut String,
) {
    if depth >= opts.max_depth {
        return;
    }
    let mut kids: Vec<&Node> = node.children.iter().collect();
    kids.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.name.cmp(&y.name)));
    let min = (total as f64 * opts.min_fraction) as u64;
    let shown: Vec<&Node> = kids
        .iter()
        .copied()
        .take(opts.max_children)
        .filter(|k| k.bytes >= min.max(1))
        .collect();
    let hidden: Vec<&Node> = kids.iter().copied().skip(shown.len()).collect();
    for (i, k) in shown.iter().enumerate() {
        let last = i + 1 == shown.len() && hidden.is_empty();
        let _ = writeln!(
            o,
            "{prefix}{} {} ({} blocks) {:.2} % {}",
            if last { "└──" } else { "├──" },
            text::bytes(k.bytes),
            text::count(k.count),
            100.0 * k.bytes as f64 / total as f64,
            k.name
        );
        let next = format!("{prefix}{}", if last { "    " } else { "│   " });
        print_children(k, &next, total, opts, depth + 1, o);
    }
    if !hidden.is_empty() {
        let bytes: u64 = hidden.iter().map(|k| k.bytes).sum();
        let _ = writeln!(
            o,
            "{prefix}└── {} in {} smaller branches",
            text::bytes(bytes),
            hidden.len()
        );
    }
}
