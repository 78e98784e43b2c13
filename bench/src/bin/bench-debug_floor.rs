//! The benchmark child with the floor of the debug hooks (`tidemark_bench::debug_floor`) over
//! pymalloc: fills, guards and the 4 MiB quarantine's read-back, nothing else. Not a usable
//! allocator; see `tidemark_bench::debug_floor`.

tidemark_bench::allocator_main!(
    "debug_floor",
    tidemark_bench::debug_floor::Floor<tidemark_alloc::Pymalloc> =
        tidemark_bench::debug_floor::Floor::new(tidemark_alloc::Pymalloc::new())
);
