//! Allocator statistics, printed in the layout of CPython's `sys._debugmallocstats()`.
//!
//! The byte lines partition the arenas exactly: every pool in use is its header, its blocks in
//! use, its available blocks and its quantization tail; every other pool is unused. Taken while
//! other threads allocate, the figures are a moving snapshot (each pool's counters are read
//! once, racily); taken at rest they are exact.

use crate::arena;
use crate::heap::{self, RawCounters};
use crate::pool::UNUSED;
use crate::remote;
use crate::size_class::{
    block_size, blocks_per_pool, ARENA_SIZE, NUM_CLASSES, POOL_OVERHEAD, POOL_SIZE,
    SMALL_REQUEST_THRESHOLD,
};
use crate::thread;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Per-size-class figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Pools serving this class.
    pub pools: usize,
    /// Blocks handed out (including blocks freed by other threads and not yet collected).
    pub blocks_in_use: usize,
    /// Blocks free in those pools (on free lists or never used).
    pub available_blocks: usize,
}

/// A picture of the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub classes: [ClassStats; NUM_CLASSES],
    pub arenas_allocated_total: usize,
    pub arenas_reclaimed: usize,
    pub arenas_highwater: usize,
    pub arenas_current: usize,
    pub bytes_in_allocated_blocks: usize,
    pub bytes_in_available_blocks: usize,
    pub unused_pools: usize,
    pub bytes_lost_to_pool_headers: usize,
    pub bytes_lost_to_quantization: usize,
    /// Arenas are mapped at 1 MiB alignment, so no pool is ever lost to alignment.
    pub bytes_lost_to_arena_alignment: usize,
    /// Requests served by the system allocator since start.
    pub raw_allocations_total: u64,
    /// Raw-path blocks live now, and their bytes (requested size for Rust callers, usable
    /// size for C callers).
    pub raw_allocations_current: u64,
    pub raw_bytes_current: u64,
}

impl Stats {
    /// Bytes in unused pools.
    pub fn bytes_in_unused_pools(&self) -> usize {
        self.unused_pools * POOL_SIZE
    }

    /// The sum of the byte lines; equals `arenas_current * ARENA_SIZE`.
    pub fn total(&self) -> usize {
        self.bytes_in_allocated_blocks
            + self.bytes_in_available_blocks
            + self.bytes_in_unused_pools()
            + self.bytes_lost_to_pool_headers
            + self.bytes_lost_to_quantization
            + self.bytes_lost_to_arena_alignment
    }
}

/// Takes the allocator's statistics. Does not allocate.
pub fn stats() -> Stats {
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    let mut unused_pools = 0;
    let (counters, uncarved) = arena::visit(|pool| {
        let class = pool.class.load(Ordering::Relaxed);
        if class == UNUSED {
            unused_pools += 1;
            return;
        }
        let c = &mut classes[class as usize];
        let used = (pool.used.load(Ordering::Relaxed) as usize).min(pool.capacity());
        c.pools += 1;
        c.blocks_in_use += used;
        c.available_blocks += pool.capacity() - used;
    });
    unused_pools += uncarved;
    let mut stats = Stats {
        classes,
        arenas_allocated_total: counters.allocated_total,
        arenas_reclaimed: counters.reclaimed,
        arenas_highwater: counters.highwater,
        arenas_current: counters.current,
        bytes_in_allocated_blocks: 0,
        bytes_in_available_blocks: 0,
        unused_pools,
        bytes_lost_to_pool_headers: 0,
        bytes_lost_to_quantization: 0,
        bytes_lost_to_arena_alignment: 0,
        raw_allocations_total: 0,
        raw_allocations_current: 0,
        raw_bytes_current: 0,
    };
    let mut add_raw = |raw: &RawCounters| {
        stats.raw_allocations_total = stats
            .raw_allocations_total
            .wrapping_add(raw.allocs_total.load(Ordering::Relaxed));
        stats.raw_allocations_current = stats
            .raw_allocations_current
            .wrapping_add(raw.live_count.load(Ordering::Relaxed));
        stats.raw_bytes_current = stats
            .raw_bytes_current
            .wrapping_add(raw.live_bytes.load(Ordering::Relaxed));
    };
    add_raw(&heap::ORPHAN_RAW);
    let mut cached = [0usize; NUM_CLASSES];
    thread::visit_heaps(|heap| {
        add_raw(&heap.raw);
        for (class, cache) in heap.cache.iter().enumerate() {
            cached[class] += cache.len() as usize;
        }
    });
    let in_transit = remote::in_transit(|visit| thread::visit_heaps(visit));
    for (class, n) in in_transit.iter().enumerate() {
        cached[class] += n;
    }
    // Blocks in a heap's class cache are free, though their pools count them as handed out;
    // so are the blocks freed by other threads on their way back (remote.rs).
    for (class, c) in stats.classes.iter_mut().enumerate() {
        let n = cached[class].min(c.blocks_in_use);
        c.blocks_in_use -= n;
        c.available_blocks += n;
    }
    for (class, c) in stats.classes.iter().enumerate() {
        let size = block_size(class);
        stats.bytes_in_allocated_blocks += c.blocks_in_use * size;
        stats.bytes_in_available_blocks += c.available_blocks * size;
        stats.bytes_lost_to_pool_headers += c.pools * POOL_OVERHEAD;
        stats.bytes_lost_to_quantization +=
            c.pools * (POOL_SIZE - POOL_OVERHEAD - blocks_per_pool(class) * size);
    }
    stats
}

/// One `name = value` line as obmalloc's `printone` writes it: the name padded to 35
/// columns, then the value with thousands separators right-aligned in 21.
fn line(f: &mut fmt::Formatter<'_>, name: fmt::Arguments<'_>, value: u64) -> fmt::Result {
    let mut name_buf = FixedBuf::<64>::new();
    fmt::write(&mut name_buf, name)?;
    let mut digits = [0u8; 32];
    let mut at = digits.len();
    let mut v = value;
    let mut group = 0;
    loop {
        if group == 3 {
            at -= 1;
            digits[at] = b',';
            group = 0;
        }
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        group += 1;
        if v == 0 {
            break;
        }
    }
    // SAFETY: only ASCII digits and commas were written.
    let number = unsafe { core::str::from_utf8_unchecked(&digits[at..]) };
    writeln!(f, "{:<35}={:>21}", name_buf.as_str(), number)
}

/// A tiny stack buffer for formatting without allocating.
struct FixedBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    fn new() -> Self {
        FixedBuf {
            bytes: [0; N],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        // SAFETY: only whole `str`s are ever appended, so the prefix is valid UTF-8.
        unsafe { core::str::from_utf8_unchecked(&self.bytes[..self.len]) }
    }
}

impl<const N: usize> fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Small block threshold = {}, in {} size classes.",
            SMALL_REQUEST_THRESHOLD, NUM_CLASSES
        )?;
        writeln!(f)?;
        writeln!(f, "class   size   num pools   blocks in use  avail blocks")?;
        writeln!(f, "-----   ----   ---------   -------------  ------------")?;
        for (class, c) in self.classes.iter().enumerate() {
            if c.pools == 0 {
                continue;
            }
            writeln!(
                f,
                "{:5} {:6} {:11} {:15} {:13}",
                class,
                block_size(class),
                c.pools,
                c.blocks_in_use,
                c.available_blocks
            )?;
        }
        writeln!(f)?;
        let n = |v: usize| v as u64;
        line(
            f,
            format_args!("# arenas allocated total"),
            n(self.arenas_allocated_total),
        )?;
        line(
            f,
            format_args!("# arenas reclaimed"),
            n(self.arenas_reclaimed),
        )?;
        line(
            f,
            format_args!("# arenas highwater mark"),
            n(self.arenas_highwater),
        )?;
        line(
            f,
            format_args!("# arenas allocated current"),
            n(self.arenas_current),
        )?;
        line(
            f,
            format_args!(
                "{} arenas * {} bytes/arena",
                self.arenas_current, ARENA_SIZE
            ),
            n(self.arenas_current * ARENA_SIZE),
        )?;
        writeln!(f)?;
        line(
            f,
            format_args!("# bytes in allocated blocks"),
            n(self.bytes_in_allocated_blocks),
        )?;
        line(
            f,
            format_args!("# bytes in available blocks"),
            n(self.bytes_in_available_blocks),
        )?;
        line(
            f,
            format_args!("{} unused pools * {} bytes", self.unused_pools, POOL_SIZE),
            n(self.bytes_in_unused_pools()),
        )?;
        line(
            f,
            format_args!("# bytes lost to pool headers"),
            n(self.bytes_lost_to_pool_headers),
        )?;
        line(
            f,
            format_args!("# bytes lost to quantization"),
            n(self.bytes_lost_to_quantization),
        )?;
        line(
            f,
            format_args!("# bytes lost to arena alignment"),
            n(self.bytes_lost_to_arena_alignment),
        )?;
        line(f, format_args!("Total"), n(self.total()))?;
        writeln!(f)?;
        line(
            f,
            format_args!("# raw-path allocations total"),
            self.raw_allocations_total,
        )?;
        line(
            f,
            format_args!("# raw-path allocations current"),
            self.raw_allocations_current,
        )?;
        line(
            f,
            format_args!("# bytes in raw-path allocations"),
            self.raw_bytes_current,
        )
    }
}

/// Prints the statistics to stderr without allocating.
pub fn print_stats() {
    let mut out = crate::stderr::Stderr::new();
    let _ = fmt::Write::write_fmt(&mut out, format_args!("{}", stats()));
}

/// A private copy of stderr for the exit report: programs often close fd 2 in an exit handler
/// of their own (GNU coreutils' `close_stdout` does), and those run before ours.
static EXIT_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(2);

extern "C" fn print_stats_at_exit() {
    let mut out = crate::stderr::Stderr::to_fd(EXIT_FD.load(Ordering::Relaxed));
    // Which process: with the preload, every program of a pipeline or a build prints its own.
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated, into the buffer;
    // getpid has no preconditions.
    let (named, pid) = unsafe {
        (
            libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) == 0,
            libc::getpid(),
        )
    };
    let len = name.iter().position(|&b| b == 0).unwrap_or(0);
    let comm = core::str::from_utf8(&name[..len]).unwrap_or("?");
    let _ = fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "tidemark allocator statistics of pid {pid} ({}):\n{}",
            if named { comm } else { "?" },
            stats()
        ),
    );
}

/// Set by [`ignore_stats_environment`].
static IGNORE_ENVIRONMENT: AtomicBool = AtomicBool::new(false);

/// This process ignores `TIDEMARK_MALLOCSTATS`: for a tool whose users set it for the program
/// the tool runs (the `tidemark` command, which printed its own statistics after its
/// program's). Call before the first allocation (from a constructor).
pub fn ignore_stats_environment() {
    IGNORE_ENVIRONMENT.store(true, Ordering::Relaxed);
}

/// Registers the `TIDEMARK_MALLOCSTATS=1` exit hook (called once, outside any allocator lock).
pub fn register_exit_hook_from_env() {
    if !IGNORE_ENVIRONMENT.load(Ordering::Relaxed) && crate::env::flag(c"TIDEMARK_MALLOCSTATS") {
        // SAFETY: duplicating fd 2 (close-on-exec, so children do not inherit it); on failure
        // the report goes to fd 2 itself.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if fd >= 0 {
            EXIT_FD.store(fd, Ordering::Relaxed);
        }
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(print_stats_at_exit) };
    }
}
