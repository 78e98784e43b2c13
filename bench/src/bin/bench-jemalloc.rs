//! The benchmark child with `jemalloc` as the global allocator (see `tidemark_bench::child`).

tidemark_bench::allocator_main!(
    "jemalloc",
    tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc
);
