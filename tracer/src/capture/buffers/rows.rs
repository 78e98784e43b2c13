//! Reading back the rows a thread appended to its block (see `append` in the parent module
//! for the layout: a tag byte, the key delta unless it is the usual one, the pointer in 6 or 8
//! bytes, then for allocations and reallocs the size in 2 or 8 bytes, the stack id unless it
//! repeats, and a realloc's old pointer).

use super::{ROW_PTR64, ROW_SIZE16};
use crate::capture::format::{
    Decoder, Event, EventKind, EV_ALLOC, EV_FREE, TAG_API_SHIFT, TAG_SAME_STACK, TAG_SEQ_NEXT,
};

/// The delta state of the row encoding.
pub(super) struct RowState {
    pub(super) seq: u64,
    pub(super) stack: u32,
}

#[inline(always)]
fn read_u64(p: &[u8], at: usize, n: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&p[at..at + n]);
    u64::from_le_bytes(b)
}

/// Decodes rows written by [`record`] (never fails: the rows are our own).
pub(super) fn decode_rows(thread: u32, st: &mut RowState, rows: &[u8], out: &mut Vec<Event>) {
    let mut at = 0;
    while at < rows.len() {
        let tag = rows[at];
        at += 1;
        let kind = tag & 3;
        let expected = (kind != EV_ALLOC) as u64;
        if tag & TAG_SEQ_NEXT != 0 {
            st.seq += expected;
        } else {
            let mut d = Decoder::new(&rows[at..]);
            st.seq += d.varint().unwrap_or(0);
            at = rows.len() - d.remaining();
        }
        let pn = if tag & ROW_PTR64 != 0 { 8 } else { 6 };
        let ptr = read_u64(rows, at, pn);
        at += pn;
        let api = (tag >> TAG_API_SHIFT) & 3;
        let kind = if kind == EV_FREE {
            EventKind::Free { ptr, api }
        } else {
            let sn = if tag & ROW_SIZE16 != 0 { 2 } else { 8 };
            let size = read_u64(rows, at, sn);
            at += sn;
            if tag & TAG_SAME_STACK == 0 {
                st.stack = read_u64(rows, at, 4) as u32;
                at += 4;
            }
            if kind == EV_ALLOC {
                EventKind::Alloc {
                    ptr,
                    size,
                    api,
                    stack: st.stack,
                }
            } else {
                let old = read_u64(rows, at, 8);
                at += 8;
                EventKind::Realloc {
                    old,
                    new: ptr,
                    size,
                    stack: st.stack,
                }
            }
        };
        out.push(Event {
            seq: st.seq,
            thread,
            kind,
        });
    }
}
