//! Which slot is the calling thread's: one thread-local word, claimed at the thread's first
//! event (a fresh slot, or one an exited thread left), handed back at its exit through a
//! pthread key, and set aside for good in the writer's own thread.

use super::{ThreadBuf, DROPPED, NEXT_THREAD_INDEX, THREADS};
use core::cell::Cell;
use core::ptr::null_mut;
use core::sync::atomic::Ordering;
use tidemark_alloc::exit_key::ExitKey;

/// The calling thread's recording state, in one thread-local word: its slot, or a marker
/// below `MARKERS_END` (no slot yet, released at exit, suppressed), so that an event tells
/// the common case with one load and one compare. Zero-initialized and without a
/// destructor, so it stays usable while the thread exits, and in the initial-exec TLS model
/// (`tidemark_alloc::tls`), where a `thread_local!` in the preload (a cdylib) would call
/// `__tls_get_addr` on every event.
pub(super) struct Mine {
    /// The thread's slot, or null (none yet), `RELEASED` or `SUPPRESSED`.
    pub(super) buf: Cell<*mut ThreadBuf>,
}

tidemark_alloc::initial_exec_tls!(fn mine_cell() -> Mine, "tidemark_tracer_capture_mine");

/// Markers in `Mine::buf`, never a slot's address (no mapping starts in the first page):
/// the thread's slot was released at its exit; the thread's events are not recorded.
const RELEASED: usize = 1;
const SUPPRESSED: usize = 2;
const MARKERS_END: usize = 4096;

#[inline(always)]
pub(super) fn mine() -> &'static Mine {
    // SAFETY: all-zero bytes are a valid `Mine` (no slot yet), which has no destructor; the
    // reference stays on this thread (`Cell` is not `Sync`).
    unsafe { &*mine_cell() }
}

/// Stops recording the calling thread's events (the writer thread calls it for itself,
/// before its first allocation).
pub fn suppress_this_thread() {
    mine()
        .buf
        .set(core::ptr::without_provenance_mut(SUPPRESSED));
}

/// The calling thread's slot for an event; None when the event is not recorded: the
/// writer thread's, or (counted as dropped) one from a thread without a slot.
#[inline(always)]
pub(super) fn event_buf() -> Option<&'static ThreadBuf> {
    match own_slot() {
        Ok(buf) => Some(buf),
        Err(marker) => marked_buf(marker),
    }
}

/// The calling thread's slot, or the marker in its place (nothing claimed here).
#[inline(always)]
pub(super) fn own_slot() -> Result<&'static ThreadBuf, usize> {
    let buf = mine().buf.get();
    if (buf as usize) < MARKERS_END {
        return Err(buf as usize);
    }
    // SAFETY: slots are never unmapped.
    Ok(unsafe { &*buf })
}

/// `event_buf` for a marker: the first event claims a slot; a released slot is none.
#[cold]
fn marked_buf(marker: usize) -> Option<&'static ThreadBuf> {
    let buf = match marker {
        0 => first_buf(),
        SUPPRESSED => return None,
        _ => null_mut(),
    };
    if buf.is_null() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    // SAFETY: slots are never unmapped.
    Some(unsafe { &*buf })
}

/// Hands an exiting thread's slot back to the writer.
static EXIT: ExitKey = ExitKey::new(thread_exit);

/// pthread destructor: the thread is exiting; hand its slot back to the writer.
unsafe extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let buf = arg as *mut ThreadBuf;
    if buf.is_null() {
        return;
    }
    mine().buf.set(core::ptr::without_provenance_mut(RELEASED));
    // SAFETY: slots are never unmapped.
    unsafe { (*buf).dead.store(true, Ordering::Release) };
}

/// Claims or creates the calling thread's slot, at its first event.
#[cold]
fn first_buf() -> *mut ThreadBuf {
    let buf = claim_slot();
    mine().buf.set(buf);
    if !buf.is_null() {
        // SAFETY: `thread_exit` takes this thread's claimed slot.
        unsafe { EXIT.set(buf as *const libc::c_void) };
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
        let p = crate::sysmem::map_zeroed(core::mem::size_of::<ThreadBuf>()) as *mut ThreadBuf;
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
    set_identity(unsafe { &*slot });
    slot
}

/// Gives `s` the calling thread's identity (tid, name) and the next thread index.
pub(super) fn set_identity(s: &ThreadBuf) {
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
}

/// For a thread that will never return to the event it was interrupted in (a fatal signal's
/// handler, about to flush the capture and die): gives up that event's row, so that the
/// writer's barrier does not wait for it. The row is lost unless it was published already.
/// Async-signal-safe: one load and one store.
pub fn abandon_this_threads_event() {
    if let Ok(buf) = own_slot() {
        buf.busy.store(0, Ordering::Release);
    }
}
