//! # tidemark-alloc
//!
//! A pymalloc-style small-object allocator for Rust and native programs, thread-safe, with
//! CPython-style debug hooks on top.
//!
//! ```text
//!   Box::new / Vec::push / malloc()
//!        |
//!   [2] Debug<A>      debug/       marks 0xCD/0xDD/0xFD, guards, quarantine, reports
//!        |
//!   [1] Pymalloc      pymalloc.rs  GlobalAlloc + C malloc family; small vs raw
//!        |  alloc.rs     fast path: pop the class cache; slow path: refill from pools
//!        |  free.rs      fast path: push the class cache; flush to pools
//!        |  remote.rs    frees from other threads: batched by class, one CAS per batch
//!        |  heap.rs      per-thread heap: class caches, current pool, partial pools
//!        |  thread.rs    a heap per thread, handed on at thread exit
//!        |  pool.rs      16 KiB pool of one size class, lazily carved free list
//!        |  arena.rs     1 MiB arenas (mmap), fullest first, freed when empty
//!        |  arena_map.rs is this pointer ours? one bit per 1 MiB of address space
//!        |  trace_slots.rs  a word per block for a tracer's trace (side regions per arena)
//!        |  size_class.rs  32 classes: 16, 32, ..., 512 bytes
//!        |
//!   [0] os.rs         mmap for arenas; glibc (__libc_malloc...) for > 512 B or align > 16
//! ```
//!
//! ## Usage
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: tidemark_alloc::Pymalloc = tidemark_alloc::Pymalloc::new();
//! # fn main() {
//! let s = format!("{}-{}", "tide", "mark");
//! assert_eq!(s, "tide-mark");
//! println!("{}", tidemark_alloc::stats());
//! # }
//! ```
//!
//! ## Design
//!
//! Requests of 1..=512 bytes with alignment ≤ 16 are served from pools; a block's size class
//! is `(size - 1) >> 4`. Each thread allocates from pools its own heap owns, with no lock and
//! no atomic read-modify-write on the fast path. A block freed by another thread is batched by
//! class in the freeing thread and pushed to the owning heap a batch at a time; the owner
//! splices a batch into an empty class cache in O(1).
//! Pools come from 1 MiB arenas under one lock (the slow path, once per 16 KiB); an arena whose
//! pools are all free is kept for reuse, up to 64 of them (64 MiB), and the ones past that go
//! back to the OS (`arena.rs` says why not one spare, as obmalloc). A thread's heap passes to the
//! next new thread when it exits. See each module for the why of its structure.
//!
//! ## Choosing at run time
//!
//! [`Tidemark`] reads `TIDEMARK_MALLOC` once, like CPython's `PYTHONMALLOC`: `pymalloc`
//! (default), `pymalloc_debug` (or `debug`), `malloc`, `malloc_debug`.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: tidemark_alloc::Tidemark = tidemark_alloc::Tidemark::new();
//! # fn main() { let _ = vec![1, 2, 3]; }
//! ```
//!
//! ## Environment
//!
//! - `TIDEMARK_MALLOC=pymalloc|pymalloc_debug|debug|malloc|malloc_debug`: see [`Tidemark`].
//! - `TIDEMARK_MALLOCSTATS=1`: print [`stats()`] to stderr at exit.
//! - `TIDEMARK_QUARANTINE=SIZE` (`4M` default, `0` off): bytes of freed blocks the debug hooks
//!   hold back to catch writes after free.
//! - `TIDEMARK_CHECK_AT_EXIT=1`: run [`check_heap()`] at exit.
//!
//! ## Rules
//!
//! Nothing here allocates through the global allocator, panics or unwinds on an allocation
//! path; out of memory returns null.

pub mod debug;
pub mod env;
pub mod exit_key;
pub mod hooks;
pub mod select;
pub mod size_class;
pub mod stderr;
pub mod sync;
pub mod tls;

mod alloc;
mod arena;
mod arena_map;
mod free;
mod heap;
mod os;
mod pool;
mod pymalloc;
mod remote;
mod stats;
mod thread;
mod trace_slots;

pub use debug::{check_heap, Debug};
pub use pymalloc::Pymalloc;
pub use select::Tidemark;
pub use stats::{ignore_stats_environment, print_stats, stats, ClassStats, Stats};
pub use trace_slots::{
    clear_all as clear_trace_slots, for_each_trace, mapped_bytes as trace_slot_bytes, trace_slot,
};

/// Is `ptr` inside one of tidemark's arenas (a block `Pymalloc` handed out from a pool)?
/// O(1); reads only tidemark's own memory, so any address may be asked about.
#[inline]
pub fn is_ours(ptr: *const u8) -> bool {
    arena_map::contains(ptr)
}
