//! Fork safety of the debug hooks: `fork` while other threads are inside the debug layer
//! (pushing to the quarantine, evicting a batch, walking the registry in `check_heap`) must
//! leave every lock free in the child, which then allocates and frees as usual.
//!
//! The forking program runs in a child process of the test (this same binary, re-run on one
//! test with `TIDEMARK_FORK_CHILD` set), so that a deadlock fails the test through a timeout
//! instead of hanging it: each forked grandchild arms `alarm`, and the test itself gives the
//! whole run a deadline.

use std::alloc::{alloc, dealloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidemark_alloc::debug::{check_heap, Debug};
use tidemark_alloc::Pymalloc;

#[global_allocator]
static G: Debug<Pymalloc> = Debug::new(Pymalloc::new());

const CHILD: &str = "TIDEMARK_FORK_CHILD";
/// Forks the program makes while its threads churn.
const FORKS: usize = 200;
/// Seconds a forked grandchild may take before its alarm kills it (a deadlock).
const GRANDCHILD_ALARM: u32 = 20;
/// The whole forking program's deadline, as seen by the test.
const DEADLINE: Duration = Duration::from_secs(240);

/// What a forked grandchild does: allocations and frees of every kind the debug layer has a
/// lock on (quarantine pushes, evictions, the registry walk of `check_heap`, a new thread's
/// state), then `_exit(0)`. Anything that deadlocks is killed by the alarm.
fn grandchild() -> ! {
    // SAFETY: alarm has no preconditions; SIGALRM's default action ends the process.
    unsafe { libc::alarm(GRANDCHILD_ALARM) };
    let mut keep: Vec<Vec<u8>> = Vec::with_capacity(64);
    for i in 0..2000usize {
        let mut v = vec![i as u8; 16 + (i * 37) % 700];
        v.push(1);
        if keep.len() == 64 {
            keep.swap_remove(i % 64);
        }
        keep.push(v);
    }
    drop(keep);
    check_heap();
    // SAFETY: a layout of non-zero size; freed at once with the same layout.
    unsafe {
        let l = Layout::from_size_align(4000, 64).unwrap();
        let p = alloc(l);
        if p.is_null() {
            libc::_exit(3);
        }
        dealloc(p, l);
    }
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // flushing stdio buffers inherited from it.
    unsafe { libc::_exit(0) }
}

/// The forking program: three threads churn through the debug layer and a fourth walks the
/// heap, while this thread forks `FORKS` times and waits for each child.
fn forking_program() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3usize {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut live: Vec<Box<[u8]>> = Vec::new();
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let size = 8 + (i >> 33) % 900;
                live.push(vec![t as u8; size].into_boxed_slice());
                if live.len() > 256 {
                    let at = (i >> 20) % live.len();
                    live.swap_remove(at);
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                check_heap();
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    // Let the threads get going (and the quarantine fill) before the first fork.
    std::thread::sleep(Duration::from_millis(50));
    let mut failures = Vec::new();
    for n in 0..FORKS {
        // SAFETY: the child only runs `grandchild`, which allocates through the debug layer
        // (what is tested) and ends with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            grandchild();
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !ok {
            let how = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
                "deadlocked (killed by its alarm)".to_string()
            } else {
                format!("ended with wait status {status:#x}")
            };
            failures.push(format!("fork #{n}: child {how}"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:?}");
    println!("FORKS OK {FORKS}");
}

#[test]
fn fork_while_threads_use_the_debug_layer() {
    let name = "fork_while_threads_use_the_debug_layer";
    if std::env::var(CHILD).is_ok() {
        forking_program();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        // A small quarantine: evictions (the registry's release lock) happen all the time.
        .env("TIDEMARK_QUARANTINE", "64k")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the forking program did not finish within {DEADLINE:?} (deadlock?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success() && stdout.contains(&format!("FORKS OK {FORKS}")),
        "forking program failed: {status:?} (signal {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        status.signal()
    );
}
