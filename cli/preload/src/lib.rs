//! # tidemark-preload
//!
//! `libtidemark_preload.so` exports the C malloc family so that any dynamically linked
//! program runs on tidemark's allocator, or has every allocation recorded into a capture
//! file. `tidemark run` sets the environment (see `role.rs`); by hand:
//!
//! ```text
//! LD_PRELOAD=target/release/libtidemark_preload.so python3 script.py        # pymalloc
//! LD_PRELOAD=... TIDEMARK_PRELOAD_ALLOCATOR=pymalloc_debug ./prog           # debug hooks
//! LD_PRELOAD=... TIDEMARK_PRELOAD_OUTPUT=prog.%p.tdm ./prog                 # record (glibc)
//! ```
//!
//! ```text
//!   program: malloc / free / realloc / posix_memalign / ...
//!        |
//!   exports.rs    C conventions (errno, NULL, alignment checks); _exit flushes the capture;
//!        |        malloc and free jump to their role's function (role.rs: one mode byte)
//!        |---> trace.rs   recording: unwind/ (DWARF via framehop) → stack id → capture
//!        |                  dwarf_memo.rs  per thread: unwind only the frames that changed
//!        |                  recent_stacks.rs  per thread: the last few stacks, reused whole
//!        |                  modules.rs     loaded modules (dl_iterate_phdr), our own range
//!        |                  thread.rs      the thread's hook state, one TLS access a call
//!        |
//!   backend.rs    role.rs chose it from the environment, once:
//!        |          glibc (__libc_malloc ...)              the tracing role's default
//!        |          tidemark_alloc::Pymalloc               small blocks from pools
//!        |          tidemark_alloc::Debug<Pymalloc>        marks, guards, quarantine, reports
//!        |        foreign pointers (glibc's, from before the library took over) go to glibc
//!   lifecycle.rs  constructor, fork (the child forgets the parent's recording; with
//!                 follow-fork it records its own), exec (environment stripped), exit
//!   exec.rs       the exec family: the capture is written out before the new program
//!                 replaces this one (execl* in c/exec_variadic.c)
//!   signals.rs    fatal signals flush the capture first; `sigaction`/`signal` interposed
//!                 so the program sees SIG_DFL where the flush handler stands
//!   stack_attr.rs `pthread_getattr_np`: the thread's stack bounds are cached before glibc
//!                 takes the lock it allocates under (else the hook's lookup deadlocks)
//!   unload.rs     `dlclose`: the modules are noted before a library goes, so its frames
//!                 stay named
//! ```
//!
//! The library's own Rust allocations (the capture writer, the unwinder's tables) go straight
//! to glibc through `InternalAlloc`, never through the exports, so they are neither recorded
//! nor served by the allocator under test.

// The unit-test build has no exports, so most of the library is unused there.
#![cfg_attr(test, allow(dead_code))]

mod backend;
mod dwarf_memo;
#[cfg(not(test))]
mod exec;
#[cfg(not(test))]
mod exports;
mod lifecycle;
mod modules;
mod recent_stacks;
mod role;
mod signals;
#[cfg(not(test))]
mod stack_attr;
mod thread;
mod trace;
#[cfg(not(test))]
mod unload;
mod unwind;

/// The library's own `#[global_allocator]`: glibc directly.
#[cfg(not(test))]
struct InternalAlloc;

#[cfg(not(test))]
extern "C" {
    fn __libc_malloc(size: usize) -> *mut core::ffi::c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut core::ffi::c_void;
    fn __libc_realloc(ptr: *mut core::ffi::c_void, size: usize) -> *mut core::ffi::c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut core::ffi::c_void;
    fn __libc_free(ptr: *mut core::ffi::c_void);
}

// SAFETY: glibc returns blocks aligned to 16 (or to `align` for memalign) of at least the
// requested size, and takes them back with __libc_free/__libc_realloc.
#[cfg(not(test))]
unsafe impl core::alloc::GlobalAlloc for InternalAlloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: no preconditions beyond a valid layout.
        unsafe {
            if layout.align() <= 16 {
                __libc_malloc(layout.size()) as *mut u8
            } else {
                __libc_memalign(layout.align(), layout.size()) as *mut u8
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
        if layout.align() <= 16 {
            // SAFETY: as for alloc.
            unsafe { __libc_calloc(1, layout.size()) as *mut u8 }
        } else {
            // SAFETY: as for alloc; the block is zeroed before it is returned.
            unsafe {
                let p = self.alloc(layout);
                if !p.is_null() {
                    core::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        // SAFETY: `ptr` came from alloc above.
        unsafe { __libc_free(ptr as *mut core::ffi::c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new: usize) -> *mut u8 {
        if layout.align() <= 16 {
            // SAFETY: `ptr` came from alloc above.
            unsafe { __libc_realloc(ptr as *mut core::ffi::c_void, new) as *mut u8 }
        } else {
            // SAFETY: as for alloc; both blocks are live while copying.
            unsafe {
                let l = core::alloc::Layout::from_size_align_unchecked(new, layout.align());
                let p = self.alloc(l);
                if !p.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }
}

#[cfg(not(test))]
#[global_allocator]
static INTERNAL: InternalAlloc = InternalAlloc;
