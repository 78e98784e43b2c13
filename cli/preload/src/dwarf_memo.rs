//! The last DWARF walk, remembered per thread, so the next capture unwinds only what changed.
//!
//! The tracer's frame-pointer memo (tracer/src/memo.rs) does this for frame-pointer walks;
//! this is the same argument for DWARF. Unwinding one frame is a pure function of the frame's
//! state — its return address (which picks the unwind rule), `rsp` and `rbp` — and of the stack
//! words the rule reads (the caller's return address, a saved `rbp`). So if a new walk reaches
//! a state the memo holds, and every word the memo's walk read from that frame outward still
//! holds the same value, the new walk would repeat the old one from there word for word: its
//! frames can be copied instead of unwound. Between two allocations of a program only the top
//! few frames change, so a capture unwinds those (~15 ns each through framehop's rule cache)
//! and checks the rest with one load and compare per word read.
//!
//! `rbp`: code built without frame pointers uses it as an ordinary register, so its value at
//! a frame is often new on every call even though nothing below depends on it. Each frame
//! notes what its unwind step did with the incoming `rbp` (used it: the frame-pointer rule
//! reads at `rbp` and sets `rsp = rbp + 16`; replaced it with a saved value; or passed it
//! on), and a meeting only requires equal `rbp` when some frame further out uses it before
//! another replaces it.
//!
//! Frames are kept innermost first; their `sp` grows with the index. A walk moves a cursor
//! outward through the memo as its own `sp` grows, so finding the meeting frame costs one pass.
//! The memo belongs to one module set: a rebuild (after a `dlopen`) may change rules, so a
//! memo made under another set is dropped.

/// Frames remembered (a walk deeper than this is remembered up to here).
pub const CAP: usize = 256;
/// Stack words one frame's unwind may read and still be remembered (x86-64 rules read the
/// return address and at most a saved `rbp`).
const READS: usize = 3;

/// A frame as the walk met it, and the words its unwind step read.
#[derive(Clone, Copy, Default)]
pub struct Frame {
    pub ra: u64,
    pub sp: u64,
    pub bp: u64,
    /// Words read while unwinding this frame (`READS + 1` = more than fit: not reusable).
    nreads: u16,
    /// What the unwind step did with the incoming `rbp` (`BP_*`).
    bp_role: u16,
    reads: [(u64, u64); READS],
}

/// The step's result does not depend on the incoming `rbp`, which it passes on unchanged.
const BP_PASSES: u16 = 0;
/// The step used the incoming `rbp` (or its role is unknown: the default, to be safe).
const BP_USES: u16 = 1;
/// The step replaced `rbp` with a value read from the stack, without using the incoming one.
const BP_REPLACES: u16 = 2;

impl Frame {
    pub fn new(ra: u64, sp: u64, bp: u64) -> Frame {
        Frame {
            ra,
            sp,
            bp,
            nreads: 0,
            bp_role: BP_USES,
            reads: [(0, 0); READS],
        }
    }

    /// Notes the registers the unwind step of this frame produced (`sp`, `bp` of the caller):
    /// the frame-pointer rule shows as `sp == bp + 16` of this frame; any other rule leaves
    /// `rbp` alone or restores it from the stack.
    #[inline]
    pub fn note_step(&mut self, caller_sp: u64, caller_bp: u64) {
        self.bp_role = if caller_sp == self.bp.wrapping_add(16) {
            BP_USES
        } else if caller_bp != self.bp {
            BP_REPLACES
        } else {
            BP_PASSES
        };
    }

    /// Notes one word read while unwinding this frame.
    #[inline]
    pub fn note_read(&mut self, addr: u64, value: u64) {
        let n = self.nreads as usize;
        if n < READS {
            self.reads[n] = (addr, value);
        }
        self.nreads = (n + 1).min(READS + 1) as u16;
    }

    /// Do the words this frame's unwind read still hold what they held? (It runs for every
    /// frame outward of the meeting, on every capture.)
    #[inline(always)]
    fn unchanged(&self) -> bool {
        let n = self.nreads as usize;
        if n > READS {
            return false;
        }
        let mut k = 0;
        while k < n {
            let (addr, value) = self.reads[k];
            // SAFETY: every address was read by the walk that made this memo, inside this
            // thread's stack, at or above a frame that is still live (the meeting frame's
            // `sp` is the current walk's, and these lie outward from it).
            if unsafe { (addr as *const u64).read_volatile() } != value {
                return false;
            }
            k += 1;
        }
        true
    }
}

/// How the remembered walk ended after its last frame.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
#[repr(u8)]
pub enum End {
    /// The unwinder reached the outermost frame: nothing lies beyond.
    /// Discriminant 0: a zeroed memo (see unwind/dwarf.rs) reads as empty and complete.
    #[default]
    Complete = 0,
    /// The unwinder failed after the last frame (no rule, a read outside the stack).
    Failed,
    /// The walk stopped at a frame limit: more frames may lie beyond the last, found by
    /// unwinding again from it.
    Limit,
}

pub struct Memo {
    /// The module set the walk used (its address; 0 = none).
    pub generation: usize,
    pub len: usize,
    pub end: End,
    pub frames: [Frame; CAP],
    /// `frames[k].ra`, contiguous: what a capture copies out.
    pub ras: [u64; CAP],
    /// The stack id the last capture interned, when its stack was `ras[..id_len]` (0: none).
    /// A capture that finds the same frames again reuses it: no copy, no hash, no intern.
    pub id: u32,
    /// Frames of the stack `id` names (`usize::MAX`: the last capture was not `ras[..k]`).
    pub id_len: usize,
    /// Every word the frames' unwind steps read, contiguous (the first `flat_len`; made by
    /// `known_from` when first needed after a change, `flat_ok` until the next): checking
    /// them in one tight loop is most of what a repeated stack costs.
    flat: [(u64, u64); CAP * READS],
    flat_len: usize,
    flat_ok: bool,
    /// With `flat`: the walk from frame 0 does not depend on the `rbp` it starts with.
    bp_free: bool,
}

/// Where a new walk meets the memo.
pub struct Meeting {
    /// Memo frames before `cursor` lie inward of the walk (smaller sp).
    cursor: usize,
    /// Frames at and after this index were checked unchanged (`usize::MAX`: not checked yet).
    intact_from: usize,
}

impl Meeting {
    pub fn new() -> Meeting {
        Meeting {
            cursor: 0,
            intact_from: usize::MAX,
        }
    }

    /// The memo frame equal to the walk's state `f` from which the memo can be reused, if any.
    #[inline]
    pub fn meet(&mut self, memo: &Memo, f: &Frame) -> Option<usize> {
        while self.cursor < memo.len && memo.frames[self.cursor].sp < f.sp {
            self.cursor += 1;
        }
        let i = self.cursor;
        if i >= memo.len {
            return None;
        }
        let m = &memo.frames[i];
        if m.sp != f.sp || m.ra != f.ra || (m.bp != f.bp && memo.bp_matters_from(i)) {
            return None;
        }
        if self.intact_from == usize::MAX {
            // Checked once per walk, from the outermost frame in: every later meeting lies
            // further out, so this answers them all.
            let mut k = memo.len;
            while k > i && memo.frames[k - 1].unchanged() {
                k -= 1;
            }
            self.intact_from = k;
        }
        (i >= self.intact_from).then_some(i)
    }
}

impl Memo {
    /// The memo's frames no longer name the last interned stack (or changed).
    #[inline]
    pub fn forget_id(&mut self) {
        self.id = 0;
        self.id_len = usize::MAX;
        self.flat_ok = false;
    }

    /// This capture's stack is `ras[..n]`: its id, once interned, goes to `note_id`.
    #[inline]
    pub fn expect_id(&mut self, n: usize) {
        self.id = 0;
        self.id_len = n;
    }

    /// `id` is the interned stack of `n` frames the capture just gave.
    #[inline]
    pub fn note_id(&mut self, n: usize, id: u32) {
        if self.id_len == n {
            self.id = id;
        }
    }

    /// Keeps `id` as the name of `ras[..n]` (after a splice that changed no return address).
    #[inline]
    pub fn set_id(&mut self, id: u32, n: usize) {
        self.id = id;
        self.id_len = n;
    }

    /// Is a walk that met the memo at frame `i` after unwinding `fresh` itself, and that gives
    /// `n` frames in all, the stack the memo's id names? Its fresh frames must be the memo's
    /// first `i` (the rest is the memo's from `i` on, by the meeting).
    #[inline]
    pub fn same_stack(&self, fresh: &[Frame], i: usize, n: usize) -> bool {
        self.id != 0
            && fresh.len() == i
            && n == self.id_len
            && fresh.iter().zip(&self.ras[..i]).all(|(f, &ra)| f.ra == ra)
    }

    /// The id of the stack a capture gives whose program frame is `f` (walking at most `want`
    /// frames under module set `generation`), when it is the one the memo's last capture
    /// interned: `f` meets the memo's first frame and nothing the memo read has changed.
    /// This is the whole capture when a program allocates from the same place again.
    #[inline]
    pub fn known_from(&mut self, f: &Frame, want: usize, generation: usize) -> Option<u32> {
        if self.id == 0 || self.generation != generation || self.end == End::Failed {
            return None;
        }
        let rest = self.len.min(want);
        // A memo cut short by a limit, with more wanted now, is walked on (walker.rs).
        let goes_on = rest == self.len && self.end == End::Limit && rest < want;
        if goes_on || rest != self.id_len || self.len == 0 {
            return None;
        }
        let (sp, ra, bp) = (self.frames[0].sp, self.frames[0].ra, self.frames[0].bp);
        if sp != f.sp || ra != f.ra {
            return None;
        }
        if !self.flat_ok && !self.flatten() {
            return None;
        }
        if bp != f.bp && !self.bp_free {
            return None;
        }
        let unchanged = self.flat[..self.flat_len].iter().all(|&(addr, value)| {
            // SAFETY: as in `Frame::unchanged`: the memo's walk read these words inside this
            // thread's stack, outward from its frame 0, whose `sp` is this capture's.
            unsafe { (addr as *const u64).read_volatile() == value }
        });
        unchanged.then_some(self.id)
    }

    /// Gathers the words every frame read into `flat`, and whether frame 0's `rbp` matters;
    /// false when some frame read more than it could remember (never reusable).
    #[cold]
    fn flatten(&mut self) -> bool {
        let mut k = 0;
        for f in &self.frames[..self.len] {
            let n = f.nreads as usize;
            if n > READS {
                return false;
            }
            self.flat[k..k + n].copy_from_slice(&f.reads[..n]);
            k += n;
        }
        self.flat_len = k;
        self.bp_free = !self.bp_matters_from(0);
        self.flat_ok = true;
        true
    }

    /// Does the walk from frame `i` outward depend on the `rbp` it starts with? Yes if a frame
    /// uses it before another replaces it, or if the walk ends (by a limit or a failure)
    /// before anything says.
    fn bp_matters_from(&self, i: usize) -> bool {
        for f in &self.frames[i..self.len] {
            match f.bp_role {
                BP_PASSES => continue,
                BP_REPLACES => return false,
                _ => return true,
            }
        }
        self.end != End::Complete
    }

    /// Keeps `fresh` (the frames this walk unwound itself, innermost first) followed by the
    /// memo's frames from `from` on: the new walk, as the memo for the next one. Frames past
    /// `CAP` are dropped (the memo then ends by limit at the last one kept).
    pub fn splice(&mut self, fresh: &[Frame], from: usize) {
        self.forget_id();
        let n = fresh.len().min(CAP);
        let keep_old = (self.len - from).min(CAP - n);
        if from != n {
            // (The same depth as before, the common case, moves nothing.)
            self.frames.copy_within(from..from + keep_old, n);
            self.ras.copy_within(from..from + keep_old, n);
        }
        self.frames[..n].copy_from_slice(&fresh[..n]);
        for (ra, f) in self.ras[..n].iter_mut().zip(fresh) {
            *ra = f.ra;
        }
        if keep_old < self.len - from {
            self.end = End::Limit;
        }
        self.len = n + keep_old;
    }

    /// Replaces the memo with a walk made entirely fresh.
    pub fn replace(&mut self, generation: usize, fresh: &[Frame], end: End) {
        self.forget_id();
        let n = fresh.len().min(CAP);
        self.frames[..n].copy_from_slice(&fresh[..n]);
        for (ra, f) in self.ras[..n].iter_mut().zip(fresh) {
            *ra = f.ra;
        }
        self.len = n;
        self.generation = generation;
        self.end = if n < fresh.len() { End::Limit } else { end };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo_of(frames: &[Frame]) -> Box<Memo> {
        let mut m = Box::new(Memo {
            generation: 1,
            len: 0,
            end: End::Complete,
            frames: [Frame::default(); CAP],
            ras: [0; CAP],
            id: 0,
            id_len: 0,
            flat: [(0, 0); CAP * READS],
            flat_len: 0,
            flat_ok: false,
            bp_free: false,
        });
        m.replace(1, frames, End::Complete);
        m
    }

    #[test]
    fn meets_at_the_same_state_only_while_the_words_outward_hold() {
        let words: Vec<u64> = vec![10, 20, 30, 40];
        let at = |i: usize| &words[i] as *const u64 as u64;
        let mut frames: Vec<Frame> = (0..4)
            .map(|i| Frame::new(0x1000 + i as u64, 0x100 * (i as u64 + 1), 7))
            .collect();
        for (i, f) in frames.iter_mut().enumerate() {
            f.note_read(at(i), words[i]);
        }
        let memo = memo_of(&frames);
        // A walk whose frame 0 is new meets the memo at frame 1.
        let mut meet = Meeting::new();
        assert_eq!(meet.meet(&memo, &Frame::new(0x9999, 0x100, 7)), None);
        assert_eq!(meet.meet(&memo, &frames[1]), Some(1));
        // A different rbp at the same sp is a different state.
        let mut meet = Meeting::new();
        assert_eq!(meet.meet(&memo, &Frame::new(0x1001, 0x200, 8)), None);

        // A word read by frame 2 changed: meeting at 1 or 2 is refused, at 3 allowed.
        let mut changed = words.clone();
        changed[2] = 31;
        let mut frames2 = frames.clone();
        for (i, f) in frames2.iter_mut().enumerate() {
            *f = Frame::new(f.ra, f.sp, f.bp);
            f.note_read(&changed[i] as *const u64 as u64, words[i]);
        }
        let memo2 = memo_of(&frames2);
        let mut meet = Meeting::new();
        assert_eq!(meet.meet(&memo2, &frames2[1]), None);
        assert_eq!(meet.meet(&memo2, &frames2[2]), None);
        assert_eq!(meet.meet(&memo2, &frames2[3]), Some(3));
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
        let memo = memo_of(&frames);
        let mut meet = Meeting::new();
        assert_eq!(meet.meet(&memo, &Frame::new(1, 0x100, 77)), Some(0));
        // Frame 1 of this memo uses the frame-pointer rule (sp' = bp + 16): rbp must match.
        let frames = [
            mk(1, 0x100, 0x1f0, (0x200, 0x1f0)),
            mk(2, 0x200, 0x1f0, (0x200, 0x2f0)),
        ];
        let memo = memo_of(&frames);
        assert_eq!(Meeting::new().meet(&memo, &Frame::new(1, 0x100, 77)), None);
        assert_eq!(Meeting::new().meet(&memo, &frames[0]), Some(0));
    }

    #[test]
    fn a_frame_that_read_too_much_is_never_reused() {
        let w = 5u64;
        let mut f = Frame::new(1, 0x100, 0);
        for _ in 0..=READS {
            f.note_read(&w as *const u64 as u64, 5);
        }
        let memo = memo_of(&[f]);
        assert_eq!(Meeting::new().meet(&memo, &f), None);
    }

    #[test]
    fn splice_keeps_fresh_frames_then_the_memo_suffix() {
        let frames: Vec<Frame> = (0..5).map(|i| Frame::new(i, 0x10 * (i + 1), 0)).collect();
        let mut memo = memo_of(&frames);
        let fresh = [Frame::new(100, 0x5, 0), Frame::new(101, 0x8, 0)];
        memo.splice(&fresh, 2);
        let ras: Vec<u64> = memo.frames[..memo.len].iter().map(|f| f.ra).collect();
        assert_eq!(ras, [100, 101, 2, 3, 4]);
        assert_eq!(memo.ras[..memo.len], ras);
        assert_eq!(memo.end, End::Complete);
    }
}
