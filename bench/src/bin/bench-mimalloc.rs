//! The benchmark child with `mimalloc` as the global allocator (see `tidemark_bench::child`).

tidemark_bench::allocator_main!("mimalloc", mimalloc::MiMalloc = mimalloc::MiMalloc);
