//! Capture files: recording a whole run for memray-style reports afterwards.
//!
//! ```text
//!  allocation hook (Traced)                     writer thread (every 10 ms)
//!   on_alloc / on_free / *_realloc               membarrier, read committed rows,
//!     │ key: read SEQ (alloc) or one             │ take full blocks; per thread one
//!     │ fetch_add (free); fixed-layout row       │ Events chunk (columns, zstd each),
//!     ▼ no lock                                  │ new stack nodes, thread names,
//!   per-thread Block (64 KiB, mmap) ── full ──►    │ a memory Sample (time, seq, RSS)
//!                                                  ▼
//!                                               capture file ──► CaptureReader ──► reports
//! ```
//!
//! * [`format`]: the file layout (header, self-delimiting checksummed chunks, records).
//! * [`events`]: the event encoding in the file (columns and the pointer model).
//! * `buffers`: the only code on allocation paths (fixed-layout rows, lock-free for the
//!   owning thread); never allocates through the global allocator, never panics. Its module
//!   docs hold the cross-thread ordering argument.
//! * [`writer`]: the background thread.
//! * [`reader`]: the streaming [`CaptureReader`].
//!
//! File layout (details in [`format`] and [`events`]):
//!
//! ```text
//! "TDMKCAP\0" version:u16 flags:u16 reserved:u32            16-byte header
//! chunk*: kind:u8 codec:u8 raw_len:u32 stored_len:u32 crc32:u32 bytes   (zstd per chunk)
//!   Meta (first) · Modules · Stacks (new trie nodes) · Threads · Events (one thread's
//!   events of one tick, columnar, zstd per column) · Samples (time, seq barrier, RSS,
//!   heap) · Aggregate · Exec (the process exec'd: see [`checkpoint_before_exec`]) · End
//! ```
//!
//! A SIGKILLed run leaves whole chunks up to its last writer tick (every 10 ms); the reader
//! stops at a partial last chunk and says so. An aggregate capture's totals are those of its
//! last `Aggregate` record, written every tenth of the run so far (0.1 s to a minute apart)
//! and at the end.
//!
//! Start a recording with [`record`] (or `TIDEMARK_RECORD=path` in the environment, picked up
//! by [`start_from_env`]); it stops and flushes when the guard drops, on [`stop`], or at exit.
//!
//! `fork`: the recording belongs to the process that started it. A child made by `fork` forgets
//! it at once (a `pthread_atfork` handler, [`forget_after_fork`]): the events the parent had
//! buffered are the parent's to write, the writer thread does not exist in the child, and the
//! file is the parent's; the child's exit handlers find nothing to flush. The child may then
//! start a recording of its own into another file (the preload library does with
//! `--follow-fork`).
//!
//! `exec` ends the writer thread with the rest of the process: call
//! [`checkpoint_before_exec`] first (before `std::os::unix::process::CommandExt::exec`, say)
//! and the file holds every event up to it and ends with a record naming the program. The
//! preload library's `exec*` wrappers do this for `tidemark run`.

mod buffers;
pub mod builder;
pub mod events;
mod fds;
pub mod format;
pub mod reader;
pub mod writer;

pub use format::CaptureError;
pub use reader::{Batch, CaptureReader, Item};
pub use writer::{RecordOptions, RecordSummary};

/// Before a flush from a fatal signal's handler: the interrupted thread will never finish the
/// event it may have been appending, so the final flush must not wait for it (it would wait
/// out the handler's watchdog, and the capture would end without its end marker).
pub use buffers::abandon_this_threads_event;

use format::ModuleRecord;
use std::io;
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tidemark_alloc::sync::SpinLock;

/// True while a capture file is being recorded (one relaxed atomic load).
#[inline]
pub fn is_recording() -> bool {
    buffers::ACCEPTING.load(Ordering::Relaxed)
}

/// An allocation of `size` bytes at `ptr` by `api` (0 = Rust, 1 = C malloc family) at stack
/// `stack`. Call after the underlying allocation succeeded.
#[inline]
pub fn on_alloc(ptr: usize, size: usize, api: u8, stack: u32) {
    buffers::record_alloc(ptr, size, api, stack);
}

/// A free of `ptr` by `api`. Call before the underlying free, so that a reuse of the address
/// by another thread is ordered after it.
#[inline]
pub fn on_free(ptr: usize, api: u8) {
    buffers::record_free(ptr, api);
}

pub use buffers::ReallocTicket;

/// A realloc, in two calls: this one before the underlying realloc (which frees the old
/// address, so that another thread's reuse of it is ordered after this event), then
/// [`finish_realloc`] with the ticket after it, also when it failed. None: nothing to record.
#[inline]
pub fn begin_realloc() -> Option<ReallocTicket> {
    buffers::begin_realloc()
}

/// Records the realloc begun by [`begin_realloc`], by `api` (0 = Rust, 1 = C); `new` = 0:
/// it failed, nothing is recorded.
#[inline]
pub fn finish_realloc(
    ticket: ReallocTicket,
    api: u8,
    old: usize,
    new: usize,
    size: usize,
    stack: u32,
) {
    buffers::finish_realloc(ticket, api, old, new, size, stack);
}

struct Active {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<io::Result<RecordSummary>>,
    /// The process that records: only it may stop the recording (a child made by `fork`
    /// without the fork handler running, or a `vfork` child, shares or copies this state).
    pid: u32,
}

/// A spin lock, not a `Mutex`: a thread of the parent may hold it at the moment of a `fork`,
/// and the child must be able to take it back ([`forget_after_fork`]).
static ACTIVE: SpinLock<Option<Active>> = SpinLock::new(None);

/// A running recording; dropping it stops the recording and flushes the file.
#[must_use = "dropping the guard stops the recording"]
pub struct RecordingGuard {
    path: PathBuf,
}

impl RecordingGuard {
    /// The capture file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops recording, writes the end marker, and says what was written.
    pub fn stop(self) -> io::Result<RecordSummary> {
        let result = stop().unwrap_or_else(|| Err(io::Error::other("recording already stopped")));
        std::mem::forget(self);
        result
    }
}

impl Drop for RecordingGuard {
    fn drop(&mut self) {
        let _ = stop();
    }
}

/// Starts recording every allocation of this process into `path`.
///
/// One recording at a time per process; the tracer's hook must be installed
/// (`#[global_allocator] static G: Traced<...>`) for events to arrive.
pub fn record(path: impl AsRef<Path>, options: RecordOptions) -> io::Result<RecordingGuard> {
    let path = path.as_ref().to_path_buf();
    ACTIVE.with(|active| start(active, path, options))
}

fn start(
    active: &mut Option<Active>,
    path: PathBuf,
    options: RecordOptions,
) -> io::Result<RecordingGuard> {
    if active.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a recording is already running",
        ));
    }
    let file = fds::CaptureFile::create(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create capture {}: {e}", path.display()),
        )
    })?;
    let max_frames = options.max_frames;
    let writer = writer::Writer::new(file, options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    buffers::register_fence();
    buffers::ACCEPTING.store(true, Ordering::SeqCst);
    // The writer is born with every signal blocked (a new thread inherits its creator's
    // mask): a signal delivered to it before it could block them itself would run the
    // program's handler there, and a handler that flushes the capture would wait for this
    // very thread.
    let handle = with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("tidemark-writer".into())
            .spawn(move || writer::run(writer, stop2))
    })
    .inspect_err(|_| buffers::ACCEPTING.store(false, Ordering::SeqCst))?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (just spawned, joined only by `stop`); `clock` is a local.
    if unsafe { libc::pthread_getcpuclockid(handle.as_pthread_t() as libc::pthread_t, &mut clock) }
        == 0
    {
        WRITER_CLOCK.store(clock as i64, Ordering::Release);
    }
    crate::hook::set_recording(true, max_frames);
    *active = Some(Active {
        path: path.clone(),
        stop,
        handle,
        pid: std::process::id(),
    });
    register_process_handlers();
    Ok(RecordingGuard { path })
}

/// The writer thread's CPU-time clock (`NO_CLOCK`: none), for [`writer_cpu_ns`].
static WRITER_CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(NO_CLOCK);
const NO_CLOCK: i64 = i64::MIN;

/// CPU time the writer thread has used, if it runs: a flush that waits for it can tell a
/// writer at work (compressing a big stack table in a forked child, on a loaded machine) from
/// one that is stuck. Async-signal-safe (`clock_gettime`).
pub fn writer_cpu_ns() -> Option<u64> {
    let clock = WRITER_CLOCK.load(Ordering::Acquire);
    if clock == NO_CLOCK {
        return None;
    }
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid out-pointer; a stale clock id only makes the call fail.
    let ok = unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut t) } == 0;
    ok.then(|| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// Runs `f` with every signal blocked in the calling thread, then restores its mask.
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the sets are locals; pthread_sigmask changes only this thread's mask, and the
    // old mask is put back below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let r = f();
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// Stops the running recording, if any, and waits for the file to be complete. Does nothing
/// in any process but the one that started the recording.
pub fn stop() -> Option<io::Result<RecordSummary>> {
    let me = std::process::id();
    let active = ACTIVE.with(|a| {
        if a.as_ref().is_some_and(|rec| rec.pid == me) {
            a.take()
        } else {
            None
        }
    })?;
    crate::hook::set_recording(false, crate::hook::DEFAULT_RECORD_FRAMES);
    active.stop.store(true, Ordering::Release);
    // (The writer's clock stays readable until the join: a flush handler watches it.)
    active.handle.thread().unpark();
    // Never on the writer itself (it blocks every signal, so no flush handler runs there):
    // joining it from inside would fail.
    // SAFETY: pthread_self has no preconditions.
    if active.handle.as_pthread_t() as libc::pthread_t == unsafe { libc::pthread_self() } {
        return Some(Err(io::Error::other(
            "the recording cannot be stopped from its own writer thread",
        )));
    }
    let result = match active.handle.join() {
        Ok(r) => r,
        Err(_) => Err(io::Error::other("the capture writer thread panicked")),
    };
    WRITER_CLOCK.store(NO_CLOCK, Ordering::Release);
    if let Ok(summary) = &result {
        LAST_EVENTS.store(summary.events, Ordering::Relaxed);
    }
    Some(result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", active.path.display()))))
}

/// The events the last recording stopped in this process wrote (`RecordSummary::events`).
static LAST_EVENTS: AtomicU64 = AtomicU64::new(0);

/// The events written by the last recording stopped in this process, by whichever stop
/// (the guard, [`stop`], or the exit handler): for statistics printed after the exit handler.
pub fn last_recording_events() -> u64 {
    LAST_EVENTS.load(Ordering::Relaxed)
}

/// `exec` requests to the writer thread: the program path, the number of the last request,
/// and the number of the last one written. The path is kept in a fixed buffer: `execve` may
/// be called from a signal handler, where allocating could deadlock.
static EXEC_PROGRAM: SpinLock<ProgramName> = SpinLock::new(ProgramName {
    len: 0,
    bytes: [0; PROGRAM_NAME_MAX],
});
const PROGRAM_NAME_MAX: usize = 4096;
static EXEC_ASKED: AtomicU64 = AtomicU64::new(0);
static EXEC_DONE: AtomicU64 = AtomicU64::new(0);
/// How long `checkpoint_before_exec` waits for the writer before letting the exec go on.
const EXEC_WAIT: Duration = Duration::from_secs(5);

/// For a wrapper of `exec`: writes everything recorded so far, then an `Exec` record naming
/// `program`, and returns once that is in the file (true), so that the recording of this
/// process image is complete when the exec replaces it. The recording goes on: if the exec
/// fails, the events that follow land after the `Exec` record and readers treat the run as
/// not ended there. False (at once) when this process records nothing, and after
/// `EXEC_WAIT` if the writer did not answer.
///
/// Events other threads make between this call and the exec itself are lost with them: the
/// exec ends those threads wherever they are.
///
/// It neither allocates nor waits on a lock for long (an `execve` may come from a signal
/// handler, which may have interrupted [`record`] or [`stop`] on this very thread: then it
/// gives up after about 100 ms).
pub fn checkpoint_before_exec(program: &[u8]) -> bool {
    let me = std::process::id();
    let Some(writer) = with_lock_soon(&ACTIVE, |a| {
        a.as_ref()
            .filter(|rec| rec.pid == me && !rec.handle.is_finished())
            .map(|rec| rec.handle.thread().clone())
    })
    .flatten() else {
        return false;
    };
    let Some(ticket) = with_lock_soon(&EXEC_PROGRAM, |p| {
        // Longer paths are cut: the name is a label.
        p.len = program.len().min(PROGRAM_NAME_MAX);
        p.bytes[..p.len].copy_from_slice(&program[..p.len]);
        EXEC_ASKED.fetch_add(1, Ordering::SeqCst) + 1
    }) else {
        return false;
    };
    writer.unpark();
    let deadline = std::time::Instant::now() + EXEC_WAIT;
    while EXEC_DONE.load(Ordering::Acquire) < ticket {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    true
}

/// Module lists taken before an unload (`note_modules_before_unload`), for the writer's next
/// tick. At most `PENDING_MODULE_LISTS` wait: a program that unloads faster than the writer
/// ticks keeps the first ones (the later lists repeat them but for what was unloaded since).
static PENDING_MODULES: SpinLock<Vec<Vec<ModuleRecord>>> = SpinLock::new(Vec::new());
const PENDING_MODULE_LISTS: usize = 64;

/// Notes the modules loaded now, before the caller unloads one (the preload's `dlclose`): the
/// writer writes them at its next tick, so that frames in the unloaded library are still
/// named in the reports (the reader keeps every module it was told of). Does nothing unless
/// this process records. Allocates: call it with the recording's hook off.
pub fn note_modules_before_unload() {
    if !is_recording() {
        return;
    }
    let list = writer::module_records();
    with_lock_soon(&PENDING_MODULES, |pending| {
        if pending.len() < PENDING_MODULE_LISTS {
            pending.push(list);
        }
    });
}

/// The writer's side: the module lists noted since its last tick.
pub(crate) fn take_pending_modules() -> Vec<Vec<ModuleRecord>> {
    with_lock_soon(&PENDING_MODULES, std::mem::take).unwrap_or_default()
}

/// `lock.with(f)` if the lock comes free within about 100 ms, else None: the holder may be
/// this very thread, interrupted by the signal handler that is calling exec.
fn with_lock_soon<T, R>(lock: &SpinLock<T>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    let mut f = Some(f);
    for _ in 0..1000 {
        // `try_with` runs the closure only when it takes the lock, and then returns.
        if let Some(r) = lock.try_with(|v| f.take().map(|f| f(v))).flatten() {
            return Some(r);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    None
}

/// The program of the last exec request.
struct ProgramName {
    len: usize,
    bytes: [u8; PROGRAM_NAME_MAX],
}

/// The writer's side: the pending exec request (its number and program), if any.
fn exec_request() -> Option<(u64, String)> {
    EXEC_PROGRAM.with(|p| {
        let asked = EXEC_ASKED.load(Ordering::SeqCst);
        (asked > EXEC_DONE.load(Ordering::SeqCst)).then(|| {
            (
                asked,
                String::from_utf8_lossy(&p.bytes[..p.len]).into_owned(),
            )
        })
    })
}

/// The writer's side: request `ticket` (and every one before it) is in the file.
fn exec_done(ticket: u64) {
    EXEC_DONE.fetch_max(ticket, Ordering::Release);
}

/// Once per process (a forked child inherits both registrations and the flag): the exit
/// handler that flushes, and the fork handler that makes a child forget the parent's
/// recording. Never called from a fork handler (glibc holds its fork-handler lock then, and
/// `pthread_atfork` would wait for it forever): a child only records after its parent did.
fn register_process_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        extern "C" fn at_exit() {
            // `stop` checks the pid: a forked child never flushes into the parent's capture.
            let _ = stop();
        }
        extern "C" fn in_child() {
            forget_after_fork();
        }
        // SAFETY: both are extern "C" fns with no arguments, valid for the whole run.
        unsafe {
            libc::atexit(at_exit);
            libc::pthread_atfork(None, None, Some(in_child));
        }
    }
}

/// In a child made by `fork`: drops the parent's recording without writing anything, so that
/// the parent's events reach the parent's file once, from the parent. Closes the child's
/// copies of the writer's descriptors, stops accepting events and resets the buffers; a new
/// [`record`] may follow. Idempotent; runs from a `pthread_atfork` child handler (only the
/// forking thread exists; glibc's allocator is usable again there).
pub fn forget_after_fork() {
    buffers::ACCEPTING.store(false, Ordering::SeqCst);
    // SAFETY: only this thread exists in the child and it is not inside `record` or `stop`
    // (it is in a fork handler): a holder at the time of the fork has vanished with its
    // thread, and the value it guarded is replaced below.
    unsafe { ACTIVE.force_unlock() };
    // SAFETY: as for ACTIVE: a holder at the fork has vanished, and the program path it was
    // writing is only read under the lock by a writer this child does not have yet.
    unsafe { EXEC_PROGRAM.force_unlock() };
    EXEC_DONE.store(EXEC_ASKED.load(Ordering::SeqCst), Ordering::SeqCst);
    if let Some(active) = ACTIVE.with(Option::take) {
        // Nothing in the child uses them: what owns them lives in a thread that does not
        // exist here and is never dropped.
        fds::close_inherited();
        // The join handle names a thread of the parent: joining or detaching it here is
        // undefined. Leaked, with the path and the stop flag (a few bytes per fork).
        std::mem::forget(active);
    }
    // The writer's clock names the parent's thread.
    WRITER_CLOCK.store(NO_CLOCK, Ordering::Release);
    crate::hook::set_recording(false, crate::hook::DEFAULT_RECORD_FRAMES);
    buffers::reset_after_fork();
}

/// Starts a recording when `TIDEMARK_RECORD=path` is set (`TIDEMARK_RECORD_AGGREGATE=1` for
/// aggregate mode). The tracer calls this once from its first-allocation initialisation,
/// with its re-entrancy guard held: this function allocates (file, writer thread). The
/// recording runs until exit. Errors are reported on stderr in one line.
pub fn start_from_env() {
    let Some(path) = tidemark_alloc::env::var(c"TIDEMARK_RECORD") else {
        return;
    };
    if path.is_empty() || is_recording() {
        return;
    }
    let options = RecordOptions {
        aggregate: tidemark_alloc::env::flag(c"TIDEMARK_RECORD_AGGREGATE"),
        ..RecordOptions::default()
    };
    let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
    match record(&path, options) {
        Ok(guard) => std::mem::forget(guard),
        Err(e) => {
            let mut err = tidemark_alloc::stderr::Stderr::new();
            err.write_bytes(b"tidemark: TIDEMARK_RECORD: ");
            err.write_bytes(e.to_string().as_bytes());
            err.write_bytes(b"\n");
            err.flush();
        }
    }
}
