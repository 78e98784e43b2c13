//! Stack capture for C programs, glibc and CPython, which are built without frame pointers:
//! DWARF call-frame information (`.eh_frame`, found through each module's `PT_GNU_EH_FRAME`
//! in memory, never read from disk) interpreted by `framehop`. Most captures unwind few
//! frames or none: the thread remembers its last walk and its last stacks, and the step of a
//! frame seen before is applied from its learnt shape.
//!
//! ```text
//!   capture_interned(slot, frame)   frame: the export's frame pointer
//!        |  dwarf.rs          express lane: the program's first frame starts a recent stack
//!        |                    whose words still hold → its id, nothing else set up
//!        |  dwarf.rs          leave this library's frames by frame pointers; the thread's state
//!        |  recent_stacks.rs  the program's frame starts a recent stack whose words hold: its id
//!        |  walker.rs         unwind fresh frames until the walk meets the memo (dwarf_memo.rs)
//!        |  steps.rs          a frame's step from its shape, learnt from framehop
//!        |  rule_cache.rs     framehop's rule cache (for learning shapes, and frames with none)
//!        |  module_set.rs     framehop::UnwinderX86_64 over dl_iterate_phdr, re-read on dlopen
//!        |  read_stack        only inside this thread's stack, 8-aligned
//!        v
//!   id: the memo's node of the frames shared with the last walk, one trie step per new frame
//!   (or, for a walk that met nothing, ips leaf first → tidemark_tracer::stack::intern)
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
use crate::thread::ThreadSlot;
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
///
/// `frame` is the frame pointer of the exported function the program called (see
/// [`frame_pointer`]), where the walk out of this library starts; 0: from here.
#[inline(always)]
pub fn capture_interned(slot: &ThreadSlot, frame: u64) -> u32 {
    if let Some(id) = express_stack(slot, frame) {
        return id;
    }
    capture_walking(slot, frame)
}

/// The id of the stack a capture from `frame` would find, when the thread's express lane
/// knows it (a recent stack, unchanged): the common case, answered in a few dozen
/// instructions (see unwind/dwarf.rs).
#[inline(always)]
pub fn express_stack(slot: &ThreadSlot, frame: u64) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        dwarf::express_stack(slot, frame)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (slot, frame);
        None
    }
}

/// The frame record of the export the program called, for a capture that was not handed
/// it (see dwarf.rs); 0: unknown (the capture then walks from where it is).
#[inline(always)]
pub fn export_frame(slot: &ThreadSlot) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        dwarf::export_frame(slot)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = slot;
        0
    }
}

/// `capture_interned` past the express lane (which missed, or is closed): the method
/// chosen, the walk, the stats.
#[inline(never)]
pub fn capture_walking(slot: &ThreadSlot, frame: u64) -> u32 {
    let want = crate::role::native_frames().min(MAX_FRAMES);
    let m = method();
    if m & 4 != 0 {
        return capture_counted(slot, want, m, frame);
    }
    let id = capture_by(slot, want, m, frame).0;
    // The express lane skips the stats: opened only without them.
    #[cfg(target_arch = "x86_64")]
    if m == 1 {
        dwarf::open_express(slot, want);
    }
    id
}

/// The calling function's frame pointer (this library is built with frame pointers), for
/// [`capture_interned`]: read in an exported function, it saves the stack capture the walk
/// through the hook's own frames, one frame record at a time (36 of the 398 instructions a
/// traced malloc took in `bench/scripts/hook_instructions.sh`). 0 where the frame-pointer
/// register is not known. ("The export's frame" means the frame record whose return address
/// is the program's: the export's own, or, for `malloc` and `free`, which jump to their
/// role's function without a frame of their own, that function's.)
#[inline(always)]
pub fn frame_pointer() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let bp: u64;
        // SAFETY: copies a register; touches no memory.
        unsafe {
            core::arch::asm!("mov {}, rbp", out(reg) bp, options(nomem, nostack, preserves_flags))
        };
        bp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// `capture_by`, timed and counted for `TIDEMARK_PRELOAD_STATS=1`.
#[cold]
fn capture_counted(slot: &ThreadSlot, want: usize, m: u8, frame: u64) -> u32 {
    let t0 = now_ns();
    let (id, n) = capture_by(slot, want, m, frame);
    UNWIND_NS.fetch_add(now_ns() - t0, Ordering::Relaxed);
    UNWIND_FRAMES.fetch_add(n as u64, Ordering::Relaxed);
    UNWIND_STACKS.fetch_add(1, Ordering::Relaxed);
    id
}

/// The stack's id and frame count, by the method `m`.
#[inline(always)]
fn capture_by(slot: &ThreadSlot, want: usize, m: u8, frame: u64) -> (u32, usize) {
    if m & 3 == 2 {
        capture_by_frame_pointers(want)
    } else {
        capture_dwarf(slot, want, frame)
    }
}

/// The tracer's frame-pointer walk, without this library's frames.
#[inline(never)]
fn capture_by_frame_pointers(want: usize) -> (u32, usize) {
    let all = &mut [0u64; MAX_FRAMES];
    let n = tidemark_tracer::capture_stack(0, all);
    let n = drop_own_frames(all, n, want);
    (tidemark_tracer::stack::intern(&all[..n]), n)
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
fn capture_dwarf(_slot: &ThreadSlot, want: usize, _frame: u64) -> (u32, usize) {
    capture_by_frame_pointers(want)
}

/// No unwinder state off x86-64 (the frame-pointer walk needs none).
#[cfg(not(target_arch = "x86_64"))]
pub enum ThreadUnwind {}

#[cfg(target_arch = "x86_64")]
mod dwarf;
#[cfg(target_arch = "x86_64")]
mod module_set;
#[cfg(target_arch = "x86_64")]
mod rule_cache;
#[cfg(target_arch = "x86_64")]
mod steps;
#[cfg(target_arch = "x86_64")]
mod walker;

#[cfg(target_arch = "x86_64")]
use dwarf::capture_interned as capture_dwarf;
#[cfg(target_arch = "x86_64")]
pub use dwarf::rule_cache_counts;

/// No rule cache off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn rule_cache_counts(_slot: &ThreadSlot) -> Option<(u64, u64)> {
    None
}
#[cfg(target_arch = "x86_64")]
pub use dwarf::ThreadUnwind;
