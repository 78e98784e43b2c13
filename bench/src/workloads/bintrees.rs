//! bintrees: complete binary trees of 16-byte nodes (two `Option<Box<Node>>`), built, walked
//! and dropped repeatedly. Many same-sized small objects with LIFO-ish lifetimes.

use super::Params;

pub const DEPTH: u32 = 20;
/// Trees of depth [`DEPTH`] built at scale 1.
pub const TREES: f64 = 8.0;

struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

const _: () = assert!(std::mem::size_of::<Node>() == 16);

fn build(depth: u32) -> Box<Node> {
    if depth == 0 {
        Box::new(Node {
            left: None,
            right: None,
        })
    } else {
        Box::new(Node {
            left: Some(build(depth - 1)),
            right: Some(build(depth - 1)),
        })
    }
}

fn count(node: &Node) -> u64 {
    1 + node.left.as_deref().map_or(0, count) + node.right.as_deref().map_or(0, count)
}

pub fn run(params: &Params) -> u64 {
    // Below one full tree, shrink the depth instead (each level halves the work).
    let work = TREES * params.scale;
    let (trees, depth) = if work >= 1.0 {
        (work.round() as usize, DEPTH)
    } else {
        let shrink = (-work.log2()).ceil() as u32;
        (1, DEPTH.saturating_sub(shrink).max(4))
    };
    let mut sum = 0;
    for _ in 0..trees {
        let tree = build(depth);
        sum += count(&tree);
        drop(tree);
    }
    sum
}
