//! benchmarks (skeleton)
