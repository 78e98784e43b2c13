# Sourced by the preload scripts (preload_floor.sh, run_overhead.sh, preload_allocators.sh):
# builds tidemark and its preload, and the benchmark's churn without frame pointers (as issue
# 6 measures it), then sets $root (and cds there), $churn, $tidemark and $work (a temporary
# directory removed at exit). Expects $here, the directory of the sourcing script.
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build -q --release -p tidemark -p tidemark-preload
RUSTFLAGS="-C force-frame-pointers=no" cargo build -q --release -p tidemark-bench \
    --bin bench-system --target-dir target/nofp
churn="$root/target/nofp/release/bench-system"
tidemark="$root/target/release/tidemark"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
