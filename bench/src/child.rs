//! The child side: each allocator binary is `allocator_main!` and runs exactly one workload
//! per process, so that peak RSS (measured by the driver with `wait4`) belongs to that
//! workload and that allocator alone.
//!
//! Usage: `bench-<variant> <workload> [--scale F]`. The result is one line on stdout:
//!
//! ```text
//! tidemark-bench-result allocator=system workload=churn scale=1 time_ns=812345678 checksum=0x1f2e
//! ```

use crate::workloads::{self, Params, WORKLOADS};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The first word of a result line.
pub const RESULT_TAG: &str = "tidemark-bench-result";

/// Defines `#[global_allocator]` and a `main` that runs one workload. With `before = expr`,
/// `main` evaluates `expr` first and keeps its value alive through the workload (a profiler's
/// guard, or starting the tracer); `exit` then skips its destructor on purpose, so that a
/// profiler's end-of-run report is neither timed nor counted in peak RSS.
///
/// ```no_run
/// tidemark_bench::allocator_main!("system", std::alloc::System = std::alloc::System);
/// ```
#[macro_export]
macro_rules! allocator_main {
    ($name:literal, $ty:ty = $init:expr) => {
        #[global_allocator]
        static GLOBAL: $ty = $init;

        fn main() {
            std::process::exit($crate::child::main($name));
        }
    };
    ($name:literal, $ty:ty = $init:expr, before = $before:expr) => {
        #[global_allocator]
        static GLOBAL: $ty = $init;

        fn main() {
            let _before = $before;
            std::process::exit($crate::child::main($name));
        }
    };
}

/// What a child reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildResult {
    pub time: Duration,
    pub checksum: u64,
}

/// Runs the workload named on the command line; returns the exit code.
pub fn main(allocator: &str) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: bench-{allocator} <workload> [--scale F]\nworkloads:");
        for w in WORKLOADS {
            eprintln!("  {:<10} {}", w.name, w.about);
        }
        2
    };
    let mut params = Params { scale: 1.0 };
    let mut name = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => match it.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s > 0.0 => params.scale = s,
                _ => return usage(),
            },
            "-h" | "--help" => return usage(),
            w if name.is_none() && !w.starts_with('-') => name = Some(w.to_owned()),
            _ => return usage(),
        }
    }
    let Some(workload) = name.as_deref().and_then(workloads::find) else {
        return usage();
    };

    let start = Instant::now();
    let checksum = black_box((workload.run)(black_box(&params)));
    let time = start.elapsed();

    println!(
        "{RESULT_TAG} allocator={allocator} workload={} scale={} time_ns={} checksum={checksum:#x}",
        workload.name,
        params.scale,
        time.as_nanos()
    );
    0
}

/// Parses the result line out of a child's stdout.
pub fn parse_result(stdout: &str) -> Option<ChildResult> {
    let line = stdout.lines().find(|l| l.starts_with(RESULT_TAG))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let time_ns: u64 = field("time_ns")?.parse().ok()?;
    let checksum = u64::from_str_radix(field("checksum")?.trim_start_matches("0x"), 16).ok()?;
    Some(ChildResult {
        time: Duration::from_nanos(time_ns),
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_result_line() {
        let out = "noise\ntidemark-bench-result allocator=system workload=churn scale=1 \
                   time_ns=1500 checksum=0xff\n";
        let r = parse_result(out).unwrap();
        assert_eq!(r.time, Duration::from_nanos(1500));
        assert_eq!(r.checksum, 255);
        assert_eq!(parse_result("nothing here"), None);
    }

    #[test]
    fn every_workload_runs_at_a_tiny_scale() {
        for w in WORKLOADS {
            // Deterministic: the same checksum twice.
            let p = Params { scale: 0.001 };
            assert_eq!((w.run)(&p), (w.run)(&p), "{}", w.name);
        }
    }
}
