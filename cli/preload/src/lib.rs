//! # tidemark-preload
//!
//! `libtidemark_preload.so` exports the C malloc family so that any dynamically linked
//! program runs on tidemark's pymalloc allocator:
//!
//! ```text
//! LD_PRELOAD=target/release/libtidemark_preload.so python3 script.py
//! ```
//!
//! ```text
//!   program: malloc / free / realloc / posix_memalign / ...
//!        |
//!   this library: C conventions (errno, NULL, alignment checks)
//!        |
//!   tidemark_alloc::Pymalloc  c_malloc / c_free / ...   small blocks from pools
//!        |                                               free(ptr): arena map says whose
//!   glibc (__libc_malloc ...)                            > 512 B, align > 16, foreign ptrs
//! ```
//!
//! Pointers glibc handed out before the library took over (or that glibc's own internals
//! allocate with `__libc_malloc`) are not in any tidemark arena, so `free`, `realloc` and
//! `malloc_usable_size` pass them to glibc.

#[cfg(not(test))]
mod exports;
