//! Traces of blocks in tidemark's pools, which live in the allocator's per-block words, and
//! their spills into the shared table.
//!
//! Alone in its binary: the assertions read the global `traced_memory()` counter exactly, and
//! in a binary with other tests the harness's main thread allocates (its report of a test
//! that just finished) while this one runs, which the counter counts too.

#[global_allocator]
static GLOBAL: tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
    tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new());

/// Blocks of tidemark's pools keep their traces in the allocator's per-block words; a trace
/// that does not fit a word (an odd size given to `track`) spills into the shared table. Both
/// must read back, replace and forget exactly like any other trace.
#[test]
fn pool_block_traces_and_spills() {
    tidemark_tracer::start(5).unwrap();
    let (base, _) = tidemark_tracer::traced_memory();
    let obj = Box::new([7u8; 200]);
    let ptr = obj.as_ptr() as usize;
    assert!(tidemark_alloc::is_ours(obj.as_ptr()));
    assert_eq!(tidemark_tracer::traced_memory().0, base + 200);
    // An interior pointer names the same block.
    let tb = tidemark_tracer::object_traceback((ptr + 10) as *const u8).expect("traced");
    assert!(
        tb.most_recent().filename.ends_with("pool_block_traces.rs"),
        "{tb:?}"
    );

    // Re-tracking with a size too big for the word spills it to the table, and back.
    let (before, _) = tidemark_tracer::traced_memory();
    let line = line!() + 1;
    tidemark_tracer::track(0, ptr, 1 << 20).unwrap();
    assert_eq!(tidemark_tracer::traced_memory().0, before - 200 + (1 << 20));
    let tb = tidemark_tracer::object_traceback(ptr as *const u8).expect("spilled trace");
    assert_eq!(tb.most_recent().lineno, line, "{tb:?}");
    let snap = tidemark_tracer::take_snapshot().unwrap();
    assert_eq!(
        snap.traces().iter().filter(|t| t.size == 1 << 20).count(),
        1
    );
    assert_eq!(snap.traces().iter().filter(|t| t.size == 200).count(), 0);
    let (spilled, _) = tidemark_tracer::traced_memory();
    tidemark_tracer::track(0, ptr, 200).unwrap();
    assert_eq!(
        tidemark_tracer::traced_memory().0,
        spilled - (1 << 20) + 200
    );
    let snap = tidemark_tracer::take_snapshot().unwrap();
    assert_eq!(
        snap.traces().iter().filter(|t| t.size == 1 << 20).count(),
        0
    );

    // clear_traces forgets the word: freeing afterwards must not count the block again.
    tidemark_tracer::clear_traces();
    assert!(tidemark_tracer::object_traceback(ptr as *const u8).is_none());
    drop(obj);
    assert_eq!(tidemark_tracer::traced_memory().0, 0);
    tidemark_tracer::stop();
}
