//! The benchmark child with tidemark's debug hooks over pymalloc (`TIDEMARK_MALLOC=pymalloc_debug`)
//! as the global allocator; the quarantine bound comes from `TIDEMARK_QUARANTINE` (default
//! 4 MiB). See `tidemark_bench::child`.

tidemark_bench::allocator_main!(
    "pymalloc_debug",
    tidemark_alloc::Debug<tidemark_alloc::Pymalloc> =
        tidemark_alloc::Debug::new(tidemark_alloc::Pymalloc::new())
);
