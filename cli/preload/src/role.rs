//! The environment protocol between `tidemark run` and this library, read once with `getenv`
//! (no allocation) at the first allocation or at load time, whichever comes first.
//!
//! | variable | meaning |
//! |---|---|
//! | `TIDEMARK_PRELOAD_ALLOCATOR` | `malloc` (glibc), `pymalloc`, `pymalloc_debug` (or `debug`) |
//! | `TIDEMARK_PRELOAD_OUTPUT` | record a capture to this path (`%p` becomes the pid) |
//! | `TIDEMARK_PRELOAD_AGGREGATE` | `1`: aggregated capture (per-stack totals only) |
//! | `TIDEMARK_PRELOAD_NATIVE_FRAMES` | frames kept per recorded stack (default 64) |
//! | `TIDEMARK_PRELOAD_FOLLOW_FORK` | `1`: forked children and exec'd programs are traced too |
//! | `TIDEMARK_PRELOAD_UNWIND` | `dwarf` (default: `.eh_frame` via framehop) or `fp` |
//! | `TIDEMARK_PRELOAD_UNWIND_MEMO` | `0`: no unwind memo; `check`: verify it on every stack |
//! | `TIDEMARK_PRELOAD_TRACEBACKS` | `0`: debug reports without allocation tracebacks |
//! | `TIDEMARK_PRELOAD_STATS` | `1`: print events, frames and ns per frame at exit |
//!
//! With no `TIDEMARK_PRELOAD_ALLOCATOR`, the library serves with pymalloc unless a capture is
//! being recorded (`TIDEMARK_PRELOAD_OUTPUT` set), where glibc serves: profiling measures the
//! program as it normally runs.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use tidemark_alloc::env;

/// Who serves the program's allocations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Backend {
    Glibc = 1,
    Pymalloc = 2,
    PymallocDebug = 3,
}

/// The library's mode, which every export reads once: the backend in the low two bits (0
/// until decided, then a `Backend` discriminant) and `TRACING` while a capture is being
/// recorded. One byte, so that one load and compare sends a call down its role's short path.
pub(crate) static MODE: AtomicU8 = AtomicU8::new(0);
const BACKEND_BITS: u8 = 3;
const TRACING: u8 = 4;
/// Frames per recorded stack.
static FRAMES: AtomicUsize = AtomicUsize::new(64);

/// Parses a `TIDEMARK_PRELOAD_ALLOCATOR` value; `None` for an unknown one.
pub fn parse_backend(value: Option<&[u8]>, recording: bool) -> Option<Backend> {
    match value {
        None | Some(b"") => Some(if recording {
            Backend::Glibc
        } else {
            Backend::Pymalloc
        }),
        Some(b"malloc") | Some(b"glibc") => Some(Backend::Glibc),
        Some(b"pymalloc") => Some(Backend::Pymalloc),
        Some(b"pymalloc_debug") | Some(b"debug") => Some(Backend::PymallocDebug),
        Some(_) => None,
    }
}

/// The backend, deciding it from the environment on first use.
#[inline(always)]
pub fn backend() -> Backend {
    match MODE.load(Ordering::Relaxed) & BACKEND_BITS {
        1 => Backend::Glibc,
        2 => Backend::Pymalloc,
        3 => Backend::PymallocDebug,
        _ => decide(),
    }
}

/// The mode byte: compare it with `RECORDING_GLIBC` and `PLAIN_PYMALLOC`, the two roles
/// whose calls the exports serve on a short path of their own.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // (there the exports test it in assembly)
#[inline(always)]
pub fn mode() -> u8 {
    MODE.load(Ordering::Relaxed)
}

/// Glibc serves the program and every call is recorded (`tidemark run`).
pub const RECORDING_GLIBC: u8 = Backend::Glibc as u8 | TRACING;
/// Pymalloc serves the program and nothing is recorded (`tidemark run --allocator pymalloc`).
pub const PLAIN_PYMALLOC: u8 = Backend::Pymalloc as u8;

/// Is a capture being recorded? (Off in forked children that are not followed.)
#[inline(always)]
pub fn tracing() -> bool {
    MODE.load(Ordering::Relaxed) & TRACING != 0
}

pub fn set_tracing(on: bool) {
    if on {
        MODE.fetch_or(TRACING, Ordering::SeqCst);
    } else {
        MODE.fetch_and(!TRACING, Ordering::SeqCst);
    }
}

#[cold]
#[inline(never)]
fn decide() -> Backend {
    let recording = output_pattern().is_some();
    let value = env::var(c"TIDEMARK_PRELOAD_ALLOCATOR");
    let chosen = parse_backend(value, recording);
    let b = chosen.unwrap_or(Backend::Pymalloc);
    if let Some(frames) = env::var(c"TIDEMARK_PRELOAD_NATIVE_FRAMES").and_then(env::parse_size) {
        FRAMES.store(frames.clamp(1, 1024), Ordering::Relaxed);
    }
    // Racing threads read the same environment; the one that sets the bits warns.
    let first = MODE
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
            (m & BACKEND_BITS == 0).then_some(m | b as u8)
        })
        .is_ok();
    if first && chosen.is_none() {
        let mut err = tidemark_alloc::stderr::Stderr::new();
        err.write_bytes(
            b"tidemark: TIDEMARK_PRELOAD_ALLOCATOR must be malloc, pymalloc or pymalloc_debug; using pymalloc\n",
        );
        err.flush();
    }
    match MODE.load(Ordering::Relaxed) & BACKEND_BITS {
        1 => Backend::Glibc,
        3 => Backend::PymallocDebug,
        _ => Backend::Pymalloc,
    }
}

/// Frames kept per recorded stack (`TIDEMARK_PRELOAD_NATIVE_FRAMES`).
pub fn native_frames() -> usize {
    let _ = backend();
    FRAMES.load(Ordering::Relaxed)
}

/// `TIDEMARK_PRELOAD_OUTPUT`, if set and not empty.
pub fn output_pattern() -> Option<&'static [u8]> {
    env::var(c"TIDEMARK_PRELOAD_OUTPUT").filter(|v| !v.is_empty())
}

pub fn follow_fork() -> bool {
    env::flag(c"TIDEMARK_PRELOAD_FOLLOW_FORK")
}

pub fn aggregate() -> bool {
    env::flag(c"TIDEMARK_PRELOAD_AGGREGATE")
}

pub fn print_stats() -> bool {
    env::flag(c"TIDEMARK_PRELOAD_STATS")
}

/// Debug reports get allocation/free tracebacks unless `TIDEMARK_PRELOAD_TRACEBACKS=0`.
pub fn tracebacks() -> bool {
    !matches!(env::var(c"TIDEMARK_PRELOAD_TRACEBACKS"), Some(b"0"))
}

/// Frame-pointer walking instead of DWARF (`TIDEMARK_PRELOAD_UNWIND=fp`).
pub fn unwind_with_frame_pointers() -> bool {
    matches!(env::var(c"TIDEMARK_PRELOAD_UNWIND"), Some(b"fp"))
}

/// The DWARF unwind memo's mode (`TIDEMARK_PRELOAD_UNWIND_MEMO`): `Some(false)` off (`0`),
/// `Some(true)` checked against a full walk on every stack (`check`), `None` on.
pub fn unwind_memo() -> Option<bool> {
    match env::var(c"TIDEMARK_PRELOAD_UNWIND_MEMO") {
        Some(b"0") => Some(false),
        Some(b"check") => Some(true),
        _ => None,
    }
}

/// The capture path for process `pid`: `%p` replaced by the pid, `%%` by `%`.
///
/// `generation` counts the images of this process (before an `exec`) that already recorded
/// under this pattern: the first is 0; image n > 0 gets `pid.n` for `%p`, or `.n` appended to
/// a pattern without one, so that it does not overwrite the capture of the image before it.
pub fn expand_output(pattern: &[u8], pid: u32, generation: u32) -> Vec<u8> {
    let id = match generation {
        0 => pid.to_string(),
        n => format!("{pid}.{n}"),
    };
    let mut out = Vec::with_capacity(pattern.len() + 10);
    let mut replaced = false;
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'%' && i + 1 < pattern.len() {
            match pattern[i + 1] {
                b'p' => {
                    out.extend_from_slice(id.as_bytes());
                    replaced = true;
                    i += 2;
                    continue;
                }
                b'%' => {
                    out.push(b'%');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(pattern[i]);
        i += 1;
    }
    if generation > 0 && !replaced {
        out.extend_from_slice(format!(".{generation}").as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        assert_eq!(parse_backend(None, false), Some(Backend::Pymalloc));
        assert_eq!(parse_backend(None, true), Some(Backend::Glibc));
        assert_eq!(
            parse_backend(Some(b"pymalloc"), true),
            Some(Backend::Pymalloc)
        );
        assert_eq!(
            parse_backend(Some(b"pymalloc_debug"), false),
            Some(Backend::PymallocDebug)
        );
        assert_eq!(parse_backend(Some(b"malloc"), false), Some(Backend::Glibc));
        assert_eq!(parse_backend(Some(b"jemalloc"), false), None);
    }

    #[test]
    fn expands_pid() {
        assert_eq!(expand_output(b"run.%p.tdm", 42, 0), b"run.42.tdm");
        assert_eq!(expand_output(b"a%%p%", 7, 0), b"a%p%");
        assert_eq!(expand_output(b"plain", 7, 0), b"plain");
        assert_eq!(expand_output(b"run.%p.tdm", 42, 2), b"run.42.2.tdm");
        assert_eq!(expand_output(b"plain", 7, 1), b"plain.1");
        assert_eq!(expand_output(b"a%%p", 7, 1), b"a%p.1");
    }
}
