//! The benchmark child with `Traced<Pymalloc>` tracing 32 frames from before the workload starts
//! (`tidemark_tracer::start(32)`): every allocation's stack captured and interned, every live
//! block in the trace table (the target: at most 1.5x `tidemark`). See
//! `tidemark_bench::child`.

tidemark_bench::allocator_main!(
    "traced_32",
    tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
        tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new()),
    before = tidemark_tracer::start(32).expect("start tracing")
);
