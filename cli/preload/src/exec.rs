//! The `exec` family, wrapped so that a recording process writes its capture out before the
//! new program replaces it.
//!
//! An `exec` ends every thread at once, the capture writer's too: without these wrappers the
//! events since the writer's last tick (up to 10 ms of them) would be lost, and the capture
//! would end without a word on why. Each wrapper asks the writer for a checkpoint (the events
//! so far, then an `Exec` record naming the program; `capture::checkpoint_before_exec`),
//! waits for it, then calls glibc's function. A failed exec returns as glibc's does and the
//! recording goes on.
//!
//! glibc's `execl`, `execv`, `execvp` ... call its internal `execve` directly, so each entry
//! point is wrapped on its own. Stable Rust cannot define a variadic function: `execl`,
//! `execlp` and `execle` are naked jumps to their bodies in `c/exec_variadic.c`, which come
//! back here through `execv`, `execvp` and `execve`.
//!
//! Only the process that records checkpoints: a child between `fork` (or `vfork`, whose
//! child shares the parent's memory and must not touch the writer) and `exec` finds
//! `recording_here` false, and the wrapper is a plain call.

use crate::{lifecycle, trace};
use core::ffi::{c_char, c_int, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

type Argv = *const *const c_char;

/// Writes the capture out before the exec of `program`.
fn before_exec(program: &[u8]) {
    if lifecycle::recording_here() {
        trace::checkpoint_before_exec(program);
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn c_bytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// glibc's functions behind the wrappers, by index into `NAMES` and `REAL`.
#[derive(Clone, Copy)]
enum Real {
    Execve,
    Execv,
    Execvp,
    Execvpe,
    Execveat,
    Fexecve,
}
const NAMES: [&CStr; 6] = [
    c"execve",
    c"execv",
    c"execvp",
    c"execvpe",
    c"execveat",
    c"fexecve",
];
static REAL: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];
/// `resolve` ran (a function glibc lacks, `execveat` before 2.34, stays 0 in `REAL`).
static RESOLVED: AtomicBool = AtomicBool::new(false);

/// Looks glibc's functions up, from the library's constructor. A wrapper may run in the child
/// of a `vfork`, which shares its parent's memory while the parent's other threads run on: it
/// must not call into the dynamic loader there (`dlsym` takes the loader's lock and may
/// allocate), so the wrappers only read what this stored.
pub fn resolve() {
    for (name, real) in NAMES.iter().zip(&REAL) {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other preconditions.
        real.store(
            unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize,
            Ordering::Relaxed,
        );
    }
    RESOLVED.store(true, Ordering::Release);
}

/// glibc's function `f`, or 0 if there is none.
fn real(f: Real) -> usize {
    if !RESOLVED.load(Ordering::Acquire) {
        // Another library's constructor exec'd before ours ran: look them up now.
        resolve();
    }
    REAL[f as usize].load(Ordering::Relaxed)
}

/// Fails as an exec of a missing function would (no libc `exec*` behind this library).
fn no_function() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// glibc's function `$real` with the C signature `$ty`, or None.
macro_rules! real_fn {
    ($real:expr, $ty:ty) => {{
        match real($real) {
            0 => None,
            // SAFETY: `f` is glibc's function of this name, whose C signature `$ty` repeats.
            f => Some(unsafe { core::mem::transmute::<usize, $ty>(f) }),
        }
    }};
}

#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: exec's contract: `path` is a NUL-terminated string.
    before_exec(unsafe { c_bytes(path) });
    match real_fn!(
        Real::Execve,
        unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int
    ) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(path, argv, envp) },
        None => no_function(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as in `execve`.
    before_exec(unsafe { c_bytes(path) });
    match real_fn!(
        Real::Execv,
        unsafe extern "C" fn(*const c_char, Argv) -> c_int
    ) {
        // SAFETY: as in `execve`.
        Some(f) => unsafe { f(path, argv) },
        None => no_function(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    // SAFETY: as in `execve`.
    before_exec(unsafe { c_bytes(file) });
    match real_fn!(
        Real::Execvp,
        unsafe extern "C" fn(*const c_char, Argv) -> c_int
    ) {
        // SAFETY: as in `execve`.
        Some(f) => unsafe { f(file, argv) },
        None => no_function(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    // SAFETY: as in `execve`.
    before_exec(unsafe { c_bytes(file) });
    match real_fn!(
        Real::Execvpe,
        unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int
    ) {
        // SAFETY: as in `execve`.
        Some(f) => unsafe { f(file, argv, envp) },
        None => no_function(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: Argv,
    envp: Argv,
    flags: c_int,
) -> c_int {
    // SAFETY: as in `execve`.
    before_exec(unsafe { c_bytes(path) });
    type Execveat = unsafe extern "C" fn(c_int, *const c_char, Argv, Argv, c_int) -> c_int;
    match real_fn!(Real::Execveat, Execveat) {
        // SAFETY: as in `execve`.
        Some(f) => unsafe { f(dirfd, path, argv, envp, flags) },
        None => no_function(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int {
    // No path: the program is named by its first argument, as `ps` would show it.
    // SAFETY: exec's contract: `argv` is a null-terminated array of strings.
    before_exec(unsafe {
        if argv.is_null() {
            b""
        } else {
            c_bytes(*argv)
        }
    });
    match real_fn!(
        Real::Fexecve,
        unsafe extern "C" fn(c_int, Argv, Argv) -> c_int
    ) {
        // SAFETY: as in `execve`.
        Some(f) => unsafe { f(fd, argv, envp) },
        None => no_function(),
    }
}

/// Exports `$name` as a jump to the C function `$body` (`c/exec_variadic.c`): the variadic
/// arguments stay where the caller put them (registers and stack untouched).
macro_rules! variadic_export {
    ($name:ident => $body:ident) => {
        extern "C" {
            fn $body();
        }
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {}", sym $body);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {}", sym $body);
        }
    };
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod variadic {
    variadic_export!(execl => tidemark_execl);
    variadic_export!(execlp => tidemark_execlp);
    variadic_export!(execle => tidemark_execle);
}
