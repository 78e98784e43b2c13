//! Per-thread event buffers: the only capture code that runs on allocation paths.
//!
//! Each thread owns a [`ThreadBuf`] and appends encoded events to its current [`Block`]
//! (64 KiB, mmap'd — never the global allocator). A full block goes onto the global `FULL`
//! list and the thread takes a fresh one from `FREE` (or mmaps one). Every 10 ms the writer
//! thread also steals partly filled blocks, so a quiet thread's events still reach the file
//! promptly. Nothing here allocates through the global allocator, panics, or takes a lock
//! that is held across an allocation: the locks below guard a few pointer moves each.

use super::format::{
    put_varint, zigzag, EV_ALLOC, EV_FREE, EV_REALLOC, TAG_ALIGNED16, TAG_API_SHIFT,
    TAG_SAME_STACK, TAG_SEQ_NEXT,
};
use core::cell::Cell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use tidemark_alloc::sync::SpinLock;

/// Bytes per block, header included.
pub const BLOCK_BYTES: usize = 64 << 10;
/// The largest encoded event (tag + five 10-byte varints).
const MAX_EVENT_BYTES: usize = 51;
/// Full blocks waiting for the writer before producers wait (16 MiB).
const MAX_PENDING_BLOCKS: usize = 256;

/// A block of encoded events from one thread, with the delta state of its encoding.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub thread: u32,
    pub count: u32,
    pub first_seq: u64,
    last_seq: u64,
    prev_ptr: u64,
    prev_stack: u32,
    pub len: u32,
}

const BLOCK_DATA: usize = core::mem::size_of::<Block>();

impl Block {
    /// The encoded events.
    pub fn data(&self) -> &[u8] {
        // SAFETY: a block is BLOCK_BYTES long and `len` bytes after the header were written.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Block as *const u8).add(BLOCK_DATA),
                self.len as usize,
            )
        }
    }

    fn reset(&mut self, thread: u32) {
        self.next = null_mut();
        self.thread = thread;
        self.count = 0;
        self.first_seq = 0;
        self.last_seq = 0;
        self.prev_ptr = 0;
        self.prev_stack = 0;
        self.len = 0;
    }

    /// Appends one event. The caller checked there are MAX_EVENT_BYTES free.
    #[inline]
    fn push(&mut self, seq: u64, tag: u8, ptr: u64, size: u64, stack: u32, old: u64) {
        // SAFETY: the data area is BLOCK_BYTES - BLOCK_DATA long; `len` stays below it.
        let out = unsafe {
            core::slice::from_raw_parts_mut(
                (self as *mut Block as *mut u8).add(BLOCK_DATA),
                BLOCK_BYTES - BLOCK_DATA,
            )
        };
        let mut pos = self.len as usize;
        let tag_pos = pos;
        pos += 1;
        let kind = tag & 3;
        let mut tag = tag;
        if self.count == 0 {
            self.first_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.last_seq);
            if delta == 1 {
                tag |= TAG_SEQ_NEXT;
            } else {
                put_varint(out, &mut pos, delta);
            }
        }
        let delta = ptr.wrapping_sub(self.prev_ptr) as i64;
        if delta & 15 == 0 {
            tag |= TAG_ALIGNED16;
            put_varint(out, &mut pos, zigzag(delta >> 4));
        } else {
            put_varint(out, &mut pos, zigzag(delta));
        }
        if kind != EV_FREE {
            put_varint(out, &mut pos, size);
            if stack == self.prev_stack && self.count != 0 {
                tag |= TAG_SAME_STACK;
            } else {
                put_varint(out, &mut pos, zigzag(stack as i64 - self.prev_stack as i64));
                self.prev_stack = stack;
            }
            if kind == EV_REALLOC {
                put_varint(out, &mut pos, zigzag(old.wrapping_sub(ptr) as i64));
            }
        }
        out[tag_pos] = tag;
        self.prev_ptr = ptr;
        self.last_seq = seq;
        self.count += 1;
        self.len = pos as u32;
    }

    fn has_room(&self) -> bool {
        self.len as usize + MAX_EVENT_BYTES <= BLOCK_BYTES - BLOCK_DATA
    }
}

/// One thread's slot. Lives forever (slots are recycled when their thread exits).
#[repr(C)]
pub struct ThreadBuf {
    /// 0 free, 1 held by the owner thread, 2 held by the writer.
    lock: AtomicU8,
    /// Claimed by a live thread.
    in_use: AtomicBool,
    /// The owning thread has exited; the writer drains and recycles the slot.
    dead: AtomicBool,
    pub index: AtomicU32,
    pub os_tid: AtomicU32,
    pub name: [AtomicU8; 16],
    /// Guarded by `lock`.
    block: Cell<*mut Block>,
    /// Registry link, written once before publication.
    next: *mut ThreadBuf,
}

// SAFETY: `block` is only touched with `lock` held; all other fields are atomics or immutable.
unsafe impl Sync for ThreadBuf {}

const OWNER: u8 = 1;
const WRITER: u8 = 2;

/// Head of the push-only registry of thread slots.
static THREADS: AtomicPtr<ThreadBuf> = AtomicPtr::new(null_mut());
static NEXT_THREAD_INDEX: AtomicU32 = AtomicU32::new(0);

struct BlockList {
    head: *mut Block,
    tail: *mut Block,
    len: usize,
}
// SAFETY: the list only moves block pointers between threads under its lock.
unsafe impl Send for BlockList {}

static FULL: SpinLock<BlockList> = SpinLock::new(BlockList {
    head: null_mut(),
    tail: null_mut(),
    len: 0,
});
static FREE: SpinLock<BlockList> = SpinLock::new(BlockList {
    head: null_mut(),
    tail: null_mut(),
    len: 0,
});
static PENDING: AtomicU32 = AtomicU32::new(0);

/// Global event sequence: orders events across threads.
pub static SEQ: AtomicU64 = AtomicU64::new(0);
/// Events lost (out of memory for buffers, re-entry from a signal handler, dead thread).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// True while events are accepted.
pub static ACCEPTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static MY_BUF: Cell<*mut ThreadBuf> = const { Cell::new(null_mut()) };
    /// Set on the writer thread (and while the owner thread exits): its events are not recorded.
    pub static SUPPRESS: Cell<bool> = const { Cell::new(false) };
}

/// Marker (never a real slot) stored in MY_BUF once the thread's slot was released at thread exit.
fn released() -> *mut ThreadBuf {
    core::ptr::dangling_mut()
}

fn mmap_bytes(len: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping, no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p as *mut u8
    }
}

fn pthread_key() -> libc::pthread_key_t {
    static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
    let k = KEY.load(Ordering::Acquire);
    if k != u32::MAX {
        return k as libc::pthread_key_t;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out pointer; the destructor is an extern "C" fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
        return u32::MAX as libc::pthread_key_t;
    }
    match KEY.compare_exchange(u32::MAX, key as u32, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => key,
        Err(existing) => {
            // SAFETY: `key` was created above and never used.
            unsafe { libc::pthread_key_delete(key) };
            existing as libc::pthread_key_t
        }
    }
}

/// pthread destructor: the thread is exiting; hand its slot back to the writer.
extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let buf = arg as *mut ThreadBuf;
    if buf.is_null() {
        return;
    }
    let _ = MY_BUF.try_with(|b| b.set(released()));
    // SAFETY: slots are never unmapped.
    unsafe { (*buf).dead.store(true, Ordering::Release) };
}

/// Allocates a fresh block (free list first, then mmap).
fn new_block(thread: u32) -> *mut Block {
    let mut block = FREE.with(|list| {
        let b = list.head;
        if !b.is_null() {
            // SAFETY: blocks on the free list are valid and owned by the list.
            list.head = unsafe { (*b).next };
            list.len -= 1;
        }
        b
    });
    if block.is_null() {
        block = mmap_bytes(BLOCK_BYTES) as *mut Block;
        if block.is_null() {
            return block;
        }
    }
    // SAFETY: we own `block` exclusively now.
    unsafe { (*block).reset(thread) };
    block
}

pub fn free_block(block: *mut Block) {
    FREE.with(|list| {
        // SAFETY: the caller hands over exclusive ownership.
        unsafe { (*block).next = list.head };
        list.head = block;
        list.len += 1;
    });
}

fn push_full(block: *mut Block) {
    FULL.with(|list| {
        // SAFETY: the caller hands over exclusive ownership.
        unsafe { (*block).next = null_mut() };
        if list.tail.is_null() {
            list.head = block;
        } else {
            // SAFETY: `tail` is a block owned by the list.
            unsafe { (*list.tail).next = block };
        }
        list.tail = block;
        list.len += 1;
    });
    PENDING.fetch_add(1, Ordering::Relaxed);
}

/// Takes every full block (oldest first) for the writer.
pub fn take_full() -> *mut Block {
    let head = FULL.with(|list| {
        let head = list.head;
        list.head = null_mut();
        list.tail = null_mut();
        list.len = 0;
        head
    });
    let mut n = 0;
    let mut b = head;
    while !b.is_null() {
        n += 1;
        // SAFETY: the list we took is ours.
        b = unsafe { (*b).next };
    }
    PENDING.fetch_sub(n, Ordering::Relaxed);
    head
}

/// The calling thread's slot, claiming or creating one on first use.
fn my_buf() -> *mut ThreadBuf {
    let mine = MY_BUF.with(|b| b.get());
    if !mine.is_null() {
        return if mine == released() { null_mut() } else { mine };
    }
    let buf = claim_slot();
    MY_BUF.with(|b| b.set(buf));
    if !buf.is_null() {
        // SAFETY: the key is valid (or the call fails harmlessly); setspecific for the
        // first keys stores into the thread descriptor without allocating.
        unsafe { libc::pthread_setspecific(pthread_key(), buf as *const libc::c_void) };
    }
    buf
}

#[cold]
fn claim_slot() -> *mut ThreadBuf {
    let mut slot = null_mut();
    let mut cur = THREADS.load(Ordering::Acquire);
    while !cur.is_null() {
        // SAFETY: registry entries are never freed.
        let c = unsafe { &*cur };
        if !c.dead.load(Ordering::Acquire)
            && c.in_use
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            slot = cur;
            break;
        }
        cur = c.next;
    }
    if slot.is_null() {
        let p = mmap_bytes(core::mem::size_of::<ThreadBuf>()) as *mut ThreadBuf;
        if p.is_null() {
            return p;
        }
        // SAFETY: fresh zeroed mapping: every field's all-zero pattern is valid.
        unsafe { (*p).in_use.store(true, Ordering::Relaxed) };
        let mut head = THREADS.load(Ordering::Acquire);
        loop {
            // SAFETY: `p` is not yet published.
            unsafe { (*p).next = head };
            match THREADS.compare_exchange_weak(head, p, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        slot = p;
    }
    // SAFETY: we own the slot's identity fields until the writer sees the new index.
    let s = unsafe { &*slot };
    // SAFETY: gettid has no preconditions.
    s.os_tid
        .store(unsafe { libc::gettid() } as u32, Ordering::Relaxed);
    let mut name = [0u8; 16];
    // SAFETY: 16 bytes is the documented maximum for thread names; pthread_self is valid.
    unsafe {
        libc::pthread_getname_np(
            libc::pthread_self(),
            name.as_mut_ptr() as *mut libc::c_char,
            16,
        )
    };
    for (dst, src) in s.name.iter().zip(name.iter()) {
        dst.store(*src, Ordering::Relaxed);
    }
    s.index.store(
        NEXT_THREAD_INDEX.fetch_add(1, Ordering::Relaxed),
        Ordering::Release,
    );
    slot
}

/// Records one event from the calling thread. Never allocates through the global allocator.
#[inline]
pub fn record(kind: u8, api: u8, ptr: u64, size: u64, stack: u32, old: u64) {
    if SUPPRESS.try_with(|s| s.get()).unwrap_or(true) {
        return;
    }
    if PENDING.load(Ordering::Relaxed) as usize > MAX_PENDING_BLOCKS {
        wait_for_writer();
    }
    let buf = my_buf();
    if buf.is_null() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: slots are never unmapped.
    let buf = unsafe { &*buf };
    // Take our own slot; a value of OWNER means we re-entered from a signal handler.
    loop {
        match buf
            .lock
            .compare_exchange_weak(0, OWNER, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(OWNER) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => core::hint::spin_loop(),
        }
    }
    if !ACCEPTING.load(Ordering::Relaxed) {
        buf.lock.store(0, Ordering::Release);
        return;
    }
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let mut block = buf.block.get();
    // SAFETY: `block` is owned by this slot while we hold the lock.
    if block.is_null() || !unsafe { &*block }.has_room() {
        if !block.is_null() {
            push_full(block);
        }
        block = new_block(buf.index.load(Ordering::Relaxed));
        buf.block.set(block);
    }
    if block.is_null() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: as above.
        unsafe { &mut *block }.push(
            seq,
            kind | ((api & 3) << TAG_API_SHIFT),
            ptr,
            size,
            stack,
            old,
        );
    }
    buf.lock.store(0, Ordering::Release);
}

#[cold]
fn wait_for_writer() {
    let mut spins = 0u32;
    while PENDING.load(Ordering::Relaxed) as usize > MAX_PENDING_BLOCKS
        && ACCEPTING.load(Ordering::Relaxed)
        && spins < 100_000
    {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
        spins += 1;
    }
}

pub fn record_alloc(ptr: usize, size: usize, api: u8, stack: u32) {
    record(EV_ALLOC, api, ptr as u64, size as u64, stack, 0);
}
pub fn record_free(ptr: usize, api: u8) {
    record(EV_FREE, api, ptr as u64, 0, 0, 0);
}
pub fn record_realloc(old: usize, new: usize, size: usize, stack: u32) {
    record(EV_REALLOC, 0, new as u64, size as u64, stack, old as u64);
}

/// A thread slot as seen by the writer.
pub struct SlotInfo {
    pub index: u32,
    pub os_tid: u32,
    pub name: String,
}

/// Writer side: steals every slot's partly filled block and recycles slots of exited
/// threads. Calls `sink` with each stolen block and `announce` with each slot.
pub fn steal_all(mut sink: impl FnMut(*mut Block), mut announce: impl FnMut(SlotInfo)) {
    let mut cur = THREADS.load(Ordering::Acquire);
    while !cur.is_null() {
        // SAFETY: registry entries are never freed.
        let slot = unsafe { &*cur };
        if slot.in_use.load(Ordering::Acquire) {
            let dead = slot.dead.load(Ordering::Acquire);
            while slot
                .lock
                .compare_exchange_weak(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            let block = slot.block.replace(null_mut());
            let info = SlotInfo {
                index: slot.index.load(Ordering::Acquire),
                os_tid: slot.os_tid.load(Ordering::Relaxed),
                name: {
                    let bytes: Vec<u8> = slot
                        .name
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .take_while(|&b| b != 0)
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                },
            };
            if dead {
                slot.dead.store(false, Ordering::Relaxed);
                slot.in_use.store(false, Ordering::Release);
            }
            slot.lock.store(0, Ordering::Release);
            announce(info);
            if !block.is_null() {
                // SAFETY: stolen block, now ours.
                if unsafe { (*block).count } == 0 {
                    free_block(block);
                } else {
                    sink(block);
                }
            }
        }
        cur = slot.next;
    }
}
