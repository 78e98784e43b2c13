//! Unit tests of the DWARF memo (dwarf_memo.rs).

use super::*;

/// An empty memo, zeroed in place as unwind/dwarf.rs makes it (it is too big for a test
/// thread's stack).
fn empty() -> Box<Memo> {
    let layout = std::alloc::Layout::new::<Memo>();
    // SAFETY: all-zero bytes are a valid empty Memo; the box frees it with this layout.
    unsafe { Box::from_raw(std::alloc::alloc_zeroed(layout) as *mut Memo) }
}

/// A memo holding `walk` (innermost first, as a walk meets the frames), named by interning.
fn memo_of(walk: &[Frame], end: End) -> Box<Memo> {
    let mut m = empty();
    m.begin(1);
    assert!(matches!(m.finish_fresh(walk, end), Outcome::Intern));
    m.note_leaf(intern_of(&m));
    m
}

fn ips_of(m: &Memo) -> Vec<u64> {
    let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); CAP];
    let n = m.ips(&mut buf);
    // SAFETY: `ips` initialized the first n.
    (0..n).map(|k| unsafe { buf[k].assume_init() }).collect()
}

fn intern_of(m: &Memo) -> StackId {
    stack::intern(&ips_of(m))
}

/// Frames `ra0..`, innermost first, each reading its word of `words`.
fn walk(words: &[u64], ra0: u64) -> Vec<Frame> {
    (0..words.len())
        .map(|i| {
            let mut f = Frame::new(ra0 + i as u64, 0x100 * (i as u64 + 1), 7);
            f.note_read(&words[i] as *const u64 as u64, words[i]);
            f
        })
        .collect()
}

#[test]
fn meets_at_the_same_state_only_while_the_words_outward_hold() {
    let words: Vec<u64> = vec![10, 20, 30, 40];
    let frames = walk(&words, 0x1000);
    let memo = memo_of(&frames, End::Complete);
    assert_eq!(ips_of(&memo), [0x1000, 0x1001, 0x1002, 0x1003]);
    // A walk whose frame 0 is new meets the memo at the frame of its caller (kept[2]:
    // outermost first).
    let mut m = empty();
    m.clone_from_memo(&memo);
    let mut meet = m.begin(1);
    assert_eq!(meet.meet(&m, &Frame::new(0x9999, 0x100, 7)), None);
    assert_eq!(meet.meet(&m, &frames[1]), Some(2));
    // A different rbp at the same sp is a different state (the last frame's role is
    // unknown: it uses rbp).
    let mut meet = m.begin(1);
    assert_eq!(meet.meet(&m, &Frame::new(0x1001, 0x200, 8)), None);

    // A word read by frame 2 changed: meeting at frames 1 or 2 is refused, at 3 allowed.
    let mut changed = words.clone();
    changed[2] = 31;
    let frames2: Vec<Frame> = (0..4)
        .map(|i| {
            let mut f = Frame::new(frames[i].ra, frames[i].sp, 7);
            f.note_read(&changed[i] as *const u64 as u64, words[i]);
            f
        })
        .collect();
    let memo2 = memo_of(&frames2, End::Complete);
    let mut meet = memo2.begin_shared();
    assert_eq!(meet.meet(&memo2, &frames2[1]), None);
    assert_eq!(meet.meet(&memo2, &frames2[2]), None);
    assert_eq!(meet.meet(&memo2, &frames2[3]), Some(0));
}

#[test]
fn rbp_only_has_to_match_when_a_frame_further_out_uses_it() {
    let mk = |ra: u64, sp: u64, bp: u64, caller: (u64, u64)| {
        let mut f = Frame::new(ra, sp, bp);
        f.note_step(caller.0, caller.1);
        f
    };
    // Frame 0 passes rbp on, frame 1 restores it from the stack: rbp at frame 0 is free.
    let frames = [
        mk(1, 0x100, 5, (0x200, 5)),
        mk(2, 0x200, 5, (0x300, 9)),
        mk(3, 0x300, 9, (0x400, 9)),
    ];
    let memo = memo_of(&frames, End::Complete);
    assert_eq!(
        memo.begin_shared().meet(&memo, &Frame::new(1, 0x100, 77)),
        Some(2)
    );
    // Frame 1 of this memo uses the frame-pointer rule (sp' = bp + 16): rbp must match.
    let frames = [
        mk(1, 0x100, 0x1f0, (0x200, 0x1f0)),
        mk(2, 0x200, 0x1f0, (0x200, 0x2f0)),
    ];
    let memo = memo_of(&frames, End::Complete);
    assert_eq!(
        memo.begin_shared().meet(&memo, &Frame::new(1, 0x100, 77)),
        None
    );
    assert_eq!(memo.begin_shared().meet(&memo, &frames[0]), Some(1));
}

#[test]
fn a_frame_that_read_too_much_is_never_reused() {
    let w = 5u64;
    let mut f = Frame::new(1, 0x100, 0);
    for _ in 0..=READS {
        f.note_read(&w as *const u64 as u64, 5);
    }
    let memo = memo_of(&[f], End::Complete);
    assert_eq!(memo.begin_shared().meet(&memo, &f), None);
}

#[test]
fn a_walk_that_meets_the_memo_is_named_by_child_steps() {
    let words: Vec<u64> = vec![1, 2, 3, 4, 5];
    let frames = walk(&words, 0x7000);
    let mut memo = memo_of(&frames, End::Complete);
    let leaf = intern_of(&memo);
    // The same stack again: the remembered leaf.
    let mut meet = memo.begin(1);
    let at = meet.meet(&memo, &frames[0]).unwrap();
    match memo.finish_met(&[], at, 64) {
        Outcome::Known(id) => assert_eq!(id, leaf),
        _ => panic!("the same stack is known"),
    }
    // Two new innermost frames over frames[2..]: stepped from the node of frames[2..].
    let new = [Frame::new(0x9000, 0x80, 7), Frame::new(0x9001, 0x180, 7)];
    let mut meet = memo.begin(1);
    assert_eq!(meet.meet(&memo, &new[0]), None);
    assert_eq!(meet.meet(&memo, &new[1]), None);
    let at = meet.meet(&memo, &frames[2]).unwrap();
    let Outcome::Known(id) = memo.finish_met(&new, at, 64) else {
        panic!("stepped");
    };
    assert_eq!(ips_of(&memo), [0x9000, 0x9001, 0x7002, 0x7003, 0x7004]);
    assert_eq!(id, intern_of(&memo));
}

#[test]
fn windows_follow_the_limit_both_ways() {
    let words: Vec<u64> = (0..6).collect();
    let frames = walk(&words, 0x5000);
    // Four frames kept of a deeper stack.
    let mut memo = memo_of(&frames[..4], End::Limit);
    // Two more inner frames: the window drops the two outermost.
    let new = [Frame::new(0x6000, 0x40, 7), Frame::new(0x6001, 0x80, 7)];
    let at = memo.begin(1).meet_all(&memo, &new, &frames[0]).unwrap();
    assert!(matches!(memo.finish_met(&new, at, 4), Outcome::Intern));
    assert_eq!(ips_of(&memo), [0x6000, 0x6001, 0x5000, 0x5001]);
    assert_eq!(memo.end, End::Limit);
    memo.note_leaf(intern_of(&memo));
    // Back to frames[0] as the innermost: the walk goes on past the kept frames.
    let at = memo.begin(1).meet(&memo, &frames[0]).unwrap();
    assert_eq!(at, 1);
    let Outcome::WalkOn { more } = memo.finish_met(&[], at, 4) else {
        panic!("walks on");
    };
    assert_eq!(more, 2);
    assert_eq!(memo.outermost().0, 0x5001);
    // The walker gives that frame again, with its step, and its two callers.
    memo.prepend(&frames[1..4], End::Limit);
    assert_eq!(ips_of(&memo), [0x5000, 0x5001, 0x5002, 0x5003]);
    memo.note_leaf(intern_of(&memo));
    let at = memo.begin(1).meet(&memo, &frames[0]);
    assert_eq!(at, Some(3), "the rebuilt memo holds its reads");
    match memo.finish_met(&[], 3, 4) {
        Outcome::Known(id) => assert_eq!(id, intern_of(&memo)),
        _ => panic!("the same stack is known"),
    }
}

impl Memo {
    fn clone_from_memo(&mut self, other: &Memo) {
        // SAFETY: Memo is plain data (Copy fields only); both are valid memos.
        unsafe { core::ptr::copy_nonoverlapping(other, self, 1) };
    }

    /// A meeting without changing the memo (its set is the one the tests use).
    fn begin_shared(&self) -> Meeting {
        assert_eq!(self.generation, 1);
        Meeting {
            cursor: self.len,
            intact: usize::MAX,
        }
    }
}

impl Meeting {
    fn meet(&mut self, memo: &Memo, f: &Frame) -> Option<usize> {
        self.meet_at(memo, f.ra, f.sp, f.bp)
    }

    /// Meets each of `fresh`, expecting no meeting, then `at`.
    fn meet_all(&mut self, memo: &Memo, fresh: &[Frame], at: &Frame) -> Option<usize> {
        for f in fresh {
            assert_eq!(self.meet(memo, f), None);
        }
        self.meet(memo, at)
    }
}
