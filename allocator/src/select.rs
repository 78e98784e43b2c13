//! `Tidemark`: the allocator chosen at run time by `TIDEMARK_MALLOC`, as CPython's
//! `PYTHONMALLOC` chooses its allocators.
//!
//! | `TIDEMARK_MALLOC` | serves with |
//! |---|---|
//! | unset, `pymalloc` | `Pymalloc` |
//! | `pymalloc_debug`, `debug` | `Debug<Pymalloc>` |
//! | `malloc` | the system allocator |
//! | `malloc_debug` | `Debug<System>` |
//!
//! The variable is read once, at the first allocation, with `getenv` (no allocation); an
//! unknown value prints one line naming the accepted values and falls back to `pymalloc`.
//! The choice is then fixed for the life of the process (a block must go back to the
//! allocator that made it), and each call costs one relaxed load and a predictable branch.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: tidemark_alloc::select::Tidemark = tidemark_alloc::select::Tidemark::new();
//! ```

use crate::debug::Debug;
use crate::stderr::Stderr;
use crate::Pymalloc;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};
use std::alloc::System;

/// Which allocator `Tidemark` forwards to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    Pymalloc = 1,
    PymallocDebug = 2,
    Malloc = 3,
    MallocDebug = 4,
}

impl Mode {
    /// The `TIDEMARK_MALLOC` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pymalloc => "pymalloc",
            Mode::PymallocDebug => "pymalloc_debug",
            Mode::Malloc => "malloc",
            Mode::MallocDebug => "malloc_debug",
        }
    }

    fn from_u8(v: u8) -> Option<Mode> {
        match v {
            1 => Some(Mode::Pymalloc),
            2 => Some(Mode::PymallocDebug),
            3 => Some(Mode::Malloc),
            4 => Some(Mode::MallocDebug),
            _ => None,
        }
    }
}

/// The accepted values, for the error line.
pub const ACCEPTED: &str = "pymalloc, pymalloc_debug, malloc, malloc_debug, debug";

/// Parses a `TIDEMARK_MALLOC` value (`None`: unset). Unset and empty mean the default;
/// an unknown value gives `None`.
pub fn parse_mode(value: Option<&[u8]>) -> Option<Mode> {
    match value {
        None | Some(b"") | Some(b"pymalloc") => Some(Mode::Pymalloc),
        Some(b"pymalloc_debug") | Some(b"debug") => Some(Mode::PymallocDebug),
        Some(b"malloc") => Some(Mode::Malloc),
        Some(b"malloc_debug") => Some(Mode::MallocDebug),
        Some(_) => None,
    }
}

/// 0 until decided, then a `Mode` discriminant.
static MODE: AtomicU8 = AtomicU8::new(0);

static PYMALLOC: Pymalloc = Pymalloc::new();
static PYMALLOC_DEBUG: Debug<Pymalloc> = Debug::new(Pymalloc::new());
static MALLOC_DEBUG: Debug<System> = Debug::new(System);

/// The allocator that `TIDEMARK_MALLOC` names. See the module docs.
pub struct Tidemark;

impl Tidemark {
    pub const fn new() -> Self {
        Tidemark
    }

    /// The allocator in use (reading the environment if nothing was allocated yet).
    pub fn mode() -> Mode {
        mode()
    }
}

impl Default for Tidemark {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
fn mode() -> Mode {
    match Mode::from_u8(MODE.load(Ordering::Relaxed)) {
        Some(m) => m,
        None => decide(),
    }
}

#[cold]
#[inline(never)]
fn decide() -> Mode {
    let value = crate::env::var(c"TIDEMARK_MALLOC");
    let parsed = parse_mode(value);
    let mode = parsed.unwrap_or(Mode::Pymalloc);
    // Threads racing here read the same environment and pick the same mode; the exchange
    // decides which one prints the warning, so it appears once.
    match MODE.compare_exchange(0, mode as u8, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {
            if parsed.is_none() {
                let mut out = Stderr::new();
                let _ = out.write_str("tidemark: unknown TIDEMARK_MALLOC value '");
                out.write_bytes(value.unwrap_or_default());
                let _ = writeln!(out, "' (accepted values: {ACCEPTED}); using pymalloc");
            }
            mode
        }
        Err(current) => Mode::from_u8(current).unwrap_or(mode),
    }
}

// SAFETY: every call forwards to the one allocator the fixed mode names, so each block is
// released by the allocator that made it, with the caller's layout.
unsafe impl GlobalAlloc for Tidemark {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        unsafe {
            match mode() {
                Mode::Pymalloc => PYMALLOC.alloc(layout),
                Mode::PymallocDebug => PYMALLOC_DEBUG.alloc(layout),
                Mode::Malloc => System.alloc(layout),
                Mode::MallocDebug => MALLOC_DEBUG.alloc(layout),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        unsafe {
            match mode() {
                Mode::Pymalloc => PYMALLOC.alloc_zeroed(layout),
                Mode::PymallocDebug => PYMALLOC_DEBUG.alloc_zeroed(layout),
                Mode::Malloc => System.alloc_zeroed(layout),
                Mode::MallocDebug => MALLOC_DEBUG.alloc_zeroed(layout),
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's contract.
        unsafe {
            match mode() {
                Mode::Pymalloc => PYMALLOC.dealloc(ptr, layout),
                Mode::PymallocDebug => PYMALLOC_DEBUG.dealloc(ptr, layout),
                Mode::Malloc => System.dealloc(ptr, layout),
                Mode::MallocDebug => MALLOC_DEBUG.dealloc(ptr, layout),
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        unsafe {
            match mode() {
                Mode::Pymalloc => PYMALLOC.realloc(ptr, layout, new_size),
                Mode::PymallocDebug => PYMALLOC_DEBUG.realloc(ptr, layout, new_size),
                Mode::Malloc => System.realloc(ptr, layout, new_size),
                Mode::MallocDebug => MALLOC_DEBUG.realloc(ptr, layout, new_size),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_value() {
        assert_eq!(parse_mode(None), Some(Mode::Pymalloc));
        assert_eq!(parse_mode(Some(b"")), Some(Mode::Pymalloc));
        assert_eq!(parse_mode(Some(b"pymalloc")), Some(Mode::Pymalloc));
        assert_eq!(
            parse_mode(Some(b"pymalloc_debug")),
            Some(Mode::PymallocDebug)
        );
        assert_eq!(parse_mode(Some(b"debug")), Some(Mode::PymallocDebug));
        assert_eq!(parse_mode(Some(b"malloc")), Some(Mode::Malloc));
        assert_eq!(parse_mode(Some(b"malloc_debug")), Some(Mode::MallocDebug));
        assert_eq!(parse_mode(Some(b"jemalloc")), None);
        assert_eq!(parse_mode(Some(b"PYMALLOC")), None);
        for m in [
            Mode::Pymalloc,
            Mode::PymallocDebug,
            Mode::Malloc,
            Mode::MallocDebug,
        ] {
            assert_eq!(parse_mode(Some(m.name().as_bytes())), Some(m));
            assert!(ACCEPTED.contains(m.name()));
        }
    }

    #[test]
    fn forwards_allocations() {
        let t = Tidemark::new();
        let layout = Layout::from_size_align(100, 8).unwrap();
        unsafe {
            let p = t.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, 100);
            let q = t.realloc(p, layout, 300);
            assert_eq!(*q.add(99), 7);
            t.dealloc(q, Layout::from_size_align(300, 8).unwrap());
        }
    }
}
