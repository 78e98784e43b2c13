//! The tracing role: every malloc-family call of the program goes into a capture file
//! (`tidemark_tracer::capture`), with its stack unwound by `unwind.rs` and interned once.
//!
//! Re-entrancy: a thread-local mark is set while the hook runs; any allocation made meanwhile
//! (glibc inside `pthread_getattr_np`, `dl_iterate_phdr`, the unwinder's first cache) goes
//! straight to the backend unrecorded. The capture writer's own thread (`tidemark-writer`)
//! is never recorded either: its C allocations (zstd) come through these exports, so each
//! thread's name is checked once, at its first recorded call.

use crate::unwind;
use core::cell::Cell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tidemark_tracer::capture;

/// The capture API code for the C malloc family.
const API_C: u8 = 1;

/// Recording is on in this process (off in forked children that are not followed).
static ON: AtomicBool = AtomicBool::new(false);

/// Counters for `TIDEMARK_PRELOAD_STATS=1` (a shared atomic per event costs; only then).
pub static EVENTS: AtomicU64 = AtomicU64::new(0);
pub static COUNT_EVENTS: AtomicBool = AtomicBool::new(false);

#[inline]
fn count_event() {
    if COUNT_EVENTS.load(Ordering::Relaxed) {
        EVENTS.fetch_add(1, Ordering::Relaxed);
    }
}

const IN_HOOK: u8 = 1;
const CHECKED: u8 = 2;
const SILENT: u8 = 4;

thread_local! {
    static FLAGS: Cell<u8> = const { Cell::new(0) };
}

#[inline(always)]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

pub fn set_on(on: bool) {
    ON.store(on, Ordering::SeqCst);
}

/// Marks the thread as inside the hook; `None` on re-entry, in the writer thread, or when
/// thread-locals are gone (thread exit).
#[inline]
fn enter() -> Option<u8> {
    FLAGS
        .try_with(|f| {
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
            f.set(v | CHECKED | IN_HOOK);
            Some(v | CHECKED)
        })
        .ok()
        .flatten()
}

#[inline]
fn leave(prev: u8) {
    let _ = FLAGS.try_with(|f| f.set(prev));
}

/// Runs `f` with this thread's allocations unrecorded (starting the recording allocates).
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let prev = FLAGS.try_with(|fl| {
        let v = fl.get();
        fl.set(v | IN_HOOK);
        v
    });
    let r = f();
    if let Ok(prev) = prev {
        leave(prev);
    }
    r
}

/// Is this the capture writer's thread? (`comm` holds at most 15 bytes: "tidemark-writer".)
#[cold]
fn is_writer_thread() -> bool {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
    let r = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    r == 0 && name.starts_with(b"tidemark-writer")
}

#[cold]
#[inline(never)]
pub fn on_alloc(p: *mut c_void, size: usize) {
    let Some(prev) = enter() else { return };
    if capture::is_recording() {
        let id = unwind::capture_interned();
        capture::on_alloc(p as usize, size, API_C, id);
        count_event();
    }
    leave(prev);
}

#[cold]
#[inline(never)]
pub fn on_free(p: *mut c_void) {
    let Some(prev) = enter() else { return };
    if capture::is_recording() {
        capture::on_free(p as usize, API_C);
        count_event();
    }
    leave(prev);
}

#[cold]
#[inline(never)]
pub fn on_realloc(old: *mut c_void, new: *mut c_void, size: usize) {
    let Some(prev) = enter() else { return };
    if capture::is_recording() {
        let id = unwind::capture_interned();
        capture::on_realloc(old as usize, new as usize, size, id);
        count_event();
    }
    leave(prev);
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

/// Stops the recording and flushes the file (at exit).
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
    let Some(prev) = enter() else { return 0 };
    let id = unwind::capture_interned();
    leave(prev);
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
            for f in frames {
                line(&format!(
                    "  File \"{}\", line {}, in {}",
                    f.filename, f.lineno, f.function
                ));
            }
        }
    });
}
