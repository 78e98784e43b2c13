//! The workloads: each is a function of the scale that returns a checksum.
//!
//! A workload must be deterministic (seeded [`Rng`](crate::rng::Rng), fixed thread counts per
//! machine), so that its checksum is the same under every allocator; the driver warns when it
//! is not. At scale 1 each one runs for roughly 0.3–3 s on glibc; `--scale` multiplies the
//! amount of work (operations, objects, bytes), so `--scale 0.01` is a smoke run.
//!
//! To add a workload: a file here with `pub fn run(params: &Params) -> u64`, and a row in
//! [`WORKLOADS`].

pub mod bintrees;
pub mod churn;
pub mod json;
pub mod strings;
pub mod threads;
pub mod xthread;

/// Parameters every workload receives.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Multiplies the amount of work; 1.0 is the full benchmark.
    pub scale: f64,
}

impl Params {
    /// `full` scaled, but never below `min` (so tiny scales still exercise the code).
    pub fn scaled(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(min)
    }
}

/// One benchmark workload.
#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    pub run: fn(&Params) -> u64,
}

/// All workloads, in the order the driver runs and prints them.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "churn",
        about: "100k live objects, 20M random replacements, sizes 8..=512",
        run: churn::run,
    },
    Workload {
        name: "bintrees",
        about: "depth-20 binary trees of 16-byte nodes, built and dropped 8 times",
        run: bintrees::run,
    },
    Workload {
        name: "xthread",
        about: "one thread allocates 20M objects (8..=512 B) in batches, another frees them",
        run: xthread::run,
    },
    Workload {
        name: "strings",
        about: "1M format!ed Strings, a HashMap<String, Vec<u32>> index, then a sort",
        run: strings::run,
    },
    Workload {
        name: "json",
        about: "serde_json: generate a ~50 MB document, serialize, parse, re-serialize",
        run: json::run,
    },
    Workload {
        name: "threads",
        about: "one thread per core, each churning its own objects",
        run: threads::run,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}
