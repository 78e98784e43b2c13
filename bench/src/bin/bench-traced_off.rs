//! The benchmark child with tidemark's tracer wrapping pymalloc, `Traced<Pymalloc>`, and tracing
//! never started: what the hook costs when it has nothing to do (the target: at most
//! 1.03x `tidemark`). See `tidemark_bench::child`.

tidemark_bench::allocator_main!(
    "traced_off",
    tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
        tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new())
);
