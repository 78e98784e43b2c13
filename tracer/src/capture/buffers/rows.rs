//! Reading back the rows a thread appended to its block (see `ROW_SHORT` in the parent module
//! for the layout: a short row of one or two words, or a general one of whole fields).
//!
//! The rows go to a [`RowSink`] field by field: the writer codes them straight into the
//! file's columns, without an [`Event`] per row in between (building and reading back a list
//! of events was a fifth of the writer's time).

use super::{ROW_SHORT, ROW_SHORT_FREE};
use crate::capture::format::{Event, EventKind, EV_ALLOC, EV_FREE, EV_REALLOC, TAG_API_SHIFT};

/// Where decoded rows go, one call per event.
pub trait RowSink {
    fn free(&mut self, seq: u64, api: u8, ptr: u64);
    fn alloc(&mut self, seq: u64, api: u8, ptr: u64, size: u64, stack: u32);
    fn realloc(&mut self, seq: u64, new: u64, size: u64, stack: u32, old: u64);
}

/// Collects the rows as [`Event`]s of one thread.
pub struct EventList<'a> {
    pub thread: u32,
    pub events: &'a mut Vec<Event>,
}

impl EventList<'_> {
    #[inline]
    fn push(&mut self, seq: u64, kind: EventKind) {
        self.events.push(Event {
            seq,
            thread: self.thread,
            kind,
        });
    }
}

impl RowSink for EventList<'_> {
    #[inline]
    fn free(&mut self, seq: u64, api: u8, ptr: u64) {
        self.push(seq, EventKind::Free { ptr, api });
    }
    #[inline]
    fn alloc(&mut self, seq: u64, api: u8, ptr: u64, size: u64, stack: u32) {
        let kind = EventKind::Alloc {
            ptr,
            size,
            api,
            stack,
        };
        self.push(seq, kind);
    }
    #[inline]
    fn realloc(&mut self, seq: u64, new: u64, size: u64, stack: u32, old: u64) {
        let kind = EventKind::Realloc {
            old,
            new,
            size,
            stack,
        };
        self.push(seq, kind);
    }
}

/// The `n`-byte little-endian number at `at`. Reads 8 bytes and masks where 8 are there
/// (every row but the block's last few); a copy of `n` bytes is a call to memcpy.
#[inline(always)]
fn read_le(p: &[u8], at: usize, n: usize) -> u64 {
    match p.get(at..at + 8) {
        Some(b) => {
            let v = u64::from_le_bytes(b.try_into().unwrap());
            if n == 8 {
                v
            } else {
                v & ((1 << (8 * n)) - 1)
            }
        }
        None => {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&p[at..at + n]);
            u64::from_le_bytes(b)
        }
    }
}

/// Decodes rows written by `write_row` (never fails: the rows are our own), continuing from
/// key `seq`, which it leaves at the last row's; returns how many.
#[inline(always)]
pub(super) fn decode_rows<S: RowSink>(seq: &mut u64, rows: &[u8], sink: &mut S) -> usize {
    let (mut at, mut count) = (0, 0);
    while at < rows.len() {
        let tag = rows[at];
        let kind = tag & 3;
        let api = (tag >> TAG_API_SHIFT) & 3;
        if kind == ROW_SHORT {
            let word = read_le(rows, at, 8);
            *seq += (word >> 8) & 0xFF;
            let ptr = word >> 16;
            if tag & ROW_SHORT_FREE != 0 {
                sink.free(*seq, api, ptr);
                at += 8;
            } else {
                let word = read_le(rows, at + 8, 8);
                sink.alloc(*seq, api, ptr, word & 0xFFFF_FFFF, (word >> 32) as u32);
                at += 16;
            }
            count += 1;
            continue;
        }
        at += 1;
        let mut delta = 0;
        let mut shift = 0;
        loop {
            let b = rows[at];
            at += 1;
            delta |= ((b & 0x7F) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        *seq += delta;
        let ptr = read_le(rows, at, 8);
        at += 8;
        if kind == EV_FREE {
            sink.free(*seq, api, ptr);
        } else {
            let size = read_le(rows, at, 8);
            let stack = read_le(rows, at + 8, 4) as u32;
            at += 12;
            if kind == EV_ALLOC {
                sink.alloc(*seq, api, ptr, size, stack);
            } else {
                // (A realloc event has no api: the row's is the caller's.)
                debug_assert!(kind == EV_REALLOC, "rows hold kinds 0-2");
                let old = read_le(rows, at, 8);
                at += 8;
                sink.realloc(*seq, ptr, size, stack, old);
            }
        }
        count += 1;
    }
    count
}
