//! A Rust program for `tidemark run`. Rust's std asks glibc for the thread's stack bounds
//! (`pthread_getattr_np`) at startup and in each thread it spawns, and glibc allocates while it
//! holds the thread's lock: the recording's own stack capture must not wait for that lock.
//! Known allocations at marked lines, on the main thread and on 3 spawned threads; the blocks
//! of `kept` are still live at the exit, which has status 7.

use std::hint::black_box;

#[inline(never)]
fn kept(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Vec::<u8>::with_capacity(333)); /* SITE kept */
    }
    out
}

#[inline(never)]
fn in_thread(n: usize) -> usize {
    let mut sum = 0;
    for _ in 0..n {
        let v = Vec::<u8>::with_capacity(100); /* SITE thread */
        sum += black_box(v).capacity();
    }
    sum
}

fn main() {
    let kept = kept(200);
    let threads: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(|| in_thread(500)))
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!("{} {}", kept.len(), total);
    std::process::exit(7);
}
