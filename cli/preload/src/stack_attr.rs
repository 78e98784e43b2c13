//! `pthread_getattr_np`, wrapped so that a program asking for its own stack cannot deadlock
//! the recording.
//!
//! The stack walkers need the calling thread's stack bounds, which they look up once per
//! thread with glibc's `pthread_getattr_np` (`tidemark_tracer::thread_stack_bounds`). glibc's
//! takes the target thread's lock and allocates while it holds it: the initial thread's path
//! reads /proc/self/maps through `fopen` and `getline`, every path `realloc`s a CPU set. When a
//! program asks about itself before this thread's bounds are cached (Rust's std does, at
//! startup and in every thread it spawns), that allocation comes to our hook, the hook's stack
//! capture looks the bounds up, and glibc's lock, held by this very thread, never comes free.
//!
//! So the wrapper first looks the calling thread's bounds up itself, outside glibc's lock and
//! with this thread's allocations unrecorded, and only then calls glibc: the capture inside
//! finds the bounds cached. A lookup that comes from inside the hook (the walkers' own) goes
//! straight to glibc.

use crate::trace;
use core::ffi::c_int;
use core::sync::atomic::{AtomicUsize, Ordering};

type GetAttr = unsafe extern "C" fn(libc::pthread_t, *mut libc::pthread_attr_t) -> c_int;

/// glibc's `pthread_getattr_np` (0 until resolved).
static REAL: AtomicUsize = AtomicUsize::new(0);

/// Looks glibc's function up, from the library's constructor (the walkers' first lookup may
/// come from inside an allocation, where `dlsym`, which may allocate, is better not called).
pub fn resolve() {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other preconditions.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_getattr_np".as_ptr()) };
    REAL.store(f as usize, Ordering::Release);
}

fn real() -> Option<GetAttr> {
    let mut f = REAL.load(Ordering::Acquire);
    if f == 0 {
        // Another library's constructor asked before ours ran (nothing is recorded yet then).
        resolve();
        f = REAL.load(Ordering::Acquire);
    }
    // SAFETY: a non-zero `REAL` is glibc's `pthread_getattr_np`, whose C signature `GetAttr`
    // repeats.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, GetAttr>(f) })
}

/// # Safety
/// glibc's contract: `thread` is a live thread, `attr` points to a `pthread_attr_t` to fill.
#[no_mangle]
pub unsafe extern "C" fn pthread_getattr_np(
    thread: libc::pthread_t,
    attr: *mut libc::pthread_attr_t,
) -> c_int {
    trace::cache_stack_bounds();
    match real() {
        // SAFETY: forwarded contract.
        Some(f) => unsafe { f(thread, attr) },
        None => libc::ENOSYS,
    }
}
