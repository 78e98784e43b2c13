//! The benchmark child with tidemark's debug hooks over the system allocator
//! (`TIDEMARK_MALLOC=malloc_debug`) as the global allocator; the quarantine bound comes from
//! `TIDEMARK_QUARANTINE` (default 4 MiB). See `tidemark_bench::child`.

tidemark_bench::allocator_main!(
    "malloc_debug",
    tidemark_alloc::Debug<std::alloc::System> = tidemark_alloc::Debug::new(std::alloc::System)
);
