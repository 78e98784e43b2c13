//! The tracing role: every malloc-family call of the program goes into a capture file
//! (`tidemark_tracer::capture`), with its stack unwound by `unwind.rs` and interned once.
//!
//! Re-entrancy: a thread-local mark is set while the hook runs; any allocation made meanwhile
//! (glibc inside `pthread_getattr_np`, `dl_iterate_phdr`, the unwinder's first cache) goes
//! straight to the backend unrecorded. The capture writer's own thread (`tidemark-writer`)
//! is never recorded either: its C allocations (zstd) come through these exports, so each
//! thread's name is checked once, at its first recorded call.

use crate::thread::{self, ThreadSlot};
use crate::unwind;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use tidemark_tracer::capture;

/// The capture API code for the C malloc family.
const API_C: u8 = 1;

const IN_HOOK: u8 = 1;
const CHECKED: u8 = 2;
const SILENT: u8 = 4;
/// Counted in `INSIDE` (entered through the fork gate).
const GATED: u8 = 8;
/// This thread is calling `fork`: it passes the gate it closed.
const FORKER: u8 = 16;
/// This event is recorded without its stack: a fork kept the gate closed too long.
const STACKLESS: u8 = 32;

/// Recording is on in this process (off in forked children that are not followed).
#[inline(always)]
pub fn on() -> bool {
    crate::role::tracing()
}

pub fn set_on(on: bool) {
    crate::role::set_tracing(on);
}

// ---- the fork gate ----
//
// A forked child that records (follow-fork) takes the hook's locks — the stack interner's,
// the unwinder's module lock, the capture buffers' — and would wait forever for one that a
// thread of the parent held at the moment of the fork: that thread does not exist in the
// child. So, with follow-fork, `fork` waits (in its prepare handler) until no other thread is
// inside the hook, and threads that arrive meanwhile wait at the door until the fork has
// returned in the parent. Without follow-fork the gate stays open (one relaxed load per
// hooked call): a child that does not record never takes those locks.
//
// The wait at the door is bounded (`GATE_WAIT`): the waiting thread may hold a lock that the
// fork itself needs after the prepare handlers (glibc's NSS lock, a lock of a library whose
// prepare handler runs after ours), and the fork must not wait for it forever. Past the
// bound it records its event without a stack (id 0): no unwinder and no interner lock, only
// the buffers' short list locks, which the child takes back (`capture::forget_after_fork`).
// Counts and sizes stay exact; only such an event's stack is lost. It waits once per fork:
// its next events in the same fork go stackless at once (it may hold that lock across many).

/// How long a thread waits at a closed gate before it records without a stack.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The gate is in use (follow-fork, recording).
static GATE_ON: AtomicBool = AtomicBool::new(false);
/// Threads inside the hook through the gate.
static INSIDE: AtomicUsize = AtomicUsize::new(0);
/// 1 while a fork is waiting or under way (the gate is closed); a futex word, so that the
/// threads at the door sleep instead of taking the CPU the fork needs.
static FORKING: AtomicU32 = AtomicU32::new(0);
/// Counts the forks that closed the gate (1 for the first).
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Turns the fork gate on (the library's constructor, with follow-fork).
pub fn use_fork_gate() {
    GATE_ON.store(true, Ordering::SeqCst);
}

/// Counts the calling thread in, waiting while a fork is under way; false (not counted) when
/// the fork kept the gate closed past `GATE_WAIT`. With `before_fork`'s store and load, both
/// sequentially consistent: either this thread sees the gate closed, or the forking thread
/// sees it inside and waits for it.
#[inline]
fn gate_in(slot: &ThreadSlot) -> bool {
    loop {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        if FORKING.load(Ordering::SeqCst) == 0 {
            return true;
        }
        INSIDE.fetch_sub(1, Ordering::SeqCst);
        if !wait_for_fork(slot) {
            return false;
        }
    }
}

/// Waits for the gate to open; false after `GATE_WAIT`, and at once if this thread already
/// gave up on this fork.
#[cold]
fn wait_for_fork(slot: &ThreadSlot) -> bool {
    let epoch = FORK_EPOCH.load(Ordering::SeqCst);
    if slot.gave_up_on.get() == epoch {
        return false;
    }
    let deadline = std::time::Instant::now() + GATE_WAIT;
    while FORKING.load(Ordering::Acquire) != 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            slot.gave_up_on.set(epoch);
            return false;
        }
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT reads the word (returning at once unless it is still 1) and the
        // timeout, both valid for the call; no other memory is touched.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                FORKING.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                1u32,
                &timeout as *const libc::timespec,
            )
        };
    }
    true
}

/// Opens the gate and wakes the threads sleeping at it.
fn open_gate() {
    FORKING.store(0, Ordering::SeqCst);
    // SAFETY: FUTEX_WAKE only reads the word's address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            FORKING.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// `pthread_atfork` prepare: closes the gate and waits until no other thread is inside the
/// hook (at most 2 s: a thread stopped inside it for good must not hang the program's fork;
/// the child then runs the old risk). Other prepare handlers that run after this one may
/// allocate on this thread: it passes the gate.
pub fn before_fork() {
    if !GATE_ON.load(Ordering::Relaxed) {
        return;
    }
    // This thread inside the hook already (a signal handler that forks): do not wait for it.
    let flags = &thread::slot().flags;
    let v = flags.get();
    flags.set(v | FORKER);
    let own = (v & GATED != 0) as usize;
    FORK_EPOCH.fetch_add(1, Ordering::SeqCst);
    FORKING.store(1, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while INSIDE.load(Ordering::SeqCst) > own && std::time::Instant::now() < deadline {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// `pthread_atfork` parent and child: opens the gate. In the child only this thread exists,
/// so only its own count (if it forked from inside the hook) remains.
pub fn after_fork(in_child: bool) {
    if !GATE_ON.load(Ordering::Relaxed) {
        return;
    }
    let flags = &thread::slot().flags;
    let v = flags.get();
    flags.set(v & !FORKER);
    let own = (v & GATED != 0) as usize;
    if in_child {
        INSIDE.store(own, Ordering::SeqCst);
    }
    open_gate();
}

/// Marks the thread as inside the hook; `None` on re-entry or in the writer thread.
#[inline]
fn enter(slot: &ThreadSlot) -> Option<u8> {
    let f = &slot.flags;
    let v = f.get();
    if v & (IN_HOOK | SILENT) != 0 {
        return None;
    }
    if v & CHECKED == 0 {
        let v = v | CHECKED | if is_writer_thread() { SILENT } else { 0 };
        f.set(v);
        if v & SILENT != 0 {
            return None;
        }
    }
    let inside = if GATE_ON.load(Ordering::Relaxed) && v & FORKER == 0 {
        if gate_in(slot) {
            GATED
        } else {
            STACKLESS
        }
    } else {
        0
    };
    f.set(v | CHECKED | IN_HOOK | inside);
    Some(v | CHECKED)
}

#[inline]
fn leave(slot: &ThreadSlot, prev: u8) {
    let f = &slot.flags;
    if f.get() & !prev & GATED != 0 {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
    f.set(prev);
}

/// The calling stack's id, walking out of this library from `frame` (the export's frame
/// pointer, or 0: from here); 0 (no stack) when the fork gate said so.
#[inline]
fn stack_id(slot: &ThreadSlot, frame: u64) -> u32 {
    if slot.flags.get() & STACKLESS != 0 {
        0
    } else {
        unwind::capture_interned(slot, frame)
    }
}

/// Runs `f` with this thread's allocations unrecorded (starting the recording allocates).
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let slot = thread::slot();
    let prev = slot.flags.get();
    slot.flags.set(prev | IN_HOOK);
    let r = f();
    leave(slot, prev);
    r
}

/// Looks this thread's stack bounds up, with its allocations unrecorded, unless the lookup is
/// already under way (called from inside the hook): see `stack_attr.rs`.
pub fn cache_stack_bounds() {
    if thread::slot().flags.get() & IN_HOOK == 0 {
        quietly(tidemark_tracer::thread_stack_bounds);
    }
}

/// Is this the capture writer's thread? (`comm` holds at most 15 bytes: "tidemark-writer".)
#[cold]
fn is_writer_thread() -> bool {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
    let r = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    r == 0 && name.starts_with(b"tidemark-writer")
}

/// The common case, taken without `enter` and `leave`: a thread whose name was checked, not
/// inside the hook, with the fork gate off (no follow-fork). Every instruction of the hook
/// shows in the program's time (README, "What a preload costs per call"): this saves a
/// dozen per event over the general entry.
#[inline(always)]
fn plain(slot: &ThreadSlot) -> bool {
    slot.flags.get() == CHECKED && !GATE_ON.load(Ordering::Relaxed)
}

/// A new block `p` of `size` bytes, from the export whose frame pointer is `frame`
/// (`unwind::frame_pointer`; 0: unknown).
#[cold]
#[inline(never)]
pub fn on_alloc(p: *mut c_void, size: usize, frame: u64) {
    record_new_block(p, size, frame);
}

/// `malloc` while glibc serves and every call is recorded (`tidemark run`): glibc's malloc
/// and the hook in one frame. Inlined into the function the `malloc` export jumps to, whose
/// frame record therefore holds the program's return address (the express lane starts
/// there).
#[inline(always)]
pub fn malloc_recorded(size: usize) -> *mut c_void {
    let p = crate::backend::glibc_malloc(size);
    if !p.is_null() {
        record_new_block(p, size, crate::unwind::frame_pointer());
    }
    p
}

/// `free` while glibc serves and every call is recorded.
///
/// # Safety
/// `p` is null or a live glibc block.
#[inline(always)]
pub unsafe fn free_recorded(p: *mut c_void) {
    if !p.is_null() {
        record_free(p);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { crate::backend::glibc_free(p) }
}

/// The body of `on_alloc`.
#[inline(always)]
fn record_new_block(p: *mut c_void, size: usize, frame: u64) {
    let slot = thread::slot();
    if plain(slot) {
        slot.flags.set(CHECKED | IN_HOOK);
        if !express_alloc(slot, p, size, frame) {
            record_alloc_walking(slot, p, size, frame);
        }
        slot.flags.set(CHECKED);
    } else {
        on_alloc_entering(slot, p, size, frame);
    }
}

/// The express lane of `on_alloc`: false when the stack is not a recent one (nothing was
/// recorded then). Everything else is out of line, so that this path needs few registers.
/// (It does not test `is_recording` first: `capture::on_alloc` does, and a recent stack found
/// while nothing is recorded costs only the finding.)
#[inline(always)]
fn express_alloc(slot: &ThreadSlot, p: *mut c_void, size: usize, frame: u64) -> bool {
    match unwind::express_stack(slot, frame) {
        Some(id) => {
            capture::on_alloc(p as usize, size, API_C, id);
            true
        }
        None => false,
    }
}

/// `on_alloc` past the express lane (which missed): the walk, unless nothing is recorded.
#[inline(never)]
fn record_alloc_walking(slot: &ThreadSlot, p: *mut c_void, size: usize, frame: u64) {
    if !capture::is_recording() {
        return;
    }
    let id = unwind::capture_walking(slot, frame);
    capture::on_alloc(p as usize, size, API_C, id);
}

/// `on_alloc` through the general entry (the first event of a thread, the fork gate).
#[inline(never)]
fn on_alloc_entering(slot: &ThreadSlot, p: *mut c_void, size: usize, frame: u64) {
    let Some(prev) = enter(slot) else { return };
    record_alloc(slot, p, size, frame);
    leave(slot, prev);
}

#[inline(always)]
fn record_alloc(slot: &ThreadSlot, p: *mut c_void, size: usize, frame: u64) {
    if capture::is_recording() {
        let id = stack_id(slot, frame);
        capture::on_alloc(p as usize, size, API_C, id);
    }
}

#[cold]
#[inline(never)]
pub fn on_free(p: *mut c_void) {
    record_free(p);
}

/// The body of `on_free`.
#[inline(always)]
fn record_free(p: *mut c_void) {
    let slot = thread::slot();
    if plain(slot) {
        slot.flags.set(CHECKED | IN_HOOK);
        // (No `is_recording` check here, unlike `record_alloc`, which spares a stack capture
        // with it: `capture::on_free` makes that check itself.)
        capture::on_free(p as usize, API_C);
        slot.flags.set(CHECKED);
    } else {
        on_free_entering(slot, p);
    }
}

/// `on_free` through the general entry.
#[inline(never)]
fn on_free_entering(slot: &ThreadSlot, p: *mut c_void) {
    let Some(prev) = enter(slot) else { return };
    capture::on_free(p as usize, API_C);
    leave(slot, prev);
}

/// Before a realloc of a live block: its event's place in the order (see
/// `capture::begin_realloc`), or None when nothing is recorded.
#[cold]
#[inline(never)]
pub fn begin_realloc() -> Option<capture::ReallocTicket> {
    let slot = thread::slot();
    let prev = enter(slot)?;
    let t = if capture::is_recording() {
        capture::begin_realloc()
    } else {
        None
    };
    leave(slot, prev);
    t
}

/// After the realloc begun with `begin_realloc` (`new` null: it failed); `frame` as for
/// `on_alloc`.
#[cold]
#[inline(never)]
pub fn finish_realloc(
    ticket: capture::ReallocTicket,
    old: *mut c_void,
    new: *mut c_void,
    size: usize,
    frame: u64,
) {
    let slot = thread::slot();
    let Some(prev) = enter(slot) else {
        capture::finish_realloc(ticket, API_C, old as usize, 0, 0, 0);
        return;
    };
    let id = if new.is_null() {
        0
    } else {
        stack_id(slot, frame)
    };
    capture::finish_realloc(ticket, API_C, old as usize, new as usize, size, id);
    leave(slot, prev);
}

/// Starts recording to `path` (called once, from the library's constructor). One line on
/// stderr and no recording if the file cannot be created.
pub fn start(path: &std::path::Path, aggregate: bool, frames: usize) -> bool {
    let options = capture::RecordOptions {
        aggregate,
        max_frames: frames,
        ..Default::default()
    };
    quietly(|| match capture::record(path, options) {
        Ok(guard) => {
            std::mem::forget(guard);
            set_on(true);
            true
        }
        Err(e) => {
            let mut err = tidemark_alloc::stderr::Stderr::new();
            err.write_bytes(b"tidemark: not recording: ");
            err.write_bytes(e.to_string().as_bytes());
            err.write_bytes(b"\n");
            err.flush();
            false
        }
    })
}

/// In a forked child: stops recording and forgets the parent's recording without writing any
/// of it (the parent writes its own events, once). A new `start` may follow.
pub fn forget_after_fork() {
    set_on(false);
    quietly(capture::forget_after_fork);
}

/// Writes the capture out up to now, with an `Exec` record naming `program`, before an exec
/// replaces the process (see `exec.rs`).
pub fn checkpoint_before_exec(program: &[u8]) {
    quietly(|| capture::checkpoint_before_exec(program));
}

/// Stops the recording and flushes the file (at exit), unless the tracer's own exit handler
/// did already.
pub fn stop() {
    set_on(false);
    quietly(|| {
        let _ = capture::stop();
    });
}

// ---- tracebacks for the debug layer's reports ----

static DEBUG_HOOKS: tidemark_alloc::hooks::TracebackHooks = tidemark_alloc::hooks::TracebackHooks {
    capture: debug_capture,
    write: debug_write,
};

/// Lets debug reports show where the bad block was allocated and freed, in C frames.
pub fn install_traceback_hooks() {
    tidemark_alloc::hooks::set_traceback_hooks(&DEBUG_HOOKS);
}

fn debug_capture() -> u64 {
    let slot = thread::slot();
    let Some(prev) = enter(slot) else { return 0 };
    let id = stack_id(slot, unwind::export_frame(slot));
    leave(slot, prev);
    id as u64
}

fn debug_write(id: u64, line: &mut dyn FnMut(&str)) {
    let Ok(id) = u32::try_from(id) else { return };
    quietly(|| {
        let ips = tidemark_tracer::stack::stack_ips(id);
        let mut sym = tidemark_tracer::symbolize::Symbolizer::new(
            tidemark_tracer::symbolize::current_modules(),
        );
        for ip in ips {
            let frames = sym.resolve(ip);
            if frames.is_empty() {
                line(&format!("  {ip:#x}"));
            }
            // The C library's entry frames (`_start`, `__libc_start_call_main`, ...) are
            // trimmed, as in the reports: they say nothing about the bug.
            let plumbing = tidemark_tracer::report::symbols::is_plumbing;
            for f in frames.iter().filter(|f| !plumbing(f)) {
                line(&format!(
                    "  File \"{}\", line {}, in {}",
                    f.filename, f.lineno, f.function
                ));
            }
        }
    });
}
