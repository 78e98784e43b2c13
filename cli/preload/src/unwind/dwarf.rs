//! One DWARF capture: leave this library's frames by their frame pointers, then walk the
//! program's frames through the thread's memo (walker.rs) and intern the stack, unless the
//! memo already knows its id.

use super::module_set::{self, Modules};
use super::rule_cache::RuleCache;
use super::steps::Steps;
use super::walker::{disagree, Walk, Walker};
use crate::dwarf_memo::{self as memo, End, Frame, Memo, Outcome};
use crate::modules::own_range;
use crate::recent_stacks::RecentStacks;
use crate::thread::{self, ThreadSlot};
use core::sync::atomic::{AtomicU8, Ordering};
use framehop::x86_64::UnwindRegsX86_64;
use framehop::{FrameAddress, Unwinder};
use tidemark_alloc::exit_key::ExitKey;

/// A thread's unwinding state, made on the heap at its first capture (reached through its
/// `ThreadSlot`) and freed when it exits: 322 KiB (recent stacks 200, step shapes 64, memo 38,
/// scratch 20), mapped zeroed and touched as used, plus framehop's rule cache (~37 KiB, of
/// which its 12 KiB rule table is touched).
pub struct ThreadUnwind {
    /// The thread's stack, `[low, high)`: no walk reads outside it.
    stack: (u64, u64),
    /// Where a frame record (two words) can start inside it, `[low, high - 16]`: the express
    /// lane's bounds, worked out once.
    records: (u64, u64),
    /// The last module range a capture's first frame fell in (of the module set the memo
    /// belongs to): a capture from the same module skips the lookup.
    known: (u64, u64),
    /// framehop's rule cache (rule_cache.rs); not valid as zero bytes: written by
    /// `new_state` before the state is used.
    cache: RuleCache,
    /// The shapes of the steps of frames seen before.
    steps: Steps,
    /// Module-set re-reads asked for addresses in no module.
    unknown: Unknown,
    /// The last few stacks, answered without a walk when one comes again.
    recent: RecentStacks,
    /// The module set (its address) under which the express lane has just looked this
    /// capture's first frame up in `recent` and missed; 0: it did not look. The walk then
    /// skips the same lookup.
    express_missed: usize,
    /// Check mode (`TIDEMARK_PRELOAD_UNWIND_MEMO=check`): each express answer is checked
    /// against a full walk.
    express_checked: bool,
    memo: Memo,
    /// Scratch frames of the current walk.
    fresh: [Frame; memo::CAP],
}

/// The calling thread's unwinding state; None once the thread is exiting (or out of memory).
#[inline]
fn state(slot: &ThreadSlot) -> Option<&'static mut ThreadUnwind> {
    let p = slot.unwind.get();
    if p.is_null() {
        return new_state(slot);
    }
    if p == thread::released() {
        return None;
    }
    // SAFETY: made by `new_state` for this thread, used by one capture at a time (the hook
    // is not re-entered), freed only by this thread's key destructor, after which the slot
    // holds `released()`.
    Some(unsafe { &mut *p })
}

/// A thread's empty state, made on the heap once per thread, zeroed in place: built on the
/// stack first it would need its whole size there, more than a small thread stack has.
#[cold]
#[inline(never)]
fn new_state(slot: &ThreadSlot) -> Option<&'static mut ThreadUnwind> {
    let layout = std::alloc::Layout::new::<ThreadUnwind>();
    let cache = RuleCache::new()?;
    // SAFETY: the layout is not zero-sized. All-zero bytes are a valid ThreadUnwind but for
    // `cache`, written before any use (and before a reference to the state is made):
    // integers, frames of zeros, `End::Complete` (discriminant 0).
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut ThreadUnwind;
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation only this thread knows; the write does not read or
    // drop the zero bytes it replaces.
    unsafe { core::ptr::addr_of_mut!((*p).cache).write(cache) };
    // SAFETY: every field now holds a valid value.
    let st = unsafe { &mut *p };
    let (lo, hi) = tidemark_tracer::thread_stack_bounds();
    st.stack = (lo as u64, hi as u64);
    st.records = (lo as u64, (hi as u64).saturating_sub(16));
    slot.unwind.set(p);
    // Without a key the state is never freed: a leak per thread, not a fault.
    // SAFETY: `free_state` takes a state made here for this thread.
    unsafe { FREE_AT_EXIT.set(p as *const libc::c_void) };
    Some(st)
}

/// This thread's rule-cache hits and misses so far (for `TIDEMARK_PRELOAD_STATS=1`).
pub fn rule_cache_counts(slot: &ThreadSlot) -> Option<(u64, u64)> {
    let p = slot.unwind.get();
    if p.is_null() || p == thread::released() {
        return None;
    }
    // SAFETY: as in `state`; only read, outside any capture of this thread.
    Some(unsafe { &*p }.cache.hits_and_misses())
}

static FREE_AT_EXIT: ExitKey = ExitKey::new(free_state);

/// The thread's key destructor (run after the thread's Rust thread-local destructors, so
/// allocations those make still find the state): frees its state; later captures on it find
/// `released()`.
unsafe extern "C" fn free_state(p: *mut libc::c_void) {
    let slot = thread::slot();
    slot.express.set(core::ptr::null_mut());
    slot.unwind.set(thread::released());
    let p = p as *mut ThreadUnwind;
    // SAFETY: `p` was made by `new_state` on this (exiting) thread and is no longer
    // reachable from its slot; its `cache` were written by `new_state` and are dropped once.
    unsafe {
        core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p).cache));
        std::alloc::dealloc(p as *mut u8, std::alloc::Layout::new::<ThreadUnwind>());
    }
}

#[inline(always)]
fn registers() -> (u64, u64, u64) {
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers; touches no memory.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    (pc, sp, bp)
}

/// How the walk out of this library starts: 0 = not checked yet, 1 = by frame pointers
/// (this library is built with them), 2 = by DWARF from the registers.
static OWN_BY_FP: AtomicU8 = AtomicU8::new(0);

/// Follows this library's frame-pointer chain from `bp` to the first frame record whose
/// return address lies outside it (the record of the export the program called).
fn own_outermost_record(mut bp: u64, stack: (u64, u64), own: (u64, u64)) -> Option<u64> {
    for _ in 0..64 {
        if bp < stack.0 || bp + 16 > stack.1 || !bp.is_multiple_of(8) {
            return None;
        }
        // SAFETY: both words are inside this thread's stack.
        let (saved, ret) = unsafe { ((bp as *const u64).read(), ((bp + 8) as *const u64).read()) };
        if ret < own.0 || ret >= own.1 {
            return Some(bp);
        }
        if saved <= bp {
            return None;
        }
        bp = saved;
    }
    None
}

/// Leaves this library by its frame pointers from `bp`: `(the program's return address, the
/// caller's sp, the caller's bp)`.
fn leave_own_frames(bp: u64, stack: (u64, u64), own: (u64, u64)) -> Option<(u64, u64, u64)> {
    let record = own_outermost_record(bp, stack, own)?;
    // SAFETY: `own_outermost_record` checked that the record lies in this thread's stack.
    let (saved, ret) = unsafe {
        (
            (record as *const u64).read(),
            ((record + 8) as *const u64).read(),
        )
    };
    Some((ret, record + 16, saved))
}

/// The frame record of the export the program called, found from here by this library's
/// frame pointers, for a capture that was not handed it (the debug layer's tracebacks): it
/// lets that capture take the express lane. 0 while the lane is closed to this thread or the
/// frame pointers are not known to be sound (`OWN_BY_FP`). Inlined, so that the walk starts
/// one frame closer to the export.
#[inline(always)]
pub fn export_frame(slot: &ThreadSlot) -> u64 {
    let p = slot.express.get();
    if p.is_null() || OWN_BY_FP.load(Ordering::Relaxed) != 1 {
        return 0;
    }
    // SAFETY: as in `express_stack`: this thread's own state, not freed while it runs.
    let stack = unsafe { (*p).stack };
    own_outermost_record(registers().2, stack, own_range()).unwrap_or(0)
}

/// The slow way out of this library: DWARF from the registers here through its frames.
/// Returns the registers at the program's first frame and its return address (0: lost).
#[cold]
fn leave_own_frames_by_dwarf(
    walker: &mut Walker,
    (pc, sp, bp): (u64, u64, u64),
    own: (u64, u64),
) -> (UnwindRegsX86_64, u64) {
    let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
    let mut address = FrameAddress::InstructionPointer(pc);
    let stack = walker.stack;
    let mut read_stack = |addr: u64| super::walker::read_in(stack, addr);
    for _ in 0..64 {
        match walker.modules.unwinder.unwind_frame(
            address,
            &mut regs,
            walker.cache.get(),
            &mut read_stack,
        ) {
            Ok(Some(ra)) if ra >= own.0 && ra < own.1 => {
                let Some(a) = FrameAddress::from_return_address(ra) else {
                    break;
                };
                address = a;
            }
            Ok(Some(ra)) => return (regs, ra),
            _ => break,
        }
    }
    (regs, 0)
}

/// Unwinds the calling thread (without this library's frames, leaf first, at most `want`
/// frames) and interns the stack: `(id, frames)`. Must be called with the hook's
/// re-entrancy mark held: it may allocate (the thread's first capture, a module re-read).
///
/// This library's own frames (hook, export) are left by their frame pointers, from `frame`
/// (the export's, when the hook was given it; else from here), checked against a full DWARF
/// walk from here on the first capture of the process; from the program's frame on,
/// framehop applies the cached DWARF rules. Inlined into the hook, so that the walk out of
/// this library starts one frame closer to the program.
#[inline(always)]
pub fn capture_interned(slot: &ThreadSlot, want: usize, frame: u64) -> (u32, usize) {
    let here = registers();
    let Some(st) = state(slot) else { return (0, 0) };
    // The set under which the express lane just missed this capture's first frame (it
    // starts from the same `frame`), taken first so that no return below leaves it set.
    let express_missed = core::mem::take(&mut st.express_missed);
    let Some(mut modules) = module_set::current() else {
        return (0, 0);
    };
    let own = own_range();
    let stack = st.stack;
    let cache = &mut st.cache;
    let steps = &mut st.steps;
    let by_fp = OWN_BY_FP.load(Ordering::Relaxed);
    let fast = if by_fp == 2 {
        None
    } else {
        leave_own_frames(if frame != 0 { frame } else { here.2 }, stack, own)
    };
    // The program's first frame: its return address, sp and bp.
    let (first, sp, bp) = match fast {
        Some(start) if by_fp == 1 => start,
        _ => {
            let mut walker = Walker {
                modules,
                cache: &mut *cache,
                steps: &mut *steps,
                stack,
            };
            let (regs, first) = leave_own_frames_by_dwarf(&mut walker, here, own);
            if by_fp == 0 {
                let agree = fast.is_some_and(|(ret, ..)| ret == first) && first != 0;
                OWN_BY_FP.store(if agree { 1 } else { 2 }, Ordering::Relaxed);
            }
            if first == 0 {
                return (0, 0);
            }
            (first, regs.sp(), regs.bp())
        }
    };
    if want == 0 {
        return (0, 0);
    }
    // The program's frame in no known module: re-read the modules if one was dlopen'd
    // since, before walking on with rules that do not cover it.
    let generation = modules as *const Modules as usize;
    if first < st.known.0 || first >= st.known.1 || !st.memo.made_under(generation) {
        match modules.range_of(first) {
            Some(range) => st.known = range,
            None => {
                st.known = (0, 0);
                modules = st.unknown.reread(modules, first);
            }
        }
    }
    let mode = memo_mode();
    let want = want.min(super::MAX_FRAMES);
    // (The set may have just been re-read.)
    let generation = modules as *const Modules as usize;
    if mode != MEMO_OFF && express_missed != generation {
        if let Some((id, n)) = st.recent.find(first, sp, bp, generation) {
            if mode == MEMO_CHECK {
                let mut walker = Walker {
                    modules,
                    cache,
                    steps,
                    stack,
                };
                check_recent(&mut walker, id, n, (first, sp, bp), want);
            }
            return (id, n);
        }
    }
    let mut walker = Walker {
        modules,
        cache,
        steps,
        stack,
    };
    if mode == MEMO_OFF {
        // Not zeroed: only the frames written are read (a 2 KiB memset per stack otherwise).
        let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); super::MAX_FRAMES];
        let regs = UnwindRegsX86_64::new(first, sp, bp);
        let (n, failed) = walker.plain(regs, first, &mut buf, want);
        // SAFETY: the walk initialized the first n entries.
        let ips = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, n) };
        if failed {
            st.unknown.reread_if_outside(modules, ips[n - 1]);
        }
        return (tidemark_tracer::stack::intern(ips), n);
    }
    let memo = &mut st.memo;
    let walk = walker.with_memo(memo, &mut st.fresh, (first, sp, bp), want);
    let outcome = {
        let outcome = match walk {
            Walk::Met { at, fresh } => memo.finish_met(&st.fresh[..fresh], at, want),
            Walk::Fresh { fresh, end } => {
                if end == End::Failed {
                    // The step out of this frame failed, here for the first time (a failure
                    // the memo repeats was seen when it was walked).
                    st.unknown
                        .reread_if_outside(modules, st.fresh[fresh - 1].ra);
                }
                memo.finish_fresh(&st.fresh[..fresh], end)
            }
        };
        if let Outcome::WalkOn { more } = outcome {
            let (m, end) = walker.walk_on(memo.outermost(), &mut st.fresh, more);
            memo.prepend(&st.fresh[..m], end);
            if end == End::Failed {
                st.unknown.reread_if_outside(modules, st.fresh[m - 1].ra);
            }
        }
        outcome
    };
    let n = memo.frames();
    let id = match outcome {
        Outcome::Known(id) => id,
        _ => {
            let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); super::MAX_FRAMES];
            memo.ips(&mut buf);
            // SAFETY: `ips` initialized the first n entries.
            let ips = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, n) };
            let id = tidemark_tracer::stack::intern(ips);
            memo.note_leaf(id);
            id
        }
    };
    if mode == MEMO_CHECK {
        check(&mut walker, memo, id, (first, sp, bp), want);
    }
    st.recent.remember(memo, id, generation);
    (id, n)
}

/// Opens the express lane for the calling thread after a walk under the method without
/// stats, if the process's settings allow it (all are fixed once decided): this process's
/// captures leave this library by frame pointers (`OWN_BY_FP` = 1), keep the memo on and
/// want frames.
#[inline]
pub fn open_express(slot: &ThreadSlot, want: usize) {
    if slot.express.get().is_null() {
        open_express_now(slot, want);
    }
}

#[cold]
#[inline(never)]
fn open_express_now(slot: &ThreadSlot, want: usize) {
    let mode = memo_mode();
    if OWN_BY_FP.load(Ordering::Relaxed) != 1 || want == 0 || mode == MEMO_OFF {
        return;
    }
    let p = slot.unwind.get();
    if p.is_null() || p == thread::released() {
        return;
    }
    // SAFETY: as in `state`: this thread's own state, outside any other use of it.
    unsafe { (*p).express_checked = mode == MEMO_CHECK };
    slot.express.set(p);
}

/// The express lane: the id of the recent stack that a capture from the export's frame
/// `frame` repeats, if the thread has one, found without the walk's set-up (`capture_interned`
/// does the same probe after the module checks, which a hit under the current module set has
/// passed already: the stack was walked from this first frame under this very set). Short,
/// because the hook's cost shows in the program's time instruction by instruction (README,
/// "What a preload costs per call").
///
/// `frame` is the frame pointer of the export the program called, so its frame record holds
/// the program's return address and `rbp`, and the program's `rsp` is just above it. (An
/// export called by another export, `reallocarray` → `realloc`, returns into this library:
/// no recent stack starts there, so the walk handles it, without probing the recent stacks
/// from the program's frame: a rare case, and one check fewer on every express capture.)
#[inline(always)]
pub fn express_stack(slot: &ThreadSlot, frame: u64) -> Option<u32> {
    let p = slot.express.get();
    if p.is_null() {
        return None;
    }
    // SAFETY: as in `state`: this thread's own state (`express` is cleared before it is
    // freed), used by one capture at a time.
    let st = unsafe { &mut *p };
    let modules = module_set::current_if_read()?;
    // The frame record must lie in this thread's stack: this library is built with frame
    // pointers (OWN_BY_FP checked it once), but a build without them would hand any value.
    if frame < st.records.0 || frame > st.records.1 {
        return None;
    }
    // SAFETY: both words lie inside this thread's stack (checked just above).
    let (bp, first) = unsafe {
        (
            (frame as *const u64).read(),
            ((frame + 8) as *const u64).read(),
        )
    };
    // (A first frame in this library, an export called by another export, is never found:
    // every recent stack starts at the program's frame, where the walk leaves this library.)
    let sp = frame + 16;
    let generation = modules as *const Modules as usize;
    let Some((id, n)) = st.recent.find(first, sp, bp, generation) else {
        st.express_missed = generation;
        return None;
    };
    if st.express_checked {
        let want = crate::role::native_frames().min(super::MAX_FRAMES);
        let mut walker = Walker {
            modules,
            cache: &mut st.cache,
            steps: &mut st.steps,
            stack: st.stack,
        };
        check_recent(&mut walker, id, n, (first, sp, bp), want);
    }
    Some(id)
}

/// Check mode: the recent stack found for the first frame `start` must be what a full walk
/// gives.
#[cold]
fn check_recent(walker: &mut Walker, id: u32, n: usize, start: (u64, u64, u64), want: usize) {
    let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); super::MAX_FRAMES];
    let regs = UnwindRegsX86_64::new(start.0, start.1, start.2);
    let (m, _) = walker.plain(regs, start.0, &mut buf, want);
    // SAFETY: the walk initialized the first m entries.
    let ips = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, m) };
    if m != n || tidemark_tracer::stack::intern(ips) != id {
        disagree(b"tidemark: a recent stack was reused for another stack\n");
    }
}

/// Addresses outside every known module that a capture met (the program's frame, or the
/// frame whose unwind failed): the modules are re-read when one was dlopen'd since, but
/// `dl_iterate_phdr` (a lock in the dynamic linker) is asked once per such address and module
/// set, not on every capture from code that is in no module (JIT code).
#[derive(Default)]
struct Unknown {
    /// The last address asked about, and the set that was current (0: none).
    addr: u64,
    generation: usize,
}

impl Unknown {
    /// The module set to walk with: `modules`, or a new one if a module was loaded since it
    /// was read (asked only the first time `addr` shows up under this set).
    #[cold]
    fn reread(&mut self, modules: &'static Modules, addr: u64) -> &'static Modules {
        let generation = modules as *const Modules as usize;
        if self.addr == addr && self.generation == generation {
            return modules;
        }
        self.addr = addr;
        self.generation = generation;
        if modules.stale() {
            module_set::rebuild(modules).unwrap_or(modules)
        } else {
            modules
        }
    }

    /// After a walk failed at the frame `ra`: re-reads the modules for the next captures if
    /// the frame is in none of them and one was loaded since (a frame in a known module
    /// failed on its own rules, which a re-read does not change).
    #[cold]
    fn reread_if_outside(&mut self, modules: &'static Modules, ra: u64) {
        if modules.range_of(ra.wrapping_sub(1)).is_none() {
            self.reread(modules, ra);
        }
    }
}

/// Check mode: the memo's answer (its frames and the id named) must be what a full walk and
/// the stack table give.
#[cold]
fn check(walker: &mut Walker, memo: &Memo, id: u32, start: (u64, u64, u64), want: usize) {
    let (first, sp, bp) = start;
    let regs = UnwindRegsX86_64::new(first, sp, bp);
    let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); super::MAX_FRAMES];
    let n = memo.ips(&mut buf);
    // SAFETY: `ips` initialized the first n entries.
    let ips = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, n) };
    if tidemark_tracer::stack::intern(ips) != id {
        disagree(b"tidemark: unwind memo named the stack with another stack's id\n");
    }
    walker.check(regs, first, &buf[..n], want);
}

const MEMO_ON: u8 = 1;
const MEMO_OFF: u8 = 2;
const MEMO_CHECK: u8 = 3;

/// `TIDEMARK_PRELOAD_UNWIND_MEMO`: `0` turns the memo off (to compare, or to rule it
/// out); `check` walks every stack both ways and aborts with a message if they differ
/// (the tests run programs so).
pub(super) fn memo_mode() -> u8 {
    static MODE: AtomicU8 = AtomicU8::new(0);
    let m = MODE.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let m = match crate::role::unwind_memo() {
        Some(false) => MEMO_OFF,
        Some(true) => MEMO_CHECK,
        None => MEMO_ON,
    };
    MODE.store(m, Ordering::Relaxed);
    m
}
