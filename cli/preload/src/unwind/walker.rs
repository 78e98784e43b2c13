//! The DWARF walks of one capture, from the program's first frame outward: `plain` (every
//! frame through framehop) and `with_memo` (only the frames that changed since the thread's
//! last walk, see dwarf_memo.rs), which also tells when the stack is the very one the last
//! capture interned, so that its id is reused without copying, hashing or interning it.

use super::module_set::Modules;
use super::rule_caches::RuleCaches;
use crate::dwarf_memo::{self as memo, End, Frame, Meeting, Memo};
use framehop::x86_64::UnwindRegsX86_64;
use framehop::{FrameAddress, Unwinder};

/// Reads one word of the stack `[lo, hi)`, refusing anything outside it or unaligned.
#[inline]
pub fn read_in(stack: (u64, u64), addr: u64) -> Result<u64, ()> {
    if addr >= stack.0 && addr + 8 <= stack.1 && addr.is_multiple_of(8) {
        // SAFETY: inside this thread's stack, aligned.
        Ok(unsafe { (addr as *const u64).read() })
    } else {
        Err(())
    }
}

/// What a walk gave.
pub struct Walked {
    /// Frames of the stack (written to `out`, unless `known` says which stack it is).
    pub n: usize,
    /// The unwinder failed (no rule, a read outside the stack) before the outermost frame.
    pub failed: bool,
    /// The stack is the one the memo's last capture interned under this id; `out` was not
    /// written.
    pub known: Option<u32>,
}

/// What the walks of one capture share: the module set (its rules), this thread's rule
/// caches and its stack's bounds.
pub struct Walker<'a> {
    pub modules: &'a Modules,
    pub caches: &'a mut RuleCaches,
    pub stack: (u64, u64),
}

impl Walker<'_> {
    /// Unwinds from the program's first frame `first` (registers `regs`) into `out`, every
    /// frame through framehop. Returns (frames written, whether the unwinder failed).
    pub fn plain(
        &mut self,
        mut regs: UnwindRegsX86_64,
        first: u64,
        out: &mut [core::mem::MaybeUninit<u64>],
        want: usize,
    ) -> (usize, bool) {
        out[0].write(first);
        let mut n = 1;
        let Some(mut address) = FrameAddress::from_return_address(first) else {
            return (n, false);
        };
        let stack = self.stack;
        let mut read_stack = |addr: u64| read_in(stack, addr);
        while n < want {
            match self.modules.unwinder.unwind_frame(
                address,
                &mut regs,
                self.caches.for_address(address),
                &mut read_stack,
            ) {
                Ok(Some(ra)) => {
                    out[n].write(ra);
                    n += 1;
                    match FrameAddress::from_return_address(ra) {
                        Some(a) => address = a,
                        None => break,
                    }
                }
                Ok(None) => break,
                Err(_) => return (n, true),
            }
        }
        (n, false)
    }

    /// `plain`, through this thread's memo (see dwarf_memo.rs): frames are unwound until
    /// the walk reaches a state the memo holds with its words unchanged; the rest is copied,
    /// or not even that when the whole stack is the one the memo's last capture interned.
    pub fn with_memo(
        &mut self,
        memo: &mut Memo,
        fresh: &mut [Frame; memo::CAP],
        mut regs: UnwindRegsX86_64,
        first: u64,
        out: &mut [core::mem::MaybeUninit<u64>],
        want: usize,
    ) -> Walked {
        // Module sets are never freed, so a set's address names it for good.
        let generation = self.modules as *const Modules as usize;
        let stack = self.stack;
        if memo.generation != generation {
            memo.len = 0;
            memo.forget_id();
        }
        let mut meeting = Meeting::new();
        let mut ra = first;
        let mut n = 0;
        let mut end = End::Complete;
        let mut failed = false;
        loop {
            let here = Frame::new(ra, regs.sp(), regs.bp());
            if let Some(i) = meeting.meet(memo, &here) {
                // The rest of the walk is the memo's from frame i on.
                let rest = (memo.len - i).min(want - n);
                let copied_all = rest == memo.len - i;
                let memo_failed = copied_all && memo.end == End::Failed;
                // The memo stopped at a limit and this walk wants more: it goes on below.
                let goes_on = copied_all && memo.end == End::Limit && n + rest < want;
                if !goes_on && memo.same_stack(&fresh[..n], i, n + rest) {
                    let id = memo.id;
                    if n > 0 {
                        // The same return addresses, maybe other registers: keep the new ones.
                        memo.splice(&fresh[..n], i);
                        memo.set_id(id, n + rest);
                    }
                    return Walked {
                        n: n + rest,
                        failed: memo_failed,
                        known: Some(id),
                    };
                }
                for (o, &ra) in out[n..n + rest].iter_mut().zip(&memo.ras[i..i + rest]) {
                    o.write(ra);
                }
                let last = memo.frames[memo.len - 1];
                memo.splice(&fresh[..n], i);
                n += rest;
                if goes_on {
                    // Unwind on from the memo's last frame (rewritten in place), without
                    // remembering (rare); the output is longer than the memo. (`splice` has
                    // already dropped the memo's stack id.)
                    let more = self.plain(
                        UnwindRegsX86_64::new(last.ra, last.sp, last.bp),
                        last.ra,
                        &mut out[n - 1..],
                        want - n + 1,
                    );
                    return Walked {
                        n: n - 1 + more.0,
                        failed: more.1,
                        known: None,
                    };
                }
                memo.expect_id(n);
                return Walked {
                    n,
                    failed: memo_failed,
                    known: None,
                };
            }
            out[n].write(ra);
            if n == memo::CAP {
                break; // too deep to remember: the memo keeps the first CAP frames
            }
            fresh[n] = here;
            n += 1;
            if n == want {
                end = End::Limit;
                break;
            }
            let Some(address) = FrameAddress::from_return_address(ra) else {
                break;
            };
            let frame = &mut fresh[n - 1];
            let mut read_stack = |addr: u64| {
                let v = read_in(stack, addr)?;
                frame.note_read(addr, v);
                Ok(v)
            };
            match self.modules.unwinder.unwind_frame(
                address,
                &mut regs,
                self.caches.for_address(address),
                &mut read_stack,
            ) {
                Ok(Some(next)) => {
                    fresh[n - 1].note_step(regs.sp(), regs.bp());
                    ra = next;
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if n == memo::CAP && n < want {
            // Deeper than the memo holds: remember the first CAP frames, finish plainly from
            // the frame at `ra` (already written at out[n]).
            memo.replace(generation, &fresh[..n], End::Limit);
            let more = self.plain(regs, ra, &mut out[n..], want - n);
            return Walked {
                n: n + more.0,
                failed: more.1,
                known: None,
            };
        }
        let end = if failed { End::Failed } else { end };
        memo.replace(generation, &fresh[..n], end);
        memo.expect_id(n);
        Walked {
            n,
            failed,
            known: None,
        }
    }

    /// The memo's answer must be what a full walk gives; if not, say so and abort.
    pub fn check(
        &mut self,
        regs: UnwindRegsX86_64,
        first: u64,
        got: &[core::mem::MaybeUninit<u64>],
        want: usize,
    ) {
        let n = got.len();
        let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); super::MAX_FRAMES];
        let (m, _) = self.plain(regs, first, &mut buf, want);
        // SAFETY: both walks initialized their first n and m entries.
        let same =
            m == n && (0..n).all(|k| unsafe { got[k].assume_init() == buf[k].assume_init() });
        if !same {
            disagree(b"tidemark: unwind memo disagrees with a full DWARF walk\n");
        }
    }
}

/// Says what went wrong and aborts (the memo's check mode only).
#[cold]
pub fn disagree(message: &[u8]) -> ! {
    let mut err = tidemark_alloc::stderr::Stderr::new();
    err.write_bytes(message);
    err.flush();
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
