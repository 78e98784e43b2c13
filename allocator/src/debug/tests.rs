//! In-process tests of the debug layer on a local `Debug<System>` (the death tests, which need
//! a child process, are in `tests/debug_death.rs`).

use super::*;
use std::alloc::System;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn fresh_memory_is_cleanbyte_and_guarded() {
    let d = Debug::with_quarantine(System, 1 << 20);
    unsafe {
        let p = d.alloc(layout(24, 8));
        let bytes = core::slice::from_raw_parts(p, 24);
        assert!(bytes.iter().all(|&b| b == CLEANBYTE));
        assert!(core::slice::from_raw_parts(p.sub(8), 8)
            .iter()
            .all(|&b| b == FORBIDDENBYTE));
        assert!(core::slice::from_raw_parts(p.add(24), 8)
            .iter()
            .all(|&b| b == FORBIDDENBYTE));
        d.dealloc(p, layout(24, 8));
    }
}

#[test]
fn zeroed_memory_stays_zero() {
    let d = Debug::with_quarantine(System, 1 << 20);
    unsafe {
        for size in [1, 16, 100, 5000] {
            let p = d.alloc_zeroed(layout(size, 16));
            assert!(core::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
            d.dealloc(p, layout(size, 16));
        }
    }
}

#[test]
fn freed_memory_is_deadbyte_while_quarantined() {
    let d = Debug::with_quarantine(System, 1 << 20);
    unsafe {
        let p = d.alloc(layout(40, 8));
        p.write_bytes(0x11, 40);
        d.dealloc(p, layout(40, 8));
        // Still in the quarantine, so still ours to read.
        assert!(core::slice::from_raw_parts(p, 40)
            .iter()
            .all(|&b| b == DEADBYTE));
        assert!(is_debug_block(p));
        assert_eq!(d.quarantined().1, 1);
        d.flush_quarantine();
        assert_eq!(d.quarantined(), (0, 0));
    }
}

#[test]
fn every_alignment_up_to_4096_is_honoured() {
    let d = Debug::with_quarantine(System, 0);
    let mut align = 1;
    while align <= 4096 {
        for size in [0, 1, 7, 64, 513, 4097] {
            unsafe {
                let p = if size == 0 {
                    d.alloc(layout(0, align))
                } else {
                    d.alloc(layout(size, align))
                };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "align {align} size {size}");
                p.write_bytes(0xAB, size);
                let q = d.realloc(p, layout(size, align), size + 100);
                assert_eq!(q as usize % align, 0);
                assert!(core::slice::from_raw_parts(q, size)
                    .iter()
                    .all(|&b| b == 0xAB));
                assert!(core::slice::from_raw_parts(q.add(size), 100)
                    .iter()
                    .all(|&b| b == CLEANBYTE));
                d.dealloc(q, layout(size + 100, align));
            }
        }
        align *= 2;
    }
}

#[test]
fn quarantine_is_bounded_and_fifo() {
    // Each 100-byte block takes front(8)=32 + 100 + 16 = 148 inner bytes: five fit in 800, and
    // the sixth pushes out one (down to the low water mark, 750).
    let d = Debug::with_quarantine(System, 800);
    let mut ptrs = Vec::new();
    unsafe {
        for _ in 0..10 {
            ptrs.push(d.alloc(layout(100, 8)));
        }
        for (i, &p) in ptrs.iter().enumerate() {
            d.dealloc(p, layout(100, 8));
            let (bytes, len) = d.quarantined();
            assert!(bytes <= 800);
            assert_eq!(len, (i + 1).min(5));
        }
        // The newest five are the ones still held (readable, DEADBYTE).
        for &p in &ptrs[5..] {
            assert!(core::slice::from_raw_parts(p, 100)
                .iter()
                .all(|&b| b == DEADBYTE));
        }
    }
}

#[test]
fn quarantine_off_releases_at_once() {
    let d = Debug::with_quarantine(System, 0);
    unsafe {
        let p = d.alloc(layout(10, 1));
        d.dealloc(p, layout(10, 1));
    }
    assert_eq!(d.quarantined(), (0, 0));
}

#[test]
fn c_api_follows_c_semantics() {
    let d = Debug::with_quarantine(System, 1 << 16);
    unsafe {
        let a = d.c_malloc(0);
        let b = d.c_malloc(0);
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert_eq!(a as usize % 16, 0);
        assert_eq!(d.c_usable_size(a), 0);
        d.c_free(a);
        d.c_free(b);
        d.c_free(core::ptr::null_mut());

        let z = d.c_calloc(10, 10);
        assert!(core::slice::from_raw_parts(z, 100).iter().all(|&x| x == 0));
        assert!(d.c_calloc(usize::MAX, 2).is_null());
        assert_eq!(*libc::__errno_location(), libc::ENOMEM);

        let r = d.c_realloc(core::ptr::null_mut(), 8);
        assert_eq!(d.c_usable_size(r), 8);
        r.write_bytes(5, 8);
        let r2 = d.c_realloc(r, 20);
        assert!(core::slice::from_raw_parts(r2, 8).iter().all(|&x| x == 5));
        assert!(d.c_realloc(r2, 0).is_null());

        let al = d.c_aligned_alloc(4096, 10);
        assert_eq!(al as usize % 4096, 0);
        d.c_free(al);
        assert!(d.c_aligned_alloc(24, 10).is_null());
        assert_eq!(*libc::__errno_location(), libc::EINVAL);
        d.c_free(z);
    }
}

#[test]
fn check_heap_passes_on_a_clean_heap() {
    let d = Debug::with_quarantine(System, 1 << 16);
    unsafe {
        let p = d.alloc(layout(33, 1));
        let q = d.alloc(layout(8, 8));
        d.dealloc(q, layout(8, 8));
        assert!(check_heap() >= 2);
        d.dealloc(p, layout(33, 1));
    }
}

#[test]
fn serial_numbers_increase() {
    let d = Debug::with_quarantine(System, 0);
    unsafe {
        let p = d.alloc(layout(8, 8));
        let q = d.alloc(layout(8, 8));
        let (sp, sq) = (
            Block { p }.serial().unwrap(),
            Block { p: q }.serial().unwrap(),
        );
        assert!(sq > sp);
        d.dealloc(p, layout(8, 8));
        d.dealloc(q, layout(8, 8));
    }
}

/// The RELEASED mark survives the inner allocator taking the block back (glibc's tcache and
/// pymalloc's free lists here; both are per thread, so no other test's thread can take the
/// block meanwhile), with the size and stack ids it keeps.
#[test]
fn released_blocks_keep_their_mark() {
    fn check<A: GlobalAlloc>(d: &Debug<A>, size: usize, align: usize) {
        let what = format!("size {size} align {align} {}", core::any::type_name::<A>());
        unsafe {
            let p = d.alloc(layout(size, align));
            (*layout::header_of(p)).free_stack = 0; // overwritten by the free
            let alloc_stack = u64::from((*layout::header_of(p)).alloc_stack);
            d.dealloc(p, layout(size, align));
            assert_eq!(d.quarantined(), (0, 0));
            // Reading the inner allocator's free memory: still mapped, not handed out again
            // (nothing was allocated on this thread since).
            assert!(is_debug_block(p), "{what}");
            let h = core::ptr::read_volatile(layout::header_of(p));
            assert_eq!(h.status, RELEASED, "{what}");
            let r = layout::read_released(p);
            assert_eq!(r.size, Some(size), "{what}");
            assert_eq!(1usize << r.align_log2, align, "{what}");
            assert_eq!(r.stacks, Some((alloc_stack, 0)), "{what}");
        }
    }
    let glibc = Debug::with_quarantine(System, 0);
    let pymalloc = Debug::with_quarantine(crate::Pymalloc::new(), 0);
    for size in [0, 24, 200, 400] {
        for align in [8, 16, 64] {
            check(&glibc, size, align);
            check(&pymalloc, size, align);
        }
    }
}

#[test]
fn released_size_word_checks_itself() {
    for size in [0usize, 1, 24, 4095, 1 << 40, (1 << 56) - 1] {
        let word = layout::released_size_word(size);
        assert_eq!(layout::released_size(word), Some(size));
        // One flipped bit anywhere fails the check.
        for bit in 0..64 {
            assert_eq!(layout::released_size(word ^ (1 << bit)), None, "bit {bit}");
        }
    }
    assert_ne!(
        layout::released_size_word(1 << 56),
        layout::released_size_word(0)
    );
}

#[test]
fn a_block_leaving_the_quarantine_is_marked_released() {
    let d = Debug::with_quarantine(crate::Pymalloc::new(), 1 << 10);
    unsafe {
        let p = d.alloc(layout(24, 8));
        d.dealloc(p, layout(24, 8));
        assert_eq!((*layout::header_of(p)).status, layout::FREED);
        // Blocks of another size class push it out without taking its memory.
        for _ in 0..20 {
            let q = d.alloc(layout(200, 8));
            d.dealloc(q, layout(200, 8));
        }
        assert_eq!(
            core::ptr::read_volatile(layout::header_of(p)).status,
            RELEASED
        );
    }
}
