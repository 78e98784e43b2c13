//! Dying by a signal: the capture is flushed first, and the process still dies by that signal
//! (its exit status is what it would have been without tidemark).
//!
//! When the recording starts, each signal of [`HANDLED`] whose action is the default gets
//! [`on_fatal_signal`]: it stops and flushes the recording (the writer thread writes what is
//! buffered and the end marker; a watchdog ends the wait once the writer makes no progress
//! for a second), then restores the default action and raises the signal again. A signal
//! whose action is not the default at load (an ignored SIGINT in a background job, a handler
//! inherited across exec) is left alone.
//!
//! The program must not notice the handler: CPython installs its KeyboardInterrupt handler
//! only where it finds SIG_DFL at startup, and shells and `signal.getsignal` look at the
//! dispositions too. So `sigaction` and `signal` are interposed:
//!
//! * where the real handler is the flush handler, the program is told SIG_DFL;
//! * a handler (or SIG_IGN) of the program's own replaces the flush handler, as it would
//!   replace the default action;
//! * asking for SIG_DFL (while this process records) keeps the flush handler, or puts it
//!   back: the default action is what it ends with.
//!
//! Not interposed: `sigset`, `sysv_signal`, `bsd_signal` and the raw `rt_sigaction` system
//! call; a program that installs through those replaces the flush handler all the same and
//! sees the flush handler's address where it reads an old disposition back.
//!
//! SIGKILL cannot be caught: a killed program leaves its capture readable up to the writer's
//! last tick (10 ms), without the end marker.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

extern "C" {
    /// glibc's `sigaction` under its other exported name: `sigaction` itself is interposed
    /// below, and this library's own calls must reach the real one.
    fn __sigaction(sig: i32, act: *const libc::sigaction, old: *mut libc::sigaction) -> i32;
}

/// The signals whose default action ends the process and whose death should leave a
/// complete capture. SIGALRM, SIGVTALRM and SIGPROF are left to timers and profilers. The
/// first [`ASYNC`] come from outside the process; the rest from a fault of the code running.
pub const HANDLED: [i32; 14] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
];

fn handled(sig: i32) -> bool {
    HANDLED.contains(&sig)
}

/// The flush handler's address, as `sa_sigaction` holds it.
fn flush_handler() -> libc::sighandler_t {
    on_fatal_signal as extern "C" fn(i32) as libc::sighandler_t
}

/// The real `sigaction`.
fn real_sigaction(sig: i32, act: *const libc::sigaction, old: *mut libc::sigaction) -> i32 {
    // SAFETY: the caller passes null or valid pointers, as sigaction requires.
    unsafe { __sigaction(sig, act, old) }
}

/// A zeroed `sigaction`: handler SIG_DFL, empty mask, no flags.
fn default_action() -> libc::sigaction {
    // SAFETY: all-zero is a valid `sigaction` (SIG_DFL is 0; an empty glibc sigset is zeros).
    unsafe { core::mem::zeroed() }
}

/// The current disposition of `sig`, if it can be read.
fn current(sig: i32) -> Option<libc::sigaction> {
    let mut cur = default_action();
    (real_sigaction(sig, core::ptr::null(), &mut cur) == 0).then_some(cur)
}

/// Installs the flush handler on `sig`; the previous disposition goes to `old` (may be null).
fn install_flush_handler(sig: i32, old: *mut libc::sigaction) -> i32 {
    let mut new = default_action();
    new.sa_sigaction = flush_handler();
    // Reset to the default on delivery, so that the re-raise in `die_by` cannot loop; on the
    // alternate stack when the thread has one (a stack overflow's SIGSEGV).
    new.sa_flags = libc::SA_RESETHAND | libc::SA_ONSTACK;
    real_sigaction(sig, &new, old)
}

/// Puts the flush handler on every handled signal whose action is the default. Called once
/// the recording has started.
pub fn install() {
    for sig in HANDLED {
        if current(sig).is_some_and(|cur| cur.sa_sigaction == libc::SIG_DFL) {
            install_flush_handler(sig, core::ptr::null_mut());
        }
    }
}

/// What the program is shown of a disposition: SIG_DFL where the flush handler is installed.
fn shown(act: libc::sigaction) -> libc::sigaction {
    if act.sa_sigaction == flush_handler() {
        default_action()
    } else {
        act
    }
}

/// Does the program's request for SIG_DFL on `sig` keep (or put back) the flush handler?
fn keeps_flush_handler(sig: i32, handler: libc::sighandler_t) -> bool {
    handler == libc::SIG_DFL && handled(sig) && crate::lifecycle::recording_here()
}

/// Makes the flush handler `sig`'s action in place of SIG_DFL; returns the previous
/// disposition as the program sees it, or `None` if it cannot be read or set.
fn arm(sig: i32) -> Option<libc::sigaction> {
    let cur = current(sig)?;
    if cur.sa_sigaction == flush_handler() {
        return Some(default_action());
    }
    let mut prev = default_action();
    (install_flush_handler(sig, &mut prev) == 0).then(|| shown(prev))
}

/// `sigaction` with the flush handler hidden from the program (see the module docs).
///
/// # Safety
/// As `sigaction(2)`: `act` and `old` are null or valid.
#[cfg(not(test))]
#[export_name = "sigaction"]
pub unsafe extern "C" fn interposed_sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> i32 {
    // SAFETY: `act` is null or valid (the caller's contract). Only the handler is copied out:
    // `act` and `old` may point at the same struct.
    let wanted = unsafe { act.as_ref() }.map(|a| a.sa_sigaction);
    if wanted.is_some_and(|h| keeps_flush_handler(sig, h)) {
        if let Some(prev) = arm(sig) {
            // SAFETY: `old` is null or valid (the caller's contract).
            if let Some(o) = unsafe { old.as_mut() } {
                *o = prev;
            }
            return 0;
        }
    }
    let r = real_sigaction(sig, act, old);
    // SAFETY: as above; glibc filled `*old` when it returned 0.
    if let (0, Some(o)) = (r, unsafe { old.as_mut() }) {
        *o = shown(*o);
    }
    r
}

/// `signal` as glibc's (BSD semantics: the handler stays installed, the signal is blocked
/// while it runs, interrupted system calls restart), with the flush handler hidden. It does
/// not know about `siginterrupt` (obsolete), whose signals glibc installs without
/// `SA_RESTART`.
///
/// # Safety
/// `handler` is SIG_DFL, SIG_IGN or a function that may run as a signal handler.
#[cfg(not(test))]
#[export_name = "signal"]
pub unsafe extern "C" fn interposed_signal(
    sig: i32,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    let mut act = default_action();
    act.sa_sigaction = handler;
    // SAFETY: `act.sa_mask` is a valid set; sigaddset rejects an invalid signal number.
    let valid = unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, sig) == 0
    };
    if !valid || handler == libc::SIG_ERR {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return libc::SIG_ERR;
    }
    act.sa_flags = libc::SA_RESTART;
    let mut old = default_action();
    // SAFETY: both pointers are to locals.
    if unsafe { interposed_sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// The signal being died of (0: none yet).
static DYING_BY: AtomicI32 = AtomicI32::new(0);

/// Dies by `sig` with its default action. Async-signal-safe.
pub fn die_by(sig: i32) {
    let dfl = default_action();
    real_sigaction(sig, &dfl, core::ptr::null_mut());
    // SAFETY: unblocking and raising are async-signal-safe; the set is a local.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
        libc::raise(sig);
    }
}

/// How many of [`HANDLED`], from the first, arrive from outside (SIGINT to SIGXFSZ).
const ASYNC: usize = 9;

/// Blocks the asynchronous handled signals in the calling thread; returns its previous mask
/// for [`release_held_signals`]. One that arrives meanwhile waits, and is delivered (or, if
/// the process exits first, dropped) after.
pub fn hold_async_signals() -> libc::sigset_t {
    // SAFETY: the sets are locals; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in &HANDLED[..ASYNC] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Restores the mask [`hold_async_signals`] returned.
pub fn release_held_signals(old: libc::sigset_t) {
    // SAFETY: `old` is a mask pthread_sigmask returned.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut()) };
}

/// The writer's CPU time at the watchdog's last look (0: not looked yet), and how many
/// seconds it has granted.
static WRITER_SEEN: AtomicU64 = AtomicU64::new(0);
static GRANTED: AtomicU32 = AtomicU32::new(0);
/// The longest a flush may take while the writer keeps working.
const MAX_FLUSH_SECONDS: u32 = 30;

/// Every second of the flush: another second while the writer thread has used CPU since the
/// last look (it is compressing and writing: four forked workers flushing at once on a
/// loaded machine took over a second), else the process dies by its signal now.
extern "C" fn watchdog(_sig: i32) {
    let seen = tidemark_tracer::capture::writer_cpu_ns().unwrap_or(0);
    let before = WRITER_SEEN.swap(seen, Ordering::SeqCst);
    if seen > before && GRANTED.fetch_add(1, Ordering::SeqCst) < MAX_FLUSH_SECONDS {
        // SAFETY: alarm is async-signal-safe.
        unsafe { libc::alarm(1) };
        return;
    }
    die_by(DYING_BY.load(Ordering::SeqCst));
}

/// Best effort: the flush is not async-signal-safe (the writer thread compresses and writes
/// what is buffered, and the handler joins it), so a watchdog ends the process by the same
/// signal once the writer has made no progress for a second (a lock held by the interrupted
/// code, a corrupt heap), or after 30 s. The first signal wins: another handled one arriving
/// meanwhile ends the process at once.
extern "C" fn on_fatal_signal(sig: i32) {
    if DYING_BY
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        let mut alarm = default_action();
        alarm.sa_sigaction = watchdog as extern "C" fn(i32) as libc::sighandler_t;
        real_sigaction(libc::SIGALRM, &alarm, core::ptr::null_mut());
        WRITER_SEEN.store(
            tidemark_tracer::capture::writer_cpu_ns().unwrap_or(0),
            Ordering::SeqCst,
        );
        // SAFETY: alarm is async-signal-safe.
        unsafe { libc::alarm(1) };
        // This thread may have been stopped inside an event's append: it never finishes it.
        tidemark_tracer::capture::abandon_this_threads_event();
        // An exit's flush under way on another thread finishes first.
        crate::lifecycle::wait_for_exit_flush();
        crate::lifecycle::flush_before_exit();
    }
    die_by(sig);
}
