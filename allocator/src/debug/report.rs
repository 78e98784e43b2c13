//! The fatal report: what is wrong with a block, in CPython's `_PyObject_DebugDumpAddress`
//! words, with the allocation (and free) tracebacks when a tracer supplies them; then abort.
//!
//! Everything is written through `Stderr` (a fixed buffer straight to fd 2): the heap may be
//! corrupt, so the report itself never allocates. Only the tracer's `write` hook may allocate
//! (symbolization); no debug-layer lock is held while it runs.

use super::layout::{
    read_released, Api, Block, Header, DEADBYTE, FORBIDDENBYTE, FREED, GUARD, HEAD,
};
use crate::hooks::traceback_hooks;
use crate::stderr::Stderr;
use core::fmt::Write;
use core::sync::atomic::{AtomicI32, Ordering};

/// The operation that found the defect; it names the report's last line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Dealloc,
    Realloc,
    Free,
    CRealloc,
    UsableSize,
    Quarantine,
    CheckHeap,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Dealloc => "debug dealloc",
            Op::Realloc => "debug realloc",
            Op::Free => "debug free",
            Op::CRealloc => "debug realloc",
            Op::UsableSize => "debug malloc_usable_size",
            Op::Quarantine => "debug quarantine",
            Op::CheckHeap => "check_heap",
        }
    }

    /// The entry point the program called, as a user would name it.
    fn call(self) -> &'static str {
        match self {
            Op::Dealloc => "dealloc",
            Op::Realloc | Op::CRealloc => "realloc",
            Op::Free => "free",
            Op::UsableSize => "malloc_usable_size",
            Op::Quarantine | Op::CheckHeap => "check",
        }
    }
}

/// What is wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Defect {
    /// A front guard byte changed.
    LeadingPad,
    /// A back guard byte changed.
    TrailingPad,
    /// Made by one API, released by the other.
    ApiMismatch { used: Api },
    /// Rust `dealloc`/`realloc` passed a layout other than the allocation's.
    LayoutMismatch { size: usize, align: usize },
    /// Freed again, while waiting in the quarantine or (`released`) after it went back to
    /// the inner allocator with its mark in place.
    DoubleFree { released: bool },
    /// Not a pointer tidemark handed out.
    InvalidFree { reason: &'static str },
    /// A freed block's byte at `offset` is no longer DEADBYTE.
    WriteAfterFree { offset: usize },
    /// The trailer (serial number) after the back guard changed: a write past the end that
    /// jumped the guard, or ran on past it.
    TrailerDamaged,
    /// The header's size or slot (or its tag, in a block the registry holds) changed: a
    /// write before the block ran past its front guard.
    HeaderDamaged,
}

impl Defect {
    fn headline(self, op: Op, out: &mut Stderr) {
        let _ = match self {
            // A freed block handed to something other than a free is used after its free.
            Defect::DoubleFree { .. } if matches!(op, Op::Realloc | Op::CRealloc) => {
                out.write_str("realloc of a freed block")
            }
            Defect::DoubleFree { .. } if op == Op::UsableSize => out.write_str("use after free"),
            Defect::LeadingPad => out.write_str("bad leading pad byte"),
            Defect::TrailingPad => out.write_str("bad trailing pad byte"),
            Defect::ApiMismatch { .. } => out.write_str("API mismatch"),
            Defect::LayoutMismatch { .. } => out.write_str("layout mismatch"),
            Defect::DoubleFree { .. } => out.write_str("double free"),
            Defect::InvalidFree { .. } if matches!(op, Op::Realloc | Op::CRealloc) => {
                out.write_str("invalid realloc")
            }
            Defect::InvalidFree { .. } if op == Op::UsableSize => out.write_str("invalid pointer"),
            Defect::InvalidFree { .. } => out.write_str("invalid free"),
            Defect::WriteAfterFree { .. } => out.write_str("write after free"),
            Defect::HeaderDamaged => out.write_str("damaged block header"),
            Defect::TrailerDamaged => out.write_str("bad serial number after the trailing pad"),
        };
    }
}

/// Bytes of the header (before the front guard).
const HEADER: usize = core::mem::size_of::<Header>();

/// Thread id of the thread writing a report (0 = none).
static REPORTER: AtomicI32 = AtomicI32::new(0);

/// Is this thread writing a report? Its tracer hook allocates while it symbolizes the
/// tracebacks (megabytes of debug information), which can push the very block being reported
/// out of the quarantine: that second finding must not cut the first report short. Called on
/// the failure path only (one `gettid` system call).
pub fn reporting_here() -> bool {
    let owner = REPORTER.load(Ordering::Acquire);
    // SAFETY: gettid has no preconditions.
    owner != 0 && owner == unsafe { libc::gettid() }
}

/// Writes the report for the block at `p` and aborts the process.
///
/// # Safety
/// Unless `defect` is `InvalidFree`, `p` must be a debug block whose header (and front guard)
/// is readable, and unless it is `DoubleFree { released: true }` or `HeaderDamaged`, its back
/// guard, user bytes and trailer too.
#[cold]
#[inline(never)]
pub unsafe fn fatal(op: Op, p: *mut u8, defect: Defect) -> ! {
    enter();
    let mut out = Stderr::new();
    let _ = writeln!(out);
    if let Defect::InvalidFree { reason } = defect {
        invalid(&mut out, op, p, reason);
    } else if defect == Defect::HeaderDamaged {
        // SAFETY: the caller promises a readable header (and front guard, right after it).
        unsafe { damaged(&mut out, op, p) };
    } else if let Defect::DoubleFree { released: true } = defect {
        // SAFETY: the caller promises a readable header.
        unsafe { released(&mut out, op, p) };
    } else {
        // SAFETY: the caller promises a readable debug block.
        unsafe { dump(&mut out, op, Block { p }, defect) };
    }
    let _ = writeln!(out);
    let _ = write!(out, "Fatal error: tidemark {}: ", op.name());
    defect.headline(op, &mut out);
    let _ = writeln!(out);
    out.flush();
    drop(out);
    // SAFETY: abort has no preconditions; it raises SIGABRT and never returns.
    unsafe { libc::abort() }
}

/// Only one report at a time: another thread that finds a defect meanwhile waits for the
/// abort; a defect found on the reporting thread itself (inside the tracer's write hook)
/// aborts at once.
fn enter() {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    loop {
        match REPORTER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(owner) if owner == me => {
                let mut out = Stderr::new();
                let _ = writeln!(
                    out,
                    "Fatal error: tidemark: heap corruption found while reporting one"
                );
                out.flush();
                // SAFETY: abort has no preconditions.
                unsafe { libc::abort() }
            }
            Err(_) => {
                // SAFETY: sleep has no preconditions; the other thread will abort the process.
                unsafe { libc::sleep(1) };
            }
        }
    }
}

fn invalid(out: &mut Stderr, op: Op, p: *mut u8, reason: &str) {
    let _ = writeln!(
        out,
        "Debug memory block at address p={:#x}: not a tidemark debug block",
        p as usize
    );
    let _ = writeln!(
        out,
        "    {} was called with a pointer tidemark did not hand out:",
        op.call()
    );
    let _ = writeln!(out, "    {reason}.");
    if crate::is_ours(p) {
        let _ = writeln!(
            out,
            "    The pointer is inside a tidemark arena, but not at the start of a block."
        );
    } else {
        let _ = writeln!(out, "    The pointer is not inside a tidemark arena.");
    }
    // A pointer into a live or quarantined block: which one, and where it was made.
    let inside = match super::probe::holder(p as usize) {
        Some(super::probe::Holder::Inside(q)) => Some(q),
        _ => None,
    };
    let holder = inside.map(|q| {
        let b = Block { p: q };
        // SAFETY: the block was registered a moment ago; its owner could release it since
        // only by freeing it, which would run the checks (and wait for this report) first.
        unsafe { (q as usize, b.size(), u64::from((*b.header()).alloc_stack)) }
    });
    if let Some((q, size, _)) = holder {
        let at = p as usize;
        let _ = if at >= q {
            writeln!(
                out,
                "    It points {} bytes into the {size}-byte debug block at {q:#x}.",
                at - q
            )
        } else {
            writeln!(
                out,
                "    It points {} bytes before the {size}-byte debug block at {q:#x}, into its header.",
                q - at
            )
        };
    }
    current_stack(out, op, true);
    if let Some((_, _, alloc_stack)) = holder {
        let _ = writeln!(out);
        let _ = writeln!(out, "That block was allocated at (most recent call first):");
        traceback(out, alloc_stack, "where blocks are allocated");
    }
}

/// # Safety
/// `b` is a readable debug block.
unsafe fn dump(out: &mut Stderr, op: Op, b: Block, defect: Defect) {
    // SAFETY: the caller guarantees the header, guards, user bytes and trailer are readable.
    let (h, size, align) = unsafe { (&*b.header(), b.size(), b.align()) };
    let api = Api::from_byte(h.api).map_or("?", Api::name);
    let p = b.p as usize;
    let _ = writeln!(out, "Debug memory block at address p={p:#x}: API '{api}'");
    let _ = writeln!(out, "    {size} bytes originally requested, align {align}");

    // SAFETY: the front guard is readable (caller).
    let front = unsafe { core::slice::from_raw_parts(b.p.sub(GUARD), GUARD) };
    if front.iter().all(|&x| x == FORBIDDENBYTE) {
        let _ = writeln!(
            out,
            "    The {GUARD} pad bytes at p-{GUARD} are FORBIDDENBYTE, as expected."
        );
    } else {
        let _ = writeln!(
            out,
            "    The {GUARD} pad bytes at p-{GUARD} are not all FORBIDDENBYTE ({FORBIDDENBYTE:#04x}):"
        );
        for (i, &x) in front.iter().enumerate() {
            let _ = write!(out, "        at p-{}: {x:#04x}", GUARD - i);
            let _ = writeln!(out, "{}", if x == FORBIDDENBYTE { "" } else { " *** OUCH" });
        }
    }

    let tail = p + size;
    // SAFETY: the back guard is readable (caller).
    let back = unsafe { core::slice::from_raw_parts(b.tail(), GUARD) };
    if back.iter().all(|&x| x == FORBIDDENBYTE) {
        let _ = writeln!(
            out,
            "    The {GUARD} pad bytes at tail={tail:#x} are FORBIDDENBYTE, as expected."
        );
    } else {
        let _ = writeln!(
            out,
            "    The {GUARD} pad bytes at tail={tail:#x} are not all FORBIDDENBYTE ({FORBIDDENBYTE:#04x}):"
        );
        for (i, &x) in back.iter().enumerate() {
            let _ = write!(out, "        at tail+{i}: {x:#04x}");
            let _ = writeln!(out, "{}", if x == FORBIDDENBYTE { "" } else { " *** OUCH" });
        }
    }

    // SAFETY: the trailer is readable (caller).
    let _ = match unsafe { b.serial() } {
        Some(serial) => writeln!(
            out,
            "    The block was made by call #{serial} to debug malloc/realloc."
        ),
        None => {
            // SAFETY: as above.
            let bytes = unsafe { b.trailer() }.to_le_bytes();
            let _ = write!(
                out,
                "    The 8 bytes at tail+{GUARD} (the block's serial number) were overwritten:"
            );
            hex(out, &bytes, usize::MAX);
            writeln!(
                out,
                "    *** OUCH: a write past the end of the block ran beyond its back guard."
            )
        }
    };
    let freed = h.status == FREED;
    if freed {
        let _ = writeln!(
            out,
            "    The block was freed and waits in the quarantine; its bytes should all be DEADBYTE ({DEADBYTE:#04x})."
        );
    }
    match defect {
        Defect::ApiMismatch { used } => {
            let _ = writeln!(
                out,
                "    The block was allocated with API '{api}' but {} was called through API '{}'.",
                op.call(),
                used.name()
            );
        }
        Defect::LayoutMismatch { size: s, align: a } => {
            let _ = writeln!(
                out,
                "    {} was called with size {s}, align {a} *** OUCH",
                op.call()
            );
        }
        Defect::DoubleFree { .. } => {
            let _ = writeln!(
                out,
                "    {} was called on a block that was already freed.",
                op.call()
            );
        }
        Defect::WriteAfterFree { offset } => {
            // SAFETY: offset < size, inside the readable user bytes.
            let x = unsafe { *b.p.add(offset) };
            let _ = writeln!(
                out,
                "    The byte at p+{offset} changed after the free: {x:#04x} *** OUCH"
            );
        }
        _ => {}
    }

    // SAFETY: the user bytes are readable (caller).
    let data = unsafe { core::slice::from_raw_parts(b.p, size) };
    let _ = write!(out, "    Data at p:");
    hex(out, data, 0);
    if let Defect::WriteAfterFree { offset } = defect {
        if size > 16 && offset >= 8 && offset < size - 8 {
            let start = offset - 8;
            let _ = write!(out, "    Data at p+{start}:");
            hex(out, &data[start..(offset + 8).min(size)], usize::MAX);
        }
    }

    // Both ids are read before the first traceback: symbolizing allocates, which may recycle
    // a quarantined block and overwrite its header.
    let (alloc_stack, free_stack) = (u64::from(h.alloc_stack), u64::from(h.free_stack));
    let _ = writeln!(out);
    let _ = writeln!(out, "Memory block allocated at (most recent call first):");
    traceback(out, alloc_stack, "where blocks are allocated");
    if freed {
        let _ = writeln!(out);
        let _ = writeln!(out, "Memory block freed at (most recent call first):");
        traceback(out, free_stack, "where blocks are freed");
    }
    if !matches!(op, Op::Quarantine | Op::CheckHeap) {
        current_stack(out, op, false);
    }
}

/// The report of a block whose header was overwritten. Nothing it says is trusted: not the
/// size (so no guard past the block and no user byte is read), not the traceback ids.
///
/// # Safety
/// The `HEAD` bytes before `p` are readable.
unsafe fn damaged(out: &mut Stderr, op: Op, p: *mut u8) {
    let _ = writeln!(
        out,
        "Debug memory block at address p={:#x}: its header is damaged",
        p as usize
    );
    let _ = writeln!(
        out,
        "    The {HEADER} bytes of bookkeeping at p-{HEAD}..p-{GUARD} were overwritten: a write before the block's start ran past its front guard, or a wild write landed there."
    );
    // SAFETY: the header and the front guard are readable (caller).
    let head = unsafe { core::slice::from_raw_parts(p.wrapping_sub(HEAD), HEAD) };
    let _ = write!(out, "    Bytes at p-{HEAD}:");
    hex(out, &head[..HEADER], usize::MAX);
    let _ = write!(out, "    Bytes at p-{GUARD}:");
    hex(out, &head[HEADER..], usize::MAX);
    let _ = writeln!(
        out,
        "    The block's size, serial and tracebacks were kept in those bytes: they are not shown."
    );
    if !matches!(op, Op::Quarantine | Op::CheckHeap) {
        current_stack(out, op, false);
    }
}

/// The report of a second free of a block that already went back to the inner allocator.
/// Only the header and the guards are read (the block's bytes belong to the inner allocator
/// again): the size and the tracebacks if their checks say the inner allocator left them
/// alone (see `layout::mark_released`; the back guard only where it is mapped).
///
/// # Safety
/// The `HEAD` bytes before `p` are readable, and `p` is 16-aligned.
unsafe fn released(out: &mut Stderr, op: Op, p: *mut u8) {
    // SAFETY: as required by this function.
    let r = unsafe { read_released(p) };
    let api = Api::from_byte(r.api).map_or("?", Api::name);
    let _ = writeln!(
        out,
        "Debug memory block at address p={:#x}: API '{api}'",
        p as usize
    );
    if let Some(size) = r.size {
        let align = 1usize << (r.align_log2 & 63);
        let _ = writeln!(out, "    {size} bytes originally requested, align {align}");
    }
    let _ = writeln!(
        out,
        "    The block was freed and has already left the quarantine: its memory went back to the inner allocator."
    );
    let _ = writeln!(
        out,
        "    {} was called on a block that was already freed.",
        op.call()
    );
    if let Some((alloc_stack, free_stack)) = r.stacks {
        let _ = writeln!(out);
        let _ = writeln!(out, "Memory block allocated at (most recent call first):");
        traceback(out, alloc_stack, "where blocks are allocated");
        let _ = writeln!(out);
        let _ = writeln!(out, "Memory block freed at (most recent call first):");
        traceback(out, free_stack, "where blocks are freed");
    } else {
        let _ = writeln!(
            out,
            "    The inner allocator has since written over the block's tracebacks."
        );
    }
    current_stack(out, op, false);
}

/// Bytes in hex, like CPython: up to 8 from each end with " ..." between; `limit` = MAX shows
/// every byte.
fn hex(out: &mut Stderr, data: &[u8], limit: usize) {
    let show = if limit == usize::MAX { data.len() } else { 8 };
    if data.len() <= 2 * show {
        for x in data {
            let _ = write!(out, " {x:02x}");
        }
    } else {
        for x in &data[..show] {
            let _ = write!(out, " {x:02x}");
        }
        let _ = write!(out, " ...");
        for x in &data[data.len() - show..] {
            let _ = write!(out, " {x:02x}");
        }
    }
    let _ = writeln!(out);
}

/// The frames of stack `id`, or one line saying why there are none (`what` they would show).
fn traceback(out: &mut Stderr, id: u64, what: &str) {
    match traceback_hooks() {
        None => {
            let _ = writeln!(
                out,
                "  (tracing is off: TIDEMARK_TRACE=32 shows {what} when the global allocator is \
                 wrapped in Traced)"
            );
        }
        Some(_) if id == 0 => {
            let _ = writeln!(out, "  (no traceback was recorded for this block)");
        }
        Some(hooks) => {
            (hooks.write)(id, &mut |line: &str| {
                let _ = writeln!(out, "  {line}");
            });
        }
    }
}

/// Where the defect was found (the stack of the call that found it): when tracing, or
/// `always` (then the line says how to turn tracing on).
fn current_stack(out: &mut Stderr, op: Op, always: bool) {
    if traceback_hooks().is_none() && !always {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{} called at (most recent call first):", op.call());
    let id = traceback_hooks().map_or(0, |hooks| (hooks.capture)());
    if id == 0 && traceback_hooks().is_some() {
        let _ = writeln!(out, "  (the tracer returned no traceback)");
    } else {
        traceback(out, id, "where the call was made");
    }
}
