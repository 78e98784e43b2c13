//! `tidemark run` on a Rust program (`programs/run_rust.rs`), built without frame pointers
//! (rustc's default) and with them. Rust's std calls `pthread_getattr_np` at startup and in
//! every thread it spawns; glibc allocates inside it while holding the thread's lock, and the
//! recording's first stack capture on that thread looks the same bounds up: before the
//! preload wrapped `pthread_getattr_np`, every Rust program hung there at its first line.

use std::process::Command;
use std::time::Duration;
use tidemark_tests::{compile_rust, output_within, scratch_dir, site, text, tidemark_cli, Capture};

fn record(name: &str, rustc_flags: &[&str]) {
    let dir = scratch_dir(name);
    let exe = compile_rust("run_rust.rs", &dir, rustc_flags);
    let out = output_within(
        Command::new(tidemark_cli())
            .args(["run", "-q", "-o", "rust.tdm", "--"])
            .arg(&exe)
            .current_dir(&dir),
        Duration::from_secs(60),
        "tidemark run on a Rust program",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "200 150000\n");
    let c = Capture::read(&dir.join("rust.tdm"));
    assert!(c.complete, "the capture ends with its end marker");
    assert!(c.threads >= 4, "main and 3 spawned threads: {}", c.threads);
    let kept = site("run_rust.rs", "run_rust::kept", "kept");
    let in_thread = site("run_rust.rs", "run_rust::in_thread", "thread");
    // 200 × 333 B, all live at the exit (process::exit runs no destructors).
    assert_eq!(
        c.totals_at(&kept),
        (200, 66_600, 66_600),
        "{}",
        c.describe()
    );
    // 3 threads × 500 × 100 B, each freed at once.
    assert_eq!(
        c.totals_at(&in_thread),
        (1500, 150_000, 0),
        "{}",
        c.describe()
    );
}

#[test]
fn a_rust_program_without_frame_pointers_records_every_site() {
    record("run-rust-nofp", &[]);
}

#[test]
fn a_rust_program_with_frame_pointers_records_every_site() {
    record("run-rust-fp", &["-C", "force-frame-pointers=yes"]);
}
