//! Thread-locals reached in the initial-exec TLS model: two instructions, no call.
//!
//! In a shared library (the preload) every `thread_local!` access calls `__tls_get_addr`,
//! about a dozen instructions: stable Rust emits only the general-dynamic model there. A
//! malloc hook pays that on every call (`bench/scripts/hook_instructions.sh` counted 24 per
//! call for two of them). A library loaded at program start (`LD_PRELOAD`, or a `DT_NEEDED`
//! dependency) has its TLS block at the same offset from the thread pointer in every thread,
//! so the offset (from the GOT) plus `%fs:0` reaches it. That is what C's `initial-exec` model
//! emits. The linker marks the library `DF_STATIC_TLS`; a `dlopen` of it later still works
//! while glibc's static TLS surplus lasts (hundreds of bytes; these cells are a few dozen). In
//! an executable the linker turns the access into a constant offset.
//!
//! [`initial_exec_tls!`](crate::initial_exec_tls) declares a function returning the calling
//! thread's instance of a zero-initialized type. Elsewhere than x86_64 Linux it falls back to
//! a `thread_local!`. The preload library reaches its hook state and the capture's thread slot
//! this way, and, with this crate's `initial-exec-tls` feature, the allocator's thread heap
//! pointer (`heap.rs`): on the preload's pymalloc role that took a malloc/free pair from 121
//! instructions to 101 (glibc: 133).

/// Declares `fn NAME() -> *mut TYPE`: the calling thread's instance of `TYPE`, all-zero bytes
/// at the thread's start, reached in the initial-exec TLS model on x86_64 Linux (see
/// `tidemark_alloc::tls`). `SYMBOL` names the cell in the object file and must be unique in
/// the program.
///
/// `TYPE` must be valid as all-zero bytes, and is never dropped. The pointer is valid on the
/// calling thread for as long as it runs (its destructors included).
///
/// ```
/// use core::cell::Cell;
/// struct Counter { n: Cell<u64> }
/// // At module level: the cell is an item of the object file.
/// tidemark_alloc::initial_exec_tls!(fn counter() -> Counter, "tidemark_doc_counter");
///
/// fn main() {
///     // SAFETY: the cell is this thread's, valid while it runs.
///     let c = unsafe { &*counter() };
///     c.n.set(c.n.get() + 1);
///     assert_eq!(c.n.get(), 1);
/// }
/// ```
#[macro_export]
macro_rules! initial_exec_tls {
    ($(#[$meta:meta])* $vis:vis fn $name:ident() -> $ty:ty, $symbol:literal) => {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        core::arch::global_asm!(
            concat!(".section .tbss.", $symbol, ",\"awT\",@nobits"),
            concat!(".globl ", $symbol),
            concat!(".hidden ", $symbol),
            concat!(".type ", $symbol, ", @tls_object"),
            concat!(".size ", $symbol, ", {size}"),
            ".p2align 6",
            concat!($symbol, ":"),
            ".zero {size}",
            ".previous",
            size = const core::mem::size_of::<$ty>(),
        );

        $(#[$meta])*
        #[inline(always)]
        $vis fn $name() -> *mut $ty {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            {
                const _: () = assert!(core::mem::align_of::<$ty>() <= 64);
                let cell: *mut $ty;
                // SAFETY: reads the thread pointer (`%fs:0` holds its own address in glibc's
                // and musl's TCB) and the GOT entry with the cell's offset from it, which the
                // dynamic linker filled in at load; touches nothing else.
                unsafe {
                    core::arch::asm!(
                        "mov {cell}, qword ptr fs:[0]",
                        concat!("add {cell}, qword ptr [rip + ", $symbol, "@GOTTPOFF]"),
                        cell = out(reg) cell,
                        options(nostack, pure, readonly),
                    )
                };
                cell
            }
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            {
                std::thread_local! {
                    static CELL: core::cell::UnsafeCell<core::mem::MaybeUninit<$ty>> =
                        const { core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()) };
                }
                CELL.with(|c| c.get() as *mut $ty)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    struct Pair {
        a: Cell<u64>,
        b: Cell<*mut u8>,
    }

    crate::initial_exec_tls!(fn pair() -> Pair, "tidemark_alloc_test_pair");

    #[test]
    fn each_thread_has_its_own_zeroed_cell() {
        // SAFETY: this thread's cell, valid while it runs.
        let p = unsafe { &*pair() };
        assert_eq!((p.a.get(), p.b.get()), (0, core::ptr::null_mut()));
        p.a.set(7);
        assert_eq!(pair(), pair());
        let (other, seen) = std::thread::spawn(|| {
            // SAFETY: as above, on the spawned thread.
            let q = unsafe { &*pair() };
            let seen = q.a.get();
            q.a.set(9);
            (pair() as usize, seen)
        })
        .join()
        .unwrap();
        assert_ne!(other, pair() as usize);
        assert_eq!(seen, 0);
        assert_eq!(p.a.get(), 7);
    }
}
