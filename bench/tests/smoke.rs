//! Smoke test of the whole benchmark path: driver → child processes → wait4 → table.
//! Tiny scale, one round, only the allocators the default build has (no peers).

use std::process::Command;
use tidemark_bench::workloads::WORKLOADS;

#[test]
fn driver_prints_a_row_per_workload_and_allocator() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark-bench"))
        .args(["--scale", "0.01", "--rounds", "1"])
        .args([
            "--allocators",
            "tidemark,pymalloc_debug,system,malloc_debug",
        ])
        .arg("--no-build")
        .output()
        .expect("run tidemark-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tidemark-bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for w in WORKLOADS {
        for allocator in ["tidemark", "pymalloc_debug", "system", "malloc_debug"] {
            let row = stdout.lines().find(|l| {
                let mut cols = l.split_whitespace();
                cols.next() == Some(w.name) && cols.next() == Some(allocator)
            });
            let row =
                row.unwrap_or_else(|| panic!("no row for {} / {allocator}:\n{stdout}", w.name));
            // time, spread, RSS, and the glibc ratios are numbers; best-peer is "-" here;
            // time/plain is a number for the debug rows only.
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols.len(), 9, "{row}");
            assert!(cols[2].parse::<f64>().is_ok_and(|t| t > 0.0), "{row}");
            assert!(cols[4].parse::<f64>().is_ok_and(|rss| rss > 0.0), "{row}");
            assert!(cols[5].parse::<f64>().is_ok(), "{row}");
            assert_eq!(cols[7], "-", "{row}");
            let debug = allocator.ends_with("_debug");
            assert_eq!(cols[8].parse::<f64>().is_ok(), debug, "{row}");
        }
    }
}

#[test]
fn json_output_has_samples() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark-bench"))
        .args(["--scale", "0.005", "--rounds", "1", "--workloads", "churn"])
        .args(["--allocators", "system", "--json", "--no-build"])
        .output()
        .expect("run tidemark-bench");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let r = &v["results"][0];
    assert_eq!(r["workload"], "churn");
    assert_eq!(r["allocator"], "system");
    assert!(r["samples"][0]["peak_rss_kib"].as_u64().unwrap() > 0);
}
