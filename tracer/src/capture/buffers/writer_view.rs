//! The capture writer's side of the thread slots: at each tick it waits for the appends in
//! flight, notes each slot's current block and identity, takes the rows committed since
//! (decoding them later in the tick), and afterwards recycles the slots of exited threads
//! and the blocks it drained.

use super::rows::{decode_rows, RowSink};
use super::{fence_all_threads, free_block, reset_slot, Block, ThreadBuf, THREADS};
use core::sync::atomic::Ordering;

impl Block {
    /// Writer side: the rows committed since the last call (None when there are none).
    /// They stay in the block, to be decoded with [`RowSpan::decode`] before the block is
    /// recycled.
    ///
    /// # Safety
    /// Only the writer thread calls this, on a block it holds or that is some slot's current
    /// block (the owner only appends past `len`).
    pub unsafe fn take_rows(block: *mut Block) -> Option<RowSpan> {
        // SAFETY: per the contract, the header's w_* fields are the writer's.
        unsafe {
            let len = (*block).len.load(Ordering::Acquire);
            let read = (*block).w_read;
            (*block).w_read = len.max(read);
            (len > read).then_some(RowSpan {
                block,
                start: read,
                end: len,
            })
        }
    }
}

/// Rows of one block the writer has taken ([`Block::take_rows`]) but not decoded yet.
pub struct RowSpan {
    block: *mut Block,
    start: u32,
    end: u32,
}

// SAFETY: blocks are process-wide mappings, not tied to a thread; a span only names rows the
// writer took, and the writer (whichever thread runs it) is their only reader.
unsafe impl Send for RowSpan {}

impl RowSpan {
    /// The thread whose rows these are.
    pub fn thread(&self) -> u32 {
        // SAFETY: the thread field is written before the block is published, and the block
        // lives on (see `decode`).
        unsafe { (*self.block).thread }
    }

    /// Decodes the rows into `sink`; returns how many there were. The spans of one block
    /// must be decoded in the order they were taken (each continues from the key the
    /// previous one left in the block).
    ///
    /// # Safety
    /// Only the writer thread calls this, before the block is recycled (`retire` or
    /// `reset_slot`); the span's bytes were committed, so the owner no longer writes them.
    #[inline]
    pub unsafe fn decode<S: RowSink>(&self, sink: &mut S) -> usize {
        // SAFETY: per the contract, the block is alive, its w_* fields are the writer's, and
        // the bytes between `start` and `end` are immutable.
        unsafe {
            let block = self.block;
            let rows = core::slice::from_raw_parts(
                Block::data(block).add(self.start as usize),
                (self.end - self.start) as usize,
            );
            let mut seq = (*block).w_seq;
            let n = decode_rows(&mut seq, rows, sink);
            (*block).w_seq = seq;
            n
        }
    }
}

/// A thread slot as seen by the writer.
pub struct SlotInfo {
    pub index: u32,
    pub os_tid: u32,
    pub name: String,
}

/// What the writer saw of one slot at a tick.
pub struct SlotSnapshot {
    slot: *mut ThreadBuf,
    /// The slot's current block (null when it has none yet).
    pub block: *mut Block,
    dead: bool,
}

/// Writer side, step 1: waits until no thread is inside [`record`] with an event ordered
/// before `barrier` (the clock value the caller read before), then notes each slot's current
/// block. Calls `announce` with each slot in use.
pub fn snapshot_slots(mut announce: impl FnMut(SlotInfo)) -> Vec<SlotSnapshot> {
    fence_all_threads();
    let mut out = Vec::new();
    let mut cur = THREADS.load(Ordering::Acquire);
    while !cur.is_null() {
        // SAFETY: registry entries are never freed.
        let slot = unsafe { &*cur };
        if slot.in_use.load(Ordering::Acquire) {
            // An append takes nanoseconds unless its thread was preempted. The wait is
            // bounded all the same (a thread stopped inside `record` for good, e.g. by a
            // signal handler that never returns, must not stop the writer): its late event
            // then reaches the file one tick later, which the reader tolerates.
            let mut spins = 0u32;
            while slot.busy.load(Ordering::Acquire) != 0 && spins < 100_000 {
                spins += 1;
                if spins < 1000 {
                    core::hint::spin_loop();
                } else {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
            let dead = slot.dead.load(Ordering::Acquire);
            out.push(SlotSnapshot {
                slot: cur,
                block: slot.block.load(Ordering::Acquire),
                dead,
            });
            let bytes: Vec<u8> = slot
                .name
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .take_while(|&b| b != 0)
                .collect();
            announce(SlotInfo {
                index: slot.index.load(Ordering::Acquire),
                os_tid: slot.os_tid.load(Ordering::Relaxed),
                name: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        cur = slot.next;
    }
    out
}

/// Writer side, last step of a tick: recycles the slots of exited threads (their current
/// block must be drained already) and the full blocks drained this tick.
pub fn retire(snapshots: &[SlotSnapshot], full: &[*mut Block]) {
    for &b in full {
        free_block(b);
    }
    for s in snapshots.iter().filter(|s| s.dead) {
        // SAFETY: registry entries are never freed; the owner has exited, so its fields are
        // ours until `in_use` is cleared.
        let slot = unsafe { &*s.slot };
        reset_slot(slot);
        slot.in_use.store(false, Ordering::Release);
    }
}
