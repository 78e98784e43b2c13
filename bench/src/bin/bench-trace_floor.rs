//! The benchmark child with the floor of tracing (`tidemark_bench::trace_floor`) over pymalloc:
//! a bounded frame-pointer walk, a hashed stack id, the block's trace word and the traced-bytes
//! counters, nothing else. Not a usable tracer; see `tidemark_bench::trace_floor`.

tidemark_bench::allocator_main!(
    "trace_floor",
    tidemark_bench::trace_floor::TraceFloor<tidemark_alloc::Pymalloc> =
        tidemark_bench::trace_floor::TraceFloor::new(tidemark_alloc::Pymalloc::new())
);
