//! The calling thread's hook state, reached with one thread-local access per hooked call.
//!
//! The hook used to reach five thread-locals per allocation (its flags, the rule cache, the
//! memo, the stack bounds, the fork epoch). Here they sit behind one: a `Copy`-only,
//! zero-initialized slot without a destructor, in the initial-exec TLS model
//! (`tidemark_alloc::tls`: two instructions, where a `thread_local!` in a cdylib calls
//! `__tls_get_addr`). Its address is taken once per call and passed down. The unwinder's
//! heap state (tens of KiB) hangs off it as one pointer and is freed by a pthread key
//! destructor, so the slot itself needs none.

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
    /// The same state once the express lane is open for this thread (`unwind/dwarf.rs`),
    /// else null: the lane's whole entry check is one load and test.
    pub express: Cell<*mut crate::unwind::ThreadUnwind>,
}

tidemark_alloc::initial_exec_tls!(fn slot_cell() -> ThreadSlot, "tidemark_preload_thread_slot");

/// The calling thread's slot.
#[inline(always)]
pub fn slot() -> &'static ThreadSlot {
    // SAFETY: all-zero bytes are a valid `ThreadSlot` (no flags, no epoch, no unwinder
    // state), which has no destructor, so the cell is neither torn down nor reused while the
    // thread runs; the reference is used on this thread only (it is not `Send`: the `Cell`s
    // are not `Sync`).
    unsafe { &*slot_cell() }
}

/// The marker (never a real state) left in `ThreadSlot::unwind` once the thread exited.
pub fn released<T>() -> *mut T {
    core::ptr::dangling_mut()
}
