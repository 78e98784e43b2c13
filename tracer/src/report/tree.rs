//! The tree report: the biggest allocation paths at the chosen moment, root first, as an
//! indented terminal tree. Small branches are folded into "N more" lines.

use super::analysis::Analysis;
use super::replay::IntMap;
use super::symbols::Symbols;
use super::{text, Moment};
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
}

/// A node while the tree is built: nodes live in one `Vec` and name their label by id, so
/// adding a stack costs a hash lookup per frame and no string.
struct FlatNode {
    label: u32,
    bytes: u64,
    count: u64,
    children: Vec<u32>,
}

/// The call tree (root = everything).
pub fn build(a: &Analysis, syms: &mut Symbols, moment: Moment) -> Node {
    let mut nodes = vec![FlatNode {
        label: u32::MAX,
        bytes: 0,
        count: 0,
        children: Vec::new(),
    }];
    // (parent node, label) → child node.
    let mut child_of: IntMap<u64, u32> = IntMap::default();
    let mut ids = Vec::new();
    for s in &a.sites {
        let (bytes, count) = moment.value(s);
        // A site of zero-byte blocks (`malloc(0)`) still holds blocks: as in the flamegraph.
        if bytes == 0 && count == 0 {
            continue;
        }
        nodes[0].bytes += bytes;
        nodes[0].count += count;
        syms.user_frame_ids(a, s.stack, &mut ids);
        let mut node = 0u32;
        for &f in ids.iter().rev() {
            let label = syms.label_id(f);
            let next = nodes.len() as u32;
            let child = *child_of
                .entry(((node as u64) << 32) | label as u64)
                .or_insert(next);
            if child == next {
                nodes.push(FlatNode {
                    label,
                    bytes: 0,
                    count: 0,
                    children: Vec::new(),
                });
                nodes[node as usize].children.push(child);
            }
            node = child;
            nodes[node as usize].bytes += bytes;
            nodes[node as usize].count += count;
        }
    }
    drop(child_of);
    nest(&nodes, 0, syms)
}

/// The nested [`Node`] of flat node `i` (children in first-seen order).
fn nest(nodes: &[FlatNode], i: u32, syms: &Symbols) -> Node {
    let n = &nodes[i as usize];
    Node {
        name: if i == 0 {
            "<all>".into()
        } else {
            syms.label_text(n.label).to_string()
        },
        bytes: n.bytes,
        count: n.count,
        children: n.children.iter().map(|&c| nest(nodes, c, syms)).collect(),
    }
}

/// The tree as text.
pub fn render_text(a: &Analysis, syms: &mut Symbols, opts: &Options) -> String {
    let root = build(a, syms, opts.moment);
    let mut o = String::new();
    let what = match opts.moment {
        Moment::Peak => format!("Allocation paths at {}", text::peak_moment(a)),
        Moment::End => "Allocation paths of leaked memory".to_string(),
    };
    let _ = writeln!(o, "{what}\n");
    let _ = writeln!(
        o,
        "📂 {} ({}) 100.00 % <all>",
        text::bytes(root.bytes),
        text::counted(root.count, "block", "blocks")
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
        // `min` is 0 only when the total is too small for the fraction (or is 0): then every
        // branch is shown, zero-byte blocks' too.
        .filter(|k| k.bytes >= min)
        .collect();
    let hidden: Vec<&Node> = kids.iter().copied().skip(shown.len()).collect();
    for (i, k) in shown.iter().enumerate() {
        let last = i + 1 == shown.len() && hidden.is_empty();
        let _ = writeln!(
            o,
            "{prefix}{} {} ({}) {:.2} % {}",
            if last { "└──" } else { "├──" },
            text::bytes(k.bytes),
            text::counted(k.count, "block", "blocks"),
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
            "{prefix}└── {} in {}",
            text::bytes(bytes),
            text::counted(hidden.len() as u64, "smaller branch", "smaller branches")
        );
    }
}
