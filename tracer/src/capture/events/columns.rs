//! Storing the columns of an `Events` chunk: `planes` columns are written straight from their
//! values one byte plane at a time, and every segment is zstd-compressed on its own when that
//! pays (see the parent module's docs for the layout).

use super::super::format::put_varint;

/// A column being built whose spare room the encoder checks once per event (see
/// `ChunkEncoder::start_event`), not once per push: a checked push was about a sixth of the
/// writer's instructions.
#[derive(Default)]
pub(super) struct Column<T> {
    items: Vec<T>,
}

impl<T: Copy> Column<T> {
    /// Makes room for `n` more items.
    pub(super) fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    /// Appends `v`.
    ///
    /// # Safety
    /// There must be room for it (see [`Column::reserve`]).
    #[inline(always)]
    pub(super) unsafe fn push(&mut self, v: T) {
        let len = self.items.len();
        debug_assert!(len < self.items.capacity());
        // SAFETY: the caller guarantees a free place at `len`, inside the allocation.
        unsafe {
            self.items.as_mut_ptr().add(len).write(v);
            self.items.set_len(len + 1);
        }
    }

    pub(super) fn clear(&mut self) {
        self.items.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn as_slice(&self) -> &[T] {
        &self.items
    }
}

impl Column<u8> {
    /// Appends `v` as a varint, at most [`MAX_VARINT`] bytes.
    ///
    /// # Safety
    /// There must be room for [`MAX_VARINT`] bytes.
    #[inline(always)]
    pub(super) unsafe fn varint(&mut self, mut v: u64) {
        // SAFETY (both pushes): a varint of a u64 takes at most MAX_VARINT bytes, for which
        // the caller made room.
        unsafe {
            while v >= 0x80 {
                self.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.push(v as u8);
        }
    }
}

/// The longest varint (of a `u64`).
pub(super) const MAX_VARINT: usize = 10;

/// A column of unsigned values, stored as `planes`. Keeps the OR of its values, whose
/// highest bit is the maximum's: the width without a second pass over the values.
#[derive(Default)]
pub(super) struct Values {
    column: Column<u64>,
    or: u64,
}

impl Values {
    pub(super) fn reserve(&mut self, n: usize) {
        self.column.reserve(n);
    }

    /// Appends `v`.
    ///
    /// # Safety
    /// There must be room for it (see [`Values::reserve`]).
    #[inline(always)]
    pub(super) unsafe fn push(&mut self, v: u64) {
        self.or |= v;
        // SAFETY: passed on to the caller.
        unsafe { self.column.push(v) };
    }

    pub(super) fn clear(&mut self) {
        self.column.clear();
        self.or = 0;
    }

    /// Bytes per value in the planes: enough for the largest, at least one.
    fn width(&self) -> usize {
        (8 - self.or.leading_zeros() as usize / 8).max(1)
    }
}

/// Scratch buffers for packing columns, kept from chunk to chunk.
#[derive(Default)]
pub(super) struct Packer {
    plane: Vec<u8>,
    compressed: Vec<u8>,
}

/// Appends `v` as a varint (the common one-byte case inline).
#[inline]
pub(super) fn push_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        push_long_varint(out, v);
    }
}

#[inline(never)]
fn push_long_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Packer {
    /// Appends `column` stored as one segment; returns its stored length.
    pub(super) fn column(&mut self, out: &mut Vec<u8>, column: &[u8], level: i32) -> usize {
        let start = out.len();
        push_varint(out, 1);
        self.segment(out, column, level);
        out.len() - start
    }

    /// Appends `values` as a `planes` column, `n width plane*` with the header and each byte
    /// plane a segment of its own; returns its unpacked and stored lengths.
    pub(super) fn planes(
        &mut self,
        out: &mut Vec<u8>,
        values: &Values,
        level: i32,
    ) -> (usize, usize) {
        let start = out.len();
        let (n, width) = (values.column.len(), values.width());
        let (mut header, mut header_len) = ([0u8; 11], 0);
        put_varint(&mut header, &mut header_len, n as u64);
        header[header_len] = width as u8;
        let header = &header[..header_len + 1];
        let planes = if n > 0 { width } else { 0 };
        push_varint(out, 1 + planes as u64);
        self.segment(out, header, level);
        let mut plane = std::mem::take(&mut self.plane);
        plane.resize(n, 0);
        for p in 0..planes {
            let shift = 8 * p as u32;
            // (A pass per plane, unrolled by the compiler: ~4 instructions a byte. One pass
            // writing every plane saved under 1% of the writer's instructions.)
            for (byte, v) in plane.iter_mut().zip(values.column.as_slice()) {
                *byte = (v >> shift) as u8;
            }
            self.segment(out, &plane, level);
        }
        self.plane = plane;
        (header.len() + n * width, out.len() - start)
    }

    /// Appends one segment, `raw_len stored_len<<1|zstd bytes`: compressed when at least
    /// 64 bytes long and smaller so.
    fn segment(&mut self, out: &mut Vec<u8>, seg: &[u8], level: i32) {
        let compressed = seg.len() >= 64 && level != 0 && {
            compress(seg, level, &mut self.compressed);
            !self.compressed.is_empty() && self.compressed.len() < seg.len()
        };
        let stored: &[u8] = if compressed { &self.compressed } else { seg };
        push_varint(out, seg.len() as u64);
        push_varint(out, ((stored.len() as u64) << 1) | compressed as u64);
        out.extend_from_slice(stored);
    }
}

/// zstd-compresses `data` into `out` (left empty on failure).
fn compress(data: &[u8], level: i32, out: &mut Vec<u8>) {
    thread_local! {
        // One context per thread, reused (creating one per segment shows up).
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    out.clear();
    // Room for the worst case, as `Compressor::compress` gives it: the same bytes come out.
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        if let Some((_, z)) = c.as_mut() {
            if z.compress_to_buffer(data, out).is_err() {
                out.clear();
            }
        }
    });
}
