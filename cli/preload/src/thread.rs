//! The calling thread's hook state, reached with one thread-local access per hooked call.
//!
//! In a cdylib every `thread_local!` access is a call to `__tls_get_addr` (the
//! general-dynamic TLS model; stable Rust cannot ask for initial-exec), and a thread-local
//! with a destructor adds a state check on top. The hook used to reach five of them per
//! allocation (its flags, the rule cache, the memo, the stack bounds, the fork epoch). Here
//! they sit behind one: a `Copy`-only, const-initialized slot without a destructor (a plain
//! `#[thread_local]` static underneath), whose address is taken once per call and passed
//! down. The unwinder's heap state (tens of KiB) hangs off it as one pointer and is freed by a
//! pthread key destructor, not a Rust thread-local destructor, so the slot itself stays
//! destructor-free.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

/// One thread's hook state. Only its own thread touches it.
pub struct ThreadSlot {
    /// The hook's flags (`trace.rs`: in the hook, checked, silent, gated, ...).
    pub flags: Cell<u8>,
    /// The fork (`FORK_EPOCH`) this thread stopped waiting for at the gate.
    pub gave_up_on: Cell<u64>,
    /// The unwinder's per-thread state (`unwind::ThreadUnwind`): null until the first capture,
    /// `released()` once the thread's key destructor freed it.
    pub unwind: Cell<*mut crate::unwind::ThreadUnwind>,
}

thread_local! {
    static SLOT: ThreadSlot = const {
        ThreadSlot {
            flags: Cell::new(0),
            gave_up_on: Cell::new(0),
            unwind: Cell::new(core::ptr::null_mut()),
        }
    };
}

/// The calling thread's slot.
#[inline(always)]
pub fn slot() -> &'static ThreadSlot {
    let p: *const ThreadSlot = SLOT.with(|s| s as *const ThreadSlot);
    // SAFETY: `ThreadSlot` has no destructor, so its thread-local storage is neither torn
    // down nor reused while the thread runs (`with` never fails for it); the reference is
    // used on this thread only (it is not `Send`: the `Cell`s are not `Sync`).
    unsafe { &*p }
}

/// The marker (never a real state) left in `ThreadSlot::unwind` once the thread exited.
pub fn released<T>() -> *mut T {
    core::ptr::dangling_mut()
}

/// Registers `state` to be freed by `free` when the calling thread exits (a pthread key
/// destructor: it runs after the thread's Rust thread-local destructors, and any allocation
/// those make still finds the state). If no key can be had, the state is never freed (a
/// leak per thread, not a fault).
pub fn free_at_exit(state: *mut libc::c_void, free: unsafe extern "C" fn(*mut libc::c_void)) {
    static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
    let mut k = KEY.load(Ordering::Acquire);
    if k == u32::MAX {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out pointer; `free` is an extern "C" fn for the whole run.
        if unsafe { libc::pthread_key_create(&mut key, Some(free)) } != 0 {
            return;
        }
        k = match KEY.compare_exchange(u32::MAX, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => key,
            Err(existing) => {
                // SAFETY: `key` was created above and never used.
                unsafe { libc::pthread_key_delete(key) };
                existing
            }
        };
    }
    // SAFETY: the key is valid; setspecific for the first keys stores into the thread
    // descriptor without allocating.
    unsafe { libc::pthread_setspecific(k, state) };
}
