//! The tracer's own work (a snapshot, the symbolizer's line tables, a traceback lookup) is not
//! traced as the program's memory: as with tracemalloc, taking a snapshot changes nothing the
//! next snapshot reports.

use tidemark_tracer::{Snapshot, Traced};

#[global_allocator]
static GLOBAL: Traced<std::alloc::System> = Traced::new(std::alloc::System);

#[test]
fn snapshots_and_the_symbolizer_are_not_traced() {
    tidemark_tracer::start(16).unwrap();
    let kept = vec![7u8; 1000];
    let first = tidemark_tracer::take_snapshot().unwrap();
    let (after_first, _) = tidemark_tracer::traced_memory();
    let second = tidemark_tracer::take_snapshot().unwrap();
    assert!(tidemark_tracer::object_traceback(kept.as_ptr()).is_some());
    let (after_second, _) = tidemark_tracer::traced_memory();
    assert_eq!(
        after_second, after_first,
        "the first snapshot is not traced"
    );
    let total = |s: &Snapshot| s.traces().iter().map(|t| t.size).sum::<usize>();
    assert_eq!(total(&second), total(&first));
    assert_eq!(first.traces().iter().filter(|t| t.size == 1000).count(), 1);
    drop((first, second, kept));
    tidemark_tracer::stop();
}
