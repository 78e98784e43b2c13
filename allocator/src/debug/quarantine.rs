//! The quarantine: freed blocks wait here, filled with DEADBYTE, before the inner allocator
//! gets them back, so that a write through a dangling pointer lands in memory nobody else
//! owns and is seen when the block leaves (or by `check_heap`).
//!
//! It is a FIFO bounded by bytes (the inner allocations' sizes), linked through the `qnext`
//! field of each block's header, so it never allocates. The lock is held only for the list
//! operations: the blocks to release are unlinked as one chain, and verified and returned to
//! the inner allocator after the lock is dropped.

use super::layout::Header;
use core::ptr::null_mut;

/// Default bound: 4 MiB of freed blocks.
pub const DEFAULT_LIMIT: usize = 4 << 20;

/// The FIFO itself (callers wrap it in a `SpinLock`).
pub struct Quarantine {
    head: *mut Header,
    tail: *mut Header,
    bytes: usize,
    len: usize,
}

// SAFETY: the headers in the list belong to the quarantine until popped; the owner guards the
// struct with a lock.
unsafe impl Send for Quarantine {}

/// A chain of headers popped from the quarantine, oldest first, linked through `qnext`.
pub struct Chain(pub *mut Header);

impl Iterator for Chain {
    type Item = *mut Header;
    fn next(&mut self) -> Option<*mut Header> {
        let h = self.0;
        if h.is_null() {
            return None;
        }
        // SAFETY: every header in the chain was pushed as a valid freed block and is owned by
        // the chain now; reading `qnext` before handing `h` out keeps it valid after release.
        self.0 = unsafe { (*h).qnext };
        Some(h)
    }
}

impl Quarantine {
    pub const fn new() -> Self {
        Quarantine {
            head: null_mut(),
            tail: null_mut(),
            bytes: 0,
            len: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `h` (accounted as `bytes`), then unlinks the oldest blocks until at most
    /// `limit` bytes remain; returns them.
    ///
    /// # Safety
    /// `h` is a valid freed header not in any quarantine; `bytes_of` gives the size each block
    /// was pushed with.
    pub unsafe fn push(
        &mut self,
        h: *mut Header,
        bytes: usize,
        limit: usize,
        bytes_of: impl Fn(*mut Header) -> usize,
    ) -> Chain {
        // SAFETY: `h` is valid and exclusively ours; `tail` (if any) is a queued header.
        unsafe {
            (*h).qnext = null_mut();
            if self.tail.is_null() {
                self.head = h;
            } else {
                (*self.tail).qnext = h;
            }
        }
        self.tail = h;
        self.bytes += bytes;
        self.len += 1;
        self.pop_over(limit, bytes_of)
    }

    /// Unlinks the oldest blocks until at most `limit` bytes remain.
    pub fn pop_over(&mut self, limit: usize, bytes_of: impl Fn(*mut Header) -> usize) -> Chain {
        let first = self.head;
        let mut last: *mut Header = null_mut();
        while self.bytes > limit && !self.head.is_null() {
            let h = self.head;
            self.bytes -= bytes_of(h);
            self.len -= 1;
            last = h;
            // SAFETY: `h` is a queued header.
            self.head = unsafe { (*h).qnext };
        }
        if last.is_null() {
            return Chain(null_mut());
        }
        // SAFETY: `last` is the final popped header; cutting its link ends the chain.
        unsafe { (*last).qnext = null_mut() };
        if self.head.is_null() {
            self.tail = null_mut();
        }
        Chain(first)
    }

    /// Unlinks everything.
    pub fn take_all(&mut self) -> Chain {
        let first = self.head;
        *self = Quarantine::new();
        Chain(first)
    }
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(n: usize) -> Vec<Header> {
        (0..n)
            .map(|i| Header {
                next: null_mut(),
                prev: null_mut(),
                qnext: null_mut(),
                size: (i + 1) * 100,
                alloc_stack: 0,
                free_stack: 0,
                magic: 0,
                api: 0,
                status: 0,
                align_log2: 0,
                _reserved: 0,
            })
            .collect()
    }

    #[test]
    fn evicts_oldest_first_and_respects_the_bound() {
        let mut hs = headers(6);
        let ptrs: Vec<*mut Header> = hs.iter_mut().map(|h| h as *mut Header).collect();
        let size = |h: *mut Header| unsafe { (*h).size };
        let mut q = Quarantine::new();
        let mut evicted = Vec::new();
        for &h in &ptrs {
            // sizes 100, 200, ..., 600; limit 1000
            evicted.extend(unsafe { q.push(h, size(h), 1000, size) }.map(size));
            assert!(q.bytes() <= 1000);
        }
        // after 100..=400 (1000 bytes), pushing 500 evicts 100, 200, 300 (sum 1500 -> 900);
        // pushing 600 evicts 400 and 500 (1500 -> 600).
        assert_eq!(evicted, vec![100, 200, 300, 400, 500]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), 600);
        let rest: Vec<usize> = q.take_all().map(size).collect();
        assert_eq!(rest, vec![600]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn zero_limit_releases_at_once() {
        let mut hs = headers(2);
        let size = |h: *mut Header| unsafe { (*h).size };
        let mut q = Quarantine::new();
        let h0 = &mut hs[0] as *mut Header;
        let out: Vec<*mut Header> = unsafe { q.push(h0, 100, 0, size) }.collect();
        assert_eq!(out, vec![h0]);
        assert_eq!(q.len(), 0);
        assert_eq!(q.bytes(), 0);
    }
}
