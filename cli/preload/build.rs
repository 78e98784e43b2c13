//! Compiles the bodies of the variadic `execl`, `execlp` and `execle` wrappers
//! (`c/exec_variadic.c`): stable Rust cannot define a variadic function. See `src/exec.rs`.
fn main() {
    // Run this library's constructor before every other object's (DF_1_INITFIRST): the
    // libraries the program links run theirs before ours otherwise, unrecorded (libstdc++'s
    // emergency exception pool, any constructor that allocates).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,initfirst");
    println!("cargo:rerun-if-changed=c/exec_variadic.c");
    cc::Build::new()
        .file("c/exec_variadic.c")
        .flag_if_supported("-fvisibility=default")
        .warnings(true)
        .compile("tidemark_exec_variadic");
}
