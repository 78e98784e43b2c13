//! tidemark-bench: the allocator benchmark, the measuring instrument for tidemark's speed
//! and memory claims (see DESIGN.md, "Measuring").
//!
//! ```text
//! cargo run --release -p tidemark-bench --features peers -- --rounds 5
//! ```
//!
//! # How it measures
//!
//! ```text
//!  tidemark-bench (driver, src/main.rs → driver/)
//!     │  round r: for each workload, for each allocator (order rotated by r):
//!     │     spawn  target/<profile>/bench-<allocator> <workload> --scale F
//!     │     read   "tidemark-bench-result ... time_ns=… checksum=…"   (workload wall time)
//!     │     wait4  → ru_maxrss of that one process                      (peak RSS)
//!     └─ medians over rounds; ratios vs glibc (`system`) and vs the best peer
//!  bench-tidemark / bench-system / bench-mimalloc / bench-jemalloc (src/bin/)
//!        each one line: `allocator_main!(name, Type = init)` = #[global_allocator] + child::main
//! ```
//!
//! One process per run keeps each allocator's heap and peak RSS separate; interleaved rounds
//! and medians keep a shared, noisy 2-core machine from favouring whichever ran first.
//!
//! - [`workloads`]: churn, bintrees, xthread, strings, json, threads (deterministic; their
//!   checksums must match across allocators).
//! - [`child`]: the child side and the `allocator_main!` macro.
//! - [`variants`]: the table of allocator names → binaries, and how to add one.
//! - [`driver`]: options, spawning with `wait4`, medians, the table.
//!
//! The peers (mimalloc, jemalloc) compile C code and sit behind the `peers` feature, so
//! `cargo test --workspace` and `cargo clippy --workspace` never build them.
//!
//! # Adding an allocator variant
//!
//! 1. `src/bin/bench-<name>.rs`: `tidemark_bench::allocator_main!("<name>", Type = init);`
//! 2. `[[bin]] name = "bench-<name>"` in `bench/Cargo.toml` (`required-features` if it
//!    needs an optional dependency);
//! 3. a row in [`variants::VARIANTS`] (role `Subject` unless it is a divisor).

pub mod child;
pub mod driver;
pub mod rng;
pub mod variants;
pub mod workloads;
