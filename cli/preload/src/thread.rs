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
