//! The last few stacks a thread captured, each with the words its walk read, so that a
//! program that comes back to one of them is answered without unwinding a frame.
//!
//! The memo (dwarf_memo.rs) holds one walk: a capture from another call site than the last
//! one unwinds its innermost frames afresh, even when it is the capture from two or three
//! allocations ago again. That is CPython's usual pattern: one line of Python allocates a
//! dict, then a string, then a list, each from its own C path under the same eval-loop
//! frame, and the next iteration of the loop does the same again. The argument is the
//! memo's: a walk is a pure function of its first frame's state and of the words it reads,
//! so a capture whose first frame is a recent stack's first frame (same return address and
//! `rsp`, and `rbp` where it matters) while every word that walk read still holds the same
//! value is that stack again: same frames, same id. The words are checked innermost first,
//! where two stacks from the same frame differ (the caller's return address).
//!
//! A stack is kept in the slot its first frame's state hashes to, which holds the two most
//! recently used of the stacks that map there, and belongs to one module set (a rule may
//! change when the modules are re-read). Two, because one first frame often serves two
//! paths in turn: CPython's `PyUnicode_New`, called at the same depth by different callers,
//! whose stacks part a few words out. On the CPython workload (bench/scripts/py_workload.py)
//! one stack per slot answered 70% of the captures, two 86%, four no more than two.

use crate::dwarf_memo::{Memo, Reads};
use tidemark_tracer::stack::StackId;

/// Slots, by their first frame's state (a power of two). On the CPython workload
/// (bench/scripts) a scan of the last 8 stacks answered 9% of the captures, of the last 32,
/// 42%; a table indexed by the first frame answers as many with one probe.
const SLOTS: usize = 64;
/// Words one remembered stack's walk may have read (deeper walks are not remembered).
const MAX_READS: usize = 96;

/// What identifies a remembered stack's first frame, and the stack.
#[derive(Clone, Copy)]
struct Head {
    /// The first frame's return address and `rsp` (ra 0: the entry is empty).
    ra: u64,
    sp: u64,
    /// The module set the walk used.
    generation: usize,
    /// The first frame's `rbp`, and the bits of it the walk depends on (all or none).
    bp: u64,
    bp_mask: u64,
    id: StackId,
    frames: u32,
    nreads: u32,
}

struct Entry {
    head: Head,
    /// (address, value), outermost frame's first, as the memo keeps them.
    reads: [(u64, u64); MAX_READS],
}

/// One slot's two stacks, the one used last first: the express lane probes only `ways[0]`
/// before it leaves its short path, and a new stack pushes `ways[1]` out.
struct Pair {
    ways: [Entry; 2],
}

/// All-zero bytes are a valid empty table (unwind/dwarf.rs makes it so, in place).
pub struct RecentStacks {
    slots: [Pair; SLOTS],
}

impl Entry {
    /// Would a capture from `(ra, sp, bp)` under `generation` repeat this entry's walk?
    #[inline(always)]
    fn repeats(&self, ra: u64, sp: u64, bp: u64, generation: usize) -> bool {
        let h = &self.head;
        h.ra == ra
            && h.sp == sp
            && h.generation == generation
            && (h.bp ^ bp) & h.bp_mask == 0
            && unchanged(self.used_reads())
    }

    /// The reads `remember` wrote (`nreads` ≤ MAX_READS: written only there).
    #[inline(always)]
    fn used_reads(&self) -> &[(u64, u64)] {
        &self.reads[..(self.head.nreads as usize).min(MAX_READS)]
    }

    fn found(&self) -> (StackId, usize) {
        (self.head.id, self.head.frames as usize)
    }
}

#[inline]
fn slot(ra: u64, sp: u64) -> usize {
    let h = (ra ^ sp.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 58) as usize & (SLOTS - 1)
}

impl Pair {
    /// `find` past the stack used last: the other one, moved to the front on a hit.
    #[cold]
    #[inline(never)]
    fn find_second(
        &mut self,
        ra: u64,
        sp: u64,
        bp: u64,
        generation: usize,
    ) -> Option<(StackId, usize)> {
        if !self.ways[1].repeats(ra, sp, bp, generation) {
            return None;
        }
        self.swap();
        Some(self.ways[0].found())
    }

    /// Swaps the two stacks (only the reads in use: a few hundred bytes, not 3 KiB).
    fn swap(&mut self) {
        let [first, second] = &mut self.ways;
        let n = first.used_reads().len().max(second.used_reads().len());
        core::mem::swap(&mut first.head, &mut second.head);
        first.reads[..n].swap_with_slice(&mut second.reads[..n]);
    }
}

impl RecentStacks {
    /// The id and frame count of the recent stack whose walk a capture from the first frame
    /// `(ra, sp, bp)` under module set `generation` would repeat, if any.
    #[inline(always)]
    pub fn find(
        &mut self,
        ra: u64,
        sp: u64,
        bp: u64,
        generation: usize,
    ) -> Option<(StackId, usize)> {
        let pair = &mut self.slots[slot(ra, sp)];
        let e = &pair.ways[0];
        if e.repeats(ra, sp, bp, generation) {
            return Some(e.found());
        }
        pair.find_second(ra, sp, bp, generation)
    }

    /// Remembers the stack the memo holds, named `id`, in its first frame's slot, unless it
    /// is too deep.
    #[inline]
    pub fn remember(&mut self, memo: &Memo, id: StackId, generation: usize) {
        let Some(Reads {
            ra,
            sp,
            bp,
            bp_matters,
            frames,
        }) = memo.reads()
        else {
            return;
        };
        if id == 0 {
            return;
        }
        // The new stack goes to the front; the one there moves behind it, pushing the other
        // one out.
        let pair = &mut self.slots[slot(ra, sp)];
        pair.swap();
        let e = &mut pair.ways[0];
        let Some(mut nreads) = memo.relevant_reads(&mut e.reads) else {
            e.head.ra = 0;
            return;
        };
        // `unchanged` checks two words per step: an odd count repeats the outermost word
        // (checking a word twice changes nothing). MAX_READS is even, so there is room.
        if !nreads.is_multiple_of(2) {
            e.reads.copy_within(0..nreads, 1);
            nreads += 1;
        }
        e.head = Head {
            ra,
            sp,
            generation,
            bp,
            bp_mask: if bp_matters { u64::MAX } else { 0 },
            id,
            frames: frames as u32,
            nreads: nreads as u32,
        };
    }
}
/// Do the words still hold what the walk read? Innermost first (the end of the slice), where
/// two stacks from the same first frame part, two words per step (`remember` makes the count
/// even). On the churn's stacks (12 words) this loop was a third of the express lane: LLVM
/// compiles a step of one word to 8 instructions and re-branches a step of two (12), so on
/// x86-64 the step is written out: 10 instructions for two words.
#[inline(always)]
fn unchanged(reads: &[(u64, u64)]) -> bool {
    debug_assert!(reads.len().is_multiple_of(2));
    let bytes = (reads.len() & !1) * core::mem::size_of::<(u64, u64)>();
    #[cfg(target_arch = "x86_64")]
    {
        let changed: u64;
        // SAFETY: the loop reads the pairs at byte offsets below `bytes` of `reads` (two per
        // step, from the end down to 0), and the words they name: each the memo's POISON
        // word or one a walk of this thread read before, inside its stack (`read_in`). The
        // stack's pages stay mapped while the thread runs, so no load can fault; a value
        // only decides the reuse. Each step ORs both words' differences into `changed`.
        unsafe {
            core::arch::asm!(
                "xor {changed:e}, {changed:e}",
                "test {at}, {at}",
                "jz 3f",
                "2:",
                "mov {changed}, [{base} + {at} - 16]",
                "mov {outer}, [{base} + {at} - 32]",
                "mov {changed}, [{changed}]",
                "mov {outer}, [{outer}]",
                "xor {changed}, [{base} + {at} - 8]",
                "xor {outer}, [{base} + {at} - 24]",
                "or {changed}, {outer}",
                "jnz 3f",
                "sub {at}, 32",
                "jnz 2b",
                "3:",
                base = in(reg) reads.as_ptr(),
                at = inout(reg) bytes => _,
                changed = out(reg) changed,
                outer = out(reg) _,
                options(nostack, readonly),
            );
        }
        changed == 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        reads[..bytes / 16].iter().rev().all(|&(addr, value)| {
            // SAFETY: as above.
            unsafe { (addr as *const u64).read_volatile() == value }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dwarf_memo::{End, Frame};

    /// Zeroed in place, as unwind/dwarf.rs makes them (too big for a test thread's stack).
    fn zeroed<T>() -> Box<T> {
        let layout = std::alloc::Layout::new::<T>();
        // SAFETY: all-zero bytes are valid for Memo and RecentStacks; the box frees the
        // allocation with the same layout.
        unsafe { Box::from_raw(std::alloc::alloc_zeroed(layout) as *mut T) }
    }

    /// A walk of `words.len()` frames from `(0x4000, 0x100, rbp 9)`, each step reading one of
    /// `words`, remembered as stack 77 under module set 1.
    fn remembered(words: &[u64]) -> Box<RecentStacks> {
        let frames: Vec<Frame> = (0..words.len())
            .map(|i| {
                let mut f = Frame::new(0x4000 + i as u64, 0x100 * (i as u64 + 1), 9);
                f.note_read(&words[i] as *const u64 as u64, words[i]);
                f
            })
            .collect();
        let mut memo: Box<Memo> = zeroed();
        memo.begin(1);
        memo.finish_fresh(&frames, End::Complete);
        let mut recent: Box<RecentStacks> = zeroed();
        recent.remember(&memo, 77, 1);
        recent
    }

    #[test]
    fn a_stack_comes_back_while_its_words_hold() {
        let mut words = [11u64, 22, 33];
        let mut recent = remembered(&words);
        assert_eq!(recent.find(0x4000, 0x100, 9, 1), Some((77, 3)));
        // Another module set, another first frame, or (the last frame's role being unknown)
        // another rbp: not that stack.
        assert_eq!(recent.find(0x4000, 0x100, 9, 2), None);
        assert_eq!(recent.find(0x4000, 0x108, 9, 1), None);
        assert_eq!(recent.find(0x4000, 0x100, 8, 1), None);
        // A word its walk read has changed: not that stack either.
        // SAFETY: a plain write to a local the test owns (the entry holds its address).
        unsafe { core::ptr::write_volatile(&mut words[1], 23) };
        assert_eq!(recent.find(0x4000, 0x100, 9, 1), None);
    }

    /// Remembers, as stack `id`, a one-frame walk from `(0x4000, 0x100, rbp 9)` that read
    /// `value` at `word` (the caller's return address, say).
    fn remember_one(recent: &mut RecentStacks, word: *mut u64, value: u64, id: StackId) {
        let mut f = Frame::new(0x4000, 0x100, 9);
        f.note_read(word as u64, value);
        let mut memo: Box<Memo> = zeroed();
        memo.begin(1);
        memo.finish_fresh(&[f], End::Complete);
        recent.remember(&memo, id, 1);
    }

    #[test]
    fn a_slot_keeps_the_two_stacks_used_last() {
        let mut word = 11u64;
        let word: *mut u64 = &mut word;
        let mut recent: Box<RecentStacks> = zeroed();
        // Which stack a capture from the one first frame finds, with `value` in the word.
        let found = |recent: &mut RecentStacks, value: u64| {
            // SAFETY: a local the test owns; the entries hold its address.
            unsafe { word.write_volatile(value) };
            recent.find(0x4000, 0x100, 9, 1).map(|(id, _)| id)
        };
        remember_one(&mut recent, word, 11, 77);
        assert_eq!(found(&mut recent, 12), None);
        remember_one(&mut recent, word, 12, 78);
        assert_eq!(found(&mut recent, 11), Some(77));
        assert_eq!(found(&mut recent, 12), Some(78));
        assert_eq!(found(&mut recent, 11), Some(77));
        // A third stack from the same frame replaces the one used longest ago (78).
        assert_eq!(found(&mut recent, 13), None);
        remember_one(&mut recent, word, 13, 79);
        assert_eq!(found(&mut recent, 12), None);
        assert_eq!(found(&mut recent, 11), Some(77));
        assert_eq!(found(&mut recent, 13), Some(79));
    }

    #[test]
    fn every_word_is_checked_whatever_the_count() {
        for n in 1..=7usize {
            let mut words: Vec<u64> = (0..n as u64).map(|i| 0x5000 + i).collect();
            let mut recent = remembered(&words);
            assert_eq!(recent.find(0x4000, 0x100, 9, 1), Some((77, n)), "{n} words");
            for (i, word) in words.iter_mut().enumerate() {
                // SAFETY: plain writes to a vector the test owns (the entry holds addresses
                // of its elements, which do not move).
                unsafe { core::ptr::write_volatile(word, 1) };
                assert_eq!(recent.find(0x4000, 0x100, 9, 1), None, "word {i} of {n}");
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(word, 0x5000 + i as u64) };
            }
            assert_eq!(recent.find(0x4000, 0x100, 9, 1), Some((77, n)));
        }
    }

    /// Two frames: the first one's step reads its caller's return address and restores
    /// `rbp` from the stack; the caller's step passes `rbp` on (`outer_uses_bp`: uses it).
    /// Returns whether the stack is found again after the saved `rbp` word changed.
    fn found_after_saved_bp_changes(outer_uses_bp: bool) -> bool {
        let mut words = [0x4001u64, 500, 0x4002];
        let mut inner = Frame::new(0x4000, 0x100, 9);
        inner.note_read(&words[0] as *const u64 as u64, words[0]);
        inner.note_read(&words[1] as *const u64 as u64, words[1]);
        inner.note_step(0x200, 500);
        let mut outer = Frame::new(0x4001, 0x200, 500);
        outer.note_read(&words[2] as *const u64 as u64, words[2]);
        // The frame-pointer rule (sp = bp + 16) uses rbp; else it passes unchanged.
        if outer_uses_bp {
            outer.note_step(516, 500);
        } else {
            outer.note_step(0x300, 500);
        }
        let mut memo: Box<Memo> = zeroed();
        memo.begin(1);
        memo.finish_fresh(&[inner, outer], End::Complete);
        let mut recent: Box<RecentStacks> = zeroed();
        recent.remember(&memo, 77, 1);
        assert_eq!(recent.find(0x4000, 0x100, 9, 1), Some((77, 2)));
        // SAFETY: plain writes to a local the test owns (the entry holds their addresses).
        unsafe { core::ptr::write_volatile(&mut words[1], 501) };
        let found = recent.find(0x4000, 0x100, 9, 1) == Some((77, 2));
        // The return addresses are always checked.
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut words[2], 0x4003) };
        assert_eq!(recent.find(0x4000, 0x100, 9, 1), None);
        found
    }

    #[test]
    fn a_saved_rbp_is_checked_only_where_the_walk_uses_it() {
        assert!(found_after_saved_bp_changes(false));
        assert!(!found_after_saved_bp_changes(true));
    }
}
