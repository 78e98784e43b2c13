//! `measure(|| ..)`: exact per-thread heap counters, tracing or not, in parallel tests.

use tidemark_tracer::{measure, HeapStats, Traced};

#[global_allocator]
static GLOBAL: Traced<tidemark_alloc::Pymalloc> = Traced::new(tidemark_alloc::Pymalloc::new());

#[test]
fn counts_blocks_and_bytes_exactly() {
    let (kept, stats) = measure(|| {
        // black_box: release builds may otherwise elide an allocation that is never read.
        let a = std::hint::black_box(vec![0u8; 100]);
        let b = Box::new(5u64);
        drop(a);
        b
    });
    assert_eq!(
        stats,
        HeapStats {
            total_blocks: 2,
            total_bytes: 108,
            curr_blocks: 1,
            curr_bytes: 8,
            max_blocks: 2,
            max_bytes: 108,
        }
    );
    drop(kept);
}

#[test]
fn realloc_counts_as_a_new_block() {
    let ((), stats) = measure(|| {
        let mut v: Vec<u8> = Vec::with_capacity(10);
        v.reserve_exact(90);
        assert_eq!(v.capacity(), 90);
    });
    assert_eq!(
        stats,
        HeapStats {
            total_blocks: 2,
            total_bytes: 100,
            curr_blocks: 0,
            curr_bytes: 0,
            max_blocks: 1,
            max_bytes: 90,
        }
    );
}

#[test]
fn frees_of_older_blocks_do_not_count() {
    let old = vec![1u8; 50];
    let ((), stats) = measure(move || drop(old));
    assert_eq!(stats, HeapStats::default());
}

#[test]
fn nested_measures_both_count() {
    let ((inner_kept, inner), outer) = measure(|| {
        let _a = std::hint::black_box(vec![0u8; 10]);
        measure(|| vec![0u8; 20])
    });
    assert_eq!(
        (inner.total_blocks, inner.total_bytes, inner.curr_bytes),
        (1, 20, 20)
    );
    assert_eq!(
        (outer.total_blocks, outer.total_bytes, outer.curr_bytes),
        (2, 30, 20)
    );
    drop(inner_kept);
}

#[test]
fn eight_threads_measure_independently() {
    let handles: Vec<_> = (0..8usize)
        .map(|t| {
            std::thread::spawn(move || {
                let (kept, stats) = measure(|| {
                    let mut kept = Vec::with_capacity(100);
                    for i in 0..100 {
                        kept.push(vec![0u8; 16 + t + i]);
                        let tmp = std::hint::black_box(vec![0u8; 1000]);
                        drop(tmp);
                    }
                    kept
                });
                let live: usize = (0..100).map(|i| 16 + t + i).sum();
                assert_eq!(stats.total_blocks, 1 + 100 + 100);
                assert_eq!(stats.total_bytes as usize, 100 * 24 + live + 100 * 1000);
                assert_eq!(stats.curr_blocks, 101);
                assert_eq!(stats.curr_bytes, 100 * 24 + live);
                assert_eq!(
                    stats.max_bytes,
                    100 * 24 + live + 1000,
                    "the last temporary on top"
                );
                drop(kept);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_panicking_closure_unlinks_its_frame() {
    let r = std::panic::catch_unwind(|| measure(|| panic!("boom")));
    assert!(r.is_err());
    let (_, stats) = measure(|| Box::new(1u8));
    assert_eq!(stats.total_blocks, 1);
}
