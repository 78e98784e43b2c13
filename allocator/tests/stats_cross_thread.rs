//! Blocks another thread freed are free in the statistics while they travel back to their
//! owner (remote.rs): in the freeing thread's outbox, and in the owner's inbox until it takes
//! them. (A binary of its own: the figures are compared at rest, with no other test running.)

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};
use tidemark_alloc::{stats, Pymalloc};

#[global_allocator]
static GLOBAL: Pymalloc = Pymalloc::new();

/// 460-byte blocks: class 28 (464 bytes), which nothing else here uses.
const SIZE: usize = 460;
const CLASS: usize = 28;
const BLOCKS: usize = 1000;

#[test]
fn blocks_freed_by_another_thread_are_not_in_use() {
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let before = stats().classes[CLASS];
    // SAFETY: a valid layout; every block is freed once, below.
    let blocks: Vec<usize> = (0..BLOCKS)
        .map(|_| unsafe { GLOBAL.alloc(layout) } as usize)
        .collect();
    assert_eq!(
        stats().classes[CLASS].blocks_in_use,
        before.blocks_in_use + BLOCKS
    );

    let freed = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let (f, d) = (freed.clone(), done.clone());
    let freer = std::thread::spawn(move || {
        // An allocation first, so that this thread has a heap (and outboxes) of its own.
        let own = Box::new(7u64);
        for &b in &blocks {
            // SAFETY: allocated above with `layout`, freed once.
            unsafe { GLOBAL.dealloc(b as *mut u8, layout) };
        }
        f.wait();
        // Alive until the main thread has looked: its outbox still holds the last blocks.
        d.wait();
        drop(own);
    });
    freed.wait();
    // 15 batches of 64 wait in this thread's inbox, 40 blocks in the freer's outbox.
    let during = stats().classes[CLASS];
    assert_eq!(during.blocks_in_use, before.blocks_in_use);
    assert_eq!(
        during.blocks_in_use + during.available_blocks,
        during.pools * ((16384 - 128) / 464)
    );
    done.wait();
    freer.join().unwrap();
    assert_eq!(
        stats().classes[CLASS].blocks_in_use,
        before.blocks_in_use,
        "after the freer's exit sent its outbox"
    );
}
