//! The tracemalloc-style API: start, stop, snapshots, object tracebacks, custom domains.

use crate::hook::{self, LIMIT, MAX_NFRAME, MODE, TRACING};
use crate::stack::{self, StackId};
use crate::symbolize::{current_modules, is_runtime_frame, Frame, Symbolizer};
use crate::sysmem::MapVec;
use crate::table::{self, TraceEntry};
use crate::traceback::{Trace, Traceback};
use crate::{Snapshot, TraceError};
use core::sync::atomic::Ordering;
use std::collections::HashMap;
use std::sync::Mutex;
use tidemark_alloc::hooks::{clear_traceback_hooks, set_traceback_hooks, TracebackHooks};

/// Starts tracing with tracebacks of at most `nframe` frames (1..=1024). Starting while
/// already tracing keeps the current limit.
pub fn start(nframe: usize) -> Result<(), TraceError> {
    if !(1..=MAX_NFRAME).contains(&nframe) {
        return Err(TraceError::InvalidFrameCount(nframe));
    }
    start_unchecked(nframe);
    Ok(())
}

/// `start` without the range check; nothing in here allocates (the environment hook calls it
/// from inside an allocation).
fn start_unchecked(nframe: usize) {
    if MODE.load(Ordering::SeqCst) & TRACING != 0 {
        return;
    }
    LIMIT.store(nframe, Ordering::SeqCst);
    set_traceback_hooks(&DEBUG_HOOKS);
    MODE.fetch_or(TRACING, Ordering::SeqCst);
}

/// Stops tracing and forgets every trace.
pub fn stop() {
    let was = MODE.fetch_and(!TRACING, Ordering::SeqCst);
    if was & TRACING != 0 {
        clear_traceback_hooks();
    }
    table::clear();
}

pub fn is_tracing() -> bool {
    MODE.load(Ordering::Relaxed) & TRACING != 0
}

/// Forgets every trace and resets the traced-memory counters; tracing goes on.
pub fn clear_traces() {
    table::clear();
}

/// (current, peak) bytes of traced blocks; (0, 0) when not tracing.
pub fn traced_memory() -> (usize, usize) {
    if !is_tracing() {
        return (0, 0);
    }
    table::traced_memory()
}

/// Sets the peak to the current traced memory.
pub fn reset_peak() {
    table::reset_peak();
}

/// Bytes the tracer uses for its own tables (trace table and stack table).
pub fn tracer_memory() -> usize {
    table::table_bytes() + stack::table_bytes()
}

/// Frames kept per traceback.
pub fn traceback_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Traces that could not be stored because the table could not grow (out of memory).
pub fn lost_traces() -> usize {
    table::lost()
}

/// The traceback where the block at `ptr` (allocated through the global allocator) was
/// allocated, if it is traced.
pub fn object_traceback(ptr: *const u8) -> Option<Traceback> {
    traceback_of(0, ptr as usize, &SnapshotOptions::default())
}

/// The traceback of the block `ptr` of `domain`, if traced.
pub fn traceback_of(domain: u32, ptr: usize, options: &SnapshotOptions) -> Option<Traceback> {
    if !is_tracing() {
        return None;
    }
    // The symbolizer's tables and the traceback are the tracer's memory, not the program's.
    hook::with_reentrancy_guard(|| traceback_of_untraced(domain, ptr, options))
}

fn traceback_of_untraced(domain: u32, ptr: usize, options: &SnapshotOptions) -> Option<Traceback> {
    let e = table::get(domain, ptr)?;
    let mut sym = symbolizer();
    let sym = sym.get_or_insert_with(|| Symbolizer::new(current_modules()));
    Some(symbolic_traceback(
        sym,
        e.stack,
        e.total_nframe,
        traceback_limit(),
        options,
    ))
}

/// Traces a block of a custom allocator (arenas, GPU memory, a pool): `domain` 0 is the global
/// allocator's. Tracking an already tracked (domain, ptr) replaces its trace. Error when not
/// tracing.
#[inline(never)]
pub fn track(domain: u32, ptr: usize, size: usize) -> Result<(), TraceError> {
    if !is_tracing() {
        return Err(TraceError::NotTracing);
    }
    if ptr == 0 {
        return Ok(());
    }
    let (id, total) = hook::inside_hook(|| hook::capture_here(TRACING));
    table::insert(TraceEntry::new(domain, ptr, size, id, total));
    Ok(())
}

/// Stops tracing a block of `domain`. Untracking an unknown block is not an error; untracking
/// when not tracing is.
pub fn untrack(domain: u32, ptr: usize) -> Result<(), TraceError> {
    if !is_tracing() {
        return Err(TraceError::NotTracing);
    }
    table::forget(domain, ptr);
    Ok(())
}

/// How snapshots turn stacks into tracebacks.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// Keep the frames of tidemark and of Rust's standard library at the top of tracebacks
    /// (by default they are trimmed so the most recent frame is the user's call).
    pub keep_runtime_frames: bool,
}

/// A snapshot of every traced block. Other threads keep running (and allocating) meanwhile.
pub fn take_snapshot() -> Result<Snapshot, TraceError> {
    take_snapshot_with(&SnapshotOptions::default())
}

pub fn take_snapshot_with(options: &SnapshotOptions) -> Result<Snapshot, TraceError> {
    if !is_tracing() {
        return Err(TraceError::NotTracing);
    }
    // Like tracemalloc's, the snapshot and the symbolizer's tables (megabytes of line tables)
    // are not traced: they would show up as the program's memory in the next snapshot.
    Ok(hook::with_reentrancy_guard(|| snapshot_untraced(options)))
}

fn snapshot_untraced(options: &SnapshotOptions) -> Snapshot {
    let limit = traceback_limit();
    let mut entries: MapVec<TraceEntry> = MapVec::new();
    // Shard locks are held only while copying into mmap'd memory.
    table::collect(&mut entries);
    let mut sym = symbolizer();
    let sym = sym.get_or_insert_with(|| Symbolizer::new(current_modules()));
    refresh_modules_if_needed(sym, entries.as_slice());
    let mut tracebacks: HashMap<(StackId, u32), Traceback> = HashMap::new();
    let mut traces = Vec::with_capacity(entries.len());
    for e in entries.as_slice() {
        let tb = tracebacks
            .entry((e.stack, e.total_nframe))
            .or_insert_with(|| symbolic_traceback(sym, e.stack, e.total_nframe, limit, options))
            .clone();
        traces.push(Trace {
            domain: e.domain,
            size: e.size,
            traceback: tb,
        });
    }
    Snapshot::from_traces(traces, limit)
}

static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

fn symbolizer() -> std::sync::MutexGuard<'static, Option<Symbolizer>> {
    SYMBOLIZER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Libraries loaded since the symbolizer was made (dlopen) are picked up on demand.
fn refresh_modules_if_needed(sym: &mut Symbolizer, entries: &[TraceEntry]) {
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        if !seen.insert(e.stack) {
            continue;
        }
        if stack::stack_ips(e.stack).iter().any(|&ip| !sym.knows(ip)) {
            let now = current_modules();
            if now.len() != sym.modules().len() {
                *sym = Symbolizer::new(now);
            }
            return;
        }
    }
}

/// Symbolizes stack `id`: inlined frames expanded, runtime frames trimmed from the top
/// (unless that would leave nothing), cut to `limit` frames.
pub(crate) fn symbolic_traceback(
    sym: &mut Symbolizer,
    id: StackId,
    total_ips: u32,
    limit: usize,
    options: &SnapshotOptions,
) -> Traceback {
    let ips = stack::stack_ips(id);
    let mut frames: Vec<Frame> = Vec::new();
    for &ip in &ips {
        frames.extend(sym.resolve(ip));
    }
    if !options.keep_runtime_frames {
        if let Some(first_user) = frames.iter().position(|f| !is_runtime_frame(f)) {
            frames.drain(..first_user);
        }
    }
    let uncaptured = (total_ips as usize).saturating_sub(ips.len());
    let total = frames.len() + uncaptured;
    frames.truncate(limit);
    if frames.is_empty() {
        frames.push(Frame::new("<unknown>", 0));
    }
    Traceback::with_total(frames, total.max(1))
}

/// Makes `TIDEMARK_TRACE` and `TIDEMARK_RECORD` of no effect in this process. For a program
/// that wraps its allocator in [`crate::Traced`] for its own use and must not start tracing
/// or recording because the user's environment asks that of *their* program (the `tidemark`
/// command, which would otherwise record itself over the capture it was asked to read).
/// Call it before the first allocation through `Traced` (from a constructor); later it
/// changes nothing.
pub fn ignore_environment() {
    if hook::claim_env_init() {
        hook::finish_env_init();
    }
}

/// Starts tracing if `TIDEMARK_TRACE=N` is set (1 ≤ N ≤ 1024), like PYTHONTRACEMALLOC. Called
/// once, from the first allocation, inside the hook (so its own allocations are not traced).
pub(crate) fn init_from_env() {
    if !hook::claim_env_init() {
        return;
    }
    if let Some(v) = tidemark_alloc::env::var(c"TIDEMARK_TRACE") {
        match tidemark_alloc::env::parse_size(v) {
            Some(0) => {}
            Some(n) if n <= MAX_NFRAME => start_unchecked(n),
            _ => {
                use core::fmt::Write;
                let mut err = tidemark_alloc::stderr::Stderr::new();
                let _ = writeln!(
                    err,
                    "tidemark: TIDEMARK_TRACE: invalid number of frames (1..=1024); not tracing"
                );
            }
        }
    }
    // TIDEMARK_RECORD=path: the capture module starts its writer. This allocates (file,
    // thread); the hook's re-entrancy mark is held here, so those allocations pass untraced.
    crate::capture::start_from_env();
    hook::finish_env_init();
}

static DEBUG_HOOKS: TracebackHooks = TracebackHooks {
    capture: debug_capture,
    write: debug_write,
};

/// For the debug layer's reports: capture and intern the current stack.
fn debug_capture() -> u64 {
    hook::inside_hook(|| hook::capture_here(TRACING)).0 as u64
}

/// For the debug layer's reports: print stack `id`, most recent call first.
fn debug_write(id: u64, line: &mut dyn FnMut(&str)) {
    let Ok(id) = StackId::try_from(id) else {
        return;
    };
    // A report may fire while this thread holds the symbolizer (corruption found during a
    // snapshot); never wait for it then, print raw addresses instead.
    let mut guard = match SYMBOLIZER.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            for ip in stack::stack_ips(id) {
                line(&format!("  {ip:#x}"));
            }
            return;
        }
    };
    let sym = guard.get_or_insert_with(|| Symbolizer::new(current_modules()));
    let tb = symbolic_traceback(sym, id, 0, usize::MAX, &SnapshotOptions::default());
    for f in tb.frames() {
        line(&format!(
            "  File \"{}\", line {}, in {}",
            f.filename, f.lineno, f.function
        ));
    }
}
