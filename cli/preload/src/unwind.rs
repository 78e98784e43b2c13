//! Stack capture for C programs, glibc and CPython, which are built without frame pointers:
//! DWARF call-frame information (`.eh_frame`, found through each module's `PT_GNU_EH_FRAME`
//! in memory, never read from disk) interpreted by `framehop`, whose per-thread rule cache
//! makes a frame seen before cost a hash lookup and two stack reads.
//!
//! ```text
//!   capture_interned()   registers here (rip, rsp, rbp)
//!        |  framehop::UnwinderX86_64   modules from dl_iterate_phdr, re-read when one is added
//!        |  per-thread CacheX86_64     unwind rules by address
//!        |  read_stack                 only inside this thread's stack, 8-aligned
//!        v
//!   ips (leaf first, this library's frames dropped) → tidemark_tracer::stack::intern → id
//! ```
//!
//! An address outside every known module (JIT code) falls back to the frame-pointer rule.
//! `TIDEMARK_PRELOAD_UNWIND=fp` uses the tracer's frame-pointer walk instead (faster, but
//! stacks through code without frame pointers come out truncated or wrong).
//!
//! Modules unloaded with `dlclose` are not removed: a stack through the address range of a
//! module unloaded since may read freed unwind data (dlclose of code still on a stack is
//! undefined anyway, but an unloaded range reused by a new module is re-read on the next
//! `dl_iterate_phdr` count change).

use crate::modules::own_range;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Most frames kept per stack (the capture's limit is at most this).
pub const MAX_FRAMES: usize = 256;

/// Nanoseconds and frames spent unwinding, for `TIDEMARK_PRELOAD_STATS=1`.
pub static UNWIND_NS: AtomicU64 = AtomicU64::new(0);
pub static UNWIND_FRAMES: AtomicU64 = AtomicU64::new(0);
pub static UNWIND_STACKS: AtomicU64 = AtomicU64::new(0);

/// 0 = unknown, 1 = DWARF, 2 = frame pointers, with stats (+4).
static METHOD: AtomicU8 = AtomicU8::new(0);

pub fn method() -> u8 {
    let m = METHOD.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let mut m = if crate::role::unwind_with_frame_pointers() || !cfg!(target_arch = "x86_64") {
        2
    } else {
        1
    };
    if crate::role::print_stats() {
        m |= 4;
    }
    // Read now, at load time: the library takes its variables out of the environment after.
    #[cfg(target_arch = "x86_64")]
    dwarf::memo_mode();
    METHOD.store(m, Ordering::Relaxed);
    m
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Captures the calling thread's stack (without this library's frames) and interns it.
/// Must be called with the hook's re-entrancy mark held: it may allocate (the first time a
/// thread unwinds, and when modules are re-read).
#[inline(never)]
pub fn capture_interned() -> u32 {
    // Not zeroed: only the frames written are read (a 2 KiB memset per stack otherwise).
    let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); MAX_FRAMES];
    let want = crate::role::native_frames().min(MAX_FRAMES);
    let m = method();
    let t0 = if m & 4 != 0 { now_ns() } else { 0 };
    let ips: &mut [u64] = if m & 3 == 2 {
        let all = fill_zero(&mut buf);
        let n = tidemark_tracer::capture_stack(0, all);
        let n = drop_own_frames(all, n, want);
        &mut all[..n]
    } else {
        let n = capture_dwarf(&mut buf, want);
        // SAFETY: capture_dwarf initialized the first n entries.
        unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u64, n) }
    };
    let n = ips.len();
    if m & 4 != 0 {
        UNWIND_NS.fetch_add(now_ns() - t0, Ordering::Relaxed);
        UNWIND_FRAMES.fetch_add(n as u64, Ordering::Relaxed);
        UNWIND_STACKS.fetch_add(1, Ordering::Relaxed);
    }
    tidemark_tracer::stack::intern(ips)
}

fn fill_zero(buf: &mut [core::mem::MaybeUninit<u64>]) -> &mut [u64] {
    for b in buf.iter_mut() {
        b.write(0);
    }
    // SAFETY: every entry was just initialized.
    unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u64, buf.len()) }
}

/// Moves the frames after this library's own (the hook, the export) to the front, keeps at
/// most `want`; returns how many.
fn drop_own_frames(ips: &mut [u64], n: usize, want: usize) -> usize {
    let (lo, hi) = own_range();
    let skip = ips[..n]
        .iter()
        .take_while(|&&ip| ip >= lo && ip < hi)
        .count();
    let keep = (n - skip).min(want);
    ips.copy_within(skip..skip + keep, 0);
    keep
}

#[cfg(not(target_arch = "x86_64"))]
fn capture_dwarf(buf: &mut [core::mem::MaybeUninit<u64>], want: usize) -> usize {
    let ips = fill_zero(buf);
    let n = tidemark_tracer::capture_stack(0, ips);
    drop_own_frames(ips, n, want)
}

#[cfg(target_arch = "x86_64")]
pub use dwarf::capture_dwarf;

#[cfg(target_arch = "x86_64")]
mod dwarf {
    use crate::dwarf_memo::{self as memo, End, Frame, Meeting, Memo};
    use crate::modules::{for_each_module, module_adds, own_range};
    use core::cell::Cell;
    use core::sync::atomic::AtomicPtr;
    use core::sync::atomic::Ordering;
    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
    use std::sync::Mutex;

    /// Unwind data is read in place from the loaded image.
    type Mem = &'static [u8];

    struct Modules {
        unwinder: UnwinderX86_64<Mem>,
        /// The modules' address ranges, sorted: is the program's frame in a known module?
        ranges: Vec<(u64, u64)>,
        adds: u64,
    }

    impl Modules {
        fn knows(&self, ip: u64) -> bool {
            let i = self.ranges.partition_point(|r| r.0 <= ip);
            i > 0 && ip < self.ranges[i - 1].1
        }
    }

    /// The current module set. Readers only load the pointer (no shared counter to bounce
    /// between cores); a rebuild after a dlopen publishes a new set and leaks the old one,
    /// which a capture on another thread may still be reading (a few KiB per dlopen).
    static MODULES: AtomicPtr<Modules> = AtomicPtr::new(core::ptr::null_mut());
    /// Serializes rebuilds.
    static REBUILD: Mutex<()> = Mutex::new(());
    /// Reads the modules again unless another thread just did (`seen` is the set the caller
    /// found stale, or null).
    #[cold]
    fn rebuild(seen: *mut Modules) {
        let _g = REBUILD.lock().unwrap_or_else(|e| e.into_inner());
        if MODULES.load(Ordering::Acquire) != seen {
            return;
        }
        let fresh = Box::into_raw(Box::new(build()));
        MODULES.store(fresh, Ordering::Release);
    }

    /// A per-thread heap object made on first use and freed when the thread exits: the rule
    /// cache (~10 KiB) and the memo (~32 KiB).
    struct ThreadBox<T>(Cell<*mut T>);

    impl<T> ThreadBox<T> {
        /// This thread's object, made by `make` the first time; None while the thread exits.
        /// The `&mut` is sound because only this thread reaches its object, one capture at a
        /// time.
        ///
        /// `make` boxes the object itself, in a function of its own: a `T` built here would give
        /// this hot function a frame as big as `T` (the memo's is ~40 KiB), and a big frame is
        /// probed page by page on every call.
        #[allow(clippy::mut_from_ref)]
        #[inline]
        fn get(
            key: &'static std::thread::LocalKey<Self>,
            make: fn() -> Box<T>,
        ) -> Option<&'static mut T> {
            key.try_with(|c| {
                if c.0.get().is_null() {
                    c.0.set(Box::into_raw(make()));
                }
                c.0.get()
            })
            .ok()
            // SAFETY: each thread has its own, used by one capture at a time (the hook is
            // not re-entered), and it lives until the thread's locals are destroyed.
            .map(|p| unsafe { &mut *p })
        }
    }

    impl<T> Drop for ThreadBox<T> {
        fn drop(&mut self) {
            let p = self.0.replace(core::ptr::null_mut());
            if !p.is_null() {
                // SAFETY: made by Box::into_raw in `get`; no capture runs on this thread any
                // more (its thread-locals are being destroyed).
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }

    thread_local! {
        static CACHE: ThreadBox<CacheX86_64> = const { ThreadBox(Cell::new(core::ptr::null_mut())) };
        static MEMO: ThreadBox<MemoState> = const { ThreadBox(Cell::new(core::ptr::null_mut())) };
    }

    /// A thread's memo of its last walk and the scratch frames of the current one.
    struct MemoState {
        memo: Memo,
        fresh: [Frame; memo::CAP],
    }

    fn memo_state() -> Option<&'static mut MemoState> {
        ThreadBox::get(&MEMO, new_memo_state)
    }

    /// A thread's empty memo, made on the heap once per thread, zeroed in place: built on the
    /// stack first it would need ~40 KiB there, more than a small thread stack has.
    #[cold]
    #[inline(never)]
    fn new_memo_state() -> Box<MemoState> {
        let layout = std::alloc::Layout::new::<MemoState>();
        // SAFETY: the layout is not zero-sized. All-zero bytes are a valid MemoState: integers,
        // frames of zeros, and `End::Complete`, the enum's first variant (discriminant 0).
        unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut MemoState;
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }

    /// Reads `.eh_frame_hdr`'s pointer to `.eh_frame` (pc-relative or absolute, 4 or 8 bytes).
    ///
    /// # Safety
    /// `hdr` is the mapped `.eh_frame_hdr` of a loaded module.
    unsafe fn eh_frame_start(hdr: u64) -> Option<u64> {
        // SAFETY: the header is at least 4 bytes plus the encoded pointer.
        unsafe {
            let p = hdr as *const u8;
            if *p != 1 {
                return None;
            }
            let enc = *p.add(1);
            let field = hdr + 4;
            let value = match enc & 0x0f {
                0x03 => (field as *const u32).read_unaligned() as u64,
                0x0b => (field as *const i32).read_unaligned() as i64 as u64,
                0x04 | 0x0c => (field as *const u64).read_unaligned(),
                _ => return None,
            };
            match enc & 0x70 {
                0x00 => Some(value),
                0x10 => Some(field.wrapping_add(value)),
                _ => None,
            }
        }
    }

    fn build() -> Modules {
        let mut unwinder = UnwinderX86_64::new();
        let mut ranges = Vec::new();
        let adds = module_adds();
        for_each_module(|m| {
            ranges.push((m.range.start, m.range.end));
            let Some(hdr) = m.eh_frame_hdr.clone() else {
                return;
            };
            // SAFETY: PT_GNU_EH_FRAME of a loaded module is mapped.
            let Some(eh) = (unsafe { eh_frame_start(hdr.start) }) else {
                return;
            };
            // .eh_frame's length is not in the header: it runs at most to the end of its
            // segment, and framehop finds entries through the header's sorted table.
            let Some(seg) = m.loads.iter().find(|s| s.contains(&eh)) else {
                return;
            };
            let slice = |r: &core::ops::Range<u64>| -> Mem {
                // SAFETY: the range lies inside a loaded segment, mapped while the module is
                // loaded.
                unsafe {
                    core::slice::from_raw_parts(r.start as *const u8, (r.end - r.start) as usize)
                }
            };
            let svma = |r: &core::ops::Range<u64>| (r.start - m.base)..(r.end - m.base);
            let text = m.segments.first().cloned();
            let eh_range = eh..seg.end;
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: text.as_ref().map(svma),
                text: text.as_ref().map(slice),
                eh_frame_svma: Some(svma(&eh_range)),
                eh_frame: Some(slice(&eh_range)),
                eh_frame_hdr_svma: Some(svma(&hdr)),
                eh_frame_hdr: Some(slice(&hdr)),
                ..Default::default()
            };
            unwinder.add_module(Module::new(m.name.clone(), m.range.clone(), m.base, info));
        });
        ranges.sort_unstable();
        Modules {
            unwinder,
            ranges,
            adds,
        }
    }

    fn stack_bounds() -> (u64, u64) {
        let (lo, hi) = tidemark_tracer::thread_stack_bounds();
        (lo as u64, hi as u64)
    }

    fn cache() -> Option<&'static mut CacheX86_64> {
        ThreadBox::get(&CACHE, || Box::new(CacheX86_64::new()))
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
    static OWN_BY_FP: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

    /// Follows this library's frame-pointer chain from `bp` to the first return address
    /// outside it: `(that address, the caller's sp, the caller's bp)`.
    fn leave_own_frames(
        mut bp: u64,
        stack: (u64, u64),
        own: (u64, u64),
    ) -> Option<(u64, u64, u64)> {
        for _ in 0..64 {
            if bp < stack.0 || bp + 16 > stack.1 || !bp.is_multiple_of(8) {
                return None;
            }
            // SAFETY: both words are inside this thread's stack.
            let (saved, ret) =
                unsafe { ((bp as *const u64).read(), ((bp + 8) as *const u64).read()) };
            if ret < own.0 || ret >= own.1 {
                return Some((ret, bp + 16, saved));
            }
            if saved <= bp {
                return None;
            }
            bp = saved;
        }
        None
    }

    /// Unwinds the calling thread into `out` (return addresses, leaf first) without this
    /// library's frames; returns the count written (at most `want`).
    ///
    /// This library's own frames (hook, export) are left by their frame pointers, checked
    /// against a full DWARF walk on the first capture of the process; from the program's
    /// frame on, framehop applies the cached DWARF rules.
    #[inline(never)]
    pub fn capture_dwarf(out: &mut [core::mem::MaybeUninit<u64>], want: usize) -> usize {
        let (pc, sp, bp) = registers();
        let stack = stack_bounds();
        let Some(cache) = cache() else { return 0 };
        let own = own_range();
        let mut current = MODULES.load(Ordering::Acquire);
        if current.is_null() {
            rebuild(current);
            current = MODULES.load(Ordering::Acquire);
        }
        // SAFETY: published sets are never freed.
        let Some(modules) = (unsafe { current.as_ref() }) else {
            return 0;
        };
        let mut read_stack = |addr: u64| read_in(stack, addr);
        let want = want.min(out.len());
        let by_fp = OWN_BY_FP.load(Ordering::Relaxed);
        let fast = if by_fp == 2 {
            None
        } else {
            leave_own_frames(bp, stack, own)
        };
        let (regs, first) = match fast {
            Some((ret, caller_sp, caller_bp)) if by_fp == 1 => {
                (UnwindRegsX86_64::new(ret, caller_sp, caller_bp), ret)
            }
            _ => {
                // The slow way: DWARF from here through this library's frames.
                let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
                let mut address = FrameAddress::InstructionPointer(pc);
                let mut first = 0;
                for _ in 0..64 {
                    match modules
                        .unwinder
                        .unwind_frame(address, &mut regs, cache, &mut read_stack)
                    {
                        Ok(Some(ra)) if ra >= own.0 && ra < own.1 => {
                            let Some(a) = FrameAddress::from_return_address(ra) else {
                                break;
                            };
                            address = a;
                        }
                        Ok(Some(ra)) => {
                            first = ra;
                            break;
                        }
                        _ => break,
                    }
                }
                if by_fp == 0 {
                    let agree = fast.is_some_and(|(ret, ..)| ret == first) && first != 0;
                    OWN_BY_FP.store(if agree { 1 } else { 2 }, Ordering::Relaxed);
                }
                if first == 0 {
                    return 0;
                }
                (regs, first)
            }
        };
        if want == 0 {
            return 0;
        }
        // The program's frame in no known module: re-read the modules if one was dlopen'd
        // since, before walking on with rules that do not cover it.
        let mut modules = modules;
        if !modules.knows(first) && modules.adds != module_adds() {
            rebuild(current);
            current = MODULES.load(Ordering::Acquire);
            // SAFETY: published sets are never freed.
            if let Some(fresh) = unsafe { current.as_ref() } {
                modules = fresh;
            }
        }
        let mode = memo_mode();
        let mut walker = Walker {
            modules,
            cache,
            stack,
        };
        let (n, failed) = match memo_state() {
            Some(state) if mode != MEMO_OFF => {
                let r = walker.with_memo(state, regs, first, out, want);
                if mode == MEMO_CHECK {
                    walker.check(regs, first, &out[..r.0], want);
                }
                r
            }
            _ => walker.plain(regs, first, out, want),
        };
        // A walk that failed: was a module dlopen'd since?
        if failed && modules.adds != module_adds() {
            // A module was dlopen'd since: re-read them for the next captures.
            rebuild(current);
        }
        n
    }

    const MEMO_ON: u8 = 1;
    const MEMO_OFF: u8 = 2;
    const MEMO_CHECK: u8 = 3;

    /// `TIDEMARK_PRELOAD_UNWIND_MEMO`: `0` turns the memo off (to compare, or to rule it
    /// out); `check` walks every stack both ways and aborts with a message if they differ
    /// (the tests run programs so).
    pub(super) fn memo_mode() -> u8 {
        static MODE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
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

    fn read_in(stack: (u64, u64), addr: u64) -> Result<u64, ()> {
        if addr >= stack.0 && addr + 8 <= stack.1 && addr.is_multiple_of(8) {
            // SAFETY: inside this thread's stack, aligned.
            Ok(unsafe { (addr as *const u64).read() })
        } else {
            Err(())
        }
    }

    /// What the walks of one capture share: the module set (its rules), this thread's rule
    /// cache and its stack's bounds.
    struct Walker<'a> {
        modules: &'a Modules,
        cache: &'a mut CacheX86_64,
        stack: (u64, u64),
    }

    impl Walker<'_> {
        /// Unwinds from the program's first frame `first` (registers `regs`) into `out`, every
        /// frame through framehop. Returns (frames written, whether the unwinder failed).
        fn plain(
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
                    self.cache,
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
        /// the walk reaches a state the memo holds with its words unchanged; the rest is copied.
        fn with_memo(
            &mut self,
            state: &mut MemoState,
            mut regs: UnwindRegsX86_64,
            first: u64,
            out: &mut [core::mem::MaybeUninit<u64>],
            want: usize,
        ) -> (usize, bool) {
            // Module sets are never freed, so a set's address names it for good.
            let generation = self.modules as *const Modules as usize;
            let stack = self.stack;
            let MemoState { memo, fresh } = state;
            if memo.generation != generation {
                memo.len = 0;
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
                    for (o, &ra) in out[n..n + rest].iter_mut().zip(&memo.ras[i..i + rest]) {
                        o.write(ra);
                    }
                    let copied_all = rest == memo.len - i;
                    let last = memo.frames[memo.len - 1];
                    let memo_end = memo.end;
                    memo.splice(&fresh[..n], i);
                    n += rest;
                    if copied_all && memo_end == End::Limit && n < want {
                        // The memo stopped at a limit and this walk wants more: unwind on from
                        // its last frame (rewritten in place), without remembering (rare).
                        let more = self.plain(
                            UnwindRegsX86_64::new(last.ra, last.sp, last.bp),
                            last.ra,
                            &mut out[n - 1..],
                            want - n + 1,
                        );
                        return (n - 1 + more.0, more.1);
                    }
                    return (n, copied_all && memo_end == End::Failed);
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
                    self.cache,
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
                return (n + more.0, more.1);
            }
            let end = if failed { End::Failed } else { end };
            memo.replace(generation, &fresh[..n], end);
            (n, failed)
        }

        /// The memo's answer must be what a full walk gives; if not, say so and abort.
        fn check(
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
                let mut err = tidemark_alloc::stderr::Stderr::new();
                err.write_bytes(b"tidemark: unwind memo disagrees with a full DWARF walk\n");
                err.flush();
                // SAFETY: abort has no preconditions.
                unsafe { libc::abort() };
            }
        }
    }
}
