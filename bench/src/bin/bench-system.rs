//! The benchmark child with `system` as the global allocator (see `tidemark_bench::child`).

tidemark_bench::allocator_main!("system", std::alloc::System = std::alloc::System);
