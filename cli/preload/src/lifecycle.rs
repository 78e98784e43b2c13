//! Load, fork, exec and exit.
//!
//! - Load (`.init_array` constructor, run before every other object's: see `init`): decide
//!   the backend, start the recording (the capture named from `TIDEMARK_PRELOAD_OUTPUT`,
//!   `%p` → pid), install the debug layer's traceback hooks, and take this library out of
//!   the environment (`LD_PRELOAD` entry and every `TIDEMARK_PRELOAD_*`) so programs the
//!   process execs run without it, unless `TIDEMARK_PRELOAD_FOLLOW_FORK=1` asked to follow
//!   them. A bare `LD_PRELOAD` (no
//!   `TIDEMARK_PRELOAD_*` at all, the mimalloc-style use) is left alone and inherited.
//! - Fork (`pthread_atfork`, in the child): the parent's recording is forgotten without a
//!   byte written (the events it had buffered are the parent's to write, its writer thread
//!   does not exist in the child, its file is the parent's; see `capture::forget_after_fork`).
//!   With follow-fork the child then records its own capture, named like the captures of
//!   exec'd programs (`FILE.<pid>`, or the pattern's `%p`) with a writer thread of its own;
//!   without it the child is not traced. A child that execs runs the library's constructor
//!   again and (with follow-fork) records into `FILE.<pid>.1` (`start_recording`: the capture
//!   of the image before the exec stays). With follow-fork, `fork` first waits until no other
//!   thread is inside the hook (`trace.rs`'s fork gate), so that the recording child finds
//!   none of the hook's locks held.
//! - Exit: `exit` (an `on_exit` handler) and `_exit` (exported: the program's own calls) stop
//!   and flush the recording of the process that records, never a parent's. Signals whose
//!   default action kills: `signals.rs`.

use crate::role::{self, Backend};
use crate::{signals, trace, unwind};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// The pid that records (0: nothing is recorded).
static RECORD_PID: AtomicI32 = AtomicI32::new(0);
static STATS: AtomicBool = AtomicBool::new(false);
/// The capture name pattern of forked children (with follow-fork): `%p` is the child's pid.
/// Kept here rather than read from the environment again, which the program may have
/// changed by the time it forks.
static CHILD_PATTERN: OnceLock<Vec<u8>> = OnceLock::new();

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn(i32, *const *const libc::c_char, *mut *mut libc::c_char) = init;

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The library's constructor. The library is linked with `-z initfirst` (`build.rs`), so it
/// runs before any other object's, the C library's included: the allocations other libraries'
/// constructors make are the program's and are recorded. The C library's own constructor has
/// not set `environ` yet then; the loader passes every constructor the environment, which
/// this one sets first, as the C library's will (to the same array) a moment later.
extern "C" fn init(_argc: i32, _argv: *const *const libc::c_char, envp: *mut *mut libc::c_char) {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: the constructor runs on the only thread before the program starts; `envp` is
    // the environment array the loader hands every constructor.
    unsafe {
        if environ.is_null() {
            environ = envp;
        }
    }
    // Unrecorded: what the constructor allocates after the recording starts (the children's
    // capture pattern, `setenv`'s copies, glibc's fork and exit handler lists) is tidemark's,
    // not the program's: recorded, it showed as the program's leaks.
    trace::quietly(set_up);
}

fn set_up() {
    #[cfg(not(test))]
    {
        crate::exec::resolve();
        crate::stack_attr::resolve();
    }
    let backend = role::backend();
    let _ = unwind::method();
    STATS.store(role::print_stats(), Ordering::Relaxed);
    if backend == Backend::PymallocDebug && role::tracebacks() {
        trace::install_traceback_hooks();
    }
    let follow = role::follow_fork();
    if let Some(pattern) = role::output_pattern() {
        if start_recording(pattern) {
            signals::install();
        }
        if follow {
            let mut child = pattern.to_vec();
            if !pattern.windows(2).any(|w| w == b"%p") {
                // Programs this one forks or execs write beside it, one file per pid.
                child.extend_from_slice(b".%p");
                set_env(b"TIDEMARK_PRELOAD_OUTPUT", &child);
            }
            let _ = CHILD_PATTERN.set(child);
            trace::use_fork_gate();
        }
    }
    // SAFETY: the handlers are extern "C" fns valid for the process's life. Registered after
    // the capture's own fork handler (`start_recording` registered it), so in a child that
    // one has already run when `after_fork_in_child` does.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
        on_exit(at_exit, core::ptr::null_mut());
    }
    if !follow {
        strip_environment();
    }
}

/// Starts this process's recording into `pattern` (`%p` → pid); true when it runs.
///
/// When an earlier image of this process (the program before it called `exec`, which
/// checkpointed its capture) recorded under the same name, this image takes the next
/// generation's name (`role::expand_output`) instead of overwriting that capture.
fn start_recording(pattern: &[u8]) -> bool {
    let me = pid();
    let name = |generation| {
        let path = role::expand_output(pattern, me as u32, generation);
        std::path::Path::new(OsStr::from_bytes(&path)).to_path_buf()
    };
    let mut generation = 0;
    let mut path = name(0);
    while generation < MAX_GENERATIONS && earlier_image_recorded(&path, me as u32) {
        generation += 1;
        path = name(generation);
    }
    if trace::start(&path, role::aggregate(), role::native_frames()) {
        RECORD_PID.store(me, Ordering::SeqCst);
        true
    } else {
        false
    }
}

/// Images of one process (execs that record) that get names of their own; later ones
/// overwrite the last.
const MAX_GENERATIONS: u32 = 1000;

/// Did an earlier image of this process record into `path`? Its capture names this pid and
/// started after this process did (a capture of another process that had the same pid
/// started before it).
fn earlier_image_recorded(path: &std::path::Path, pid: u32) -> bool {
    let Ok(reader) = tidemark_tracer::capture::CaptureReader::open(path) else {
        return false;
    };
    let meta = reader.meta();
    meta.pid == pid && process_start_unix_ms().is_some_and(|start| meta.start_unix_ms >= start)
}

/// When this process started, in milliseconds since the Unix epoch, rounded down to the
/// boot time's whole second (`/proc/stat` gives it in seconds), so never late.
fn process_start_unix_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22, counted after the command name, which is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime * 1000 + ticks * 1000 / hz as u64)
}

/// Is this process the one recording (not a forked child that inherited the state)?
pub fn recording_here() -> bool {
    let recorder = RECORD_PID.load(Ordering::SeqCst);
    recorder != 0 && recorder == pid()
}

extern "C" {
    fn on_exit(f: extern "C" fn(i32, *mut libc::c_void), arg: *mut libc::c_void) -> i32;
}

/// With follow-fork, `fork` waits until no other thread is inside the hook (see the fork gate
/// in `trace.rs`): the child must find none of the hook's locks held.
extern "C" fn before_fork() {
    trace::before_fork();
}

extern "C" fn after_fork_in_parent() {
    trace::after_fork(false);
}

/// In the child of a `fork`, where only the forking thread exists (glibc's allocator and
/// stdio are usable again by now; the signal handlers are inherited and find `RECORD_PID`
/// to decide whether to flush).
extern "C" fn after_fork_in_child() {
    trace::after_fork(true);
    if RECORD_PID.swap(0, Ordering::SeqCst) == 0 {
        return;
    }
    trace::forget_after_fork();
    for counter in [
        &unwind::UNWIND_STACKS,
        &unwind::UNWIND_FRAMES,
        &unwind::UNWIND_NS,
    ] {
        counter.store(0, Ordering::Relaxed);
    }
    if let Some(pattern) = CHILD_PATTERN.get() {
        start_recording(pattern);
    }
}

extern "C" fn at_exit(_status: i32, _arg: *mut libc::c_void) {
    flush_before_exit();
}

/// Stops and flushes the recording if this process is the one recording (not a child that
/// shares its memory after `vfork`, or a forked child); prints the stats when asked.
/// Idempotent.
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
    // A fatal signal during this flush (multiprocessing's Pool sends SIGTERM to workers that
    // may be exiting already) must not end the process half-way: this thread holds the
    // asynchronous ones until the flush is done, and a handler on another thread waits for it
    // (`wait_for_exit_flush`).
    // SAFETY: gettid has no preconditions.
    FLUSHER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    let held = crate::signals::hold_async_signals();
    trace::stop();
    crate::signals::release_held_signals(held);
    FLUSHER.store(0, Ordering::SeqCst);
    if STATS.load(Ordering::Relaxed) {
        print_stats();
    }
}

/// The thread running `flush_before_exit`'s flush (0: none).
static FLUSHER: AtomicI32 = AtomicI32::new(0);

/// Waits until a flush that another thread of this process runs is done. Async-signal-safe;
/// the fatal-signal handler's watchdog bounds the wait.
pub fn wait_for_exit_flush() {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    loop {
        let flusher = FLUSHER.load(Ordering::SeqCst);
        if flusher == 0 || flusher == me {
            return;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: nanosleep is async-signal-safe and reads only the local timespec.
        unsafe { libc::nanosleep(&pause, core::ptr::null_mut()) };
    }
}

/// The `TIDEMARK_PRELOAD_STATS=1` lines: the events written, the unwinder's work.
fn print_stats() {
    let events = tidemark_tracer::capture::last_recording_events();
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
    if let Some((hits, misses)) = unwind::rule_cache_counts(crate::thread::slot()) {
        let line =
            format!("tidemark: this thread's unwind rules: {hits} cached, {misses} looked up\n");
        err.write_bytes(line.as_bytes());
    }
    err.flush();
}

// ---- environment ----

/// The C library's `setenv` and `unsetenv`, found past this library with `dlsym(RTLD_NEXT)`.
///
/// Not the ones the program's symbols would bind to: bash exports `setenv`, `unsetenv` and
/// `getenv` of its own, which before bash's `main` change nothing, so `tidemark run -- bash
/// script.sh` handed `LD_PRELOAD` and the capture's name to every program the script ran,
/// and each of them truncated the capture bash was writing. glibc's functions change the
/// array `environ` points to in place (removing shifts its pointers; replacing a variable that
/// is set stores a new pointer), and that array is the one the program's `main` receives.
struct LibcEnv {
    setenv: SetEnv,
    unsetenv: UnsetEnv,
}

type SetEnv = unsafe extern "C" fn(*const libc::c_char, *const libc::c_char, i32) -> i32;
type UnsetEnv = unsafe extern "C" fn(*const libc::c_char) -> i32;

fn libc_env() -> Option<&'static LibcEnv> {
    static ENV: OnceLock<Option<LibcEnv>> = OnceLock::new();
    ENV.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and NUL-terminated names has no other preconditions;
        // a non-null result is the C library's function of that name, whose C signature the
        // transmutes spell.
        unsafe {
            let set = libc::dlsym(libc::RTLD_NEXT, c"setenv".as_ptr());
            let unset = libc::dlsym(libc::RTLD_NEXT, c"unsetenv".as_ptr());
            (!set.is_null() && !unset.is_null()).then(|| LibcEnv {
                setenv: core::mem::transmute::<*mut libc::c_void, SetEnv>(set),
                unsetenv: core::mem::transmute::<*mut libc::c_void, UnsetEnv>(unset),
            })
        }
    })
    .as_ref()
}

fn set_env(name: &[u8], value: &[u8]) {
    if let (Some(env), Ok(n), Ok(v)) = (libc_env(), CString::new(name), CString::new(value)) {
        // SAFETY: both strings are NUL-terminated; called from the constructor, before the
        // program's threads exist.
        unsafe { (env.setenv)(n.as_ptr(), v.as_ptr(), 1) };
    }
}

fn unset_env(name: &core::ffi::CStr) {
    if let Some(env) = libc_env() {
        // SAFETY: NUL-terminated name; called from the constructor, as `set_env`.
        unsafe { (env.unsetenv)(name.as_ptr()) };
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
            unset_env(c"LD_PRELOAD");
        } else if kept.len() != list.len() {
            set_env(b"LD_PRELOAD", &kept);
        }
    }
    for name in names {
        if let Ok(n) = CString::new(name) {
            unset_env(&n);
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
