//! The last DWARF walk, remembered per thread, so the next capture unwinds only what changed
//! and names its stack without hashing it.
//!
//! The tracer's frame-pointer memo (tracer/src/memo.rs) does this for frame-pointer walks;
//! this is the same argument for DWARF. Unwinding one frame is a pure function of the frame's
//! state — its return address (which picks the unwind rule), `rsp` and `rbp` — and of the stack
//! words the rule reads (the caller's return address, a saved `rbp`). So if a new walk reaches
//! a state the memo holds, and every word the memo's walk read from that frame outward still
//! holds the same value, the new walk would repeat the old one from there word for word: its
//! frames are the memo's. Between two allocations of a program only the innermost few frames
//! change, so a capture unwinds those (a few ns each, unwind/steps.rs) and checks
//! the rest with one load and compare per word read.
//!
//! Frames are kept outermost first, as the stack table's trie (tracer/src/stack.rs) stores a
//! stack: a new walk that meets the memo at frame `j` keeps `kept[..=j]` where they are and
//! writes its own frames after them, so nothing moves, and the trie node of the path
//! `kept[..=j]` (remembered in `nodes`) plus one child step per new frame (through a
//! per-thread `(parent, ip) → child` cache) is the new stack's id. A stack that repeats whole
//! (the same call site again) meets the memo at its innermost frame and is the remembered leaf
//! at once: no hash, no copy, no intern. Only a walk that meets nothing, or whose frames no
//! longer fit the window of `want` frames the memo was named in, hashes and interns its
//! frames, after which the path's nodes are read back from the trie.
//!
//! `rbp`: code built without frame pointers uses it as an ordinary register, so its value at
//! a frame is often new on every call even though nothing outward depends on it. Each frame
//! notes what its unwind step did with the incoming `rbp` (used it: the frame-pointer rule
//! reads at `rbp` and sets `rsp = rbp + 16`; replaced it with a saved value; or passed it
//! on), and a meeting only requires equal `rbp` when some frame further out uses it before
//! another replaces it.
//!
//! The memo belongs to one module set: a rebuild (after a `dlopen`) may change rules, so a
//! memo made under another set is dropped.

use tidemark_tracer::stack::{self, ChildCache, StackId};

/// Frames remembered: at most `unwind::MAX_FRAMES`, the most a capture keeps.
pub const CAP: usize = 256;
/// Stack words one frame's unwind may read and still be remembered (x86-64 rules read the
/// return address and at most a saved `rbp`).
const READS: usize = 3;
/// Entries of the per-thread `(parent, ip) → child` cache (a power of two).
const CHILDREN: usize = 1024;

/// A frame as the walk met it, and the words its unwind step read (the walk's scratch).
#[derive(Clone, Copy, Default)]
pub struct Frame {
    pub ra: u64,
    pub sp: u64,
    pub bp: u64,
    /// Words read while unwinding this frame (`READS + 1` = more than fit: not reusable).
    nreads: u16,
    /// What the unwind step did with the incoming `rbp` (`BP_*`).
    bp_role: u8,
    reads: [(u64, u64); READS],
}

/// The step's result does not depend on the incoming `rbp`, which it passes on unchanged.
const BP_PASSES: u8 = 0;
/// The step used the incoming `rbp` (or its role is unknown: the default, to be safe).
const BP_USES: u8 = 1;
/// The step replaced `rbp` with a value read from the stack, without using the incoming one.
const BP_REPLACES: u8 = 2;

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

    /// Makes this (scratch) frame the state `(ra, sp, bp)` with nothing read yet, leaving
    /// the read slots as they were (only the first `nreads` count).
    #[inline(always)]
    pub fn reset(&mut self, ra: u64, sp: u64, bp: u64) {
        self.ra = ra;
        self.sp = sp;
        self.bp = bp;
        self.nreads = 0;
        self.bp_role = BP_USES;
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
}

/// How the remembered walk ended beyond its outermost frame.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
#[repr(u8)]
pub enum End {
    /// The unwinder reached the outermost frame: nothing lies beyond.
    /// Discriminant 0: a zeroed memo (see unwind/dwarf.rs) reads as empty and complete.
    #[default]
    Complete = 0,
    /// The unwinder failed after the last frame (no rule, a read outside the stack).
    Failed,
    /// The walk stopped at the frame limit: more frames may lie beyond the outermost kept.
    Limit,
}

/// A remembered frame.
#[derive(Clone, Copy, Default)]
struct Kept {
    ra: u64,
    sp: u64,
    bp: u64,
    bp_role: u8,
    /// The walk from this frame outward depends on the `rbp` it starts with: a frame uses it
    /// before another replaces it, or the walk ends (by the limit, or failing) first.
    bp_matters: bool,
}

/// A word no stack read can match: a frame that read more words than it can remember notes
/// `(POISON address, 1)`, so every check of it fails and the memo is never reused through it.
static POISON: u64 = 0;

/// This thread's last walk. All-zero bytes are a valid empty memo (unwind/dwarf.rs makes it
/// so, in place).
pub struct Memo {
    /// The module set the walk used (its address; 0 = none).
    generation: usize,
    /// Frames kept, outermost first: `kept[len - 1]` is the program's frame that called
    /// malloc. They are exactly the frames the last capture gave, innermost last.
    len: usize,
    end: End,
    kept: [Kept; CAP],
    /// The words the unwind steps of `kept[..=k]` read are `reads[..reads_end[k]]`, each as
    /// (address, value), so that checking a prefix of the memo is one tight loop.
    reads_end: [u32; CAP],
    /// (`READS` more than can be used: a frame's reads are copied as a whole `[_; READS]`.)
    reads: [(u64, u64); CAP * READS + READS],
    /// `nodes[k]`: the stack table's node of the path `kept[..=k]` (its root the outermost
    /// frame kept), for `nodes_lo <= k < nodes_hi`. Nodes further out are read from the trie
    /// (a node's parent) when first needed: after an intern only the leaf is known.
    nodes: [StackId; CAP],
    nodes_lo: usize,
    nodes_hi: usize,
    children: ChildCache<CHILDREN>,
}

/// The memo's walk as recent_stacks.rs keeps it: its first frame's state and its frames (the
/// words it read: `Memo::relevant_reads`).
pub struct Reads {
    pub ra: u64,
    pub sp: u64,
    pub bp: u64,
    pub bp_matters: bool,
    pub frames: usize,
}

/// What a walk that met the memo, or not, comes to once the memo has taken it in.
pub enum Outcome {
    /// The stack's id (`n` frames), known without hashing.
    Known(StackId),
    /// The memo holds the stack (its frames, `ips`), whose id is to be interned and given to
    /// `note_leaf`.
    Intern,
    /// The stack goes on beyond the outermost kept frame (where the memo stopped at the
    /// limit, which this walk, shallower, does not reach): the walker unwinds on from it
    /// (`Walker::walk_on`), and the memo takes those frames in with `prepend`.
    WalkOn { more: usize },
}

/// Where a new walk meets the memo.
pub struct Meeting {
    /// Kept frames `..cursor` are candidates (their `sp` is not below the walk's).
    cursor: usize,
    /// Kept frames `..intact` still hold every word their steps read (`usize::MAX`: not
    /// checked yet).
    intact: usize,
}

impl Meeting {
    /// The kept frame equal to the walk's state `(ra, sp, bp)` from which the memo can be
    /// reused, if any.
    #[inline]
    pub fn meet_at(&mut self, memo: &Memo, ra: u64, sp: u64, bp: u64) -> Option<usize> {
        // The walk goes outward, its `sp` growing; kept frames inward of it never meet it.
        while self.cursor > 0 && memo.kept[self.cursor - 1].sp < sp {
            self.cursor -= 1;
        }
        let j = self.cursor.checked_sub(1)?;
        let m = &memo.kept[j];
        if m.sp != sp || m.ra != ra || (m.bp != bp && m.bp_matters) {
            return None;
        }
        if self.intact == usize::MAX {
            // Checked once per walk: every later meeting lies further out, in this prefix.
            self.intact = memo.intact_prefix(j + 1);
        }
        (j < self.intact).then_some(j)
    }
}

impl Memo {
    /// Starts a walk under module set `generation` (the memo is dropped if it was made under
    /// another): where it meets the memo is found by the `Meeting`.
    #[inline]
    pub fn begin(&mut self, generation: usize) -> Meeting {
        if self.generation != generation {
            self.generation = generation;
            self.clear();
        }
        Meeting {
            cursor: self.len,
            intact: usize::MAX,
        }
    }

    /// Was the memo made under module set `generation`?
    #[inline]
    pub fn made_under(&self, generation: usize) -> bool {
        self.generation == generation
    }

    /// Forgets the walk.
    pub fn clear(&mut self) {
        self.len = 0;
        self.end = End::Complete;
        self.forget_nodes();
    }

    fn forget_nodes(&mut self) {
        self.nodes_lo = 0;
        self.nodes_hi = 0;
    }

    /// The outermost kept frame's state, `(ra, sp, bp)`, to unwind on from.
    pub fn outermost(&self) -> (u64, u64, u64) {
        let k = &self.kept[0];
        (k.ra, k.sp, k.bp)
    }

    /// Frames of the last capture.
    #[inline]
    pub fn frames(&self) -> usize {
        self.len
    }

    /// The walk the memo holds, for recent_stacks.rs; None when it is empty.
    pub fn reads(&self) -> Option<Reads> {
        let first = self.kept[..self.len].last()?;
        Some(Reads {
            ra: first.ra,
            sp: first.sp,
            bp: first.bp,
            bp_matters: first.bp_matters,
            frames: self.len,
        })
    }

    /// The words a reuse of the whole walk needs unchanged, outermost frame's first, into
    /// `out`; None when more than fit. They are the walk's reads but one kind: the saved
    /// `rbp` that a frame's step restored for a caller whose walk outward does not use it
    /// (in code without frame pointers `rbp` is an ordinary register, so that stack word
    /// changes with the data the caller works on while the stack stays the same).
    pub fn relevant_reads(&self, out: &mut [(u64, u64)]) -> Option<usize> {
        let (mut n, mut from) = (0, 0);
        for k in 0..self.len {
            let to = self.reads_end[k] as usize;
            // `kept[k - 1]` is the caller of `kept[k]` (outermost first).
            let unused_bp =
                (k > 0 && self.kept[k].bp_role == BP_REPLACES && !self.kept[k - 1].bp_matters)
                    .then(|| (self.kept[k - 1].bp, self.kept[k - 1].sp.wrapping_sub(8)));
            for &(addr, value) in &self.reads[from..to] {
                // The caller's return address lies at its sp - 8: always kept.
                if unused_bp.is_some_and(|(bp, ra_at)| value == bp && addr != ra_at) {
                    continue;
                }
                *out.get_mut(n)? = (addr, value);
                n += 1;
            }
            from = to;
        }
        Some(n)
    }

    /// The last capture's frames, innermost first (as the stack table takes them), into
    /// `out`; returns how many.
    pub fn ips(&self, out: &mut [core::mem::MaybeUninit<u64>]) -> usize {
        for (o, k) in out.iter_mut().zip(self.kept[..self.len].iter().rev()) {
            o.write(k.ra);
        }
        self.len
    }

    /// How many of the first `upto` kept frames, from the outermost in, still hold every
    /// word their steps read.
    #[inline]
    fn intact_prefix(&self, upto: usize) -> usize {
        let end = self.reads_end[upto - 1] as usize;
        let reads = &self.reads[..end];
        // SAFETY: every address is POISON's or one a walk of this thread read before, inside
        // its stack (`read_in`), outward of a frame whose state this walk has just met: the
        // stack's pages stay mapped while the thread runs, so the load cannot fault.
        let now =
            |&(addr, value): &(u64, u64)| unsafe { (addr as *const u64).read_volatile() } ^ value;
        // All of them at once, without a branch per word: they hold on almost every capture.
        if reads.iter().fold(0, |diff, r| diff | now(r)) == 0 {
            return upto;
        }
        match reads.iter().position(|r| now(r) != 0) {
            None => upto,
            // The frame whose reads hold it.
            Some(r) => self.reads_end[..upto].partition_point(|&e| e as usize <= r),
        }
    }

    /// Takes in a walk that unwound `fresh` (innermost first) and then met the memo at
    /// `kept[j]`; the capture keeps at most `want` frames.
    pub fn finish_met(&mut self, fresh: &[Frame], mut j: usize, want: usize) -> Outcome {
        let total = j + 1 + fresh.len();
        let mut node = None;
        if total > want {
            // The capture keeps the innermost `want`: so does the memo, which then ends at
            // the limit, and its nodes (rooted at the old outermost frame) no longer apply.
            let drop = total - want; // <= j: the walk met the memo before `want` fresh frames
            self.len = j + 1;
            self.drop_outer(drop);
            j -= drop;
        } else {
            // (Read before the frames inward of j, whose nodes lead to it, are replaced.)
            node = self.node_at(j);
        }
        self.append::<false>(j + 1, fresh);
        if total < want && self.end == End::Limit {
            self.forget_nodes();
            return Outcome::WalkOn { more: want - total };
        }
        match node {
            Some(node) => self.name_from(j + 1, node),
            None => Outcome::Intern,
        }
    }

    /// Takes in a walk that met nothing: `fresh` (innermost first) is the whole capture,
    /// ended by `end`.
    pub fn finish_fresh(&mut self, fresh: &[Frame], end: End) -> Outcome {
        self.end = end;
        self.forget_nodes();
        self.append::<false>(0, fresh);
        Outcome::Intern
    }

    /// Writes `fresh` (innermost first) as `kept[at..]`, outermost first, after the kept
    /// frames `..at`.
    ///
    /// `EXACT`: copy only the reads each frame made (`prepend`, whose frames go in front of
    /// reads kept after them); else all `READS` slots of each (a fixed-size copy, no call),
    /// which may write past the last frame's reads.
    fn append<const EXACT: bool>(&mut self, at: usize, fresh: &[Frame]) {
        let mut r = if at == 0 {
            0
        } else {
            self.reads_end[at - 1] as usize
        };
        let mut matters = if at == 0 {
            self.end != End::Complete
        } else {
            self.kept[at - 1].bp_matters
        };
        for (k, f) in (at..).zip(fresh.iter().rev()) {
            if f.nreads as usize > READS {
                self.reads[r] = (&POISON as *const u64 as u64, 1);
                r += 1;
            } else if EXACT {
                let n = f.nreads as usize;
                self.reads[r..r + n].copy_from_slice(&f.reads[..n]);
                r += n;
            } else {
                self.reads[r..r + READS].copy_from_slice(&f.reads);
                r += f.nreads as usize;
            }
            self.reads_end[k] = r as u32;
            matters = bp_matters(f.bp_role, matters);
            self.kept[k] = Kept {
                ra: f.ra,
                sp: f.sp,
                bp: f.bp,
                bp_role: f.bp_role,
                bp_matters: matters,
            };
        }
        self.len = at + fresh.len();
    }

    /// Drops the outermost `d` kept frames (a capture that keeps fewer outer frames than the
    /// memo): the rest move down, and whether `rbp` matters is worked out again, the walk
    /// now ending at the limit.
    #[cold]
    fn drop_outer(&mut self, d: usize) {
        self.end = End::Limit;
        let len = self.len;
        let skip = self.reads_end[d - 1] as usize;
        let end = self.reads_end[len - 1] as usize;
        self.kept.copy_within(d..len, 0);
        self.reads.copy_within(skip..end, 0);
        for k in 0..len - d {
            self.reads_end[k] = self.reads_end[k + d] - skip as u32;
        }
        self.len = len - d;
        self.forget_nodes();
        let mut matters = true; // the limit
        for k in &mut self.kept[..len - d] {
            matters = bp_matters(k.bp_role, matters);
            k.bp_matters = matters;
        }
    }

    /// Takes in the frames a walk found beyond the outermost kept one (`Outcome::WalkOn`):
    /// `outer[0]` is that frame again, now with its unwind step, and `outer[1..]` its callers
    /// (innermost first), the walk ending after them by `end`.
    #[cold]
    pub fn prepend(&mut self, outer: &[Frame], end: End) {
        let len = self.len;
        let m = outer.len(); // >= 1: the outermost kept frame itself
        let new_len = len - 1 + m;
        // The new frames' reads, and where the inner frames' reads (after kept[0]'s) move.
        let outer_reads: usize = outer.iter().map(stored_reads).sum();
        let inner_from = self.reads_end[0] as usize;
        let inner_to = self.reads_end[len - 1] as usize;
        self.kept.copy_within(1..len, m);
        self.reads.copy_within(inner_from..inner_to, outer_reads);
        for k in (1..len).rev() {
            self.reads_end[k - 1 + m] = self.reads_end[k] - inner_from as u32 + outer_reads as u32;
        }
        self.end = end;
        self.len = 0;
        self.append::<true>(0, outer);
        debug_assert_eq!(self.reads_end[m - 1] as usize, outer_reads);
        self.len = new_len;
        let mut matters = self.kept[m - 1].bp_matters;
        for k in &mut self.kept[m..new_len] {
            matters = bp_matters(k.bp_role, matters);
            k.bp_matters = matters;
        }
        self.forget_nodes();
    }

    /// The node of the path `kept[..=k]`: remembered, or read from the trie going out from
    /// the nearest one remembered inward of it; None when no node inward of it is known.
    #[inline]
    fn node_at(&mut self, k: usize) -> Option<StackId> {
        if k >= self.nodes_hi {
            return None;
        }
        if k >= self.nodes_lo {
            return Some(self.nodes[k]);
        }
        self.climb_to(k)
    }

    /// Fills `nodes[k..nodes_lo]` with the ancestors of `nodes[nodes_lo]`, checking that each
    /// is the kept frame's return address (if not, the leaf was not this path: none kept).
    #[cold]
    fn climb_to(&mut self, k: usize) -> Option<StackId> {
        while self.nodes_lo > k {
            let lo = self.nodes_lo;
            let parent = stack::stack_node(self.nodes[lo]).1;
            if parent == 0 || stack::stack_node(parent).0 != self.kept[lo - 1].ra {
                self.forget_nodes();
                return None;
            }
            self.nodes[lo - 1] = parent;
            self.nodes_lo = lo - 1;
        }
        Some(self.nodes[k])
    }

    /// The id of the stack `kept[..len]`, stepping down the trie from `node` (the node of
    /// `kept[..from]`) one child per frame; `Intern` when the table is out of memory.
    fn name_from(&mut self, from: usize, mut node: StackId) -> Outcome {
        self.nodes_hi = from;
        for k in from..self.len {
            match self.children.child(node, self.kept[k].ra) {
                Some(c) => node = c,
                None => return Outcome::Intern,
            }
            self.nodes[k] = node;
            self.nodes_hi = k + 1;
        }
        Outcome::Known(node)
    }

    /// `leaf` is the interned id of `kept[..len]`: the capture after this one steps from it
    /// (and its ancestors, read when needed).
    pub fn note_leaf(&mut self, leaf: StackId) {
        let top = self.len - 1;
        if leaf != 0 && stack::stack_node(leaf).0 == self.kept[top].ra {
            self.nodes[top] = leaf;
            self.nodes_lo = top;
            self.nodes_hi = self.len;
        } else {
            self.forget_nodes();
        }
    }
}

/// Reads a frame takes in the memo: its own, or the one POISON read of a frame that read more
/// than it could remember.
#[inline]
fn stored_reads(f: &Frame) -> usize {
    if f.nreads as usize > READS {
        1
    } else {
        f.nreads as usize
    }
}

/// Whether the walk from a frame outward depends on its `rbp`, from its step's role and
/// whether it matters for the caller's frame.
#[inline]
fn bp_matters(role: u8, outward: bool) -> bool {
    match role {
        BP_PASSES => outward,
        BP_REPLACES => false,
        _ => true,
    }
}

#[cfg(test)]
#[path = "dwarf_memo_tests.rs"]
mod tests;
