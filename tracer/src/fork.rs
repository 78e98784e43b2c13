//! `fork` from a traced, threaded program: the child must not inherit a tracer lock held by a
//! thread that does not exist in it (its first allocation would spin forever on the stack
//! interner or a trace-table shard).
//!
//! `pthread_atfork` handlers, registered when the first stack is interned: `prepare` takes
//! every trace-table shard and then the interner, parent and child release them. Handlers run
//! in reverse order of registration and the allocator registers its own earlier, so the
//! tracer's locks are taken before the allocator's: a thread holding a tracer lock never waits
//! for an allocator lock (the tracer's tables live in mmap'd memory), so nothing can hold one
//! while waiting for the other. The capture writer's state has its own handler
//! (`capture::forget_after_fork`).

use core::sync::atomic::{AtomicBool, Ordering};

static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the handlers once. Call without holding any tracer lock (`pthread_atfork` may
/// allocate).
#[inline]
pub(crate) fn ensure_handlers() {
    if !REGISTERED.load(Ordering::Relaxed) {
        register();
    }
}

#[cold]
fn register() {
    if REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the handlers are extern "C" fns that live as long as the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}

extern "C" fn prepare() {
    crate::table::fork_prepare();
    crate::stack::fork_prepare();
}

extern "C" fn release() {
    crate::stack::fork_release();
    crate::table::fork_release();
}
