//! `dlclose`: before a library is unloaded, the recording notes the modules loaded, so that
//! frames in it are still named in the reports. The capture's module lists are otherwise
//! written at the start, at a tick that finds the set changed, and at the end: a library
//! loaded and unloaded between two ticks was in none of them, and its frames showed as raw
//! addresses, or were named after the library the loader mapped at its addresses next.

use crate::trace;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// glibc's `dlclose`, looked up on first use.
static REAL: AtomicUsize = AtomicUsize::new(0);

type Dlclose = unsafe extern "C" fn(*mut c_void) -> c_int;

#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    if trace::on() && crate::lifecycle::recording_here() {
        trace::quietly(tidemark_tracer::capture::note_modules_before_unload);
    }
    let mut real = REAL.load(Ordering::Relaxed);
    if real == 0 {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other preconditions.
        real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlclose".as_ptr()) } as usize;
        REAL.store(real, Ordering::Relaxed);
    }
    if real == 0 {
        // No dlclose behind this library: nothing was dlopen'd through one either.
        return -1;
    }
    // SAFETY: `real` is glibc's dlclose, whose C signature `Dlclose` repeats; the handle is
    // the caller's, passed on as is.
    unsafe { core::mem::transmute::<usize, Dlclose>(real)(handle) }
}
