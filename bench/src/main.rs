//! The benchmark driver; see the crate docs of `tidemark_bench`.

fn main() {
    std::process::exit(tidemark_bench::driver::main());
}
