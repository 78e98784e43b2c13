//! Memory goes back: freed arenas are unmapped, exiting threads hand their heaps on, and
//! blocks freed by other threads return to their owners. The RSS checks run in a child
//! process (this test binary re-run with `TIDEMARK_LIFECYCLE_CHILD` set) so that no other
//! test's memory is counted.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::mpsc;
use tidemark_alloc::{stats, Pymalloc};

#[global_allocator]
static GLOBAL: Pymalloc = Pymalloc::new();

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs `name` in a child and returns its stdout; the child must exit 0.
fn in_child(name: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("TIDEMARK_LIFECYCLE_CHILD", name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn is_child(name: &str) -> bool {
    std::env::var("TIDEMARK_LIFECYCLE_CHILD").as_deref() == Ok(name)
}

fn reported(stdout: &str, key: &str) -> usize {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"));
    line[key.len()..].trim().parse().unwrap()
}

#[test]
fn freeing_a_gibibyte_of_small_blocks_returns_its_memory() {
    const NAME: &str = "freeing_a_gibibyte_of_small_blocks_returns_its_memory";
    if is_child(NAME) {
        let base = rss_bytes();
        let mut blocks: Vec<(*mut u8, Layout)> = Vec::with_capacity(5_000_000);
        let mut total = 0usize;
        let mut size = 8usize;
        while total < 1 << 30 {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(1, size) };
            blocks.push((p, layout));
            total += size;
            size = if size >= 512 { 8 } else { size + 8 };
        }
        let peak = rss_bytes();
        for (p, layout) in blocks.drain(..) {
            unsafe { GLOBAL.dealloc(p, layout) };
        }
        drop(blocks);
        let after = rss_bytes();
        let s = stats();
        println!(
            "\nbase {base}\npeak {peak}\nafter {after}\narenas {}\nreclaimed {}",
            s.arenas_current, s.arenas_reclaimed
        );
        return;
    }
    let out = in_child(NAME);
    let (base, peak, after) = (
        reported(&out, "base"),
        reported(&out, "peak"),
        reported(&out, "after"),
    );
    let grown = peak - base;
    assert!(grown >= 1 << 30, "the child must have touched a GiB: {out}");
    let kept = after.saturating_sub(base);
    assert!(kept * 10 <= grown, "RSS must drop by at least 90%: {out}");
    assert!(reported(&out, "reclaimed") >= 900, "{out}");
}

#[test]
fn ten_thousand_short_lived_threads_leave_memory_bounded() {
    const NAME: &str = "ten_thousand_short_lived_threads_leave_memory_bounded";
    if is_child(NAME) {
        let run = |n: usize| {
            for i in 0..n {
                std::thread::spawn(move || {
                    let v: Vec<Box<[u8; 100]>> =
                        (0..100).map(|_| Box::new([i as u8; 100])).collect();
                    let keep = Box::new(i); // freed by the parent: a cross-thread free
                    drop(v);
                    keep
                })
                .join()
                .unwrap();
            }
        };
        run(1000);
        let after_1k = rss_bytes();
        let arenas_1k = stats().arenas_current;
        run(9000);
        println!(
            "\nrss1k {after_1k}\nrss10k {}\narenas1k {arenas_1k}\narenas10k {}",
            rss_bytes(),
            stats().arenas_current
        );
        return;
    }
    let out = in_child(NAME);
    // After warm-up, 9,000 more threads add no arenas and (almost) no RSS.
    assert!(
        reported(&out, "arenas10k") <= reported(&out, "arenas1k") + 1,
        "{out}"
    );
    assert!(
        reported(&out, "rss10k") <= reported(&out, "rss1k") + (4 << 20),
        "{out}"
    );
}

#[test]
fn cross_thread_frees_from_many_threads() {
    // Producers allocate; one consumer frees everything; blocks get back to their owners.
    let (tx, rx) = mpsc::channel::<Vec<Box<[u64]>>>();
    let consumer = std::thread::spawn(move || {
        let mut n = 0usize;
        for batch in rx {
            for b in &batch {
                assert!(b.iter().all(|&x| x == b.len() as u64));
            }
            n += batch.len();
        }
        n
    });
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200 {
                    let batch: Vec<Box<[u64]>> = (0..100)
                        .map(|i| {
                            vec![((i + round + t) % 60 + 1) as u64; (i + round + t) % 60 + 1]
                                .into_boxed_slice()
                        })
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 4 * 200 * 100);
}

#[test]
fn blocks_freed_by_another_thread_return_to_their_owner() {
    const NAME: &str = "blocks_freed_by_another_thread_return_to_their_owner";
    if is_child(NAME) {
        // The main thread allocates 64 MiB of 64-byte blocks; a helper thread frees them all
        // (in batches, through its outboxes) and exits. Allocating the same again must reuse
        // those blocks: no new arena.
        let layout = Layout::from_size_align(64, 8).unwrap();
        let alloc_all = || {
            (0..1_000_000)
                .map(|_| unsafe { GLOBAL.alloc(layout) } as usize)
                .collect::<Vec<usize>>()
        };
        let blocks = alloc_all();
        let arenas = stats().arenas_current;
        std::thread::spawn(move || {
            for p in blocks {
                unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
            }
        })
        .join()
        .unwrap();
        let again = alloc_all();
        println!("\narenas {arenas}\nagain {}", stats().arenas_current);
        for p in again {
            unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
        }
        return;
    }
    let out = in_child(NAME);
    assert_eq!(reported(&out, "again"), reported(&out, "arenas"), "{out}");
}

#[test]
fn out_of_memory_returns_null() {
    const NAME: &str = "out_of_memory_returns_null";
    if is_child(NAME) {
        // Cap the address space 64 MiB above what the process uses now, then allocate small
        // and large blocks until the allocator says no: it must return null, not abort.
        let mut held: Vec<(usize, Layout)> = Vec::with_capacity(400_000);
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
        let cap = pages * 4096 + (64 << 20);
        let limit = libc::rlimit {
            rlim_cur: cap,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
        let small = Layout::from_size_align(256, 8).unwrap();
        let big = Layout::from_size_align(1 << 20, 8).unwrap();
        let mut nulls = 0;
        for layout in [small, big] {
            loop {
                let p = unsafe { GLOBAL.alloc(layout) };
                if p.is_null() {
                    nulls += 1;
                    break;
                }
                held.push((p as usize, layout));
            }
        }
        for (p, layout) in held.drain(..) {
            unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
        }
        // After freeing, allocation works again.
        let p = unsafe { GLOBAL.alloc(small) };
        println!("\nnulls {nulls}\nrecovered {}", !p.is_null() as u8);
        return;
    }
    let out = in_child(NAME);
    assert_eq!(reported(&out, "nulls"), 2, "{out}");
    assert_eq!(reported(&out, "recovered"), 1, "{out}");
}
