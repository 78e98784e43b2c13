//! Death tests of a damaged block header (and trailer): a write before a block that runs past
//! its front guard lands in the header (size and alignment, tracebacks, tag, registry slot).
//! Each must be reported as a damaged header, wherever it is found (the free, the
//! quarantine's eviction, `check_heap`), never trusted: a wrong size sent the checks reading
//! far past the block, a wrong slot made the registry panic or unregister another block.

#[path = "common/death.rs"]
#[allow(dead_code)] // (each test file uses part of the harness)
mod death;

use death::{announce, is_child, poke, run_child, Death, L24};
use std::alloc::{alloc, dealloc};
use tidemark_alloc::debug::{check_heap, Debug};
use tidemark_alloc::Pymalloc;

#[global_allocator]
static G: Debug<Pymalloc> = Debug::new(Pymalloc::new());

/// The lines every damaged-header report has, found by `call`.
fn assert_damaged(d: &Death, call: &str) {
    d.has_lines(&[
        format!(
            "Debug memory block at address p={:#x}: its header is damaged",
            d.p
        ),
        "    The 24 bytes of bookkeeping at p-32..p-8 were overwritten: a write before the \
         block's start ran past its front guard, or a wild write landed there."
            .into(),
        "    Bytes at p-8: fd fd fd fd fd fd fd fd".into(),
        "    The block's size, serial and tracebacks were kept in those bytes: they are not \
         shown."
            .into(),
        format!("Fatal error: tidemark {call}: damaged block header"),
    ]);
    d.has_prefix("    Bytes at p-32: ");
}

#[test]
fn size_overwritten_is_found_by_the_free() {
    if is_child("size_overwritten_is_found_by_the_free") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(30), 0x58);
            dealloc(p, L24);
        }
        unreachable!();
    }
    assert_damaged(
        &run_child("size_overwritten_is_found_by_the_free", &[]),
        "debug dealloc",
    );
}

/// Through the C entry points the free knows no size: the header's is checked before it
/// locates the back guard.
#[test]
fn size_overwritten_is_found_by_c_free() {
    if is_child("size_overwritten_is_found_by_c_free") {
        unsafe {
            let p = G.c_malloc(24);
            announce(p);
            poke(p.sub(27), 0x58);
            G.c_free(p);
        }
        unreachable!();
    }
    assert_damaged(
        &run_child("size_overwritten_is_found_by_c_free", &[]),
        "debug free",
    );
}

/// The tag (magic, API, status) damaged: the pointer no longer looks like a debug block, but
/// the registry holds it.
#[test]
fn tag_overwritten_is_found_by_the_free() {
    if is_child("tag_overwritten_is_found_by_the_free") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(14), 0x58);
            dealloc(p, L24);
        }
        unreachable!();
    }
    assert_damaged(
        &run_child("tag_overwritten_is_found_by_the_free", &[]),
        "debug dealloc",
    );
}

/// The slot is not what the free checks: the block leaves the quarantine with it, where it
/// would unregister the wrong block.
#[test]
fn slot_overwritten_is_found_at_eviction() {
    if is_child("slot_overwritten_is_found_at_eviction") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(10), 0x58);
            dealloc(p, L24);
            G.flush_quarantine();
        }
        unreachable!();
    }
    assert_damaged(
        &run_child("slot_overwritten_is_found_at_eviction", &[]),
        "debug quarantine",
    );
}

/// With the quarantine off the block goes back at once: the slot is checked there too.
#[test]
fn slot_overwritten_is_found_without_quarantine() {
    if is_child("slot_overwritten_is_found_without_quarantine") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(12), 0x58);
            dealloc(p, L24);
        }
        unreachable!();
    }
    assert_damaged(
        &run_child(
            "slot_overwritten_is_found_without_quarantine",
            &[("TIDEMARK_QUARANTINE", "0")],
        ),
        "debug quarantine",
    );
}

#[test]
fn check_heap_finds_a_live_blocks_damaged_header() {
    if is_child("check_heap_finds_a_live_blocks_damaged_header") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.sub(9), 0x58);
            check_heap();
        }
        unreachable!();
    }
    assert_damaged(
        &run_child("check_heap_finds_a_live_blocks_damaged_header", &[]),
        "check_heap",
    );
}

/// The trailer after the back guard (the serial number) carries a check byte: a write past the
/// end that jumps the guard is found when the block leaves the quarantine.
#[test]
fn trailer_overwritten_is_found_at_eviction() {
    if is_child("trailer_overwritten_is_found_at_eviction") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.add(24 + 8 + 3), 0x58);
            dealloc(p, L24);
            G.flush_quarantine();
        }
        unreachable!();
    }
    let d = run_child("trailer_overwritten_is_found_at_eviction", &[]);
    d.has_lines(&[
        format!(
            "    The 8 pad bytes at tail={:#x} are FORBIDDENBYTE, as expected.",
            d.p + 24
        ),
        "    *** OUCH: a write past the end of the block ran beyond its back guard.".into(),
        "Fatal error: tidemark debug quarantine: bad serial number after the trailing pad".into(),
    ]);
    d.has_prefix("    The 8 bytes at tail+8 (the block's serial number) were overwritten: ");
}

#[test]
fn check_heap_finds_a_live_blocks_damaged_trailer() {
    if is_child("check_heap_finds_a_live_blocks_damaged_trailer") {
        unsafe {
            let p = alloc(L24);
            announce(p);
            poke(p.add(24 + 8 + 7), 0x58);
            check_heap();
        }
        unreachable!();
    }
    let d = run_child("check_heap_finds_a_live_blocks_damaged_trailer", &[]);
    d.has_lines(&[
        "Fatal error: tidemark check_heap: bad serial number after the trailing pad".into(),
    ]);
}
