//! Random alloc / free / realloc / alloc_zeroed sequences over sizes 1..=4096 and alignments
//! 1..=4096: every block is aligned, no two live blocks overlap, contents survive realloc and
//! zeroed memory is zero.

#[path = "common/ops.rs"]
mod ops;

use ops::{op, Op};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use tidemark_alloc::Pymalloc;

#[global_allocator]
static GLOBAL: Pymalloc = Pymalloc::new();

struct Live {
    layout: Layout,
    tag: u8,
}

fn fill(p: *mut u8, len: usize, tag: u8) {
    for i in 0..len {
        unsafe { *p.add(i) = tag.wrapping_add(i as u8) };
    }
}

fn check(p: *mut u8, len: usize, tag: u8) -> bool {
    (0..len).all(|i| unsafe { *p.add(i) } == tag.wrapping_add(i as u8))
}

fn no_overlap(live: &BTreeMap<usize, Live>, p: usize, size: usize) -> bool {
    let before = live.range(..=p).next_back();
    let after = live.range(p..).next();
    before.is_none_or(|(&q, l)| q + l.layout.size() <= p)
        && after.is_none_or(|(&q, _)| p + size <= q)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_blocks_sound(ops in proptest::collection::vec(op(), 1..400)) {
        let mut live: BTreeMap<usize, Live> = BTreeMap::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc { size, align_log, zeroed } => {
                    let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                    let p = unsafe { if zeroed { GLOBAL.alloc_zeroed(layout) } else { GLOBAL.alloc(layout) } };
                    prop_assert!(!p.is_null());
                    prop_assert_eq!(p as usize % layout.align(), 0);
                    if zeroed {
                        let all_zero = (0..size).all(|i| unsafe { *p.add(i) } == 0);
                        prop_assert!(all_zero, "zeroed block not zero");
                    }
                    prop_assert!(no_overlap(&live, p as usize, size));
                    tag = tag.wrapping_add(1);
                    fill(p, size, tag);
                    live.insert(p as usize, Live { layout, tag });
                }
                Op::Free { pick } => {
                    if live.is_empty() { continue; }
                    let key = *live.keys().nth(pick % live.len()).unwrap();
                    let l = live.remove(&key).unwrap();
                    prop_assert!(check(key as *mut u8, l.layout.size(), l.tag));
                    unsafe { GLOBAL.dealloc(key as *mut u8, l.layout) };
                }
                Op::Realloc { pick, size } => {
                    if live.is_empty() { continue; }
                    let key = *live.keys().nth(pick % live.len()).unwrap();
                    let l = live.remove(&key).unwrap();
                    let p = unsafe { GLOBAL.realloc(key as *mut u8, l.layout, size) };
                    prop_assert!(!p.is_null());
                    prop_assert_eq!(p as usize % l.layout.align(), 0);
                    let kept = size.min(l.layout.size());
                    prop_assert!(check(p, kept, l.tag));
                    prop_assert!(no_overlap(&live, p as usize, size));
                    let layout = Layout::from_size_align(size, l.layout.align()).unwrap();
                    fill(p, size, l.tag);
                    live.insert(p as usize, Live { layout, tag: l.tag });
                }
            }
        }
        for (p, l) in live {
            prop_assert!(check(p as *mut u8, l.layout.size(), l.tag));
            unsafe { GLOBAL.dealloc(p as *mut u8, l.layout) };
        }
    }
}

#[test]
fn realloc_stays_in_place_within_a_quarter() {
    let layout = Layout::from_size_align(500, 8).unwrap();
    unsafe {
        let p = GLOBAL.alloc(layout);
        // 512-byte block: 400 keeps it (shrinks < 25%), 300 moves it to a smaller class.
        let q = GLOBAL.realloc(p, layout, 400);
        assert_eq!(p, q);
        let r = GLOBAL.realloc(q, Layout::from_size_align(400, 8).unwrap(), 300);
        assert_ne!(q, r);
        // Growing past 512 moves to the raw path and keeps the bytes.
        *r = 7;
        let s = GLOBAL.realloc(r, Layout::from_size_align(300, 8).unwrap(), 5000);
        assert!(!tidemark_alloc::is_ours(s));
        assert_eq!(*s, 7);
        // Shrinking back to a small size returns to a pool.
        let t = GLOBAL.realloc(s, Layout::from_size_align(5000, 8).unwrap(), 100);
        assert!(tidemark_alloc::is_ours(t));
        assert_eq!(*t, 7);
        GLOBAL.dealloc(t, Layout::from_size_align(100, 8).unwrap());
    }
}

#[test]
fn c_family_routes_by_address() {
    let a = Pymalloc::new();
    unsafe {
        let small = a.c_malloc(0);
        assert!(tidemark_alloc::is_ours(small));
        assert_eq!(a.c_usable_size(small), 16);
        let big = a.c_malloc(100_000);
        assert!(!tidemark_alloc::is_ours(big));
        assert!(a.c_usable_size(big) >= 100_000);
        let zeroed = a.c_calloc(10, 30);
        assert!((0..300).all(|i| *zeroed.add(i) == 0));
        assert!(a.c_calloc(usize::MAX, 2).is_null());
        *small = 42;
        let grown = a.c_realloc(small, 1000);
        assert_eq!(*grown, 42);
        let shrunk = a.c_realloc(grown, 8);
        assert!(tidemark_alloc::is_ours(shrunk));
        assert_eq!(*shrunk, 42);
        assert!(a.c_realloc(shrunk, 0).is_null());
        let aligned = a.c_memalign(4096, 100);
        assert_eq!(aligned as usize % 4096, 0);
        a.c_free(aligned);
        a.c_free(big);
        a.c_free(zeroed);
        a.c_free(std::ptr::null_mut());
    }
}

#[test]
fn fresh_zeroed_blocks_are_zero_even_after_reuse() {
    let layout = Layout::from_size_align(256, 16).unwrap();
    unsafe {
        let blocks: Vec<*mut u8> = (0..200).map(|_| GLOBAL.alloc(layout)).collect();
        for &b in &blocks {
            std::ptr::write_bytes(b, 0xAB, 256);
            GLOBAL.dealloc(b, layout);
        }
        let again: Vec<*mut u8> = (0..200).map(|_| GLOBAL.alloc_zeroed(layout)).collect();
        for &b in &again {
            assert!((0..256).all(|i| *b.add(i) == 0));
            GLOBAL.dealloc(b, layout);
        }
    }
}
