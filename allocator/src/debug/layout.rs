//! Where a debug block keeps its bookkeeping, and the byte marks.
//!
//! Every block the debug layer hands out is one allocation of the inner allocator:
//!
//! ```text
//!  base (inner alloc, aligned to A = max(align, 16))
//!  |
//!  v
//!  +-----------+-------------+-------------+---------------------+------------+-----------+
//!  | alignment | header      | front guard | user bytes          | back guard | trailer   |
//!  | padding   | 24 bytes    | 8 x 0xFD    | size bytes, at p    | 8 x 0xFD   | serial u64|
//!  +-----------+-------------+-------------+---------------------+------------+-----------+
//!  <------- front = round_up(32, A) ------>^p                    ^tail = p + size
//!           (64 for blocks passed on to glibc)
//!
//!  header: size (48 bits) + check (8) + log2 align (8) | alloc stack u32 | free stack u32
//!          | magic u16 | API u8 | status u8 | registry slot u32
//! ```
//!
//! A block costs 48 bytes more than asked (32 in front, 16 behind): the header is packed into
//! 24 bytes so that header and front guard stay a multiple of 16 (`p` keeps its alignment)
//! without padding; at 40 bytes they took 48 and a block cost 64. Smaller blocks are fewer
//! bytes to fill and read back, and land in smaller size classes of the inner allocator (a
//! 20-byte string takes 68 bytes of pymalloc's 80-byte class instead of 84 of its 96). A
//! block glibc serves (over 464 bytes) costs 80: see [`front`].
//!
//! Why this shape:
//!
//! - The header sits *right before* the front guard, whatever the alignment, so `p - 32` finds
//!   it from the user pointer alone (C `free(p)` knows nothing else). Large alignments are paid
//!   for with padding at the front of the inner allocation, which the header records
//!   implicitly: `front(A)` is a function of the recorded alignment, so the inner pointer and
//!   layout are recomputed exactly and the inner allocator is always called back with the
//!   layout it was called with.
//! - The guards are the bytes an off-by-one writes first (CPython's FORBIDDENBYTE pads). Eight
//!   on each side catch small overruns; a wild write further away may land in the header or
//!   trailer and shows up as a bad magic or serial instead.
//! - The header's last 8 bytes (magic, API, status, slot) are the ones nearest `p`, so the
//!   cheap "is this one of ours" test reads only `p-16 .. p-12`, and the free path checks
//!   magic, API and status with one compare, and size and alignment with another (see
//!   [`intact_live`]).
//! - The trailer is after the back guard, unaligned (the user size is arbitrary), and read with
//!   unaligned loads. It holds the serial number CPython also puts there ("made by call #N"),
//!   with a check byte, verified when the block leaves the quarantine and by `check_heap`.
//! - The header remembers the block's registry slot (`slot`, see `live.rs`); the registry and
//!   the quarantine ring live in mappings of their own, so the debug layer never allocates
//!   through the global allocator.
//! - A write before the block that runs past the front guard lands in the header. The size
//!   carries a check byte ([`header_sound`]) and the slot must name a registry entry that
//!   names this header back (`live::registered`), so a damaged header is reported as such
//!   instead of being trusted: a wrong size would send the checks to read far past the block,
//!   a wrong slot would unregister another block.
//!
//! Marks: fresh user bytes are CLEANBYTE (0xCD) unless zeroed; freed user bytes are DEADBYTE
//! (0xDD) for as long as the block waits in the quarantine; guards are FORBIDDENBYTE (0xFD).
//! The header's status says LIVE, FREED (in the quarantine) or RELEASED (back with the inner
//! allocator, see [`mark_released`]).

use super::probe::{is_mapped, page_size};
use crate::size_class::SMALL_REQUEST_THRESHOLD;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Fresh, never-written memory.
pub const CLEANBYTE: u8 = 0xCD;
/// Freed memory (while the block sits in the quarantine).
pub const DEADBYTE: u8 = 0xDD;
/// The guard bytes on both sides of the user bytes.
pub const FORBIDDENBYTE: u8 = 0xFD;

/// Guard bytes on each side of the user bytes.
pub const GUARD: usize = 8;
/// Bytes after the back guard: the serial number.
pub const TRAILER: usize = 8;
/// Header plus front guard: the distance from the header to `p`.
pub const HEAD: usize = core::mem::size_of::<Header>() + GUARD;

/// Marks a header as one of ours; anything else before `p` means "not a debug block".
///
/// 16 bits, so that the header fits in 24 bytes. What `probe` accepts is the magic and an API
/// byte (2 values of 256) and a status byte (3 of 256) read together: memory that is not a
/// header passes with probability 2^-16 * 2/256 * 3/256, about 1.4e-9 for random bytes, and
/// the free path's fast check also wants both guard words (another 2^-128) before it treats a
/// pointer as a live block. Zeroed or 0xFF-filled memory never passes (the magic is neither).
pub const MAGIC: u16 = 0xA10C;

/// The block is handed out to the program.
pub const LIVE: u8 = 0x4C;
/// The block was freed and waits in the quarantine.
pub const FREED: u8 = 0x46;
/// The block was freed and has left the quarantine: its memory went back to the inner
/// allocator, with this mark left in the header so that a second free of the same pointer is
/// still recognized (see [`mark_released`]).
pub const RELEASED: u8 = 0x52;

/// Which family of entry points made (or frees) a block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Api {
    /// The Rust global allocator (`GlobalAlloc`).
    Rust = b'r',
    /// The C malloc family (the preload library).
    C = b'c',
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Rust => "rust",
            Api::C => "c",
        }
    }

    pub fn from_byte(b: u8) -> Option<Api> {
        match b {
            b'r' => Some(Api::Rust),
            b'c' => Some(Api::C),
            _ => None,
        }
    }
}

/// The bookkeeping in front of every debug block, 24 bytes. `repr(C)` so the last fields sit
/// next to the front guard (see the module docs).
#[repr(C)]
pub struct Header {
    /// The size the program asked for (low 48 bits: no machine maps 2^48 bytes, and
    /// `inner_layout` refuses such sizes), a check byte of size and alignment (bits 48..56),
    /// and log2 of the alignment (top byte), so the free path checks all three against a Rust
    /// layout with one compare. See [`size_align_word`].
    pub size_align: u64,
    /// Tracer stack ids (0 = none) of the allocation and of the free. The tracer's ids are
    /// 32-bit (`tidemark_tracer`'s `StackId`); an id that does not fit is kept as 0, "no
    /// traceback was recorded", rather than as another stack's id.
    pub alloc_stack: u32,
    pub free_stack: u32,
    pub magic: u16,
    pub api: u8,
    pub status: u8,
    /// While the block is registered (live or quarantined): its registry slot (see `live.rs`;
    /// there are at most 2^30). Once RELEASED: its alignment and a check of its stack ids
    /// (see [`mark_released`]).
    pub slot: u32,
}

const _: () = assert!(core::mem::size_of::<Header>() == 24);
const _: () = assert!(HEAD & 15 == 0);

/// The low 48 bits of `Header::size_align` hold the size.
const SIZE_BITS: u64 = (1 << 48) - 1;
/// The low 56 bits of the front-guard word of a released block hold the size, the top byte
/// their check.
const RELEASED_SIZE_BITS: u64 = (1 << 56) - 1;

/// `Header::size_align` for a block of `size` bytes (at most `SIZE_BITS`) aligned to
/// `1 << align_log2`: the size, a check byte of both, and the alignment's log2.
#[inline]
pub fn size_align_word(size: usize, align_log2: u32) -> u64 {
    let plain = size as u64 | u64::from(align_log2) << 56;
    plain | u64::from(hash8(plain)) << 48
}

/// Whether a header's size and alignment are the ones it was made with (their check byte
/// matches): false when a write before the block reached them.
///
/// # Safety
/// `h` is readable.
#[inline]
pub unsafe fn header_sound(h: *mut Header) -> bool {
    // SAFETY: guaranteed by the caller.
    let word = unsafe { (*h).size_align };
    let plain = word & !(0xFF << 48);
    hash8(plain) == (word >> 48) as u8
}

/// Where the header's last word (magic, API, status, slot) starts: the free path compares its
/// low half with [`live_tag`] in one load.
const TAG_OFFSET: usize = core::mem::offset_of!(Header, magic);
const _: () = assert!(TAG_OFFSET + 8 == core::mem::size_of::<Header>());

/// Magic, API and status of a live block of `api`, as the low half of the header's last word.
#[inline]
fn live_tag(api: Api) -> u32 {
    u32::from(MAGIC) | (api as u32) << 16 | u32::from(LIVE) << 24
}

/// A stack id as the header keeps it (see `Header::alloc_stack`).
#[inline]
pub fn stack_id32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(0)
}

/// The alignment of the inner allocation for a user alignment.
#[inline]
pub fn inner_align(align: usize) -> usize {
    align.max(16)
}

/// Bytes from the inner pointer to `p`: the header and front guard, rounded up so `p` keeps
/// the alignment. `HEAD` is a power of two, so rounding it up to a power-of-two alignment is
/// just the larger of the two (two compares on every allocation, free and eviction).
///
/// A block that pymalloc passes on to the C library (over its 512 bytes, or aligned past 16)
/// starts `HEAD` bytes further in: glibc's `free` writes up to 32 bytes at the start of a
/// chunk (`fd`, `bk`, and in its large bins `fd_nextsize`, `bk_nextsize`), and the header's
/// tag must outlive that for a second free to be recognized (see [`mark_released`]).
#[inline]
pub fn front(align: usize, size: usize) -> usize {
    let passed_on = align > 16 || size > SMALL_REQUEST_THRESHOLD - HEAD - GUARD - TRAILER;
    align.max(if passed_on { 2 * HEAD } else { HEAD })
}

const _: () = assert!(HEAD.is_power_of_two());

/// The header's status byte, shared with `check_heap` on other threads.
///
/// # Safety
/// `h` is a valid header.
#[inline]
pub unsafe fn status<'a>(h: *mut Header) -> &'a AtomicU8 {
    // SAFETY: the field is a valid, aligned u8 for the header's lifetime; all concurrent
    // accesses to it go through this atomic view.
    unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*h).status)) }
}

/// The inner allocation for `size` user bytes at `align`, or `None` if it would overflow.
#[inline]
pub fn inner_layout(size: usize, align: usize) -> Option<Layout> {
    if size as u64 > SIZE_BITS {
        return None;
    }
    let total = front(align, size)
        .checked_add(size)?
        .checked_add(GUARD + TRAILER)?;
    Layout::from_size_align(total, inner_align(align)).ok()
}

/// The header of the block whose user pointer is `p`.
#[inline]
pub fn header_of(p: *mut u8) -> *mut Header {
    p.wrapping_sub(HEAD) as *mut Header
}

/// The user pointer of the block with header `h`.
#[inline]
pub fn user_of(h: *mut Header) -> *mut u8 {
    (h as *mut u8).wrapping_add(HEAD)
}

/// Writes header, guards, trailer and the CLEANBYTE fill of user bytes `clean_from..size` into
/// a fresh inner allocation (`None`: the inner allocation is zeroed, leave it so); returns `p`.
/// Realloc passes the bytes it will copy over, so they are not written twice.
///
/// # Safety
/// `base` must be an inner allocation of `inner_layout(size, align)`.
#[inline]
pub unsafe fn init_block(
    base: *mut u8,
    size: usize,
    align: usize,
    api: Api,
    clean_from: Option<usize>,
    serial: u64,
    alloc_stack: u64,
) -> *mut u8 {
    // SAFETY: the caller gives an allocation of `inner_layout(size, align)`; every write below
    // stays inside `front(align, size) + size + GUARD + TRAILER` bytes of it, and the header is
    // 8-aligned because `front - HEAD` and `base` are multiples of 16.
    unsafe {
        let p = base.add(front(align, size));
        let h = header_of(p);
        h.write(Header {
            size_align: size_align_word(size, align.trailing_zeros()),
            alloc_stack: stack_id32(alloc_stack),
            free_stack: 0,
            magic: MAGIC,
            api: api as u8,
            status: LIVE,
            slot: 0,
        });
        (p.sub(GUARD) as *mut u64).write(GUARD_WORD);
        if let Some(from) = clean_from {
            let from = from.min(size);
            fill(p.add(from), CLEANBYTE, size - from);
        }
        (p.add(size) as *mut u64).write_unaligned(GUARD_WORD);
        (p.add(size + GUARD) as *mut u64).write_unaligned(trailer_word(serial));
        p
    }
}

/// The free path's one check: whether `p` is a live block of `api` (and, with a Rust layout,
/// of that size and alignment) with both guards intact. One load of the header's last word
/// (magic, API, status and alignment at once) and one of each guard, all independent of each
/// other, so a cold block costs overlapping misses. Any "no" sends the caller to the full
/// diagnosis (`probe` and the checks one by one), which names the defect; this only says
/// there is none, so it may be strict: it accepts nothing that the full checks would reject.
///
/// Like `probe`, it reads before `p` only where that cannot fault: `p` must be 16-aligned and
/// not within `HEAD` bytes of a 4 KiB frame's start (so the header is on `p`'s own page);
/// anything else takes the full path.
///
/// # Safety
/// `p` points into mapped memory (the program's claim that it is a block it was handed), and
/// with a Rust layout `p .. p + size + GUARD` is that block's memory once the header matched.
#[inline]
pub unsafe fn intact_live(p: *mut u8, api: Api, layout: Option<Layout>) -> bool {
    let addr = p as usize;
    if addr & 15 != 0 || addr & 4095 < HEAD {
        return false;
    }
    let h = header_of(p);
    // SAFETY: the header is on `p`'s page (checked above) and 8-aligned (p is 16-aligned, HEAD
    // and TAG_OFFSET are multiples of 8). Atomic: `check_heap` may read the status byte on
    // another thread; Relaxed, because only the owning thread writes it (and a racing double
    // free is a race the program already lost). Only the low half (magic, API, status) is
    // compared; the high half is the registry slot.
    let tag = unsafe {
        AtomicU64::from_ptr((h as *mut u8).add(TAG_OFFSET) as *mut u64).load(Ordering::Relaxed)
    };
    if tag as u32 != live_tag(api) {
        return false;
    }
    // SAFETY (the loads below): a matching tag means the header is ours, so its size is
    // readable and the back guard follows the user bytes inside the inner allocation; the
    // front guard is the 8 aligned bytes before `p`.
    unsafe {
        let size_align = (*h).size_align;
        let size = match layout {
            Some(l) => {
                if size_align != size_align_word(l.size(), l.align().trailing_zeros()) {
                    return false;
                }
                l.size()
            }
            // The size locates the back guard: it is trusted once its check byte matches.
            None if header_sound(h) => (size_align & SIZE_BITS) as usize,
            None => return false,
        };
        let front = (p.sub(GUARD) as *const u64).read();
        let back = (p.add(size) as *const u64).read_unaligned();
        front == GUARD_WORD && back == GUARD_WORD
    }
}

/// Sets `len` bytes at `p` to `byte`. The blocks of allocation-heavy code are mostly small, so
/// up to 64 bytes the fill is a few overlapping unaligned stores inline rather than a call to
/// `memset` (whose dispatch costs as much as the stores); longer fills call it.
///
/// # Safety
/// `[p, p+len)` is writable.
#[inline(always)]
pub unsafe fn fill(p: *mut u8, byte: u8, len: usize) {
    let w8 = u64::from_ne_bytes([byte; 8]);
    let w16 = u128::from_ne_bytes([byte; 16]);
    // SAFETY (all stores): each one is inside `[p, p+len)` by the length test before it; the
    // two of a pair overlap when `len` is not twice their width.
    unsafe {
        let s8 = |at: usize| (p.add(at) as *mut u64).write_unaligned(w8);
        let s16 = |at: usize| (p.add(at) as *mut u128).write_unaligned(w16);
        match len {
            0..=7 => {
                for i in 0..len {
                    *p.add(i) = byte;
                }
            }
            8..=16 => {
                s8(0);
                s8(len - 8);
            }
            17..=32 => {
                s16(0);
                s16(len - 16);
            }
            33..=64 => {
                s16(0);
                s16(16);
                s16(len - 32);
                s16(len - 16);
            }
            _ => core::ptr::write_bytes(p, byte, len),
        }
    }
}

/// Marks a block that is about to go back to the inner allocator, so that freeing it again
/// is still reported as a double free rather than passing for a live block (or an invalid
/// free) while its memory is not handed out again.
///
/// What survives the inner allocator's taking the block back decides where the mark goes.
/// Freeing writes the first bytes of a block only: pymalloc a free-list link (bytes 0..8)
/// and, for a block freed by another thread, a batch word (8..16); glibc `fd`/`bk` or the
/// tcache link and key (0..16), and in its large bins `fd_nextsize`/`bk_nextsize` (16..32);
/// glibc's footer (the next chunk's `prev_size`) lands at most on the trailer, never on the
/// back guard. The header starts at byte `front(align, size) - HEAD` of the inner block (0 in
/// pymalloc's blocks, 32 or more in glibc's), so:
///
/// - its last 8 bytes (magic, API, status, slot), at 16..24 (pymalloc) or 48..56 or further
///   (glibc), survive: the status becomes RELEASED, and the slot (no longer needed) becomes
///   the alignment and a check byte of the stack ids;
/// - the size and alignment word and the stack ids (0..16) are lost to glibc and to
///   pymalloc's cross-thread frees, so the size is copied into the front guard and the stack
///   ids into the back guard (both done with since the eviction's checks), the size with a
///   check byte of its own.
///
/// Once the memory is handed out again the mark may be overwritten, and a second free is
/// reported as an invalid free instead (or, if a new block starts at the same address, not
/// at all: it frees that block). A block glibc served with `mmap` (128 KiB and more, at
/// first) is unmapped: a second free of it faults, as it does with glibc alone.
///
/// # Safety
/// `h` is the header of a freed block that this thread owns until it is deallocated.
#[inline]
pub unsafe fn mark_released(h: *mut Header) {
    // SAFETY: the header and both guards are valid and ours (caller); the front guard is the 8
    // bytes right after the header, so 8-aligned; the back guard is read unaligned. Relaxed: a
    // later free of the same pointer is a race the program already lost, not one the mark
    // could order.
    unsafe {
        let b = Block { p: user_of(h) };
        let stacks = released_stacks_word((*h).alloc_stack, (*h).free_stack);
        (b.p.sub(GUARD) as *mut u64).write(released_size_word(b.size()));
        (b.tail() as *mut u64).write_unaligned(stacks);
        (*h).slot = u32::from(((*h).size_align >> 56) as u8) | u32::from(hash8(stacks)) << 8;
        status(h).store(RELEASED, Ordering::Relaxed);
    }
}

/// What the mark of a released block still tells, each part only if its check matches.
pub struct Released {
    pub api: u8,
    pub align_log2: u8,
    pub size: Option<usize>,
    /// (allocation, free) stack ids.
    pub stacks: Option<(u64, u64)>,
}

/// Reads what [`mark_released`] left around `p`. Volatile: the memory is the inner
/// allocator's, which may be handing it out again on another thread meanwhile.
///
/// # Safety
/// The `HEAD` bytes before `p` are readable, and `p` is 16-aligned. The back guard is read only
/// when the size's check matches and its pages are mapped (glibc may have trimmed the end of
/// a big block at the top of its heap while its header's page stayed).
pub unsafe fn read_released(p: *mut u8) -> Released {
    // SAFETY: the header and front guard are readable and aligned (caller).
    let (h, word) = unsafe {
        (
            core::ptr::read_volatile(header_of(p)),
            core::ptr::read_volatile(p.sub(GUARD) as *const u64),
        )
    };
    let size = released_size(word);
    let stacks = size.filter(|&size| guard_mapped(p, size)).and_then(|size| {
        // SAFETY: the size's check matched, so the back guard is where `mark_released` wrote
        // the stack ids, inside the inner allocation, and its pages are mapped (just checked).
        let word = unsafe { core::ptr::read_volatile(p.add(size) as *const u64) };
        (hash8(word) == (h.slot >> 8) as u8).then_some((word & 0xFFFF_FFFF, word >> 32))
    });
    Released {
        api: h.api,
        align_log2: h.slot as u8,
        size,
        stacks,
    }
}

/// Whether the back guard of a released block of `size` bytes can be read: on the header's
/// page, or on pages that are mapped.
fn guard_mapped(p: *mut u8, size: usize) -> bool {
    let page = page_size();
    let header = p as usize - HEAD;
    let Some(last) = (p as usize).checked_add(size + GUARD - 1) else {
        return false;
    };
    let first = last - (GUARD - 1);
    [first, last]
        .iter()
        .all(|&at| at / page == header / page || is_mapped(at, page))
}

/// The back-guard word of a released block: its stack ids.
fn released_stacks_word(alloc_stack: u32, free_stack: u32) -> u64 {
    u64::from(alloc_stack) | u64::from(free_stack) << 32
}

/// The front-guard word of a released block: the size and its check byte (a size that does
/// not fit, which no real allocation has, gets a check that fails).
pub fn released_size_word(size: usize) -> u64 {
    let bits = size as u64 & RELEASED_SIZE_BITS;
    let check = hash8(bits) ^ u8::from(bits != size as u64);
    bits | (u64::from(check) << 56)
}

/// The size a released block's front-guard word holds, if its check matches.
pub fn released_size(word: u64) -> Option<usize> {
    let bits = word & RELEASED_SIZE_BITS;
    (hash8(bits) == (word >> 56) as u8).then_some(bits as usize)
}

/// A byte that depends on every bit of `x`.
#[inline]
fn hash8(x: u64) -> u8 {
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A view of a block that is known to carry a valid header.
#[derive(Clone, Copy)]
pub struct Block {
    pub p: *mut u8,
}

impl Block {
    #[inline]
    pub fn header(self) -> *mut Header {
        header_of(self.p)
    }

    /// # Safety (for all the readers below)
    /// The header of `p` must be readable (a registered block, or checked with `probe`).
    #[inline]
    pub unsafe fn size(self) -> usize {
        // SAFETY: see the type-level contract.
        unsafe { ((*self.header()).size_align & SIZE_BITS) as usize }
    }

    #[inline]
    pub unsafe fn align(self) -> usize {
        // SAFETY: see the type-level contract; the shift was stored from a valid alignment.
        unsafe { 1usize << (((*self.header()).size_align >> 56) & 63) }
    }

    #[inline]
    pub unsafe fn tail(self) -> *mut u8 {
        // SAFETY: see the type-level contract.
        unsafe { self.p.wrapping_add(self.size()) }
    }

    /// The serial number in the trailer, if its check byte says the trailer is intact.
    #[inline]
    pub unsafe fn serial(self) -> Option<u64> {
        // SAFETY: the trailer follows the back guard inside the block's inner allocation.
        let word = unsafe { self.trailer() };
        let serial = word & SERIAL_BITS;
        (trailer_word(serial) == word).then_some(serial)
    }

    /// The trailer's 8 bytes as they are.
    #[inline]
    pub unsafe fn trailer(self) -> u64 {
        // SAFETY: the trailer follows the back guard inside the block's inner allocation.
        unsafe { (self.tail().add(GUARD) as *const u64).read_unaligned() }
    }

    #[inline]
    pub unsafe fn base(self) -> *mut u8 {
        // SAFETY: see the type-level contract.
        unsafe { self.p.wrapping_sub(front(self.align(), self.size())) }
    }

    #[inline]
    pub unsafe fn inner_layout(self) -> Layout {
        // SAFETY: see the type-level contract; this layout was valid when the block was made.
        unsafe {
            let size = front(self.align(), self.size()) + self.size() + GUARD + TRAILER;
            Layout::from_size_align_unchecked(size, inner_align(self.align()))
        }
    }

    /// Whether the front guard is intact: one aligned word (`p` is 16-aligned).
    #[inline]
    pub unsafe fn leading_intact(self) -> bool {
        // SAFETY: the front guard is the 8 bytes before `p`, 8-aligned, inside the block.
        unsafe { (self.p.sub(GUARD) as *const u64).read() == GUARD_WORD }
    }

    /// Whether the back guard of the block, whose user size is `size`, is intact: one
    /// unaligned word. The size is a parameter so that the free path can take it from the
    /// caller's layout and load the guard without waiting for the header (see
    /// `Debug::checked`).
    #[inline]
    pub unsafe fn trailing_intact(self, size: usize) -> bool {
        // SAFETY: with the block's own size, the back guard follows the user bytes inside the
        // inner allocation (callers pass the header's size or one checked equal to it).
        unsafe { (self.p.add(size) as *const u64).read_unaligned() == GUARD_WORD }
    }
}

/// The low 56 bits of the trailer hold the serial number (2^56 allocations are centuries
/// away), the top byte its check: a write past the back guard that reaches the trailer shows
/// as a trailer whose check fails.
const SERIAL_BITS: u64 = (1 << 56) - 1;

/// The trailer of serial number `serial`.
#[inline]
fn trailer_word(serial: u64) -> u64 {
    let serial = serial & SERIAL_BITS;
    serial | u64::from(hash8(serial)) << 56
}

/// Both guards as a word, so each is checked with one load and one compare.
const GUARD_WORD: u64 = u64::from_ne_bytes([FORBIDDENBYTE; GUARD]);
const _: () = assert!(GUARD == core::mem::size_of::<u64>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_keeps_alignment_and_header_adjacent() {
        let mut align = 1;
        while align <= 4096 {
            for size in [0, 24, 464, 465, 100_000] {
                let f = front(align, size);
                assert!(f >= HEAD);
                assert_eq!(f % inner_align(align), 0);
            }
            align *= 2;
        }
        // A pymalloc block: the header at its start.
        assert_eq!(front(8, 24), 32);
        assert_eq!(front(16, 464), 32);
        // Passed on to glibc: the header past the 32 bytes its free writes.
        assert_eq!(front(8, 465), 64);
        assert_eq!(front(32, 24), 64);
        assert_eq!(front(4096, 24), 4096);
    }

    #[test]
    fn fill_writes_exactly_its_range() {
        for len in 0..140 {
            let mut buf = [0u8; 160];
            unsafe { fill(buf.as_mut_ptr().add(3), DEADBYTE, len) };
            assert!(buf[..3].iter().all(|&b| b == 0), "len {len}");
            assert!(buf[3..3 + len].iter().all(|&b| b == DEADBYTE), "len {len}");
            assert!(buf[3 + len..].iter().all(|&b| b == 0), "len {len}");
        }
    }
}
