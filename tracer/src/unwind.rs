//! Stack capture: a frame-pointer walk bounded by the thread's stack.
//!
//! The workspace builds with `-C force-frame-pointers=yes` (and Rust's std is built with frame
//! pointers too), so every frame starts with a record `[saved fp, return address]` and the
//! chain of saved frame pointers leads to the thread's first frame. Walking it costs one or two
//! loads per frame.
//!
//! A walk must never fault, whatever a frame without frame pointers left in the register: each
//! frame pointer is checked to lie inside this thread's stack (found once with
//! `pthread_getattr_np` and cached in a thread-local), to be aligned, and to move strictly
//! towards the stack's base. Where the walk finds nothing at all (no frame pointers on this
//! target or in this code), the `backtrace` crate's DWARF unwinder takes over; that is slower
//! but correct. `TIDEMARK_UNWIND=dwarf` forces it.

use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering};

thread_local! {
    /// This thread's stack as [low, high); (0, 0) until looked up, (1, 1) if unknown.
    static STACK_BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// 0 = not decided, 1 = frame pointers, 2 = DWARF (`backtrace` crate).
static METHOD: AtomicU8 = AtomicU8::new(0);

fn method() -> u8 {
    let m = METHOD.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let forced = matches!(tidemark_alloc::env::var(c"TIDEMARK_UNWIND"), Some(b"dwarf"));
    let m = if forced || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        2
    } else {
        1
    };
    METHOD.store(m, Ordering::Relaxed);
    m
}

#[cold]
fn lookup_stack_bounds() -> (usize, usize) {
    let mut lo = 0usize;
    let mut size = 0usize;
    // SAFETY: attr is initialized by pthread_getattr_np before use and destroyed after;
    // getattr_np on the calling thread has no other preconditions.
    let ok = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            false
        } else {
            let mut addr: *mut libc::c_void = core::ptr::null_mut();
            let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            lo = addr as usize;
            r == 0
        }
    };
    if ok && size != 0 {
        (lo, lo.saturating_add(size))
    } else {
        (1, 1)
    }
}

/// Frame pointers (not the DWARF unwinder) capture stacks on this thread's target.
#[inline]
pub(crate) fn uses_frame_pointers() -> bool {
    method() == 1
}

/// The calling thread's stack as `[low, high)` (cached per thread; `(1, 1)` when unknown).
/// Stack walkers use it so that they never read outside the stack.
#[inline]
pub fn stack_bounds() -> (usize, usize) {
    STACK_BOUNDS
        .try_with(|b| {
            let v = b.get();
            if v.1 != 0 {
                return v;
            }
            let v = lookup_stack_bounds();
            b.set(v);
            v
        })
        .unwrap_or((1, 1))
}

/// The calling function's frame pointer (its frame record), when it has one.
#[inline(always)]
pub(crate) fn frame_address() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register, nothing else.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register, nothing else.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// Walks frame records from `fp`. Fills `out` after skipping `skip` frames, then keeps
/// counting up to `count_limit` frames in all. Returns (written, total frames seen after skip).
#[inline(always)]
fn walk(mut fp: usize, skip: usize, out: &mut [u64], count_limit: usize) -> (usize, usize) {
    let (lo, hi) = stack_bounds();
    let mut seen = 0usize; // frames seen including skipped
    let mut n = 0usize;
    while fp >= lo && fp <= hi.wrapping_sub(16) && fp & (core::mem::align_of::<usize>() - 1) == 0 {
        // SAFETY: [fp, fp + 16) lies inside this thread's mapped stack (checked above).
        let (next, ip) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ip == 0 {
            break;
        }
        if seen >= skip {
            if n < out.len() {
                out[n] = ip as u64;
                n += 1;
            } else if seen - skip >= count_limit {
                break;
            }
        }
        seen += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    (n, seen.saturating_sub(skip))
}

fn dwarf_capture(skip: usize, out: &mut [u64], count_limit: usize) -> (usize, usize) {
    let mut seen = 0usize;
    let mut n = 0usize;
    // SAFETY: trace_unsynchronized requires no concurrent use of the unwinder's global state
    // that it would otherwise lock; libgcc's _Unwind_Backtrace is thread-safe on Linux.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            // The outermost frame's return address (after `_start`) is 0: no frame.
            if frame.ip().is_null() {
                return false;
            }
            if seen >= skip {
                if n < out.len() {
                    out[n] = frame.ip() as u64;
                    n += 1;
                } else if seen - skip >= count_limit {
                    return false;
                }
            }
            seen += 1;
            true
        })
    };
    (n, seen.saturating_sub(skip))
}

/// Captures the calling thread's stack: return addresses, most recent first, starting with the
/// caller of `capture_stack` after skipping `skip` frames. Returns how many were written.
///
/// ```
/// let mut ips = [0u64; 16];
/// let n = tidemark_tracer::capture_stack(0, &mut ips);
/// assert!(n > 0);
/// ```
#[inline(never)]
pub fn capture_stack(skip: usize, out: &mut [u64]) -> usize {
    let n = capture_counted(skip + 1, out, 0).0;
    // Keeps this a call, not a jump: skipping one frame (ours) is right only while this
    // function has a frame. As a tail call the walk started at our caller's caller.
    core::hint::black_box(n)
}

/// Like `capture_stack`, and also counts the frames beyond `out` (up to `count_limit` in all):
/// returns (written, total depth).
#[inline(never)]
pub(crate) fn capture_counted(skip: usize, out: &mut [u64], count_limit: usize) -> (usize, usize) {
    if method() == 1 {
        // The record at our own frame holds the return address into our caller, which is the
        // frame the skip count starts from.
        let r = walk(frame_address(), skip, out, count_limit);
        if r.0 > 0 || out.is_empty() {
            return r;
        }
    }
    // The DWARF walk reports its own frames (trace_unsynchronized, the closure, this one).
    dwarf_capture(skip + 2, out, count_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn recurse(depth: usize, out: &mut [u64]) -> usize {
        if depth == 0 {
            capture_stack(0, out)
        } else {
            let n = recurse(depth - 1, out);
            core::hint::black_box(n)
        }
    }

    #[test]
    fn walks_as_deep_as_the_recursion() {
        let mut out = [0u64; 256];
        let n10 = recurse(10, &mut out);
        let n40 = recurse(40, &mut out);
        assert_eq!(n40 - n10, 30, "one frame per call");
        let mut again = [0u64; 256];
        for round in 0..2 {
            let n = recurse(5, if round == 0 { &mut out } else { &mut again });
            assert!(n > 6);
        }
        // The capture site and the recursion's return addresses; the call of recurse(5) itself
        // differs between the two rounds when the loop is unrolled.
        assert_eq!(out[..4], again[..4], "same call path, same ips");
        let first = out;
        // The recursion frames share one return address.
        assert_eq!(first[1], first[2]);
    }

    #[test]
    fn counts_beyond_the_buffer() {
        let mut full = [0u64; 256];
        let depth = capture_counted(0, &mut full, 1 << 16).0;
        let mut small = [0u64; 3];
        let (n, total) = capture_counted(0, &mut small, 1 << 16);
        assert_eq!(n, 3);
        assert_eq!(total, depth);
    }

    #[test]
    fn dwarf_stacks_end_without_a_null_frame() {
        let mut out = [0u64; 256];
        let (n, _) = dwarf_capture(0, &mut out, 1 << 16);
        assert!(n > 2, "{n}");
        assert!(out[..n].iter().all(|&ip| ip != 0), "{:x?}", &out[..n]);
    }

    #[test]
    fn threads_have_their_own_bounds() {
        let n = std::thread::spawn(|| {
            let mut out = [0u64; 64];
            capture_stack(0, &mut out)
        })
        .join()
        .unwrap();
        assert!(n >= 2);
    }
}
