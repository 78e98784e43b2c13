//! The debug layer's environment, read once at first use with `getenv` (no allocation):
//!
//! - `TIDEMARK_QUARANTINE=size` (`k`/`M`/`G` suffixes; 0 turns the quarantine off; default
//!   4 MiB);
//! - `TIDEMARK_CHECK_AT_EXIT=1` runs `check_heap()` from an `atexit` handler.
//!
//! The first read also registers the `fork` handlers (see `fork.rs`).

use super::quarantine::DEFAULT_LIMIT;
use crate::stderr::Stderr;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const UNREAD: usize = usize::MAX;
static QUARANTINE_LIMIT: AtomicUsize = AtomicUsize::new(UNREAD);

/// 0 = not decided, 1 = registering or registered, 2 = not wanted.
static AT_EXIT: AtomicU8 = AtomicU8::new(0);

/// The quarantine bound from the environment.
#[inline]
pub fn quarantine_limit() -> usize {
    let limit = QUARANTINE_LIMIT.load(Ordering::Relaxed);
    if limit != UNREAD {
        return limit;
    }
    read_env()
}

#[cold]
fn read_env() -> usize {
    let limit = match crate::env::var(c"TIDEMARK_QUARANTINE") {
        None => DEFAULT_LIMIT,
        Some(text) => match parse_quarantine(text) {
            Some(n) => n,
            None => {
                let mut out = Stderr::new();
                let _ = out.write_str("tidemark: TIDEMARK_QUARANTINE='");
                out.write_bytes(text);
                let _ = writeln!(
                    out,
                    "' is not a size (like 4M, 512k or 0 for off); using the default 4M"
                );
                DEFAULT_LIMIT
            }
        },
    };
    // Racing threads compute the same value; store after deciding so a re-entrant call (for
    // example from atexit's own allocation) sees a finished value.
    QUARANTINE_LIMIT.store(limit, Ordering::Relaxed);
    register_check_at_exit();
    // The debug layer's locks must be taken around `fork` even when the inner allocator is
    // not pymalloc (which registers the same handlers at its first allocation).
    crate::thread::register_fork_handlers();
    limit
}

/// Parses a quarantine size; `UNREAD` is not a valid bound and is clamped one below.
pub fn parse_quarantine(text: &[u8]) -> Option<usize> {
    crate::env::parse_size(text).map(|n| n.min(UNREAD - 1))
}

fn register_check_at_exit() {
    if AT_EXIT.load(Ordering::Relaxed) != 0 {
        return;
    }
    if !crate::env::flag(c"TIDEMARK_CHECK_AT_EXIT") {
        AT_EXIT.store(2, Ordering::Relaxed);
        return;
    }
    if AT_EXIT
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: `check_at_exit` is a plain `extern "C" fn()` that lives for the whole
        // program. atexit may call malloc, which may re-enter the debug layer: by now the limit
        // is stored and the flag set, so the re-entrant call does not come back here.
        unsafe { libc::atexit(check_at_exit) };
    }
}

extern "C" fn check_at_exit() {
    super::check::check_heap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quarantine_sizes() {
        assert_eq!(parse_quarantine(b"0"), Some(0));
        assert_eq!(parse_quarantine(b"4M"), Some(4 << 20));
        assert_eq!(parse_quarantine(b"64k"), Some(64 << 10));
        assert_eq!(parse_quarantine(b"lots"), None);
    }
}
