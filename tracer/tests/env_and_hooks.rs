//! TIDEMARK_TRACE=N starts tracing at the first allocation (run as a child process), and the
//! tracer registers traceback hooks with the allocator's debug layer while tracing.

use std::process::Command;
use tidemark_tracer::Traced;

#[global_allocator]
static GLOBAL: Traced<tidemark_alloc::Pymalloc> = Traced::new(tidemark_alloc::Pymalloc::new());

fn run_child(value: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_reports_tracing_state",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TIDEMARK_TRACE", value)
        .env("TIDEMARK_ENV_CHILD", "1")
        .output()
        .unwrap()
}

/// Runs only inside the child: prints what the tracer says about itself.
#[test]
fn child_reports_tracing_state() {
    if std::env::var_os("TIDEMARK_ENV_CHILD").is_none() {
        return;
    }
    let v = Box::new([0u8; 77]);
    let traced = tidemark_tracer::object_traceback(v.as_ptr()).is_some();
    println!(
        "STATE tracing={} limit={} traced={traced}",
        tidemark_tracer::is_tracing(),
        tidemark_tracer::traceback_limit()
    );
}

fn state(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The harness prints "test name ... " before the test's own output, on the same line.
    stdout
        .lines()
        .find_map(|l| l.find("STATE").map(|i| l[i..].to_string()))
        .unwrap_or_default()
}

#[test]
fn env_starts_tracing_with_the_limit() {
    let out = run_child("7");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(state(&out), "STATE tracing=true limit=7 traced=true");
}

#[test]
fn env_zero_or_invalid_does_not_trace() {
    let out = run_child("0");
    assert_eq!(state(&out), "STATE tracing=false limit=1 traced=false");
    let out = run_child("2000");
    assert_eq!(state(&out), "STATE tracing=false limit=1 traced=false");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TIDEMARK_TRACE: invalid number of frames")
    );
}

#[test]
fn debug_layer_hooks_print_the_allocation_site() {
    tidemark_tracer::start(8).unwrap();
    let hooks = tidemark_alloc::hooks::traceback_hooks().expect("registered while tracing");
    let line = line!() + 1;
    let id = (hooks.capture)();
    assert_ne!(id, 0);
    let mut lines = Vec::new();
    (hooks.write)(id, &mut |l: &str| lines.push(l.to_string()));
    assert!(
        lines[0].contains("tests/env_and_hooks.rs") && lines[0].contains(&format!("line {line}")),
        "{lines:?}"
    );
    tidemark_tracer::stop();
    assert!(tidemark_alloc::hooks::traceback_hooks().is_none());
}
