//! The allocator variants the driver knows: a name (what `--allocators` and the table use)
//! and the child binary that has that allocator as its `#[global_allocator]`.
//!
//! Adding a variant takes three lines:
//! 1. `src/bin/bench-<name>.rs`:
//!    `tidemark_bench::allocator_main!("<name>", Type = init_expr);`
//! 2. a `[[bin]]` entry in `bench/Cargo.toml` (with `required-features` if it needs a
//!    feature, e.g. `["peers"]`, so that the default workspace build never compiles it);
//! 3. a row in [`VARIANTS`] below.

/// How a variant takes part in the ratios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The baseline every `/glibc` ratio divides by (the system allocator).
    Baseline,
    /// A peer allocator; the best (lowest median time) peer is the `/best-peer` divisor.
    Peer,
    /// Measured and compared, not a divisor (tidemark and its variants, including the debug
    /// hooks `pymalloc_debug` = `Debug<Pymalloc>` and `malloc_debug` = `Debug<System>`).
    Subject,
}

/// One allocator variant.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    /// Binary name next to the driver (`target/<profile>/<binary>`).
    pub binary: &'static str,
    pub role: Role,
    /// Cargo feature the binary requires, if any (for the "how to build it" hint).
    pub feature: Option<&'static str>,
    /// Run when `--allocators` is not given.
    pub default: bool,
    /// The variant this one wraps (a debug variant names its plain allocator): the divisor of
    /// the `time/plain` column, so the table shows what the wrapper costs.
    pub plain: Option<&'static str>,
}

/// All variants, in table order.
pub const VARIANTS: &[Variant] = &[
    Variant {
        name: "tidemark",
        binary: "bench-tidemark",
        role: Role::Subject,
        feature: None,
        default: true,
        plain: None,
    },
    Variant {
        name: "pymalloc_debug",
        binary: "bench-pymalloc_debug",
        role: Role::Subject,
        feature: None,
        default: true,
        plain: Some("tidemark"),
    },
    // The least any debug hook with pymalloc_debug's marks and quarantine must do (see
    // `debug_floor.rs`): not a usable allocator, so run only when named.
    Variant {
        name: "debug_floor",
        binary: "bench-debug_floor",
        role: Role::Subject,
        feature: None,
        default: false,
        plain: Some("tidemark"),
    },
    Variant {
        name: "system",
        binary: "bench-system",
        role: Role::Baseline,
        feature: None,
        default: true,
        plain: None,
    },
    Variant {
        name: "malloc_debug",
        binary: "bench-malloc_debug",
        role: Role::Subject,
        feature: None,
        default: true,
        plain: Some("system"),
    },
    Variant {
        name: "mimalloc",
        binary: "bench-mimalloc",
        role: Role::Peer,
        feature: Some("peers"),
        default: true,
        plain: None,
    },
    Variant {
        name: "jemalloc",
        binary: "bench-jemalloc",
        role: Role::Peer,
        feature: Some("peers"),
        default: true,
        plain: None,
    },
    // The profilers (run when named in --allocators): what tracing costs over the allocator it
    // wraps (`time/plain`).
    Variant {
        name: "traced_off",
        binary: "bench-traced_off",
        role: Role::Subject,
        feature: None,
        default: false,
        plain: Some("tidemark"),
    },
    Variant {
        name: "traced_32",
        binary: "bench-traced_32",
        role: Role::Subject,
        feature: None,
        default: false,
        plain: Some("tidemark"),
    },
    // The least any tracer under issue 4's rules must do while tracing (see `trace_floor.rs`):
    // not a usable tracer, so run only when named.
    Variant {
        name: "trace_floor",
        binary: "bench-trace_floor",
        role: Role::Subject,
        feature: None,
        default: false,
        plain: Some("tidemark"),
    },
    Variant {
        name: "dhat",
        binary: "bench-dhat",
        role: Role::Subject,
        feature: Some("dhat"),
        default: false,
        plain: Some("system"),
    },
];

/// The variant called `name` ("glibc" is accepted for "system").
pub fn find(name: &str) -> Option<&'static Variant> {
    let name = if name == "glibc" { "system" } else { name };
    VARIANTS.iter().find(|v| v.name == name)
}
