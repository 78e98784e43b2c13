//! The last stack walk, remembered per thread, so the next capture reads only what changed.
//!
//! A program allocates from the same few call paths over and over, and between two allocations
//! only the top few frames change. A frame-pointer walk is a chain of dependent loads (each
//! frame's address comes from the previous frame), so a 30-frame walk costs 30 load latencies
//! whatever the CPU does. This module keeps, per thread, every frame record the last walk read
//! (`(fp, saved fp, return address)`, outermost first) and the stack id it interned to. The
//! next capture walks fresh frames from the top only until it reaches a frame address the memo
//! holds; then it checks that the memory at every remembered frame address below that still
//! holds what the memo says. Those loads do not depend on each other (the addresses are known),
//! so the check runs at load throughput, not latency.
//!
//! Why the check makes the result exact: a walk is a pure function of the words it reads
//! (start at fp, read `[fp]` and `[fp + 8]`, stop or go to `[fp]`). If every word the old walk
//! read below the meeting point is unchanged, the new walk from the meeting point would read
//! exactly the same words and produce exactly the same frames, so the memo's frames stand in for
//! them. Checking only the meeting frame would not do: `main` calling `f()` from two lines puts
//! the same `f` frame at the same address with different callers below.
//!
//! The stack id comes out the same way: the trie (stack.rs) is built from the outermost frame,
//! so the old stack's path and the new one share every node of their common outer frames. The
//! new id is the old leaf's ancestor at the last common frame plus a child step for each new
//! frame above it (a per-thread cache of `(parent, ip) → child` answers those steps without the
//! interner's lock). When the steps would be many (a different stack, a truncation window that
//! moved), the ips are hashed and interned as usual.
//!
//! Besides the last walk, the last few complete walks are kept whole (`Recent`): a program
//! that alternates between call sites (allocate, then grow; clone a key, then push) finds its
//! stack among them without walking, after checking their records the same way.
//!
//! Everything here lives in one mmap'd block per thread (never the traced allocator), made at
//! the thread's first capture and unmapped when the thread exits. Stacks deeper than `CAP`
//! records, threads whose block could not be mapped, and the DWARF unwinder take the plain path
//! (`unwind::capture_counted` + `stack::intern`).

use crate::stack::{self, ChildCache, StackId};
use crate::sysmem::{map_zeroed, unmap};
use crate::unwind;
use core::cell::Cell;

/// Frame records remembered; deeper stacks are walked in full every time.
const CAP: usize = 512;
/// Records read from the top before meeting the memo (a whole new stack fits).
const FRESH_MAX: usize = CAP;
/// Entries of the per-thread `(parent, ip) → child` cache (a power of two).
const CHILD_CACHE: usize = 256;
/// Ancestor steps + child steps worth taking before hashing the whole stack is cheaper.
const MAX_STEPS: usize = 24;
/// Recent walks kept besides the last one (see `Recent`).
const RECENT: usize = 4;
/// Records a recent walk may have to be kept (deeper ones are not).
const RECENT_RECS: usize = 64;
/// Innermost records a recent walk is checked against one by one before the rest in bulk:
/// two call sites usually differ within the first few frames (`alloc` vs `realloc`, the
/// closure that allocates), so a wrong candidate is rejected after a load or two.
const RECENT_PROBE: usize = 4;

/// One frame record as the walk read it: `words` are the 16 bytes at `fp` (saved fp, return
/// address), 16-aligned so the check compares them with one vector operation.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Rec {
    fp: usize,
    _pad: usize,
    words: [usize; 2],
}

impl Rec {
    #[inline(always)]
    fn new(fp: usize, next: usize, ip: usize) -> Self {
        Rec {
            fp,
            _pad: 0,
            words: [next, ip],
        }
    }

    #[inline(always)]
    fn ip(&self) -> usize {
        self.words[1]
    }
}

/// A recent walk and its stack: when the capture starts at the same frame and every record
/// still holds what that walk read, the stack is that walk's again (the argument at the top).
///
/// A program alternates between a few call sites (a `format!` that allocates then grows its
/// String, a loop that clones a key then pushes to a Vec), and the last walk alone misses every
/// time it alternates: with the last few walks kept, such captures are answered without a walk.
#[derive(Clone, Copy)]
#[repr(C)]
struct Recent {
    /// 0 = empty.
    len: usize,
    leaf: StackId,
    skip: usize,
    want: usize,
    frames: usize,
    recs: [Rec; RECENT_RECS],
}

#[repr(C)]
struct Memo {
    /// Records of the last walk, outermost first; `recs[len - 1]` is the capturing frame.
    len: usize,
    /// The walk ended by itself (not at CAP): the records describe the whole stack.
    complete: bool,
    /// The stack the last capture interned, and the parameters it was interned with.
    leaf: StackId,
    skip: usize,
    want: usize,
    /// Frames (records with a return address) of the last walk.
    frames: usize,
    /// The leaf is valid for the records (false after a plain-path capture).
    has_leaf: bool,
    recs: [Rec; CAP],
    /// Records read from the top in this walk, most recent first (scratch).
    fresh: [Rec; FRESH_MAX],
    ips: [u64; CAP],
    children: ChildCache<CHILD_CACHE>,
    recent: [Recent; RECENT],
    /// The `recent` entry the next walk replaces (round robin).
    recent_next: usize,
}

const MEMO_BYTES: usize = core::mem::size_of::<Memo>();

/// Owns this thread's memo mapping and unmaps it when the thread exits.
struct MemoBox(Cell<*mut Memo>);

impl Drop for MemoBox {
    fn drop(&mut self) {
        MEMO_AT.with(|at| at.set(GONE));
        let p = self.0.replace(core::ptr::null_mut());
        // SAFETY: p is null or this thread's own mapping of MEMO_BYTES, no longer reachable.
        unsafe { unmap(p as *mut u8, MEMO_BYTES) };
    }
}

/// `MEMO_AT` once the memo is gone (the thread is exiting): captures take the plain path.
const GONE: *mut Memo = core::ptr::dangling_mut();

thread_local! {
    static MEMO: MemoBox = const { MemoBox(Cell::new(core::ptr::null_mut())) };
    /// The memo `MEMO` owns, for every capture: a thread-local without a destructor is one plain
    /// load, where `MEMO` (which has one) checks its registration state on each access. Null
    /// until mapped, `GONE` after `MEMO`'s destructor ran.
    static MEMO_AT: Cell<*mut Memo> = const { Cell::new(core::ptr::null_mut()) };
}

/// This thread's memo (mapped at first use); None while the thread is exiting or out of memory.
#[inline]
fn memo() -> Option<*mut Memo> {
    let p = MEMO_AT.with(Cell::get);
    if p as usize > GONE as usize {
        return Some(p);
    }
    if p.is_null() {
        return map_memo();
    }
    None
}

#[cold]
fn map_memo() -> Option<*mut Memo> {
    MEMO.try_with(|m| {
        // map_zeroed gives len 0, complete false, has_leaf false, empty caches.
        let p = map_zeroed(MEMO_BYTES) as *mut Memo;
        if p.is_null() {
            return None;
        }
        m.0.set(p);
        MEMO_AT.with(|at| at.set(p));
        Some(p)
    })
    .ok()
    .flatten()
}

/// Captures the calling thread's stack and interns it: the caller of `capture_interned`'s
/// caller ... after `skip` frames (skip 0 = the caller's own return address), keeping `want`
/// frames. Returns (stack id, frames on the stack after `skip`). Same results as
/// `unwind::capture_counted` + `stack::intern`, which it falls back to. (The hook inlines
/// `capture_interned_inline` instead; the tests call this one.)
#[cfg(test)]
#[inline(never)]
pub(crate) fn capture_interned(skip: usize, want: usize, count_limit: usize) -> (StackId, usize) {
    capture_interned_inline(skip, want, count_limit)
}

/// `capture_interned` inlined into its caller, which saves a call on every allocation: frames
/// then count from the function it is inlined into (skip 0 = that function's return address).
#[inline(always)]
pub(crate) fn capture_interned_inline(
    skip: usize,
    want: usize,
    count_limit: usize,
) -> (StackId, usize) {
    if unwind::uses_frame_pointers() {
        if let Some(m) = memo() {
            // SAFETY: the memo is this thread's own; the hook does not re-enter, and nothing
            // else on this thread touches it while we run.
            let m = unsafe { &mut *m };
            let start = unwind::frame_address();
            if let Some(r) = known_stack(m, start, skip, want) {
                return r;
            }
            if let Some(r) = walk_with_memo(m, start, skip, want) {
                return r;
            }
            m.complete = false;
            m.has_leaf = false;
        }
    }
    plain(skip + 1, want, count_limit)
}

/// The common case, answered before any walk: the capture starts at the same frame as the last
/// walk (or one of the `recent` ones) and every record of that walk still holds what it read,
/// so this walk would read exactly those words (the argument at the top) and intern to the
/// same leaf.
///
/// For the last walk this is `walk_with_memo` meeting the memo at its first frame, minus its
/// set-up: the stack-bounds lookup is not needed because the start frame equals a remembered
/// one, which passed this thread's bounds check when it was read (a thread's bounds never
/// change).
#[inline(always)]
fn known_stack(m: &Memo, start: usize, skip: usize, want: usize) -> Option<(StackId, usize)> {
    let len = m.len;
    let hit = m.has_leaf
        && m.complete
        && len != 0
        && m.recs[len - 1].fp == start
        && m.skip == skip
        && m.want == want
        && unchanged(&m.recs[..len]);
    if hit {
        return Some((m.leaf, m.frames.saturating_sub(skip)));
    }
    m.recent
        .iter()
        .find(|r| {
            r.len != 0
                && r.recs[r.len - 1].fp == start
                && r.skip == skip
                && r.want == want
                && unchanged_inner_first(&r.recs[..r.len])
        })
        .map(|r| (r.leaf, r.frames.saturating_sub(skip)))
}

/// `unchanged`, with the innermost `RECENT_PROBE` records compared first, one at a time, so
/// that a walk from another call site is rejected early.
#[inline(always)]
fn unchanged_inner_first(recs: &[Rec]) -> bool {
    let split = recs.len().saturating_sub(RECENT_PROBE);
    recs[split..].iter().rev().all(|r| {
        // SAFETY: as in `unchanged`: the record's fp passed this thread's bounds check when it
        // was read and lies above the current frame, in the live part of the stack.
        let now = unsafe { *(r.fp as *const [usize; 2]) };
        now == r.words
    }) && unchanged(&recs[..split])
}

/// Keeps the walk just made (complete, with its leaf) among the recent ones, unless it is too
/// deep to keep.
fn remember_recent(m: &mut Memo) {
    if !(m.complete && m.has_leaf) || m.len > RECENT_RECS {
        return;
    }
    let i = m.recent_next;
    m.recent_next = (i + 1) % RECENT;
    let r = &mut m.recent[i];
    r.len = m.len;
    r.leaf = m.leaf;
    r.skip = m.skip;
    r.want = m.want;
    r.frames = m.frames;
    r.recs[..m.len].copy_from_slice(&m.recs[..m.len]);
}

/// The full walk and the hash-and-intern, without the memo.
#[inline(never)]
fn plain(skip: usize, want: usize, count_limit: usize) -> (StackId, usize) {
    // Zeroed (1 KiB of stores): this is the fallback, not the common path.
    let mut buf = [0u64; 128];
    let deep = if want > 128 {
        crate::hook::deep_buffer()
    } else {
        None
    };
    let out: &mut [u64] = match deep {
        // SAFETY: the per-thread deep buffer holds MAX_NFRAME + RUNTIME_SLACK >= want ips and is
        // only used by this thread, inside the hook, which does not re-enter.
        Some(p) => unsafe { core::slice::from_raw_parts_mut(p, want) },
        None => &mut buf[..want.min(128)],
    };
    let (n, total) = unwind::capture_counted(skip + 1, out, count_limit);
    (stack::intern(&out[..n]), total)
}

/// The memo path; None when it cannot answer (stack too deep, bounds unknown, out of memory),
/// and the caller takes the plain path. Not inlined: its locals would make every capture,
/// including `known_stack`'s, save and restore a dozen registers.
#[inline(never)]
fn walk_with_memo(
    m: &mut Memo,
    start: usize,
    skip: usize,
    want: usize,
) -> Option<(StackId, usize)> {
    let (lo, hi) = unwind::stack_bounds();
    if lo >= hi {
        return None;
    }
    let mut nf = 0usize;
    // Candidates for the meeting point are recs[..j]; their addresses fall as the index rises.
    let mut j = if m.complete { m.len } else { 0 };
    let mut matched = 0usize;
    // recs[..intact] hold what the memo says; computed at the first meeting (None before).
    let mut intact: Option<usize> = None;
    let mut fp = start;
    while fp >= lo && fp <= hi.wrapping_sub(16) && fp & 7 == 0 {
        while j > 0 && m.recs[j - 1].fp < fp {
            j -= 1;
        }
        if j > 0 && m.recs[j - 1].fp == fp {
            // A frame at the meeting point may have changed (the same function called again
            // from another call site, as recursion does) while everything below it holds. The
            // intact prefix, computed once, answers this meeting and every later (lower) one:
            // a changed frame is read fresh and the walk meets again one frame further down.
            let ok = *intact.get_or_insert_with(|| intact_prefix(&m.recs[..j]));
            if j <= ok {
                matched = j;
                break;
            }
        }
        if nf == FRESH_MAX {
            return None;
        }
        // SAFETY: [fp, fp + 16) lies inside this thread's mapped stack (checked above).
        let (next, ip) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        m.fresh[nf] = Rec::new(fp, next, ip);
        nf += 1;
        if ip == 0 || next <= fp {
            break;
        }
        fp = next;
    }
    if nf == 0 && matched == m.len && m.has_leaf && m.skip == skip && m.want == want {
        // The whole stack is the one the memo holds (the same call site again): same stack.
        return Some((m.leaf, m.frames.saturating_sub(skip)));
    }
    let len = matched + nf;
    if len > CAP {
        return None;
    }
    // The old walk's shape, for reusing its leaf.
    let old = (m.has_leaf && m.skip == skip && m.want == want).then_some((m.leaf, m.frames));
    for k in 0..nf {
        m.recs[len - 1 - k] = m.fresh[k];
    }
    m.len = len;
    m.complete = true;
    m.has_leaf = false;
    if len == 0 {
        return None;
    }
    // Only the outermost record can lack a return address (the walk stops there).
    let base = (m.recs[0].ip() == 0) as usize;
    let frames = len - base;
    let total = frames.saturating_sub(skip);
    let kept = total.min(want);
    if kept == 0 {
        // No frame pointers to follow here (a signal stack, code built without them): the
        // plain path tries the DWARF unwinder.
        return None;
    }
    let id = match old.and_then(|(leaf, old_frames)| {
        reuse(
            m,
            leaf,
            old_frames,
            frames,
            matched.saturating_sub(base),
            skip,
            want,
        )
    }) {
        Some(id) => id,
        None => {
            // ips of the kept frames, most recent first: top index skip + i is record
            // len - 1 - skip - i.
            for i in 0..kept {
                m.ips[i] = m.recs[len - 1 - skip - i].ip() as u64;
            }
            stack::intern(&m.ips[..kept])
        }
    };
    m.leaf = id;
    m.skip = skip;
    m.want = want;
    m.frames = frames;
    m.has_leaf = true;
    remember_recent(m);
    Some((id, total))
}

/// How many of `recs` (outermost first) still hold, at their frame addresses, the words the
/// memo read there: all of them on the fast path, else the index of the outermost change.
#[inline(always)]
fn intact_prefix(recs: &[Rec]) -> usize {
    if unchanged(recs) {
        return recs.len();
    }
    recs.iter()
        .position(|r| !unchanged(core::slice::from_ref(r)))
        .unwrap_or(recs.len())
}

/// Does the stack still hold, at every remembered frame address, the words the memo read there?
#[inline(always)]
fn unchanged(recs: &[Rec]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64. Every remembered fp passed the bounds check of this
        // thread's stack when it was read, and these lie above the current frame (in the live
        // part of the stack); `words` is 16-aligned (Rec is align(32), words at offset 16).
        unsafe {
            let mut diff = _mm_setzero_si128();
            for r in recs {
                let now = _mm_loadu_si128(r.fp as *const __m128i);
                let then = _mm_load_si128(r.words.as_ptr() as *const __m128i);
                diff = _mm_or_si128(diff, _mm_xor_si128(now, then));
            }
            _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xFFFF
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut diff = 0usize;
        for r in recs {
            // SAFETY: as above.
            let (next, ip) = unsafe { (*(r.fp as *const usize), *((r.fp + 8) as *const usize)) };
            diff |= (next ^ r.words[0]) | (ip ^ r.words[1]);
        }
        diff == 0
    }
}

/// The new stack's id from the old leaf: climb to the deepest node both paths share, then step
/// down through the new frames. None when that would take more steps than hashing.
///
/// Frames are numbered from the outermost (`o = 0`); both walks agree on `o < shared`. The path
/// of a walk with `frames` frames runs from `o = total - kept` (the truncation window's outer
/// end) to `o = frames - 1 - skip` (the leaf).
fn reuse(
    m: &mut Memo,
    old_leaf: StackId,
    old_frames: usize,
    frames: usize,
    shared: usize,
    skip: usize,
    want: usize,
) -> Option<StackId> {
    if shared == 0 || old_frames <= skip || frames <= skip {
        return None;
    }
    let old_total = old_frames - skip;
    let new_total = frames - skip;
    let start = new_total - new_total.min(want);
    if old_total - old_total.min(want) != start {
        return None; // the truncation window moved: the paths start at different frames
    }
    let old_end = old_frames - 1 - skip;
    let new_end = frames - 1 - skip;
    let common = (shared - 1).min(old_end).min(new_end);
    if common < start {
        return None;
    }
    let up = old_end - common;
    let down = new_end - common;
    if up + down > MAX_STEPS {
        return None;
    }
    let mut node = old_leaf;
    for _ in 0..up {
        node = stack::stack_node(node).1;
    }
    let base = (m.recs[0].ip() == 0) as usize;
    for o in common + 1..=new_end {
        let ip = m.recs[base + o].ip() as u64;
        node = m.children.child(node, ip)?;
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo and the plain walk, called back to back from the same frame, agree on every
    /// frame above that frame (frame 0, the call site inside `probe`, differs by construction),
    /// through changing depths, repeats and truncation. Unlike the test below, this holds
    /// whatever the optimizer does to the recursion.
    #[test]
    fn memo_agrees_with_plain_from_the_same_frame() {
        #[inline(never)]
        fn probe(depth: usize, want: usize) -> (Vec<u64>, Vec<u64>) {
            if depth > 0 {
                return core::hint::black_box(probe(depth - 1, want));
            }
            let a = capture_interned(0, want, 1 << 16);
            let b = plain(0, want, 1 << 16);
            assert_eq!(a.1, b.1);
            (stack::stack_ips(a.0), stack::stack_ips(b.0))
        }
        for round in 0..3 {
            for want in [2usize, 3, 8, 64, 128] {
                for depth in [5usize, 9, 5, 5, 12, 2, 12, 30, 7, 7, 0, 40, 0, 3] {
                    let (a, b) = probe(depth, want);
                    assert_eq!(a.len(), b.len(), "round {round} depth {depth} want {want}");
                    assert_eq!(a[1..], b[1..], "round {round} depth {depth} want {want}");
                }
            }
        }
    }

    /// Two call sites taking turns, as `format!` allocating then growing does: after the first
    /// round both stacks are answered from the recent walks, and each answer is still the
    /// plain walk's, also when a frame below them changes between rounds.
    #[test]
    fn recent_walks_answer_alternating_call_sites() {
        // Each returns the number of captures so far, through black_box, so that every call
        // stays a real call from its own site (no tail calls).
        type Out = Vec<(Vec<u64>, Vec<u64>)>;
        #[inline(never)]
        fn site_a(out: &mut Out) -> usize {
            let a = capture_interned(0, 64, 1 << 16);
            let b = plain(0, 64, 1 << 16);
            assert_eq!(a.1, b.1);
            out.push((stack::stack_ips(a.0), stack::stack_ips(b.0)));
            out.len()
        }
        #[inline(never)]
        fn site_b(out: &mut Out) -> usize {
            core::hint::black_box(site_a(out))
        }
        #[inline(never)]
        fn outer_left(out: &mut Out) -> usize {
            for _ in 0..core::hint::black_box(3) {
                core::hint::black_box(site_a(out));
                core::hint::black_box(site_b(out));
            }
            out.len()
        }
        #[inline(never)]
        fn outer_right(out: &mut Out) -> usize {
            core::hint::black_box(outer_left(out))
        }
        let mut out = Vec::new();
        for _ in 0..core::hint::black_box(2) {
            core::hint::black_box(outer_left(&mut out));
            core::hint::black_box(outer_right(&mut out));
        }
        assert_eq!(out.len(), 24);
        for (i, (a, b)) in out.iter().enumerate() {
            assert_eq!(a.len(), b.len(), "capture {i}");
            assert_eq!(a[1..], b[1..], "capture {i}");
        }
        // site_a direct vs through site_b differ; the same site from the same caller is equal.
        assert_ne!(out[0].0, out[1].0);
        assert_eq!(out[0].0, out[2].0);
        assert_eq!(out[1].0, out[5].0);
        // outer_left called directly vs through outer_right: a frame below both sites changed.
        assert_ne!(out[0].0, out[6].0);
        assert_eq!(out[0].0, out[12].0);
        assert_eq!(out[6].0, out[18].0);
    }

    /// Binary recursion: consecutive captures differ in a frame deep inside the stack (the left
    /// and the right call site of the same function at the same address), the case where the
    /// memo must meet again below the changed frame instead of hashing the whole stack.
    #[test]
    fn memo_agrees_with_plain_through_binary_recursion() {
        #[inline(never)]
        fn tree(depth: usize, path: u64, out: &mut Vec<(u64, Vec<u64>, Vec<u64>)>) -> usize {
            if depth == 0 {
                let a = capture_interned(0, 64, 1 << 16);
                let b = plain(0, 64, 1 << 16);
                assert_eq!(a.1, b.1);
                out.push((path, stack::stack_ips(a.0), stack::stack_ips(b.0)));
                return 1;
            }
            // black_box keeps both calls real calls (no tail call): distinct call sites.
            let left = core::hint::black_box(tree(depth - 1, path << 1, out));
            left + core::hint::black_box(tree(depth - 1, path << 1 | 1, out))
        }
        let mut out = Vec::new();
        // Not unrolled: both rounds must call from the same site.
        for _ in 0..core::hint::black_box(2) {
            assert_eq!(tree(8, 1, &mut out), 256);
        }
        assert_eq!(out.len(), 512);
        for (path, a, b) in &out {
            assert_eq!(a.len(), b.len(), "path {path:b}");
            assert_eq!(a[1..], b[1..], "path {path:b}");
        }
        // Different paths are different stacks; the same path twice is the same stack.
        assert_ne!(out[0].1, out[1].1);
        assert_eq!(out[5].1, out[256 + 5].1);
    }
}
