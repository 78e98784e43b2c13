//! The registry of every debug block that the inner allocator still holds: live blocks and
//! blocks waiting in a quarantine. `check_heap` walks it.
//!
//! It is intrusive (the links are the `next`/`prev` fields of each block's header), so
//! registering a block never allocates. One list would make every allocation of every thread
//! meet on one lock, so the registry is split into shards chosen by a hash of the header
//! address; a block always goes back to the shard it came from because its address does not
//! change.

use super::layout::Header;
use crate::sync::SpinLock;
use core::ptr::null_mut;

const SHARDS: usize = 64;

/// The head of one shard's doubly linked list.
struct List {
    head: *mut Header,
    len: usize,
}

// SAFETY: the list is only touched under its shard's lock; the headers it points to belong to
// the debug layer until they are unregistered.
unsafe impl Send for List {}

/// Padded so two shards never share a cache line.
#[repr(align(64))]
struct Shard(SpinLock<List>);

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Shard = Shard(SpinLock::new(List {
    head: null_mut(),
    len: 0,
}));
static REGISTRY: [Shard; SHARDS] = [EMPTY; SHARDS];

#[inline]
fn shard_of(h: *mut Header) -> &'static Shard {
    // Fibonacci hashing of the 16-byte granule number.
    let x = ((h as usize) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    &REGISTRY[(x >> 58) & (SHARDS - 1)]
}

/// Adds a freshly initialized block.
///
/// # Safety
/// `h` is a valid header not yet registered.
#[inline]
pub unsafe fn insert(h: *mut Header) {
    shard_of(h).0.with(|list| {
        // SAFETY: `h` and the current head are valid headers; the lock serializes all link
        // updates in this shard.
        unsafe {
            (*h).prev = null_mut();
            (*h).next = list.head;
            if !list.head.is_null() {
                (*list.head).prev = h;
            }
        }
        list.head = h;
        list.len += 1;
    });
}

/// Removes a block before its memory goes back to the inner allocator.
///
/// # Safety
/// `h` is a registered header.
#[inline]
pub unsafe fn remove(h: *mut Header) {
    shard_of(h).0.with(|list| {
        // SAFETY: `h` and its neighbours are registered headers in this shard, protected by
        // the shard lock.
        unsafe {
            let (prev, next) = ((*h).prev, (*h).next);
            if prev.is_null() {
                list.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*h).next = null_mut();
            (*h).prev = null_mut();
        }
        list.len -= 1;
    });
}

/// Calls `visit` on every registered header, one shard at a time with that shard locked,
/// until `visit` returns `Some`. `visit` must not allocate through the debug layer (the
/// shard lock is held) and must not unregister blocks.
pub fn find_map<T>(mut visit: impl FnMut(*mut Header) -> Option<T>) -> Option<T> {
    for shard in REGISTRY.iter() {
        let found = shard.0.with(|list| {
            let mut h = list.head;
            while !h.is_null() {
                if let Some(t) = visit(h) {
                    return Some(t);
                }
                // SAFETY: `h` is registered in this locked shard.
                h = unsafe { (*h).next };
            }
            None
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The number of registered blocks (live and quarantined).
pub fn count() -> usize {
    REGISTRY.iter().map(|s| s.0.with(|l| l.len)).sum()
}
