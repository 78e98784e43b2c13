//! The driver (`tidemark-bench`): runs every (workload, allocator) pair as its own child
//! process, in interleaved rounds, and prints medians and ratios.
//!
//! Round r runs each workload under every allocator, the allocators rotated by r, so that
//! slow drifts of a shared machine (other jobs, thermal, page cache) spread evenly over all
//! allocators instead of landing on one of them.

pub mod build;
pub mod report;
pub mod spawn;

use crate::variants::{self, Variant, VARIANTS};
use crate::workloads::{self, Workload, WORKLOADS};
use report::{Cell, WorkloadResults};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The command that builds everything including the peers, for hints.
pub const FULL_COMMAND: &str = "cargo run --release -p tidemark-bench --features peers";

/// Command-line options.
#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: usize,
    pub scale: f64,
    pub workloads: Vec<&'static Workload>,
    /// `None`: every default variant whose binary is present.
    pub allocators: Option<Vec<&'static Variant>>,
    pub json: bool,
    /// Build the children first when running under `cargo run`.
    pub build: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 5,
            scale: 1.0,
            workloads: WORKLOADS.iter().collect(),
            allocators: None,
            json: false,
            build: true,
        }
    }
}

fn usage() -> String {
    let mut s = String::from(
        "usage: tidemark-bench [--rounds N] [--scale F] [--workloads a,b] [--allocators x,y]\n\
         \x20                     [--json] [--no-build]\n\n\
         Runs each workload under each allocator, each in its own process, in N interleaved\n\
         rounds (default 5), and prints median time, median peak RSS and ratios against glibc\n\
         and against the best of mimalloc/jemalloc. --scale multiplies the work (default 1).\n\
         Under `cargo run` the allocator binaries are rebuilt first unless --no-build.\n\nworkloads:\n",
    );
    for w in WORKLOADS {
        s += &format!("  {:<10} {}\n", w.name, w.about);
    }
    s += "\nallocators:\n";
    for v in VARIANTS {
        let needs = v
            .feature
            .map_or(String::new(), |f| format!(" (feature `{f}`)"));
        s += &format!("  {:<10} {}{needs}\n", v.name, v.binary);
    }
    s
}

/// Parses the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--rounds" => {
                opts.rounds = value("--rounds")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--rounds needs a positive integer")?
            }
            "--scale" => {
                opts.scale = value("--scale")?
                    .parse()
                    .ok()
                    .filter(|&s: &f64| s > 0.0 && s.is_finite())
                    .ok_or("--scale needs a positive number")?
            }
            "--workloads" => {
                opts.workloads = value("--workloads")?
                    .split(',')
                    .map(|n| workloads::find(n).ok_or(format!("unknown workload {n:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--allocators" => {
                opts.allocators = Some(
                    value("--allocators")?
                        .split(',')
                        .map(|n| variants::find(n).ok_or(format!("unknown allocator {n:?}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--json" => opts.json = true,
            "--no-build" => opts.build = false,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n\n{}", usage())),
        }
    }
    Ok(opts)
}

/// Picks the variants to run: those asked for (all must be available), or the default ones
/// that are. A variant is available when its binary is next to the driver and the driver was
/// built with the variant's feature (a binary left over from an earlier build with other
/// features may be stale).
fn select_variants(
    opts: &Options,
    bin_dir: &Path,
) -> Result<Vec<(&'static Variant, PathBuf)>, String> {
    let features = build::enabled_features();
    let path = |v: &Variant| bin_dir.join(v.binary);
    let available = |v: &Variant| {
        let feature_on = match v.feature {
            None => true,
            Some(f) => features.contains(&f),
        };
        feature_on && path(v).exists()
    };
    match &opts.allocators {
        Some(list) => list
            .iter()
            .map(|&v| {
                if available(v) {
                    Ok((v, path(v)))
                } else {
                    Err(missing_hint(&[v], bin_dir))
                }
            })
            .collect(),
        None => {
            let (present, missing): (Vec<&Variant>, Vec<&Variant>) = VARIANTS
                .iter()
                .filter(|v| v.default)
                .partition(|v| available(v));
            if !missing.is_empty() {
                let hint = missing_hint(&missing, bin_dir);
                eprintln!("note: running with what is built. {hint}\n");
            }
            if present.is_empty() {
                return Err(format!("no allocator binaries in {}", bin_dir.display()));
            }
            Ok(present.into_iter().map(|v| (v, path(v))).collect())
        }
    }
}

fn missing_hint(missing: &[&Variant], bin_dir: &Path) -> String {
    let names: Vec<&str> = missing.iter().map(|v| v.name).collect();
    let mut features: Vec<&str> = missing.iter().filter_map(|v| v.feature).collect();
    features.dedup();
    let how = if features.is_empty() {
        "cargo run --release -p tidemark-bench".to_owned()
    } else if features == ["peers"] {
        FULL_COMMAND.to_owned()
    } else {
        format!(
            "cargo run --release -p tidemark-bench --features {}",
            features.join(",")
        )
    };
    format!(
        "{} not built (in {}, with this driver's features). To include: {how} -- ...",
        names.join(", "),
        bin_dir.display()
    )
}

/// The driver's `main`; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return if args.iter().any(|a| a == "-h" || a == "--help") {
                0
            } else {
                2
            };
        }
    };
    match run(&opts) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(msg) => {
            eprintln!("tidemark-bench: {msg}");
            2
        }
    }
}

/// Runs the benchmark; `Ok(false)` if some child failed or checksums disagreed.
pub fn run(opts: &Options) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin_dir = exe
        .parent()
        .ok_or("the driver has no directory")?
        .to_owned();
    if opts.build {
        build::build_children_if_under_cargo(&bin_dir)?;
    }
    let variants = select_variants(opts, &bin_dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut cells: Vec<Vec<Cell>> =
        vec![vec![Cell::default(); variants.len()]; opts.workloads.len()];
    let mut ok = true;
    for round in 0..opts.rounds {
        for (w, workload) in opts.workloads.iter().enumerate() {
            eprint!("round {}/{} {:<9}", round + 1, opts.rounds, workload.name);
            for k in 0..variants.len() {
                let v = (k + round) % variants.len();
                let (variant, binary) = &variants[v];
                match spawn::run_child(binary, workload.name, opts.scale) {
                    Ok(sample) => {
                        eprint!(
                            "  {} {:.0} ms {:.0} MiB",
                            variant.name,
                            sample.time.as_secs_f64() * 1e3,
                            sample.max_rss_kib as f64 / 1024.0
                        );
                        cells[w][v].samples.push(sample);
                    }
                    Err(msg) => {
                        eprint!("  {} FAILED", variant.name);
                        eprintln!("\n{} under {}: {msg}", workload.name, variant.name);
                        cells[w][v].failures.push(msg);
                        ok = false;
                    }
                }
                let _ = std::io::stderr().flush();
            }
            eprintln!();
        }
    }

    let results: Vec<WorkloadResults> = opts
        .workloads
        .iter()
        .zip(cells)
        .map(|(w, row)| WorkloadResults {
            workload: w.name,
            cells: variants.iter().map(|(v, _)| *v).zip(row).collect(),
        })
        .collect();

    for r in &results {
        let mut sums: Vec<u64> = r
            .cells
            .iter()
            .flat_map(|(_, c)| c.samples.iter().map(|s| s.checksum))
            .collect();
        sums.sort_unstable();
        sums.dedup();
        if sums.len() > 1 {
            eprintln!(
                "warning: {}: checksums differ between runs ({sums:x?}): the allocators did not \
                 all do the same work",
                r.workload
            );
            ok = false;
        }
    }

    if opts.json {
        println!("{:#}", report::to_json(&results, opts.rounds, opts.scale));
    } else {
        println!(
            "\ntidemark-bench: {} round(s), scale {}, {cores} core(s); each run is its own \
             process; values are medians over the rounds.\n\
             \x20 time: the workload's wall time; peak RSS: the process's ru_maxrss (wait4); \
             spread: (max-min)/median time.\n\
             \x20 ratios < 1 are better; glibc = system; best-peer = the faster of mimalloc \
             and jemalloc.\n",
            opts.rounds, opts.scale
        );
        print!("{}", report::table(&results));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse_args(&args(
            "--rounds 3 --scale 0.5 --workloads churn,json --allocators tidemark,glibc --no-build",
        ))
        .unwrap();
        assert_eq!(o.rounds, 3);
        assert_eq!(o.scale, 0.5);
        assert_eq!(o.workloads.len(), 2);
        let names: Vec<&str> = o.allocators.unwrap().iter().map(|v| v.name).collect();
        assert_eq!(names, ["tidemark", "system"]);
        assert!(!o.build);
        assert!(parse_args(&args("--rounds 0")).is_err());
        assert!(parse_args(&args("--workloads nope")).is_err());
    }
}
