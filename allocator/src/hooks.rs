//! The seam between the allocator and the tracer.
//!
//! The allocator never depends on the tracer (see DESIGN.md). Where a debug report wants the
//! traceback of a block's allocation or free, the tracer registers these hooks at start and the
//! debug layer calls them.

use core::sync::atomic::{AtomicPtr, Ordering};

/// Receives one line of a traceback (without the trailing newline).
pub type LineSink<'a> = &'a mut dyn FnMut(&str);

/// Callbacks a tracer supplies so that debug reports can show tracebacks.
pub struct TracebackHooks {
    /// Captures the calling thread's stack, interns it and returns its id; 0 means "none".
    /// Called on allocation paths: it must not allocate through the global allocator, must not
    /// panic and must not take a lock that an allocation may hold.
    pub capture: fn() -> u64,
    /// Writes the frames of stack `id`, most recent call first, one line per call of `line`
    /// (without the trailing newline). Called only on the fatal report path, with no allocator
    /// lock held; it may allocate (symbolization does).
    pub write: fn(id: u64, line: LineSink<'_>),
}

static HOOKS: AtomicPtr<TracebackHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the traceback hooks (the tracer calls this when it starts).
pub fn set_traceback_hooks(hooks: &'static TracebackHooks) {
    HOOKS.store(
        hooks as *const TracebackHooks as *mut TracebackHooks,
        Ordering::Release,
    );
}

/// Removes the traceback hooks (the tracer calls this when it stops).
pub fn clear_traceback_hooks() {
    HOOKS.store(core::ptr::null_mut(), Ordering::Release);
}

/// The installed hooks, if a tracer is tracing.
pub fn traceback_hooks() -> Option<&'static TracebackHooks> {
    // SAFETY: the pointer is either null or came from a `&'static TracebackHooks`.
    unsafe { HOOKS.load(Ordering::Acquire).as_ref() }
}
