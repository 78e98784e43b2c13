//! [`ExitKey`]: run a function with a thread's value when that thread exits, without
//! allocating.
//!
//! Rust's thread-local destructors run before the thread is done allocating (other
//! destructors, glibc's own exit work), and registering one may allocate. A pthread key
//! destructor runs after them, and for the first 32 keys glibc keeps the values in the
//! thread descriptor, so neither creating the key nor setting a value allocates. The
//! allocator's heaps, the debug hooks' thread state, the capture's per-thread buffers and
//! the preload's unwinder state are all handed back through one of these.

use core::sync::atomic::{AtomicU32, Ordering};

/// A lazily created pthread key with a destructor.
pub struct ExitKey {
    /// The key, or `NONE` before the first `set` (pthread keys are small numbers).
    key: AtomicU32,
    destructor: unsafe extern "C" fn(*mut libc::c_void),
}

const NONE: u32 = u32::MAX;

impl ExitKey {
    /// A key whose `destructor` gets each exiting thread's non-null value.
    pub const fn new(destructor: unsafe extern "C" fn(*mut libc::c_void)) -> ExitKey {
        ExitKey {
            key: AtomicU32::new(NONE),
            destructor,
        }
    }

    /// Makes `value` the calling thread's: the destructor gets it when the thread exits.
    /// False if no key could be created (the process ran out of pthread keys); then nothing
    /// runs at exit.
    ///
    /// # Safety
    /// `value` must be what the destructor accepts, until the thread exits or sets another.
    pub unsafe fn set(&self, value: *const libc::c_void) -> bool {
        let Some(key) = self.key() else {
            return false;
        };
        // SAFETY: a key of ours, created by `key`; setspecific for the first keys stores into
        // the thread descriptor without allocating.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) == 0 }
    }

    /// Creates the key if it does not exist yet; false if it cannot be.
    pub fn ready(&self) -> bool {
        self.key().is_some()
    }

    fn key(&self) -> Option<u32> {
        let k = self.key.load(Ordering::Acquire);
        if k != NONE {
            return Some(k);
        }
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out pointer and the destructor an extern "C" fn that lives
        // for the whole run.
        if unsafe { libc::pthread_key_create(&mut key, Some(self.destructor)) } != 0 {
            return None;
        }
        let key = key as u32;
        match self
            .key
            .compare_exchange(NONE, key, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(key),
            Err(existing) => {
                // Another thread created one first: ours was never used.
                // SAFETY: `key` was created above and holds no values.
                unsafe { libc::pthread_key_delete(key as libc::pthread_key_t) };
                Some(existing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn add(value: *mut libc::c_void) {
        SEEN.fetch_add(value as usize, Ordering::SeqCst);
    }

    #[test]
    fn each_exiting_thread_hands_its_value_to_the_destructor() {
        static KEY: ExitKey = ExitKey::new(add);
        let threads: Vec<_> = (1..=4usize)
            .map(|i| {
                // SAFETY: `add` takes any value.
                std::thread::spawn(move || assert!(unsafe { KEY.set(i as *const libc::c_void) }))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(SEEN.load(Ordering::SeqCst), 1 + 2 + 3 + 4);
    }
}
