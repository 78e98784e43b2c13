//! The signals meant for the program while `tidemark run` waits for it.
//!
//! - Ctrl-C and Ctrl-\ go to the whole foreground process group: the program gets them
//!   itself (it handles them, or dies with its capture flushed), so this process ignores them
//!   and stays to report. They are ignored only after the spawn: an ignored signal would stay
//!   ignored in the program.
//! - SIGTERM and SIGHUP usually come to this process alone (`kill PID`, `timeout`, a CI job's
//!   cancel, `docker stop`), so they are passed on to the program, which ends (or not) as it
//!   would have without tidemark; this process then reports and exits with its status. Left
//!   at their default they would kill tidemark and leave the program running without its
//!   parent. The handlers are in place before the spawn (the program's `exec` resets them to
//!   the default), so none of these signals is lost while the program starts.

use core::sync::atomic::{AtomicI32, Ordering};

/// The signals passed on to the program.
const PASSED_ON: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGHUP];
/// The signals ignored while the program runs.
const IGNORED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGQUIT];

/// The program's pid once it runs (0 before).
static PROGRAM: AtomicI32 = AtomicI32::new(0);
/// A signal to pass on that came before the program's pid was known (0: none).
static EARLY: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: libc::c_int) {
    let pid = PROGRAM.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    } else {
        EARLY.store(sig, Ordering::SeqCst);
    }
}

/// The dispositions this process had before, restored when this is dropped.
pub struct Standing {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

/// Before the spawn: SIGTERM and SIGHUP will be passed on to the program.
pub fn before_spawn() -> Standing {
    let mut s = Standing { saved: Vec::new() };
    for sig in PASSED_ON {
        s.set(sig, pass_on as *const () as libc::sighandler_t);
    }
    s
}

impl Standing {
    /// After the spawn: the program is `pid`; a signal that came meanwhile is passed on now,
    /// and Ctrl-C and Ctrl-\ are left to it.
    pub fn program_started(&mut self, pid: u32) {
        PROGRAM.store(pid as i32, Ordering::SeqCst);
        let early = EARLY.swap(0, Ordering::SeqCst);
        if early != 0 {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid as i32, early) };
        }
        for sig in IGNORED {
            self.set(sig, libc::SIG_IGN);
        }
    }

    fn set(&mut self, sig: libc::c_int, handler: libc::sighandler_t) {
        // SAFETY: a zeroed sigaction is a valid value to fill in; sigaction reads `new` and
        // writes `old`, both valid for the call. The handler only calls kill and stores atomics.
        unsafe {
            let mut new: libc::sigaction = core::mem::zeroed();
            new.sa_sigaction = handler;
            new.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = core::mem::zeroed();
            if libc::sigaction(sig, &new, &mut old) == 0 {
                self.saved.push((sig, old));
            }
        }
    }
}

impl Drop for Standing {
    /// The program has exited: this process takes its signals back.
    fn drop(&mut self) {
        for (sig, old) in self.saved.drain(..).rev() {
            // SAFETY: restores a disposition sigaction returned.
            unsafe { libc::sigaction(sig, &old, core::ptr::null_mut()) };
        }
        PROGRAM.store(0, Ordering::SeqCst);
    }
}
