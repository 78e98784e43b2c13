//! Compiles the bodies of the variadic `execl`, `execlp` and `execle` wrappers
//! (`c/exec_variadic.c`): stable Rust cannot define a variadic function. See `src/exec.rs`.
fn main() {
    println!("cargo:rerun-if-changed=c/exec_variadic.c");
    cc::Build::new()
        .file("c/exec_variadic.c")
        .flag_if_supported("-fvisibility=default")
        .warnings(true)
        .compile("tidemark_exec_variadic");
}
