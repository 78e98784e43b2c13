//! The benchmark child with `tidemark` as the global allocator (see `tidemark_bench::child`).

tidemark_bench::allocator_main!(
    "tidemark",
    tidemark_alloc::Pymalloc = tidemark_alloc::Pymalloc::new()
);
