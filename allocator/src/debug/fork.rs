//! `fork` and the debug layer's locks.
//!
//! A thread may hold a debug lock at the moment another thread forks: the quarantine's lock
//! (a ring push, or copying an eviction batch out), the registry's release lock (unregistering
//! a batch, or `check_heap` walking the table) or the lock of the thread states (a thread's
//! first call). The child gets a copy of the lock, held by a thread it does not have, and
//! would hang at its first free. So, as glibc does for its arenas and `thread.rs` for the
//! allocator's locks, a `pthread_atfork` prepare handler takes every debug lock before the
//! fork and the parent and child handlers release them: no other thread is inside a critical
//! section when the address space is copied, and the copies are consistent.
//!
//! The handlers are the allocator's own (`thread.rs` calls [`fork_prepare`] and
//! [`fork_release`]), registered once per process by whichever comes first, the debug layer
//! or pymalloc, so that every lock is taken in one fixed order:
//!
//! 1. the quarantine lock ([`quarantine::fork_prepare`]), never held with another lock;
//! 2. the registry's release lock ([`live::RELEASE`]), under which `release_blocks` may adopt
//!    a thread state, taking
//! 3. the thread states' lock ([`local::fork_prepare`]);
//! 4. then the allocator's locks (its heap registry, then the arenas).
//!
//! Debug locks come before the inner allocator's because the debug layer is the caller: were
//! it ever to call the inner allocator with one of its locks held, the allocator's lock would
//! nest inside the debug lock, and only this order could not deadlock against it. Today it
//! never does (every lock above guards a few list or ring operations on memory of its own:
//! the inner allocator is called after the lock is dropped), and the allocator never calls
//! the debug layer, so no allocator lock is ever held while a debug lock is wanted.
//!
//! The handlers allocate nothing and only take and drop locks.

use super::{live, local, quarantine};

/// Takes every debug lock, in the order above (the `pthread_atfork` prepare step).
///
/// # Safety
/// Must be followed by [`fork_release`] on this thread, in the parent and in the child.
pub unsafe fn fork_prepare() {
    // SAFETY: each lock is released by `fork_release` in both processes (caller's promise).
    unsafe {
        quarantine::fork_prepare();
        live::RELEASE.force_lock();
        local::fork_prepare();
    }
}

/// Releases what [`fork_prepare`] took, in reverse order.
///
/// # Safety
/// [`fork_prepare`] ran on this thread before the fork.
pub unsafe fn fork_release() {
    // SAFETY: every lock was taken by `fork_prepare` (caller's promise).
    unsafe {
        local::fork_release();
        live::RELEASE.force_unlock();
        quarantine::fork_release();
    }
}
