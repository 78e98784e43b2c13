//! Death tests of the debug hooks: each defect is committed in a child process (this same test
//! binary, re-run on one test with `TIDEMARK_DEATH` naming the defect), which must die by
//! SIGABRT with the report's exact lines on stderr.
//!
//! The defects are undefined behaviour by construction; the writes are volatile so the
//! compiler keeps them, and they all land in memory the debug layer owns (guards, quarantine).

#[path = "common/death.rs"]
mod death;

use death::{announce, is_child, poke, run_child, L24};
use std::alloc::{alloc, dealloc, realloc, GlobalAlloc, Layout};
use tidemark_alloc::debug::{check_heap, Debug};
use tidemark_alloc::Pymalloc;

#[global_allocator]
static G: Debug<Pymalloc> = Debug::new(Pymalloc::new());

#[test]
fn underwrite() {
    if is_child("underwrite") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(1), 0x78);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child("underwrite", &[]);
    d.has_lines(&[
        d.headline(),
        "    24 bytes originally requested, align 8".into(),
        "    The 8 pad bytes at p-8 are not all FORBIDDENBYTE (0xfd):".into(),
        "        at p-8: 0xfd".into(),
        "        at p-1: 0x78 *** OUCH".into(),
        format!(
            "    The 8 pad bytes at tail={:#x} are FORBIDDENBYTE, as expected.",
            d.p + 24
        ),
        "    Data at p: cd cd cd cd cd cd cd cd ... cd cd cd cd cd cd cd cd".into(),
        "Fatal error: tidemark debug dealloc: bad leading pad byte".into(),
    ]);
    d.has_prefix("    The block was made by call #");
}

#[test]
fn overwrite() {
    if is_child("overwrite") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            // Volatile: plain stores to a block that is freed next are dead to the optimizer,
            // and a release build would drop them.
            for (i, &b) in b"hello, world".iter().enumerate() {
                poke(p.add(i), b);
            }
            poke(p.add(24), 0x78);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child("overwrite", &[]);
    d.has_lines(&[
        d.headline(),
        "    24 bytes originally requested, align 8".into(),
        "    The 8 pad bytes at p-8 are FORBIDDENBYTE, as expected.".into(),
        format!(
            "    The 8 pad bytes at tail={:#x} are not all FORBIDDENBYTE (0xfd):",
            d.p + 24
        ),
        "        at tail+0: 0x78 *** OUCH".into(),
        "        at tail+1: 0xfd".into(),
        "    Data at p: 68 65 6c 6c 6f 2c 20 77 ... cd cd cd cd cd cd cd cd".into(),
        "Memory block allocated at (most recent call first):".into(),
        "  (tracing is off: TIDEMARK_TRACE=32 shows where blocks are allocated when the global allocator is wrapped in Traced)".into(),
        "Fatal error: tidemark debug dealloc: bad trailing pad byte".into(),
    ]);
    d.has_prefix("    The block was made by call #");
}

#[test]
fn api_mismatch_c_block_freed_by_rust() {
    if is_child("api_mismatch_c_block_freed_by_rust") {
        unsafe {
            let p = G.c_malloc(24);
            announce(p);
            dealloc(p, Layout::from_size_align(24, 16).unwrap());
        }
        unreachable!();
    }
    let d = run_child("api_mismatch_c_block_freed_by_rust", &[]);
    d.has_lines(&[
        format!("Debug memory block at address p={:#x}: API 'c'", d.p),
        "    24 bytes originally requested, align 16".into(),
        "    The block was allocated with API 'c' but dealloc was called through API 'rust'."
            .into(),
        "Fatal error: tidemark debug dealloc: API mismatch".into(),
    ]);
}

#[test]
fn api_mismatch_rust_block_freed_by_c() {
    if is_child("api_mismatch_rust_block_freed_by_c") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            G.c_free(p);
        }
        unreachable!();
    }
    let d = run_child("api_mismatch_rust_block_freed_by_c", &[]);
    d.has_lines(&[
        d.headline(),
        "    The block was allocated with API 'rust' but free was called through API 'c'.".into(),
        "Fatal error: tidemark debug free: API mismatch".into(),
    ]);
}

#[test]
fn layout_mismatch_in_dealloc() {
    if is_child("layout_mismatch_in_dealloc") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, Layout::from_size_align(32, 8).unwrap());
        }
        unreachable!();
    }
    let d = run_child("layout_mismatch_in_dealloc", &[]);
    d.has_lines(&[
        d.headline(),
        "    24 bytes originally requested, align 8".into(),
        "    dealloc was called with size 32, align 8 *** OUCH".into(),
        "Fatal error: tidemark debug dealloc: layout mismatch".into(),
    ]);
}

#[test]
fn layout_mismatch_in_realloc() {
    if is_child("layout_mismatch_in_realloc") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            let _ = realloc(p, Layout::from_size_align(24, 16).unwrap(), 100);
        }
        unreachable!();
    }
    let d = run_child("layout_mismatch_in_realloc", &[]);
    d.has_lines(&[
        d.headline(),
        "    realloc was called with size 24, align 16 *** OUCH".into(),
        "Fatal error: tidemark debug realloc: layout mismatch".into(),
    ]);
}

#[test]
fn double_free() {
    if is_child("double_free") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child("double_free", &[]);
    d.has_lines(&[
        d.headline(),
        "    24 bytes originally requested, align 8".into(),
        "    The block was freed and waits in the quarantine; its bytes should all be DEADBYTE (0xdd)."
            .into(),
        "    dealloc was called on a block that was already freed.".into(),
        "    Data at p: dd dd dd dd dd dd dd dd ... dd dd dd dd dd dd dd dd".into(),
        "Memory block freed at (most recent call first):".into(),
        "Fatal error: tidemark debug dealloc: double free".into(),
    ]);
}

/// realloc (and malloc_usable_size) of a freed block: a use after free, named as one.
#[test]
fn realloc_of_a_freed_block() {
    if is_child("realloc_of_a_freed_block") {
        unsafe {
            let p = G.c_malloc(24);
            announce(p);
            G.c_free(p);
            G.c_realloc(p, 48);
        }
        unreachable!();
    }
    let d = run_child("realloc_of_a_freed_block", &[]);
    d.has_lines(&[
        "    realloc was called on a block that was already freed.".into(),
        "Fatal error: tidemark debug realloc: realloc of a freed block".into(),
    ]);
}

/// malloc_usable_size of a freed block.
#[test]
fn usable_size_of_a_freed_block() {
    if is_child("usable_size_of_a_freed_block") {
        unsafe {
            let p = G.c_malloc(24);
            announce(p);
            G.c_free(p);
            G.c_usable_size(p);
        }
        unreachable!();
    }
    let d = run_child("usable_size_of_a_freed_block", &[]);
    d.has_lines(&["Fatal error: tidemark debug malloc_usable_size: use after free".into()]);
}

/// A second free after the block left the quarantine (here: never entered it) is still a
/// double free, reported without reading the block's bytes.
#[test]
fn double_free_after_the_quarantine() {
    let name = "double_free_after_the_quarantine";
    if is_child(name) {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child(name, &[("TIDEMARK_QUARANTINE", "0")]);
    d.has_lines(&[
        d.headline(),
        "    24 bytes originally requested, align 8".into(),
        "    The block was freed and has already left the quarantine: its memory went back to the inner allocator."
            .into(),
        "    dealloc was called on a block that was already freed.".into(),
        "Memory block allocated at (most recent call first):".into(),
        "Memory block freed at (most recent call first):".into(),
        "Fatal error: tidemark debug dealloc: double free".into(),
    ]);
    assert!(!d.stderr.contains("Data at p"), "{}", d.stderr);
}

/// The same once the block was pushed out of a small quarantine by others (of another size
/// class, so its memory is not handed out again), through the C API, with the tracebacks.
#[test]
fn double_free_after_eviction_shows_tracebacks() {
    let name = "double_free_after_eviction_shows_tracebacks";
    if is_child(name) {
        tidemark_alloc::hooks::set_traceback_hooks(&HOOKS);
        unsafe {
            let p = G.c_malloc(24);
            announce(p);
            G.c_free(p);
            for _ in 0..100 {
                let q = G.c_malloc(300);
                G.c_free(q);
            }
            assert_eq!(G.quarantined().1, 2, "1k holds two blocks of 364 bytes");
            G.c_free(p);
        }
        unreachable!();
    }
    let d = run_child(name, &[("TIDEMARK_QUARANTINE", "1k")]);
    d.has_lines(&[
        format!("Debug memory block at address p={:#x}: API 'c'", d.p),
        "    24 bytes originally requested, align 16".into(),
        "    The block was freed and has already left the quarantine: its memory went back to the inner allocator."
            .into(),
        "    free was called on a block that was already freed.".into(),
        "Fatal error: tidemark debug free: double free".into(),
    ]);
    let text = &d.stderr;
    let ids = traceback_stack_ids(text, "free");
    // The allocation and the first free were the first two captures; the second free came
    // after 100 more blocks (200 captures).
    assert_eq!(ids.len(), 3, "{text}");
    assert!(ids[0] < ids[1] && ids[1] + 200 <= ids[2], "{text}");
}

/// Checks that a report lists the allocation's, the free's and the bad `call`'s tracebacks in
/// that order, and returns the stack ids they name (the test's traceback hook prints
/// "frame 0 of stack ID").
fn traceback_stack_ids(text: &str, call: &str) -> Vec<u64> {
    let at = |heading: &str| {
        text.find(heading)
            .unwrap_or_else(|| panic!("no {heading:?} in:\n{text}"))
    };
    let alloc_at = at("Memory block allocated at (most recent call first):");
    let freed_at = at("Memory block freed at (most recent call first):");
    let called_at = at(&format!("{call} called at (most recent call first):"));
    assert!(alloc_at < freed_at && freed_at < called_at, "{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("  frame 0 of stack "))
        .map(|id| id.parse().unwrap())
        .collect()
}

#[repr(align(4096))]
struct Page([u8; 8192]);
static mut FOREIGN: Page = Page([0; 8192]);

#[test]
fn invalid_free_of_foreign_pointer() {
    if is_child("invalid_free_of_foreign_pointer") {
        unsafe {
            let p = core::ptr::addr_of_mut!(FOREIGN.0).cast::<u8>().add(256);
            announce(p);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child("invalid_free_of_foreign_pointer", &[]);
    d.has_lines(&[
        format!(
            "Debug memory block at address p={:#x}: not a tidemark debug block",
            d.p
        ),
        "    dealloc was called with a pointer tidemark did not hand out:".into(),
        "    no debug block header precedes the pointer (bad magic).".into(),
        "    The pointer is not inside a tidemark arena.".into(),
        "Fatal error: tidemark debug dealloc: invalid free".into(),
    ]);
}

/// A realloc of such a pointer says "realloc", not "free", in its last line.
#[test]
fn invalid_realloc_of_unaligned_pointer() {
    if is_child("invalid_realloc_of_unaligned_pointer") {
        unsafe {
            let p = alloc(L24);
            announce(p.add(4));
            G.c_realloc(p.add(4), 100);
        }
        unreachable!();
    }
    let d = run_child("invalid_realloc_of_unaligned_pointer", &[]);
    d.has_lines(&[
        "    realloc was called with a pointer tidemark did not hand out:".into(),
        "Fatal error: tidemark debug realloc: invalid realloc".into(),
    ]);
}

#[test]
fn invalid_free_of_unaligned_pointer() {
    if is_child("invalid_free_of_unaligned_pointer") {
        unsafe {
            let p = alloc(L24);
            announce(p.add(4));
            G.c_free(p.add(4));
        }
        unreachable!();
    }
    let d = run_child("invalid_free_of_unaligned_pointer", &[]);
    d.has_lines(&[
        format!(
            "Debug memory block at address p={:#x}: not a tidemark debug block",
            d.p
        ),
        "    the pointer is not 16-aligned, so tidemark never handed it out.".into(),
        "Fatal error: tidemark debug free: invalid free".into(),
    ]);
}

#[test]
fn invalid_free_of_interior_pointer() {
    if is_child("invalid_free_of_interior_pointer") {
        unsafe {
            let p = alloc(Layout::from_size_align(64, 16).unwrap());
            announce(p.add(32));
            dealloc(p.add(32), L24);
        }
        unreachable!();
    }
    let d = run_child("invalid_free_of_interior_pointer", &[]);
    d.has_lines(&[
        format!(
            "Debug memory block at address p={:#x}: not a tidemark debug block",
            d.p
        ),
        "    no debug block header precedes the pointer (bad magic).".into(),
        format!(
            "    It points 32 bytes into the 64-byte debug block at {:#x}.",
            d.p - 32
        ),
        "That block was allocated at (most recent call first):".into(),
        "Fatal error: tidemark debug dealloc: invalid free".into(),
    ]);
}

#[test]
fn write_after_free() {
    if is_child("write_after_free") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            poke(p.add(9), 0x41);
            // Push it out of the (default, 4 MiB) quarantine.
            let big = Layout::from_size_align(1 << 20, 8).unwrap();
            for _ in 0..5 {
                let q = alloc(big);
                dealloc(q, big);
            }
        }
        unreachable!();
    }
    let d = run_child("write_after_free", &[]);
    d.has_lines(&[
        d.headline(),
        "    The block was freed and waits in the quarantine; its bytes should all be DEADBYTE (0xdd)."
            .into(),
        "    The byte at p+9 changed after the free: 0x41 *** OUCH".into(),
        "    Data at p: dd dd dd dd dd dd dd dd ... dd dd dd dd dd dd dd dd".into(),
        "    Data at p+1: dd dd dd dd dd dd dd dd 41 dd dd dd dd dd dd dd".into(),
        "Memory block allocated at (most recent call first):".into(),
        "Memory block freed at (most recent call first):".into(),
        "Fatal error: tidemark debug quarantine: write after free".into(),
    ]);
}

#[test]
fn write_after_free_small_quarantine() {
    if is_child("write_after_free_small_quarantine") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            poke(p, 0x00);
            for _ in 0..100 {
                let q = alloc(L24);
                dealloc(q, L24);
            }
        }
        unreachable!();
    }
    let d = run_child(
        "write_after_free_small_quarantine",
        &[("TIDEMARK_QUARANTINE", "1k")],
    );
    d.has_lines(&[
        d.headline(),
        "    The byte at p+0 changed after the free: 0x00 *** OUCH".into(),
        "Fatal error: tidemark debug quarantine: write after free".into(),
    ]);
}

#[test]
fn check_heap_finds_a_corrupted_guard() {
    if is_child("check_heap_finds_a_corrupted_guard") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.add(25), 0x00);
            check_heap();
        }
        unreachable!();
    }
    let d = run_child("check_heap_finds_a_corrupted_guard", &[]);
    d.has_lines(&[
        d.headline(),
        format!(
            "    The 8 pad bytes at tail={:#x} are not all FORBIDDENBYTE (0xfd):",
            d.p + 24
        ),
        "        at tail+0: 0xfd".into(),
        "        at tail+1: 0x00 *** OUCH".into(),
        "Fatal error: tidemark check_heap: bad trailing pad byte".into(),
    ]);
}

#[test]
fn check_heap_finds_a_write_after_free_in_the_quarantine() {
    let name = "check_heap_finds_a_write_after_free_in_the_quarantine";
    if is_child(name) {
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            poke(p.add(23), 0x01);
            check_heap();
        }
        unreachable!();
    }
    let d = run_child(name, &[]);
    d.has_lines(&[
        d.headline(),
        "    The byte at p+23 changed after the free: 0x01 *** OUCH".into(),
        "Fatal error: tidemark check_heap: write after free".into(),
    ]);
}

#[test]
fn check_at_exit() {
    if is_child("check_at_exit") {
        let p = unsafe { alloc(L24) };
        announce(p);
        poke(p.wrapping_sub(8), 0x2a);
        // Leaked; the at-exit check finds it after the harness returns.
        return;
    }
    let d = run_child("check_at_exit", &[("TIDEMARK_CHECK_AT_EXIT", "1")]);
    d.has_lines(&[
        d.headline(),
        "        at p-8: 0x2a *** OUCH".into(),
        "Fatal error: tidemark check_heap: bad leading pad byte".into(),
    ]);
}

/// The in-process side: a clean program passes `check_heap` and the C API round-trips.
#[test]
fn clean_heap_checks_clean() {
    let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert!(check_heap() >= 1000);
    drop(v);
    unsafe {
        let p = G.c_calloc(4, 4);
        assert_eq!(G.c_usable_size(p), 16);
        G.c_free(p);
        let l = Layout::from_size_align(10, 4096).unwrap();
        let q = G.alloc(l);
        assert_eq!(q as usize % 4096, 0);
        G.dealloc(q, l);
    }
}

static HOOKS: tidemark_alloc::hooks::TracebackHooks = tidemark_alloc::hooks::TracebackHooks {
    capture: fake_capture,
    write: fake_write,
};

fn fake_capture() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn fake_write(id: u64, line: &mut dyn FnMut(&str)) {
    // The report path may allocate here (the real tracer symbolizes).
    let frames = vec![
        format!("frame 0 of stack {id}"),
        format!("frame 1 of stack {id}"),
    ];
    for f in &frames {
        line(f);
    }
}

#[test]
fn double_free_shows_tracebacks_from_the_tracer() {
    let name = "double_free_shows_tracebacks_from_the_tracer";
    if is_child(name) {
        tidemark_alloc::hooks::set_traceback_hooks(&HOOKS);
        unsafe {
            let p = alloc(L24);
            announce(p);
            dealloc(p, L24);
            dealloc(p, L24);
        }
        unreachable!();
    }
    let d = run_child(name, &[]);
    let text = &d.stderr;
    // Three distinct stacks: the allocation, the first free, the second free.
    let ids = traceback_stack_ids(text, "dealloc");
    assert_eq!(ids.len(), 3, "{text}");
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{text}");
    assert!(!text.contains("tracing is off"), "{text}");
    d.has_lines(&["Fatal error: tidemark debug dealloc: double free".into()]);
}

/// No false alarms under churn (with `check_heap` running alongside): threads allocate at every alignment, grow vectors, build maps
/// and free each other's blocks, with the quarantine at its default; then the heap checks clean.
#[test]
fn threaded_churn_has_no_false_alarms() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::sync::Arc;
    // A checker walks the heap the whole time: it must never see a false defect in blocks
    // being allocated, freed, quarantined and evicted under it.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) {
                check_heap();
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            rounds
        })
    };
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut map: HashMap<String, Vec<u32>> = HashMap::new();
                for i in 0..20_000u32 {
                    let key = format!("k{}", (i * 7 + t) % 500);
                    map.entry(key).or_default().push(i);
                    if i % 1000 == 0 {
                        let batch: Vec<Box<[u8]>> = (0..50)
                            .map(|n| vec![n as u8; (n * 37) % 3000].into())
                            .collect();
                        tx.send(batch).unwrap();
                    }
                    let align = 1usize << (i % 13);
                    let l = Layout::from_size_align((i as usize % 600) + 1, align).unwrap();
                    unsafe {
                        let p = alloc(l);
                        assert_eq!(p as usize % align, 0);
                        p.write_bytes(0x5A, l.size());
                        let q = realloc(p, l, l.size() * 2);
                        assert_eq!(*q, 0x5A);
                        dealloc(q, Layout::from_size_align(l.size() * 2, align).unwrap());
                    }
                }
                map.len()
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for b in batch {
                assert!(b.iter().all(|&x| x == b[0]));
                n += 1;
            }
        }
        n
    });
    for p in producers {
        assert_eq!(p.join().unwrap(), 500);
    }
    assert_eq!(consumer.join().unwrap(), 3 * 20 * 50);
    done.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);
    assert!(check_heap() > 0);
}
