//! The benchmark child with dhat-rs, the Rust peer profiler: `dhat::Alloc` (over the system
//! allocator) as the global allocator and a heap profiler running through the workload, with
//! dhat's default settings (backtraces trimmed to 10 frames). The profiler's report at the end
//! is skipped (see `allocator_main!`'s `before`). Needs `--features dhat`.

tidemark_bench::allocator_main!(
    "dhat",
    dhat::Alloc = dhat::Alloc,
    before = dhat::Profiler::new_heap()
);
