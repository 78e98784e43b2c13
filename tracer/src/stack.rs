//! The stack table: every captured stack is stored once, as a path in a trie.
//!
//! A node is `(ip, parent)`: the return address of one frame and the node of the frame that
//! called it. Node 0 is the root (the empty stack). Interning a stack (ips most recent first)
//! walks from the root through the outermost frame down to the most recent one and returns
//! the leaf, so a stack id is one `u32` and common prefixes (`main`, thread start) are shared.
//!
//! Why a trie: a capture writer can stream nodes `[last_count, count)` as they appear and a
//! reader rebuilds any stack from them; ids are dense and nodes never change once written.
//!
//! Speed: the hot path is a lock-free lookup in a small two-way cache keyed by 96 bits of hash
//! of the whole ip array (two different stacks would have to agree on all of them to be
//! confused). Only a miss takes the lock and steps down the trie, creating nodes as needed.
//! Everything lives in mmap'd memory (see `sysmem`), never the traced allocator.
//!
//! Finding a node's child: the first `LIST_MAX` children of a node are a linked list (the
//! node's `first child`, each child's `next_sibling`); only children beyond those go into a
//! hash map keyed by (parent, ip). Most nodes have one to three children, so most lookups read
//! a node or two near the parent instead of probing a map as big as the trie, and a trie of
//! millions of distinct paths (recursion: every path to a leaf of a tree is its own stack)
//! costs 20 bytes a node instead of 16 plus ~40 of map.

use crate::sysmem::{map_zeroed, unmap};
use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use tidemark_alloc::sync::SpinLock;

/// Id of a node of the stack trie; 0 is the root, the empty stack.
pub type StackId = u32;

#[derive(Clone, Copy)]
#[repr(C)]
struct Node {
    ip: u64,
    parent: StackId,
    /// The next child of `parent` in its child list (0 = last). Set before the node is
    /// published and never changed, so lock-free readers may copy whole nodes.
    next_sibling: StackId,
}

/// Children of a node kept in its list; further ones go to the child map.
const LIST_MAX: usize = 8;

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1 << 14; // 2^30 nodes
const CHUNK_BYTES: usize = CHUNK_LEN * core::mem::size_of::<Node>();

/// Node storage: chunks that never move once mapped, so readers need no lock.
static CHUNKS: [AtomicPtr<Node>; MAX_CHUNKS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS];
/// Each node's first child (0 = none), in chunks parallel to `CHUNKS`; read and written only
/// under the interner lock (kept apart from the nodes because it changes after publication).
static FIRST_CHILD: [AtomicPtr<StackId>; MAX_CHUNKS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS];
const FIRST_CHUNK_BYTES: usize = CHUNK_LEN * core::mem::size_of::<StackId>();
/// Number of nodes published (the root counts). Release after a node is written.
static COUNT: AtomicU32 = AtomicU32::new(1);

/// One cache entry: `key` = first hash (0 = empty), `check_leaf` = low 32 bits of the second
/// hash << 32 | leaf id. Written only under the interner lock, seqlock-style (key cleared, the
/// rest written, key set), so a reader that sees the same key before and after its read of
/// `check_leaf` read a consistent entry.
#[repr(C, align(16))]
struct CacheEntry {
    key: AtomicU64,
    check_leaf: AtomicU64,
}

const CACHE_LEN: usize = 1 << 16;
const CACHE_BYTES: usize = CACHE_LEN * core::mem::size_of::<CacheEntry>();
/// Two-way set-associative cache from stack hash to leaf id.
static CACHE: AtomicPtr<CacheEntry> = AtomicPtr::new(core::ptr::null_mut());

/// The child map, (parent, ip) → child, for children beyond a node's list; touched only under
/// the lock.
struct ChildMap {
    slots: *mut ChildSlot,
    cap: usize,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct ChildSlot {
    ip: u64,
    parent: StackId,
    child: StackId, // 0 = empty slot (the root is nobody's child)
}

// SAFETY: the map owns its mapping and is only reached through the SpinLock.
unsafe impl Send for ChildMap {}

static INTERNER: SpinLock<ChildMap> = SpinLock::new(ChildMap {
    slots: core::ptr::null_mut(),
    cap: 0,
    len: 0,
});

#[inline]
fn mix(h: u64) -> u64 {
    let h = (h ^ (h >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Two 64-bit hashes of a stack. Four independent lanes keep the multiply chains short (the
/// hash costs about a cycle per ip instead of a multiply latency); the two results mix the lanes
/// differently, so the cache below keys on 96 bits and needs no walk of the trie to trust a hit.
#[inline]
fn hash_ips(ips: &[u64]) -> (u64, u64) {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut l = [
        0x243F_6A88_85A3_08D3 ^ ips.len() as u64,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut chunks = ips.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            l[i] = (l[i] ^ c[i]).wrapping_mul(M).rotate_left(29);
        }
    }
    for (i, &ip) in chunks.remainder().iter().enumerate() {
        l[i] = (l[i] ^ ip).wrapping_mul(M).rotate_left(29);
    }
    let h1 = mix(l[0] ^ l[1].rotate_left(17) ^ l[2].rotate_left(31) ^ l[3].rotate_left(47));
    let h2 = mix(l[0].wrapping_add(l[1].wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        ^ l[2].wrapping_mul(0x1656_67B1_9E37_79F9)
        ^ l[3].rotate_left(7));
    (h1 | 1, h2) // h1 is never 0: 0 marks an empty cache entry
}

#[inline]
fn node_ptr(id: StackId) -> *const Node {
    let chunk = CHUNKS[(id >> CHUNK_BITS) as usize & (MAX_CHUNKS - 1)].load(Ordering::Acquire);
    if chunk.is_null() {
        return core::ptr::null();
    }
    // SAFETY: the index is masked to the chunk length.
    unsafe { chunk.add(id as usize & (CHUNK_LEN - 1)) }
}

/// Node `id` as `(ip, parent)`. The root and ids not (yet) published read as `(0, 0)`.
pub fn stack_node(id: StackId) -> (u64, StackId) {
    if id == 0 || id >= COUNT.load(Ordering::Acquire) {
        return (0, 0);
    }
    let p = node_ptr(id);
    if p.is_null() {
        return (0, 0);
    }
    // SAFETY: id < COUNT, so the node was written before COUNT was released past it.
    let n = unsafe { p.read() };
    (n.ip, n.parent)
}

/// Number of nodes so far (ids `0..count` are valid). A writer can emit nodes
/// `[last_count, count)` incrementally: nodes never change once counted.
pub fn stack_node_count() -> u32 {
    COUNT.load(Ordering::Acquire)
}

/// Writes the ips of stack `id`, most recent first, into `out`; returns how many were written.
pub fn read_stack(id: StackId, out: &mut [u64]) -> usize {
    let mut n = 0;
    let mut node = id;
    while node != 0 && n < out.len() {
        let (ip, parent) = stack_node(node);
        out[n] = ip;
        n += 1;
        if parent >= node {
            break; // parents are always older, so this cannot happen; refuse to loop
        }
        node = parent;
    }
    n
}

/// The ips of stack `id`, most recent first.
pub fn stack_ips(id: StackId) -> Vec<u64> {
    let mut v = Vec::new();
    let mut node = id;
    while node != 0 {
        let (ip, parent) = stack_node(node);
        v.push(ip);
        if parent >= node {
            break;
        }
        node = parent;
    }
    v
}

/// Number of frames in stack `id`.
pub fn stack_depth(id: StackId) -> usize {
    let mut n = 0;
    let mut node = id;
    while node != 0 {
        n += 1;
        let parent = stack_node(node).1;
        if parent >= node {
            break;
        }
        node = parent;
    }
    n
}

fn cache() -> *const CacheEntry {
    let c = CACHE.load(Ordering::Acquire);
    if !c.is_null() {
        return c;
    }
    let fresh = map_zeroed(CACHE_BYTES) as *mut CacheEntry;
    if fresh.is_null() {
        return core::ptr::null();
    }
    match CACHE.compare_exchange(
        core::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(winner) => {
            // SAFETY: `fresh` is our own mapping that nobody else saw.
            unsafe { unmap(fresh as *mut u8, CACHE_BYTES) };
            winner
        }
    }
}

/// Interns a stack (ips most recent first) and returns its leaf node id. Never allocates
/// through the global allocator and never panics; if the table cannot grow (out of memory)
/// the longest prefix (outermost frames) already stored is returned.
pub fn intern(ips: &[u64]) -> StackId {
    if ips.is_empty() {
        return 0;
    }
    let (h1, h2) = hash_ips(ips);
    let check = h2 << 32;
    let c = cache();
    let slot = (h1 >> 7) as usize & (CACHE_LEN - 1);
    if !c.is_null() {
        for s in [slot, slot ^ 1] {
            // SAFETY: s < CACHE_LEN and the cache mapping is never unmapped.
            let e = unsafe { &*c.add(s) };
            if e.key.load(Ordering::Acquire) == h1 {
                let cl = e.check_leaf.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if cl & 0xFFFF_FFFF_0000_0000 == check
                    && cl as u32 != 0
                    && e.key.load(Ordering::Relaxed) == h1
                {
                    return cl as u32;
                }
            }
        }
    }
    crate::fork::ensure_handlers();
    INTERNER.with(|map| {
        let leaf = map.insert_path(ips);
        if !c.is_null() && leaf != 0 {
            // SAFETY: as above; writers are serialized by the interner lock. Prefer an empty
            // way of the pair so two hot stacks can share it.
            unsafe {
                let a = &*c.add(slot);
                let b = &*c.add(slot ^ 1);
                let e = if a.key.load(Ordering::Relaxed) != 0 && b.key.load(Ordering::Relaxed) == 0
                {
                    b
                } else {
                    a
                };
                e.key.store(0, Ordering::Relaxed);
                fence(Ordering::Release);
                e.check_leaf.store(check | leaf as u64, Ordering::Relaxed);
                e.key.store(h1, Ordering::Release);
            }
        }
        leaf
    })
}

/// The child of node `parent` for return address `ip` (made if missing): one step down the
/// trie, for callers that know a stack's prefix already (through [`ChildCache`]).
/// None when out of memory.
fn child_of(parent: StackId, ip: u64) -> Option<StackId> {
    crate::fork::ensure_handlers();
    INTERNER.with(|map| map.child(parent, ip))
}

/// A per-thread `(parent, ip) → child` cache in front of [`child_of`], which takes the
/// interner's lock: a memo naming a stack by trie steps takes the same few steps again and
/// again. `N` entries (a power of two), direct-mapped; all-zero bytes are an empty cache.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ChildCache<const N: usize> {
    entries: [ChildEntry; N],
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ChildEntry {
    ip: u64,
    parent: StackId,
    child: StackId, // 0 = empty
}

impl<const N: usize> ChildCache<N> {
    pub const fn new() -> Self {
        assert!(N.is_power_of_two());
        ChildCache {
            entries: [ChildEntry {
                ip: 0,
                parent: 0,
                child: 0,
            }; N],
        }
    }

    /// `child_of(parent, ip)`, from the cache when it holds that step.
    #[inline]
    pub fn child(&mut self, parent: StackId, ip: u64) -> Option<StackId> {
        let h = (ip ^ ((parent as u64) << 32 | parent as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let e = &mut self.entries[(h >> 40) as usize & (N - 1)];
        if e.child != 0 && e.ip == ip && e.parent == parent {
            return Some(e.child);
        }
        let child = child_of(parent, ip)?;
        *e = ChildEntry { ip, parent, child };
        Some(child)
    }
}

impl<const N: usize> Default for ChildCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds the interner lock across `fork` (see fork.rs).
pub(crate) fn fork_prepare() {
    // SAFETY: released by `fork_release` in the parent and in the child.
    unsafe { INTERNER.force_lock() }
}

/// Releases the lock taken by `fork_prepare`.
pub(crate) fn fork_release() {
    // SAFETY: taken by `fork_prepare` before the fork, on this thread (or its copy).
    unsafe { INTERNER.force_unlock() }
}

impl ChildMap {
    fn insert_path(&mut self, ips: &[u64]) -> StackId {
        let mut parent: StackId = 0;
        for &ip in ips.iter().rev() {
            match self.child(parent, ip) {
                Some(c) => parent = c,
                None => return parent,
            }
        }
        parent
    }

    /// The child of `parent` for `ip`, created if missing; None when out of memory.
    fn child(&mut self, parent: StackId, ip: u64) -> Option<StackId> {
        let first = first_child_slot(parent)?;
        let mut c = *first;
        let mut listed = 0;
        while c != 0 {
            // SAFETY: children are published nodes (written before they were linked).
            let n = unsafe { node_ptr(c).read() };
            if n.ip == ip {
                return Some(c);
            }
            c = n.next_sibling;
            listed += 1;
        }
        if listed < LIST_MAX {
            let id = new_node(ip, parent, *first)?;
            *first = id;
            return Some(id);
        }
        self.child_in_map(parent, ip)
    }

    /// The child beyond the list, from the map (made if missing).
    fn child_in_map(&mut self, parent: StackId, ip: u64) -> Option<StackId> {
        if (self.len + 1) * 4 > self.cap * 3 && !self.grow() && self.len + 1 >= self.cap {
            return None;
        }
        let mask = self.cap - 1;
        let mut i = mix(ip ^ ((parent as u64) << 40) ^ parent as u64) as usize & mask;
        loop {
            // SAFETY: i is masked to cap, the mapping holds cap slots.
            let s = unsafe { &mut *self.slots.add(i) };
            if s.child == 0 {
                let id = new_node(ip, parent, 0)?;
                *s = ChildSlot {
                    ip,
                    parent,
                    child: id,
                };
                self.len += 1;
                return Some(id);
            }
            if s.ip == ip && s.parent == parent {
                return Some(s.child);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 { 1024 } else { self.cap * 2 };
        let bytes = new_cap * core::mem::size_of::<ChildSlot>();
        let slots = map_zeroed(bytes) as *mut ChildSlot;
        if slots.is_null() {
            return false;
        }
        let mask = new_cap - 1;
        for j in 0..self.cap {
            // SAFETY: j < cap of the old mapping.
            let s = unsafe { *self.slots.add(j) };
            if s.child == 0 {
                continue;
            }
            let mut i = mix(s.ip ^ ((s.parent as u64) << 40) ^ s.parent as u64) as usize & mask;
            // SAFETY: i is masked to new_cap; the new table has free slots (load < 3/8).
            unsafe {
                while (*slots.add(i)).child != 0 {
                    i = (i + 1) & mask;
                }
                *slots.add(i) = s;
            }
        }
        // SAFETY: the old mapping is ours and no longer referenced.
        unsafe {
            unmap(
                self.slots as *mut u8,
                self.cap * core::mem::size_of::<ChildSlot>(),
            )
        };
        self.slots = slots;
        self.cap = new_cap;
        true
    }
}

/// The first-child word of node `id` (under the interner lock), its chunk mapped if needed;
/// None when out of memory.
fn first_child_slot(id: StackId) -> Option<&'static mut StackId> {
    let slot = &FIRST_CHILD[(id >> CHUNK_BITS) as usize & (MAX_CHUNKS - 1)];
    let mut chunk = slot.load(Ordering::Relaxed);
    if chunk.is_null() {
        chunk = map_zeroed(FIRST_CHUNK_BYTES) as *mut StackId;
        if chunk.is_null() {
            return None;
        }
        slot.store(chunk, Ordering::Relaxed);
    }
    // SAFETY: the index is masked to the chunk; only the interner lock holder (our caller)
    // touches first-child words, and the chunk is never unmapped.
    Some(unsafe { &mut *chunk.add(id as usize & (CHUNK_LEN - 1)) })
}

/// Appends a node (under the interner lock) and publishes it.
fn new_node(ip: u64, parent: StackId, next_sibling: StackId) -> Option<StackId> {
    let id = COUNT.load(Ordering::Relaxed);
    if id as usize >= CHUNK_LEN * MAX_CHUNKS {
        return None;
    }
    let chunk_slot = &CHUNKS[(id >> CHUNK_BITS) as usize];
    let mut chunk = chunk_slot.load(Ordering::Acquire);
    if chunk.is_null() {
        chunk = map_zeroed(CHUNK_BYTES) as *mut Node;
        if chunk.is_null() {
            return None;
        }
        chunk_slot.store(chunk, Ordering::Release);
    }
    // SAFETY: index masked to the chunk; only the lock holder writes unpublished nodes.
    unsafe {
        chunk.add(id as usize & (CHUNK_LEN - 1)).write(Node {
            ip,
            parent,
            next_sibling,
        })
    };
    COUNT.store(id + 1, Ordering::Release);
    Some(id)
}

/// Bytes of the stack table: nodes in use (with their first-child words), the child map and
/// the cache.
pub fn table_bytes() -> usize {
    let nodes = COUNT.load(Ordering::Relaxed) as usize
        * (core::mem::size_of::<Node>() + core::mem::size_of::<StackId>());
    let map = INTERNER.with(|m| m.cap * core::mem::size_of::<ChildSlot>());
    let cache = if CACHE.load(Ordering::Relaxed).is_null() {
        0
    } else {
        CACHE_BYTES
    };
    nodes + map + cache
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_prefixes_and_round_trips() {
        let a = [0x30u64, 0x20, 0x10];
        let b = [0x31u64, 0x20, 0x10];
        let ia = intern(&a);
        let ib = intern(&b);
        assert_ne!(ia, ib);
        assert_eq!(intern(&a), ia);
        assert_eq!(stack_ips(ia), a);
        assert_eq!(stack_ips(ib), b);
        assert_eq!(
            stack_node(ia).1,
            stack_node(ib).1,
            "common caller node is shared"
        );
        assert_eq!(stack_depth(ia), 3);
        let mut out = [0u64; 2];
        assert_eq!(read_stack(ia, &mut out), 2);
        assert_eq!(out, [0x30, 0x20]);
        assert_eq!(intern(&[]), 0);
        assert!(stack_node_count() > ia.max(ib));
    }

    #[test]
    fn many_threads_intern_the_same_stacks() {
        let ids: Vec<Vec<StackId>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..2000u64)
                            .map(|i| intern(&[0x1000 + i % 97, 0x900 + i % 13, 7]))
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for v in &ids[1..] {
            assert_eq!(v, &ids[0]);
        }
        for (i, &id) in ids[0].iter().enumerate() {
            let i = i as u64;
            assert_eq!(stack_ips(id), [0x1000 + i % 97, 0x900 + i % 13, 7]);
        }
    }
}
