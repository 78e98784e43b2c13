//! A lock that never allocates, for the allocator's slow paths.
//!
//! `std::sync::Mutex` is futex based on Linux and does not allocate either, but its poisoning
//! needs unwinding support we never want on an allocation path. This one spins briefly and then
//! yields the CPU: every critical section it guards is a handful of list operations, so the
//! holder is almost always running.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A spin-then-yield mutual exclusion lock around `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no thread-affine state inside.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the value locked. `f` must not allocate through a path that takes this
    /// same lock (the lock is not re-entrant).
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.acquire();
        // SAFETY: `acquire` gave this thread exclusive access until `release`.
        let result = f(unsafe { &mut *self.value.get() });
        self.release();
        result
    }

    /// Runs `f` with the value locked if the lock is free now; None (without running `f`)
    /// if another holder has it. For callers that must not wait on a holder that may be
    /// their own thread (a signal handler).
    #[inline]
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: the exchange gave this thread exclusive access until `release`.
        let result = f(unsafe { &mut *self.value.get() });
        self.release();
        Some(result)
    }

    /// Takes the lock without a scope, for `pthread_atfork` handlers that lock before `fork`
    /// and unlock after it in both processes.
    ///
    /// # Safety
    /// Must be paired with `force_unlock` on the same thread (or in the forked child).
    pub unsafe fn force_lock(&self) {
        self.acquire();
    }

    /// Releases a lock taken with `force_lock`.
    ///
    /// # Safety
    /// The lock must be held through `force_lock` by this thread (or its pre-fork parent).
    pub unsafe fn force_unlock(&self) {
        self.release();
    }

    #[inline]
    fn acquire(&self) {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.acquire_contended();
        }
    }

    #[cold]
    fn acquire_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    core::hint::spin_loop();
                    spins += 1;
                } else {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    #[inline]
    fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::SpinLock;

    #[test]
    fn try_with_runs_only_when_the_lock_is_free() {
        let lock = SpinLock::new(1);
        assert_eq!(lock.try_with(|v| *v + 1), Some(2));
        lock.with(|_| {
            // Held (by this thread, as a signal handler would find it): no run, no wait.
            assert_eq!(lock.try_with(|v| *v + 1), None);
        });
        assert_eq!(lock.try_with(|v| *v + 1), Some(2), "released again");
    }
}
