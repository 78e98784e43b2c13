//! Random alloc / free / realloc / alloc_zeroed sequences through `Debug<Pymalloc>` over sizes
//! 1..=4096 and alignments 1..=4096: every block is aligned, fresh bytes are CLEANBYTE, zeroed
//! bytes are zero, realloc keeps the prefix and marks the rest CLEANBYTE, a just-freed block
//! reads DEADBYTE (it waits in the quarantine), and `check_heap` finds nothing wrong.

#[path = "common/ops.rs"]
mod ops;

use ops::{op, Op};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use tidemark_alloc::debug::{check_heap, Debug, CLEANBYTE, DEADBYTE};
use tidemark_alloc::Pymalloc;

#[global_allocator]
static G: Debug<Pymalloc> = Debug::new(Pymalloc::new());

fn all(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY (test): the range is a block (or quarantined block) of the debug layer.
    unsafe { std::slice::from_raw_parts(p, len) }
        .iter()
        .all(|&b| b == byte)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn marks_and_alignment_hold(ops in proptest::collection::vec(op(), 1..200)) {
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            let tag = n as u8 | 1;
            match op {
                Op::Alloc { size, align_log, zeroed } => {
                    let l = Layout::from_size_align(size, 1 << align_log).unwrap();
                    let p = unsafe { if zeroed { G.alloc_zeroed(l) } else { G.alloc(l) } };
                    prop_assert!(!p.is_null());
                    prop_assert_eq!(p as usize % l.align(), 0);
                    let fresh = if zeroed { 0 } else { CLEANBYTE };
                    prop_assert!(all(p, size, fresh));
                    unsafe { p.write_bytes(tag, size) };
                    live.push((p, l, tag));
                }
                Op::Free { pick } if !live.is_empty() => {
                    let (p, l, tag) = live.swap_remove(pick % live.len());
                    prop_assert!(all(p, l.size(), tag));
                    unsafe { G.dealloc(p, l) };
                    prop_assert!(all(p, l.size(), DEADBYTE));
                }
                Op::Realloc { pick, size } if !live.is_empty() => {
                    let i = pick % live.len();
                    let (p, l, tag) = live[i];
                    let q = unsafe { G.realloc(p, l, size) };
                    prop_assert!(!q.is_null());
                    prop_assert_eq!(q as usize % l.align(), 0);
                    let keep = l.size().min(size);
                    prop_assert!(all(q, keep, tag));
                    let grown = q.wrapping_add(keep);
                    prop_assert!(all(grown, size - keep, CLEANBYTE));
                    let nl = Layout::from_size_align(size, l.align()).unwrap();
                    unsafe { q.write_bytes(tag, size) };
                    live[i] = (q, nl, tag);
                }
                _ => {}
            }
        }
        prop_assert!(check_heap() >= live.len());
        for (p, l, _) in live {
            unsafe { G.dealloc(p, l) };
        }
    }
}
