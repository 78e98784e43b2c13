//! Fork safety of in-process tracing: `fork` while other threads intern new stacks and update
//! the trace table must leave the stack interner and every table shard free in the child,
//! which then traces new stacks and custom-domain blocks (tracer/src/fork.rs).
//!
//! The forking program runs in a child process of the test (this binary again, with
//! `TIDEMARK_TRACE_FORK_CHILD` set), so that a deadlock fails the test by a timeout instead of
//! hanging it: each forked grandchild arms `alarm`, the test gives the run a deadline.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidemark_tracer::Traced;

#[global_allocator]
static G: Traced<tidemark_alloc::Pymalloc> = Traced::new(tidemark_alloc::Pymalloc::new());

const CHILD: &str = "TIDEMARK_TRACE_FORK_CHILD";
/// Forks made while the threads run (fewer unoptimized: each step is several times slower).
const FORKS: usize = if cfg!(debug_assertions) { 20 } else { 60 };
const DEADLINE: Duration = Duration::from_secs(240);

/// Allocates at the bottom of a recursion whose path (left or right call at each level) is
/// the bits of `path`: up to 2^depth distinct stacks, new ones interned all the time.
#[inline(never)]
fn grow(depth: u32, path: u64, keep: &mut Vec<Vec<u8>>) -> usize {
    if depth == 0 {
        keep.push(vec![path as u8; 24]);
        return 1;
    }
    // Different arguments keep the two calls apart (identical calls would be merged into
    // one call site). Bit 62 never shifts down to bit 0 within the depths used here.
    if path & 1 == 0 {
        std::hint::black_box(grow(depth - 1, path >> 1, keep))
    } else {
        std::hint::black_box(grow(depth - 1, (path >> 1) | (1 << 62), keep)) + 1
    }
}

fn grandchild(n: usize) -> ! {
    // SAFETY: alarm has no preconditions; SIGALRM's default action ends the process.
    unsafe { libc::alarm(20) };
    let (before, _) = tidemark_tracer::traced_memory();
    let mut keep = Vec::new();
    for i in 0..200u64 {
        grow(12, ((n as u64) << 20) | (i * 7919), &mut keep);
    }
    let (after, _) = tidemark_tracer::traced_memory();
    // A custom domain's traces live in the table's shards (pool blocks use the allocator's
    // words): take each shard's lock at least once.
    for k in 0..256usize {
        tidemark_tracer::track(9, 0x1000 + k * 64, 10).expect("tracing in the child");
        tidemark_tracer::untrack(9, 0x1000 + k * 64).expect("tracing in the child");
    }
    let ok =
        after - before >= 200 * 24 && tidemark_tracer::object_traceback(keep[0].as_ptr()).is_some();
    // SAFETY: _exit skips the parent's atexit handlers and stdio buffers.
    unsafe { libc::_exit(if ok { 0 } else { 4 }) }
}

fn forking_program() {
    tidemark_tracer::start(64).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                let mut x = t + 1;
                while !stop.load(Ordering::Relaxed) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    grow(24, x >> 20, &mut keep);
                    if keep.len() > 512 {
                        keep.swap_remove((x >> 40) as usize % keep.len());
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for n in 0..FORKS {
        // SAFETY: the child only runs `grandchild`, which ends with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            grandchild(n);
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork #{n}: child ended with wait status {status:#x} (SIGALRM = deadlock)"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!("FORKS OK {FORKS}");
}

#[test]
fn fork_while_threads_intern_and_trace() {
    let name = "fork_while_threads_intern_and_trace";
    if std::env::var(CHILD).is_ok() {
        forking_program();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the forking program did not finish within {DEADLINE:?} (deadlock?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("FORKS OK {FORKS}")),
        "forking program failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
