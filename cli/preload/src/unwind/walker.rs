//! The DWARF walks of one capture, from the program's first frame outward: `plain` (every
//! frame through framehop, into a buffer) and `with_memo` (only the frames that changed since
//! the thread's last walk, into the memo's scratch, until the walk meets the memo: see
//! dwarf_memo.rs).

use super::module_set::Modules;
use super::rule_cache::RuleCache;
use super::steps::{self, Steps};
use crate::dwarf_memo::{self as memo, End, Frame, Memo};
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

/// Where a walk through the memo stopped.
pub enum Walk {
    /// It met the memo at kept frame `at` after unwinding `fresh` frames itself.
    Met { at: usize, fresh: usize },
    /// It met nothing: its `fresh` frames are the whole stack, ended by `end`.
    Fresh { fresh: usize, end: End },
}

/// What the walks of one capture share: the module set (its rules), this thread's rule
/// cache and its stack's bounds.
pub struct Walker<'a> {
    pub modules: &'a Modules,
    pub cache: &'a mut RuleCache,
    /// The shapes of the steps of frames seen before (steps.rs).
    pub steps: &'a mut Steps,
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
                self.cache.get(),
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

    /// `plain`, through this thread's memo (see dwarf_memo.rs): unwinds frames into `fresh`
    /// (innermost first) until the walk reaches a state the memo holds with its words
    /// unchanged, and says where it stopped; the memo then takes the walk in.
    pub fn with_memo(
        &mut self,
        memo: &mut Memo,
        fresh: &mut [Frame; memo::CAP],
        (first, sp, bp): (u64, u64, u64),
        want: usize,
    ) -> Walk {
        // Module sets are never freed, so a set's address names it for good.
        let mut meeting = memo.begin(self.modules as *const Modules as usize);
        let want = want.min(memo::CAP);
        let (mut sp, mut bp) = (sp, bp);
        let mut ra = first;
        let mut n = 0;
        loop {
            if let Some(at) = meeting.meet_at(memo, ra, sp, bp) {
                return Walk::Met { at, fresh: n };
            }
            fresh[n].reset(ra, sp, bp);
            n += 1;
            if n == want {
                return Walk::Fresh {
                    fresh: n,
                    end: End::Limit,
                };
            }
            match self.step(&mut fresh[n - 1], &mut sp, &mut bp) {
                Ok(next) => ra = next,
                Err(end) => return Walk::Fresh { fresh: n, end },
            }
        }
    }

    /// Unwinds on from the memo's outermost kept frame `(ra, sp, bp)` (`Outcome::WalkOn`):
    /// writes that frame again, now with its step, and at most `more` of its callers into
    /// `out` (innermost first). Returns how many frames, and how the walk ended.
    pub fn walk_on(
        &mut self,
        (ra, sp, bp): (u64, u64, u64),
        out: &mut [Frame; memo::CAP],
        more: usize,
    ) -> (usize, End) {
        let (mut ra, mut sp, mut bp) = (ra, sp, bp);
        let mut n = 0;
        loop {
            out[n] = Frame::new(ra, sp, bp);
            n += 1;
            if n == more + 1 {
                return (n, End::Limit);
            }
            match self.step(&mut out[n - 1], &mut sp, &mut bp) {
                Ok(next) => ra = next,
                Err(end) => return (n, end),
            }
        }
    }

    /// Unwinds `frame` (its return address, with registers `sp`, `bp` at it) to its caller,
    /// noting the words read and what became of `rbp`: the caller's return address (and
    /// `sp`, `bp` set to the caller's), or how the walk ends here. By the frame's shape
    /// (steps.rs), or through framehop for a frame that has none.
    #[inline(always)]
    fn step(&mut self, frame: &mut Frame, sp: &mut u64, bp: &mut u64) -> Result<u64, End> {
        let ra = frame.ra;
        let Some(address) = FrameAddress::from_return_address(ra) else {
            return Err(End::Complete);
        };
        let shape = self.steps.shape(ra, self.modules, self.cache);
        let stack = self.stack;
        let mut read_stack = |addr: u64| {
            let v = read_in(stack, addr)?;
            frame.note_read(addr, v);
            Ok(v)
        };
        let r = if shape.is_framehop() {
            let mut regs = UnwindRegsX86_64::new(ra, *sp, *bp);
            match self.modules.unwinder.unwind_frame(
                address,
                &mut regs,
                self.cache.get(),
                &mut read_stack,
            ) {
                Ok(Some(next)) => Ok((next, regs.sp(), regs.bp())),
                Ok(None) => Err(End::Complete),
                Err(_) => Err(End::Failed),
            }
        } else {
            steps::apply(shape, ra, *sp, *bp, &mut read_stack)
        };
        let (next, caller_sp, caller_bp) = r?;
        frame.note_step(caller_sp, caller_bp);
        *sp = caller_sp;
        *bp = caller_bp;
        Ok(next)
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
