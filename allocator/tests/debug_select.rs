//! `Tidemark` as the global allocator: `TIDEMARK_MALLOC` picks the allocator once. Each case
//! runs in a child process (this binary re-run on one test) with its own environment.

use std::alloc::{alloc, dealloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use tidemark_alloc::select::{Mode, Tidemark};

#[global_allocator]
static G: Tidemark = Tidemark::new();

const CHILD: &str = "TIDEMARK_SELECT_CHILD";

fn child(name: &str, malloc: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("TIDEMARK_MALLOC", malloc)
        .output()
        .unwrap()
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Reports the mode on stdout, then overruns a block by one byte.
#[test]
fn overrun() {
    if !in_child() {
        return;
    }
    println!("MODE={}", Tidemark::mode().name());
    let l = Layout::from_size_align(10, 1).unwrap();
    unsafe {
        let p = alloc(l);
        p.add(10).write_volatile(b'!');
        dealloc(p, l);
    }
    println!("SURVIVED");
}

fn run(malloc: &str) -> (Output, String, String) {
    let out = child("overrun", malloc);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn debug_modes_catch_the_overrun() {
    for (value, mode) in [
        ("debug", Mode::PymallocDebug),
        ("pymalloc_debug", Mode::PymallocDebug),
        ("malloc_debug", Mode::MallocDebug),
    ] {
        let (out, stdout, stderr) = run(value);
        assert!(
            stdout.contains(&format!("MODE={}", mode.name())),
            "{stdout}"
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{value}: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("Fatal error: tidemark debug dealloc: bad trailing pad byte"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn plain_modes_run() {
    for (value, mode) in [
        ("pymalloc", Mode::Pymalloc),
        ("", Mode::Pymalloc),
        ("malloc", Mode::Malloc),
    ] {
        let (out, stdout, stderr) = run(value);
        assert!(
            stdout.contains(&format!("MODE={}", mode.name())),
            "{value}: {stdout}"
        );
        assert!(out.status.success(), "{value}: {stdout}{stderr}");
        assert!(!stderr.contains("tidemark"), "{value}: {stderr}");
    }
}

#[test]
fn unknown_value_warns_once_and_uses_pymalloc() {
    let (out, stdout, stderr) = run("jemalloc");
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("MODE=pymalloc"), "{stdout}");
    let warning = "tidemark: unknown TIDEMARK_MALLOC value 'jemalloc' (accepted values: \
                   pymalloc, pymalloc_debug, malloc, malloc_debug, debug); using pymalloc";
    assert_eq!(
        stderr.lines().filter(|l| *l == warning).count(),
        1,
        "{stderr}"
    );
}
