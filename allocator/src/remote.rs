//! Cross-thread frees: a block freed by a thread that does not own its pool travels back to
//! the owning heap in batches.
//!
//! ```text
//!  freeing thread                                owning thread
//!  outbox[class] ──(64 blocks, or owner changes)──► inbox.stacks[class] ──(cache empty)──►
//!  (local list, one per class)     one CAS per batch   (lock-free stack of batches)    cache
//! ```
//!
//! Why batches, sorted by class, built by the *freeing* thread: when the owner took single
//! blocks off one shared stack, it had to walk every block to find its class — a chain of
//! dependent loads from memory the other core had just written, paid by the allocating thread
//! (on the xthread benchmark that walk was the owner's main cost). Now the freeing thread
//! links the blocks while they are still hot in its own cache and sorts them by class (it read
//! the pool header anyway to learn the owner); the owner splices a whole batch into an empty
//! class cache in O(1) and touches each block only when it hands it out. jemalloc's tcache
//! likewise holds remote frees in the freeing thread and returns them in bulk.
//!
//! A batch is a list linked through the blocks' first words; its first block's second word
//! holds the next batch on the stack and the batch length (high 16 bits: user-space pointers
//! fit in 48 bits). Every block has at least 16 bytes, so both words exist.
//!
//! Blocks wait in an outbox until it fills, until the freeing thread frees for another owner
//! in that class, enters the allocation slow path, or exits: at most 64 blocks per class per
//! thread are held back. Until they are collected, blocks in outboxes and inboxes count as in
//! use in their pools; `stats()` counts them as available ([`in_transit`]), from counters
//! that each thread keeps in its own heap: what its outboxes hold and have sent, and what its
//! inbox has received. None is shared, so the senders do not write one more cache line of the
//! owner's: the blocks on their way are the sum of all sent minus the sum of all received.

use crate::free::return_to_pool;
use crate::heap::{sentinel_heap, Heap};
use crate::pool::{Block, Pool};
use crate::size_class::NUM_CLASSES;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Blocks an outbox gathers before it sends them.
const BATCH: u32 = 64;
const COUNT_SHIFT: u32 = 48;
const NEXT_MASK: usize = (1 << COUNT_SHIFT) - 1;

/// The owner's side: per class, a lock-free stack of batches other threads pushed, and the
/// batches already taken off it but not yet used. The stacks sit on their own cache lines:
/// other threads write them while the owner works on the rest of the heap.
#[repr(C, align(128))]
pub struct Inbox {
    stacks: [AtomicPtr<Block>; NUM_CLASSES],
    /// Batches taken off `stacks` and not yet spliced into a cache (owner only).
    taken: [*mut Block; NUM_CLASSES],
    /// Blocks of each class taken off `stacks` into the cache or the pools, ever (for
    /// statistics; written by the owner only).
    received: [AtomicU64; NUM_CLASSES],
}

impl Inbox {
    pub const fn new() -> Inbox {
        Inbox {
            stacks: [const { AtomicPtr::new(ptr::null_mut()) }; NUM_CLASSES],
            taken: [ptr::null_mut(); NUM_CLASSES],
            received: [const { AtomicU64::new(0) }; NUM_CLASSES],
        }
    }

    /// The owner took a batch of `count` blocks of `class` out of the inbox.
    fn taken_out(&self, class: usize, count: u32) {
        add(&self.received[class], count as u64);
    }
}

/// Adds to a counter only its owner writes (a plain load and store: no locked instruction).
#[inline(always)]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Blocks of each class sent by threads without a heap (the sentinel's, never written).
static SENT_WITHOUT_HEAP: [AtomicU64; NUM_CLASSES] = [const { AtomicU64::new(0) }; NUM_CLASSES];

/// Blocks freed by a thread that does not own them and not yet back in their owner's cache
/// or pools, per class: in outboxes, and sent but not received. Exact at rest; while threads
/// free and collect, a sum read across heaps may be off by the batches that moved meanwhile
/// (never below zero).
pub fn in_transit(heaps: impl FnOnce(&mut dyn FnMut(&Heap))) -> [usize; NUM_CLASSES] {
    let mut sent = [0u64; NUM_CLASSES];
    let mut received = [0u64; NUM_CLASSES];
    for (class, n) in sent.iter_mut().enumerate() {
        *n = SENT_WITHOUT_HEAP[class].load(Ordering::Relaxed);
    }
    heaps(&mut |heap: &Heap| {
        for class in 0..NUM_CLASSES {
            let outbox = &heap.outbox[class];
            sent[class] = sent[class]
                .wrapping_add(outbox.sent.load(Ordering::Relaxed))
                .wrapping_add(outbox.len() as u64);
            received[class] =
                received[class].wrapping_add(heap.inbox.received[class].load(Ordering::Relaxed));
        }
    });
    let mut out = [0usize; NUM_CLASSES];
    for class in 0..NUM_CLASSES {
        let n = sent[class].wrapping_sub(received[class]);
        // A batch received whose sending was not seen yet reads as a huge count: none.
        out[class] = if n > u32::MAX as u64 { 0 } else { n as usize };
    }
    out
}

/// The sender's side, per class: blocks freed for one owner, not yet sent.
pub struct Outbox {
    owner: *mut Heap,
    head: *mut Block,
    /// Blocks on `head` (written by the sender only; an atomic because statistics read it
    /// from other threads: plain loads and stores on x86-64).
    count: AtomicU32,
    /// Blocks sent from here, ever (for statistics; written by the sender only).
    sent: AtomicU64,
}

impl Outbox {
    pub const fn new() -> Outbox {
        Outbox {
            owner: ptr::null_mut(),
            head: ptr::null_mut(),
            count: AtomicU32::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Blocks held here, not yet sent (for statistics).
    pub fn len(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The second word of a batch's first block.
///
/// # Safety
/// `block` is a free block of at least 16 bytes.
#[inline(always)]
unsafe fn batch_word(block: *mut Block) -> *mut usize {
    // SAFETY: guaranteed by the caller.
    unsafe { (block as *mut usize).add(1) }
}

/// Frees `block` of `pool`, which belongs to another heap, from the thread whose heap is
/// `me` (the sentinel heap for threads that have not allocated).
///
/// # Safety
/// `block` is a live block of `pool`; `pool`'s owner is not `me`.
///
/// Kept out of line: inlined, it made the local free fast path save registers it does not
/// need (10% more instructions on churn).
#[inline(never)]
pub unsafe fn free_remote(me: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: a live block's pool has a real owner heap, never unmapped; `me` is this thread's
    // heap (its outboxes are ours alone) unless it is the sentinel, which is never written.
    unsafe {
        let owner = (*pool).owner.load(Ordering::Relaxed);
        let class = (*pool).class.load(Ordering::Relaxed) as usize;
        if me == sentinel_heap() {
            (*block).next = ptr::null_mut();
            SENT_WITHOUT_HEAP[class].fetch_add(1, Ordering::Relaxed);
            push_batch(owner, class, block, 1);
            return;
        }
        let outbox = &mut (*me).outbox[class];
        if outbox.owner != owner {
            send(outbox, class);
            outbox.owner = owner;
        }
        (*block).next = outbox.head;
        outbox.head = block;
        let count = outbox.len() + 1;
        outbox.count.store(count, Ordering::Relaxed);
        if count == BATCH {
            send(outbox, class);
        } else {
            (*me).outbox_pending |= 1 << class;
        }
    }
}

/// Sends an outbox's blocks to their owner.
#[inline]
unsafe fn send(outbox: &mut Outbox, class: usize) {
    let count = outbox.len();
    if count != 0 {
        // SAFETY: the outbox holds `count` free blocks of `owner`'s pools of `class`.
        unsafe { push_batch(outbox.owner, class, outbox.head, count) };
        outbox.head = ptr::null_mut();
        outbox.count.store(0, Ordering::Relaxed);
        add(&outbox.sent, count as u64);
    }
}

/// Pushes a batch on `owner`'s inbox stack of `class`.
unsafe fn push_batch(owner: *mut Heap, class: usize, head: *mut Block, count: u32) {
    // SAFETY: `owner` is a real heap (never unmapped); the batch's blocks are ours until the
    // CAS publishes them.
    unsafe {
        let stack = &(*owner).inbox.stacks[class];
        let mut top = stack.load(Ordering::Relaxed);
        loop {
            *batch_word(head) = top as usize | (count as usize) << COUNT_SHIFT;
            match stack.compare_exchange_weak(top, head, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }
}

impl Heap {
    /// Sends every non-empty outbox (allocation slow path, thread exit).
    pub fn send_outboxes(&mut self) {
        while self.outbox_pending != 0 {
            let class = self.outbox_pending.trailing_zeros() as usize;
            // SAFETY: this heap's own outbox.
            unsafe { send(&mut self.outbox[class], class) };
            self.outbox_pending &= !(1 << class);
        }
    }

    /// Splices one batch of blocks other threads freed into the *empty* cache of `class`.
    /// Returns false when there is none.
    ///
    /// # Safety
    /// `self` is the calling thread's heap and its cache of `class` is empty.
    pub unsafe fn take_remote_batch(&mut self, class: usize) -> bool {
        let mut batch = self.inbox.taken[class];
        if batch.is_null() {
            let stack = &self.inbox.stacks[class];
            // A plain load first: the swap is a locked instruction, wasted when empty.
            if stack.load(Ordering::Relaxed).is_null() {
                return false;
            }
            batch = stack.swap(ptr::null_mut(), Ordering::Acquire);
        }
        // SAFETY: batches on our inbox hold free blocks of our pools of `class`, each block
        // counted as out of its pool, as cached blocks are.
        unsafe {
            let word = *batch_word(batch);
            self.inbox.taken[class] = (word & NEXT_MASK) as *mut Block;
            let count = (word >> COUNT_SHIFT) as u32;
            let cache = &mut self.cache[class];
            debug_assert!(cache.head.is_null());
            cache.head = batch;
            cache.set_count(count);
            self.inbox.taken_out(class, count);
        }
        true
    }

    /// Returns every block waiting in the inbox to its pool (before taking new memory, and at
    /// thread exit).
    ///
    /// # Safety
    /// `self` is the calling thread's heap (or one it is abandoning).
    pub unsafe fn collect_all_remote(&mut self) {
        for class in 0..NUM_CLASSES {
            let mut batches = [self.inbox.taken[class], ptr::null_mut()];
            self.inbox.taken[class] = ptr::null_mut();
            batches[1] = self.inbox.stacks[class].swap(ptr::null_mut(), Ordering::Acquire);
            for mut batch in batches {
                while !batch.is_null() {
                    // SAFETY: as in `take_remote_batch`; each block goes back to its pool.
                    unsafe {
                        let word = *batch_word(batch);
                        let next_batch = (word & NEXT_MASK) as *mut Block;
                        self.inbox.taken_out(class, (word >> COUNT_SHIFT) as u32);
                        let mut block = batch;
                        while !block.is_null() {
                            let next = (*block).next;
                            return_to_pool(self, block);
                            block = next;
                        }
                        batch = next_batch;
                    }
                }
            }
        }
    }
}
