//! Per-thread event buffers: the only capture code that runs on allocation paths.
//!
//! Each thread owns a [`ThreadBuf`] and appends fixed-layout rows to its current [`Block`]
//! (64 KiB, mmap'd — never the global allocator), publishing each row with a release store
//! of the block's length. The owner takes no lock and does no atomic read-modify-write for an
//! allocation; a full block goes onto the global `FULL` list (a short spin lock, once per
//! ~4,000 events) and the thread takes a fresh one from `FREE` (or mmaps one). Every 10 ms the
//! writer reads what each thread committed to its current block without taking it away, so a
//! quiet thread's events still reach the file promptly.
//!
//! # Ordering
//!
//! Events carry a key from the global clock `SEQ`: a free or realloc advances it
//! (`fetch_add`, key = new value), an allocation only reads it, and the writer advances it
//! at each sample barrier (so an allocation is dated by the next sample, not by the next
//! free). Replay needs exactly two cross-thread orders, and both follow from happens-before
//! plus coherence of `SEQ`:
//!
//! * a free in thread B of a block allocated in thread A: A's alloc event is recorded after
//!   the allocation returned and before A's code could hand the pointer to B, so A's read
//!   of `SEQ` happens-before B's increment, and B's key is strictly greater;
//! * an allocation in A reusing an address B freed: B's free event is recorded before the
//!   underlying free, which happens-before the allocator hands the address to A, so A reads
//!   `SEQ` at or after B's increment: key(A) ≥ key(B). Ties are broken by kind: at equal
//!   keys, frees and reallocs come before allocations ([`super::format::order_rank`]).
//!
//! Within a thread the keys never decrease and an allocation never shares a key with a
//! later free, so each thread's stream is already sorted by (key, rank); the reader merges
//! the streams. The writer's sample barriers need "every event keyed below S is committed":
//! an owner marks itself `busy` (a plain store) before reading the clock and clears it after
//! publishing; the writer advances the clock to `S`, runs `membarrier(PRIVATE_EXPEDITED)`
//! (a full fence on every running thread, so the owners need none), then waits for each slot
//! to be not busy. An owner that read the clock before the fence is seen busy or finished;
//! one that reads it after gets a key ≥ S. Without membarrier (old kernels) a late event can
//! miss its barrier by one tick (the reader still orders it; only its sample is off by
//! 10 ms).
//!
//! Nothing here allocates through the global allocator, panics, or takes a lock that is
//! held across an allocation.

use super::format::{put_varint, EV_ALLOC, EV_FREE, EV_REALLOC, TAG_API_SHIFT};
use core::cell::Cell;
use core::ptr::null_mut;
use core::sync::atomic::{
    compiler_fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
use tidemark_alloc::sync::SpinLock;

mod rows;
mod slots;
mod writer_view;

pub use rows::{EventList, RowSink};
pub use slots::{abandon_this_threads_event, suppress_this_thread};
use slots::{event_buf, mine, own_slot, set_identity};
pub use writer_view::{retire, snapshot_slots, RowSpan};

/// Bytes per block, header included.
pub const BLOCK_BYTES: usize = 64 << 10;
/// Room reserved for one event: the longest row is a realloc's (tag, a 10-byte varint,
/// pointer, size, stack, old pointer: 39 bytes), with slack.
const MAX_EVENT_BYTES: usize = 48;
/// Full blocks waiting for the writer before producers wait (16 MiB).
const MAX_PENDING_BLOCKS: usize = 256;

/// Rows (on the allocation path only; the file uses the columns of [`super::events`]) come
/// in two forms, told apart by the tag's kind bits (0-1); bits 4-5 are the api.
///
/// A short row (kind bits 3, which no event has) is one or two whole words, written without a
/// branch per field. Word 0: the tag, the key delta (a byte), the pointer (6 bytes); an
/// allocation's word 1: its size (4 bytes) and stack id. The tag's bit 2 tells a free (one
/// word) from an allocation. Most events fit: a delta under 256, a pointer under 2^48, a size
/// under 4 GiB.
///
/// A general row (kind bits: the event's kind) takes the rest and every realloc: the tag, the
/// key delta (a varint), the pointer (8 bytes), then for allocations and reallocs the size
/// (8 bytes) and stack id (4), and a realloc's old pointer (8). Rows carry no state from one
/// to the next but the key.
const ROW_SHORT: u8 = 3;
const ROW_SHORT_FREE: u8 = 1 << 2;

/// A block of encoded rows from one thread.
///
/// The owner thread appends rows and publishes them by storing `len` (release); the writer
/// reads the committed prefix at any time, without stealing the block, and remembers where
/// it stopped in the `w_*` fields (only the writer touches those after publication).
#[repr(C)]
pub struct Block {
    /// Link in the FULL/FREE lists (owned by whoever holds the block).
    pub next: *mut Block,
    pub thread: u32,
    /// Committed bytes after the header.
    len: AtomicU32,
    /// Writer: bytes taken so far, and the key at the end of the rows decoded so far, which
    /// catch up with the taken ones before the tick ends (the owner sets the key to its own
    /// before publishing the block).
    w_read: u32,
    w_seq: u64,
}

const BLOCK_DATA: usize = core::mem::size_of::<Block>();
const DATA_BYTES: usize = BLOCK_BYTES - BLOCK_DATA;

impl Block {
    fn data(block: *mut Block) -> *mut u8 {
        // SAFETY: the data area follows the header inside the BLOCK_BYTES mapping.
        unsafe { (block as *mut u8).add(BLOCK_DATA) }
    }
}

/// One thread's slot. Lives forever (slots are recycled when their thread exits).
#[repr(C, align(64))]
pub struct ThreadBuf {
    /// 1 while the owner is inside [`record`] (see "Ordering" in the module docs).
    busy: AtomicU8,
    /// Claimed by a live thread.
    in_use: AtomicBool,
    /// The owning thread has exited; the writer drains and recycles the slot.
    dead: AtomicBool,
    pub index: AtomicU32,
    pub os_tid: AtomicU32,
    pub name: [AtomicU8; 16],
    /// The block being filled (the owner replaces it; the writer reads it).
    block: AtomicPtr<Block>,
    /// Owner only: write position in `block`, and the key of its last row.
    pos: Cell<u32>,
    last_seq: Cell<u64>,
    /// Registry link, written once before publication.
    next: *mut ThreadBuf,
}

// SAFETY: the Cell fields are touched only by the owner thread (or by the writer after the
// owner exited and before the slot is handed to a new thread); the rest are atomics or
// immutable after publication.
unsafe impl Sync for ThreadBuf {}

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

/// The ordering clock: frees and reallocs advance it (one RMW), allocations only read it.
pub static SEQ: AtomicU64 = AtomicU64::new(0);
/// Events lost (out of memory for buffers, re-entry from a signal handler, dead thread).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// True while events are accepted.
pub static ACCEPTING: AtomicBool = AtomicBool::new(false);

/// Allocates a fresh block (free list first, then mmap) whose rows continue from key `seq`.
fn new_block(thread: u32, seq: u64) -> *mut Block {
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
        block = crate::sysmem::map_zeroed(BLOCK_BYTES) as *mut Block;
        if block.is_null() {
            return block;
        }
    }
    // SAFETY: we own `block` exclusively until it is published.
    unsafe {
        block.write(Block {
            next: null_mut(),
            thread,
            len: AtomicU32::new(0),
            w_read: 0,
            w_seq: seq,
        })
    };
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
        // SAFETY: the owner gives the block up; only the list link is written.
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

/// (its owner exited, or does not exist in a forked child).
fn reset_slot(slot: &ThreadBuf) {
    let block = slot.block.swap(null_mut(), Ordering::AcqRel);
    if !block.is_null() {
        free_block(block);
    }
    slot.pos.set(0);
    slot.last_seq.set(0);
    slot.dead.store(false, Ordering::Relaxed);
}

/// In a child made by `fork`, where only the forking thread exists: forgets every event the
/// parent had buffered (the parent's writer writes those, once; a copy here must never reach
/// any file) and makes the buffers as new, so that a recording started in the child numbers
/// its threads and its clock from zero. The forking thread keeps its slot (its thread-local
/// points there) with a fresh identity: index 0, the child's tid.
///
/// Locks and lists may be in any state a thread of the parent left them in at the moment of
/// the fork. Each list operation keeps the list walkable at every step (a block's link is
/// written before the block is linked in, and `head`/`tail` only ever point at valid blocks),
/// so at worst a block that was in flight in a vanished thread is leaked.
pub fn reset_after_fork() {
    ACCEPTING.store(false, Ordering::SeqCst);
    // SAFETY: only this thread exists in the child, and it is not inside a list operation (it
    // is running a fork handler); a holder at the time of the fork no longer exists, so
    // nothing can be relying on these locks.
    unsafe {
        FULL.force_unlock();
        FREE.force_unlock();
    }
    let mut b = take_full();
    while !b.is_null() {
        // SAFETY: the list we took is ours; read the link before the block is relinked.
        let next = unsafe { (*b).next };
        free_block(b);
        b = next;
    }
    PENDING.store(0, Ordering::Relaxed);
    NEXT_THREAD_INDEX.store(0, Ordering::Relaxed);
    let mine = mine().buf.get();
    let mut cur = THREADS.load(Ordering::Acquire);
    while !cur.is_null() {
        // SAFETY: registry entries are never freed; their owners (other than this thread)
        // do not exist in the child, so every field, the owner-only cells included, is ours.
        let slot = unsafe { &*cur };
        reset_slot(slot);
        slot.busy.store(0, Ordering::Relaxed);
        if cur == mine {
            set_identity(slot);
        } else {
            slot.in_use.store(false, Ordering::Release);
        }
        cur = slot.next;
    }
    SEQ.store(0, Ordering::SeqCst);
    DROPPED.store(0, Ordering::Relaxed);
}

/// Records one event from the calling thread. Never allocates through the global allocator,
/// takes no lock and does at most one atomic read-modify-write (frees and reallocs).
///
/// The fast path is the common case, where every check fits in a few instructions: the thread
/// has its slot, its block has room for the row, and no append of this thread is under way.
/// Everything else (the first event, a full block, the writer falling behind, re-entry from
/// a signal handler) is `record_slow`.
#[inline(always)]
pub fn record(kind: u8, api: u8, ptr: u64, size: u64, stack: u32, old: u64) {
    if let Ok(b) = own_slot() {
        let block = b.block.load(Ordering::Relaxed);
        let pos = b.pos.get() as usize;
        if !block.is_null() && has_room(pos) && b.busy.load(Ordering::Relaxed) == 0 {
            if let Some((seq, tag)) = begin_row(b, kind, api) {
                write_row(b, block, pos, seq, tag, ptr, size, stack, old);
                end_row(b);
            }
            return;
        }
    }
    record_slow(kind, api, ptr, size, stack, old);
}

/// Does a block with `pos` bytes of rows have room for one more?
#[inline(always)]
fn has_room(pos: usize) -> bool {
    pos + MAX_EVENT_BYTES <= DATA_BYTES
}

/// `record` past its fast path: claims the thread's slot at its first event, waits while
/// the writer is behind, switches to a fresh block.
#[cold]
#[inline(never)]
fn record_slow(kind: u8, api: u8, ptr: u64, size: u64, stack: u32, old: u64) {
    let Some(buf) = ready_buf() else {
        return;
    };
    if let Some((seq, tag)) = begin_row(buf, kind, api) {
        append(buf, seq, tag, ptr, size, stack, old);
        end_row(buf);
    }
}

/// The calling thread's slot, ready for a row that may need a new block: None when the event
/// is not recorded (see `event_buf`; re-entry from a signal handler in the middle of an
/// append drops it). Waits first while the writer is behind (before the row marks the slot
/// busy: the writer's barrier waits for busy slots).
#[inline]
fn ready_buf() -> Option<&'static ThreadBuf> {
    let buf = event_buf()?;
    if PENDING.load(Ordering::Relaxed) as usize > MAX_PENDING_BLOCKS {
        wait_for_writer();
    }
    if buf.busy.load(Ordering::Relaxed) != 0 {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(buf)
}

/// Marks the slot busy for one row (see "Ordering" in the module docs) and takes the event's
/// key from the clock and its tag; None (and not busy) when events are no longer accepted.
/// Each `Some` is followed by `end_row` once the row is written.
#[inline(always)]
fn begin_row(buf: &ThreadBuf, kind: u8, api: u8) -> Option<(u64, u8)> {
    buf.busy.store(1, Ordering::Relaxed);
    // The writer's membarrier orders this store before the clock read below.
    compiler_fence(Ordering::SeqCst);
    if !ACCEPTING.load(Ordering::Relaxed) {
        end_row(buf);
        return None;
    }
    let seq = if kind == EV_ALLOC {
        SEQ.load(Ordering::Relaxed)
    } else {
        SEQ.fetch_add(1, Ordering::Relaxed) + 1
    };
    Some((seq, kind | ((api & 3) << TAG_API_SHIFT)))
}

#[inline(always)]
fn end_row(buf: &ThreadBuf) {
    buf.busy.store(0, Ordering::Release);
}

/// Appends one row to the slot's block, switching blocks when it is full, and publishes it.
#[inline(always)]
fn append(buf: &ThreadBuf, seq: u64, tag: u8, ptr: u64, size: u64, stack: u32, old: u64) {
    let mut block = buf.block.load(Ordering::Relaxed);
    let mut pos = buf.pos.get() as usize;
    if block.is_null() || !has_room(pos) {
        block = switch_block(buf, block);
        if block.is_null() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pos = 0;
    }
    write_row(buf, block, pos, seq, tag, ptr, size, stack, old);
}

/// Writes one row at `pos` of `block` (which has room for it: `has_room`) and publishes it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_row(
    buf: &ThreadBuf,
    block: *mut Block,
    mut pos: usize,
    seq: u64,
    tag: u8,
    ptr: u64,
    size: u64,
    stack: u32,
    old: u64,
) {
    let data = Block::data(block);
    let kind = tag & 3;
    let delta = seq.wrapping_sub(buf.last_seq.get());
    let size_wide = if kind == EV_ALLOC { size >> 32 } else { 0 };
    if kind != EV_REALLOC && (delta >> 8 | ptr >> 48 | size_wide) == 0 {
        let short = tag | ROW_SHORT | if kind == EV_FREE { ROW_SHORT_FREE } else { 0 };
        buf.last_seq.set(seq);
        // SAFETY: as below; a short row is at most 16 bytes.
        unsafe {
            let word = short as u64 | delta << 8 | ptr << 16;
            data.add(pos).cast::<u64>().write_unaligned(word.to_le());
            pos += 8;
            if kind == EV_ALLOC {
                let word = size | (stack as u64) << 32;
                data.add(pos).cast::<u64>().write_unaligned(word.to_le());
                pos += 8;
            }
        }
        return publish(buf, block, pos);
    }
    buf.last_seq.set(seq);
    // SAFETY: `pos + MAX_EVENT_BYTES <= DATA_BYTES` (the caller checked `has_room`), and every
    // field below stays inside that reserve; bytes past `len` are the owner's.
    unsafe {
        *data.add(pos) = tag;
        pos += 1;
        let out = core::slice::from_raw_parts_mut(data.add(pos), 10);
        let mut n = 0;
        put_varint(out, &mut n, delta);
        pos += n;
        data.add(pos).cast::<u64>().write_unaligned(ptr.to_le());
        pos += 8;
        if kind != EV_FREE {
            data.add(pos).cast::<u64>().write_unaligned(size.to_le());
            data.add(pos + 8)
                .cast::<u32>()
                .write_unaligned(stack.to_le());
            pos += 12;
            if kind == EV_REALLOC {
                data.add(pos).cast::<u64>().write_unaligned(old.to_le());
                pos += 8;
            }
        }
    }
    publish(buf, block, pos);
}

/// Publishes the rows of `block` up to `pos` (the writer may read them from now on).
#[inline(always)]
fn publish(buf: &ThreadBuf, block: *mut Block, pos: usize) {
    buf.pos.set(pos as u32);
    // SAFETY: the block is the slot's current one: mapped, and its header is valid.
    unsafe { (*block).len.store(pos as u32, Ordering::Release) };
}

/// Hands the full block to the writer and starts a new one continuing from its last key.
#[cold]
#[inline(never)]
fn switch_block(buf: &ThreadBuf, full: *mut Block) -> *mut Block {
    let block = new_block(buf.index.load(Ordering::Relaxed), buf.last_seq.get());
    if block.is_null() {
        return block;
    }
    if !full.is_null() {
        // Queue the old block before publishing the new one: a writer that sees the new
        // block then finds the old one on the FULL list (per-thread order).
        push_full(full);
    }
    buf.pos.set(0);
    buf.block.store(block, Ordering::Release);
    block
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

/// A realloc's key on the clock, taken before the underlying realloc runs: that call frees
/// the old address, and another thread may get it back and record an allocation there, which
/// must come after this realloc (see "Ordering" at the top). The thread's slot stays `busy`
/// from here to [`finish_realloc`] (the writer's sample barrier waits for it).
pub struct ReallocTicket {
    buf: *const ThreadBuf,
    seq: u64,
}

/// Starts a realloc event; None when nothing is recorded from this thread now.
pub fn begin_realloc() -> Option<ReallocTicket> {
    let buf = ready_buf()?;
    let (seq, _) = begin_row(buf, EV_REALLOC, 0)?;
    Some(ReallocTicket { buf, seq })
}

/// Ends a realloc event begun with [`begin_realloc`]: records it (`new` null: the realloc
/// failed and nothing changed, so nothing is recorded) and releases the slot.
pub fn finish_realloc(
    ticket: ReallocTicket,
    api: u8,
    old: usize,
    new: usize,
    size: usize,
    stack: u32,
) {
    // SAFETY: slots are never unmapped; this thread owns the slot it marked busy.
    let b = unsafe { &*ticket.buf };
    if new != 0 && ACCEPTING.load(Ordering::Relaxed) {
        append(
            b,
            ticket.seq,
            EV_REALLOC | ((api & 3) << TAG_API_SHIFT),
            new as u64,
            size as u64,
            stack,
            old as u64,
        );
    }
    end_row(b);
}

#[inline]
pub fn record_alloc(ptr: usize, size: usize, api: u8, stack: u32) {
    record(EV_ALLOC, api, ptr as u64, size as u64, stack, 0);
}
#[inline]
pub fn record_free(ptr: usize, api: u8) {
    record(EV_FREE, api, ptr as u64, 0, 0, 0);
}

/// Registers for `membarrier(PRIVATE_EXPEDITED)`; true when available. Call before events
/// are accepted.
pub fn register_fence() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Acquire) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
    let ok = unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0) } == 0;
    STATE.store(if ok { 1 } else { 2 }, Ordering::Release);
    ok
}

/// A full memory barrier on every running thread of the process (the writer's half of the
/// asymmetric fence that pairs with the owners' plain `busy` stores).
fn fence_all_threads() {
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    if register_fence() {
        // SAFETY: as in `register_fence`.
        unsafe { libc::syscall(libc::SYS_membarrier, PRIVATE_EXPEDITED, 0) };
    }
    core::sync::atomic::fence(Ordering::SeqCst);
}
