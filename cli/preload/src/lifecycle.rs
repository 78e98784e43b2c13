//! Load, fork, exec and exit.
//!
//! - Load (`.init_array` constructor): decide the backend, start the recording (the capture
//!   named from `TIDEMARK_PRELOAD_OUTPUT`, `%p` → pid), install the debug layer's traceback
//!   hooks, and take this library out of the environment (`LD_PRELOAD` entry and every
//!   `TIDEMARK_PRELOAD_*`) so programs the process execs run without it, unless
//!   `TIDEMARK_PRELOAD_FOLLOW_FORK=1` asked to follow them. A bare `LD_PRELOAD` (no
//!   `TIDEMARK_PRELOAD_*` at all, the mimalloc-style use) is left alone and inherited.
//! - Fork: the child of a recording process stops recording (`pthread_atfork`): the writer
//!   thread exists only in the parent. With follow-fork, a child that execs runs the library's
//!   constructor again and records its own capture (`FILE.<pid>` when the name has no `%p`).
//! - Exit: `exit` (an `on_exit` handler) and `_exit` (exported: the program's own calls) stop
//!   and flush the recording. Fatal
//!   signals (TERM, HUP, ABRT, SEGV, BUS, where their action is the default when the library
//!   loads and the program does not change it later) flush with a 1 s watchdog, then die by
//!   the same signal. SIGKILL and SIGINT leave the file readable up to the writer's last tick
//!   (10 ms), without the end marker.
//! - Not yet: a forked child that does not exec is not recorded even with follow-fork: the
//!   capture module has no way to drop the parent's recording in a child and start its own
//!   (its writer thread does not exist there). Children that exec are recorded.
//! - A forked child of a recording process that calls `exit` ends right after the program's
//!   own exit handlers and a stdio flush, through a handler registered at fork time (so it
//!   runs first): the capture's own exit handler would join the parent's writer thread, which
//!   does not exist in the child (glibc returns at once and the join panics).

use crate::role::{self, Backend};
use crate::{trace, unwind};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// The pid that records (0: nothing is recorded).
static RECORD_PID: AtomicI32 = AtomicI32::new(0);
static STATS: AtomicBool = AtomicBool::new(false);

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

extern "C" fn init() {
    let backend = role::backend();
    let _ = unwind::method();
    STATS.store(role::print_stats(), Ordering::Relaxed);
    trace::COUNT_EVENTS.store(role::print_stats(), Ordering::Relaxed);
    if backend == Backend::PymallocDebug && role::tracebacks() {
        trace::install_traceback_hooks();
    }
    let follow = role::follow_fork();
    if let Some(pattern) = role::output_pattern() {
        let me = pid();
        let path = role::expand_output(pattern, me as u32);
        let path = std::path::Path::new(OsStr::from_bytes(&path)).to_path_buf();
        if trace::start(&path, role::aggregate(), role::native_frames()) {
            RECORD_PID.store(me, Ordering::SeqCst);
            install_signal_handlers();
        }
        if follow && !pattern.windows(2).any(|w| w == b"%p") {
            // Programs this one execs write beside it, one file per pid.
            let mut child = pattern.to_vec();
            child.extend_from_slice(b".%p");
            set_env(b"TIDEMARK_PRELOAD_OUTPUT", &child);
        }
    }
    // SAFETY: both handlers are extern "C" fns valid for the process's life.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
        on_exit(at_exit, core::ptr::null_mut());
    }
    if !follow {
        strip_environment();
    }
}

extern "C" {
    fn on_exit(f: extern "C" fn(i32, *mut libc::c_void), arg: *mut libc::c_void) -> i32;
}

extern "C" fn after_fork_in_child() {
    if RECORD_PID.load(Ordering::Relaxed) != 0 {
        trace::set_on(false);
        // Registered last, so it runs first when the child exits.
        // SAFETY: `at_exit` is valid for the process's life.
        unsafe { on_exit(at_exit, core::ptr::null_mut()) };
    }
}

extern "C" fn at_exit(status: i32, _arg: *mut libc::c_void) {
    let recorder = RECORD_PID.load(Ordering::SeqCst);
    if recorder != 0 && recorder != pid() {
        // A forked child of the recording process: skip the capture's exit handler.
        // SAFETY: fflush(NULL) flushes every stdio stream, as exit would next.
        unsafe {
            libc::fflush(core::ptr::null_mut());
            libc::syscall(libc::SYS_exit_group, status);
        }
    }
    flush_before_exit();
}

/// Stops and flushes the recording if this process is the one recording (not a child that
/// shares its memory after `vfork`); prints the stats when asked. Idempotent.
pub fn flush_before_exit() {
    let recorder = RECORD_PID.load(Ordering::SeqCst);
    if recorder == 0 || recorder != pid() {
        return;
    }
    if RECORD_PID
        .compare_exchange(recorder, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    trace::stop();
    if STATS.load(Ordering::Relaxed) {
        print_stats();
    }
}

fn print_stats() {
    let events = trace::EVENTS.load(Ordering::Relaxed);
    let stacks = unwind::UNWIND_STACKS.load(Ordering::Relaxed);
    let frames = unwind::UNWIND_FRAMES.load(Ordering::Relaxed);
    let ns = unwind::UNWIND_NS.load(Ordering::Relaxed);
    let line = format!(
        "tidemark: {events} events, {stacks} stacks unwound, {:.1} frames per stack, {:.1} ns per frame, {:.0} ns per stack\n",
        frames as f64 / stacks.max(1) as f64,
        ns as f64 / frames.max(1) as f64,
        ns as f64 / stacks.max(1) as f64,
    );
    let mut err = tidemark_alloc::stderr::Stderr::new();
    err.write_bytes(line.as_bytes());
    err.flush();
}

// ---- signals ----

/// Not SIGINT: programs look at its disposition at startup (CPython raises KeyboardInterrupt
/// only when it found SIG_DFL there; shells decide job control by it), so a handler here
/// would change their behaviour. A program killed by Ctrl-C leaves its capture readable up
/// to the writer's last tick, without the end marker.
const FATAL: [i32; 5] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
];

static DYING_BY: AtomicI32 = AtomicI32::new(0);

fn install_signal_handlers() {
    for sig in FATAL {
        // SAFETY: sigaction with a zeroed struct reads the current action only; the new
        // action's handler is an extern "C" fn valid for the process's life.
        unsafe {
            let mut old: libc::sigaction = core::mem::zeroed();
            if libc::sigaction(sig, core::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut new: libc::sigaction = core::mem::zeroed();
            new.sa_sigaction = on_fatal_signal as extern "C" fn(i32) as usize;
            new.sa_flags = libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(sig, &new, core::ptr::null_mut());
        }
    }
}

/// Dies by `sig` with its default action.
fn die_by(sig: i32) {
    // SAFETY: resetting a disposition, unblocking and raising are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
        libc::raise(sig);
    }
}

extern "C" fn watchdog(_sig: i32) {
    die_by(DYING_BY.load(Ordering::SeqCst));
}

/// Best effort: the flush is not async-signal-safe (the writer thread compresses and writes
/// what is buffered), so a watchdog ends the process by the same signal if it takes over 1 s
/// (a lock held by the interrupted code, a corrupt heap).
extern "C" fn on_fatal_signal(sig: i32) {
    if DYING_BY
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        // SAFETY: installing a handler and arming an alarm are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGALRM, watchdog as extern "C" fn(i32) as usize);
            libc::alarm(1);
        }
        flush_before_exit();
    }
    die_by(sig);
}

// ---- environment ----

fn set_env(name: &[u8], value: &[u8]) {
    if let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) {
        // SAFETY: both strings are NUL-terminated; called from the constructor, before the
        // program's threads exist.
        unsafe { libc::setenv(n.as_ptr(), v.as_ptr(), 1) };
    }
}

/// Removes this library from `LD_PRELOAD` and every `TIDEMARK_PRELOAD_*` variable, so that
/// programs this process execs run without tidemark. Only when the library was configured
/// through the protocol (some `TIDEMARK_PRELOAD_*` is set, as `tidemark run` always does): a
/// bare `LD_PRELOAD=libtidemark_preload.so` is inherited like any other preload, so a whole
/// process tree can run on tidemark's allocator. Values already read stay valid (glibc's
/// `unsetenv` only shifts the array of pointers).
fn strip_environment() {
    let mut names = Vec::new();
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings; nothing changes it
    // while we read (constructor, single thread).
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = core::ffi::CStr::from_ptr(*p).to_bytes();
            if entry.starts_with(b"TIDEMARK_PRELOAD_") {
                if let Some(eq) = entry.iter().position(|&b| b == b'=') {
                    names.push(entry[..eq].to_vec());
                }
            }
            p = p.add(1);
        }
    }
    if names.is_empty() {
        return;
    }
    if let Some(list) = tidemark_alloc::env::var(c"LD_PRELOAD") {
        let kept = without_preload(list);
        if kept.is_empty() {
            // SAFETY: NUL-terminated name.
            unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
        } else if kept.len() != list.len() {
            set_env(b"LD_PRELOAD", &kept);
        }
    }
    for name in names {
        if let Ok(n) = CString::new(name) {
            // SAFETY: NUL-terminated name.
            unsafe { libc::unsetenv(n.as_ptr()) };
        }
    }
}

/// `LD_PRELOAD` (entries separated by `:` or spaces) without libtidemark_preload.so.
pub fn without_preload(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in list.split(|&b| b == b':' || b == b' ') {
        if entry.is_empty() || entry.ends_with(b"libtidemark_preload.so") {
            continue;
        }
        if !out.is_empty() {
            out.push(b':');
        }
        out.extend_from_slice(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_preload;

    #[test]
    fn strips_only_this_library() {
        assert_eq!(without_preload(b"/x/libtidemark_preload.so"), b"");
        assert_eq!(
            without_preload(b"/a/liba.so:/x/libtidemark_preload.so /b/libb.so"),
            b"/a/liba.so:/b/libb.so"
        );
    }
}
