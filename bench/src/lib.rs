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
//!     └─ medians over rounds; ratios vs glibc (`system`), vs the best peer, and for the debug
//!        rows vs the plain allocator they wrap (`time/plain`)
//!  bench-tidemark / bench-pymalloc_debug / bench-system / bench-malloc_debug /
//!  bench-mimalloc / bench-jemalloc (src/bin/)
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
//! The profiler rows run when named in `--allocators`: `traced_off` and `traced_32` are
//! `Traced<Pymalloc>` with tracing never started and started with 32 frames before the workload
//! (their `time/plain` divides by `tidemark`), and `dhat` is dhat-rs's `Alloc` with a heap
//! profiler running (behind the `dhat` feature, like the peers):
//!
//! ```text
//! cargo run --release -p tidemark-bench --features peers,dhat -- --workloads churn,strings \
//!     --allocators tidemark,traced_off,traced_32,dhat,system
//! ```
//!
//! Two floors run when named, each over pymalloc and not usable for anything else:
//! `debug_floor` ([`debug_floor`]) is the least work any debug hook with `pymalloc_debug`'s
//! marks, guards and 4 MiB quarantine must do, and `trace_floor` ([`trace_floor`]) the least any
//! exact tracer must do per call while it traces (stack walk, stack id, the block's trace word,
//! the traced-bytes counters). Their `time/plain` is what `pymalloc_debug` and `traced_32` are
//! compared with.
//!
//! # Adding an allocator variant
//!
//! 1. `src/bin/bench-<name>.rs`: `tidemark_bench::allocator_main!("<name>", Type = init);`
//!    (`..., before = expr` runs `expr` first and keeps it alive through the workload: a
//!    profiler's guard, `tidemark_tracer::start(32)`);
//! 2. `[[bin]] name = "bench-<name>"` in `bench/Cargo.toml` (`required-features` if it
//!    needs an optional dependency);
//! 3. a row in [`variants::VARIANTS`] (role `Subject` unless it is a divisor; `plain` names
//!    the variant it wraps, if any, for the `time/plain` column).

pub mod child;
pub mod debug_floor;
pub mod driver;
pub mod rng;
pub mod trace_floor;
pub mod variants;
pub mod workloads;
