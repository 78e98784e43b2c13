//! Statistics add up exactly, and count the blocks a test makes (single-threaded binary: the
//! figures are taken at rest).

use std::alloc::{GlobalAlloc, Layout};
use tidemark_alloc::{stats, Pymalloc};

#[global_allocator]
static GLOBAL: Pymalloc = Pymalloc::new();

#[test]
fn stats_partition_the_arenas_and_count_blocks() {
    // One test function only, so no other test thread allocates while we measure.
    let before = stats();
    assert_eq!(before.total(), before.arenas_current * 1024 * 1024);

    // 1000 blocks of 40 bytes → class 2 (48-byte blocks).
    let layout = Layout::from_size_align(40, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..1000).map(|_| unsafe { GLOBAL.alloc(layout) }).collect();
    let during = stats();
    assert_eq!(during.total(), during.arenas_current * 1024 * 1024);
    assert_eq!(
        during.classes[2].blocks_in_use,
        before.classes[2].blocks_in_use + 1000
    );
    let c = during.classes[2];
    assert_eq!(
        c.blocks_in_use + c.available_blocks,
        c.pools * ((16384 - 128) / 48)
    );

    for &b in &blocks {
        unsafe { GLOBAL.dealloc(b, layout) };
    }
    drop(blocks);
    let after = stats();
    assert_eq!(after.total(), after.arenas_current * 1024 * 1024);
    assert_eq!(
        after.classes[2].blocks_in_use,
        before.classes[2].blocks_in_use
    );

    // Raw path: a 4 KiB block is counted while live.
    let big = Layout::from_size_align(4096, 8).unwrap();
    let p = unsafe { GLOBAL.alloc(big) };
    let s = stats();
    assert_eq!(s.raw_allocations_current, after.raw_allocations_current + 1);
    assert_eq!(s.raw_bytes_current, after.raw_bytes_current + 4096);
    unsafe { GLOBAL.dealloc(p, big) };
    assert_eq!(
        stats().raw_allocations_current,
        after.raw_allocations_current
    );

    // The report's layout is CPython's.
    let text = during.to_string();
    assert!(text.starts_with("Small block threshold = 512, in 32 size classes.\n\nclass   size   num pools   blocks in use  avail blocks\n-----   ----   ---------   -------------  ------------\n"));
    let row = format!(
        "{:5} {:6} {:11} {:15} {:13}",
        2, 48, c.pools, c.blocks_in_use, c.available_blocks
    );
    assert!(text.contains(&row), "{text}");
    let arenas = format!(
        "{:<35}={:>21}",
        "# arenas allocated current", during.arenas_current
    );
    assert!(text.contains(&arenas), "{text}");
    let total = during.arenas_current * 1024 * 1024;
    let total_line = format!("{:<35}={:>21}", "Total", group_thousands(total));
    assert!(text.contains(&total_line), "{text}");
}

fn group_thousands(v: usize) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
