#!/bin/bash
# Instructions per malloc and free call, exact and repeatable: glibc alone, the floor preload
# (preload_floor.c: interposition and a 16-byte row, nothing more), tidemark's preload
# recording a capture, and the preload serving the calls from its pymalloc role. Needs gcc, gdb and a release build (cargo build --release).
#
#   bench/scripts/hook_instructions.sh            # the table
#   HOOK_DETAIL=1 bench/scripts/hook_instructions.sh   # and the count per function
#   FLOOR_CFLAGS=-DEXTRA_LOADS=10 bench/scripts/hook_instructions.sh   # a floor variant
#   PRELOAD=/tmp/old/libtidemark_preload.so bench/scripts/hook_instructions.sh   # another build
#   CHURN=1 bench/scripts/hook_instructions.sh   # and one whole replacement of the churn (slow)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
preload=${PRELOAD:-$root/target/release/libtidemark_preload.so}
[ -f "$preload" ] || { echo "hook_instructions: $preload is missing: run cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -fomit-frame-pointer -o "$work/hook_hot" "$here/hook_hot.c"
gcc -O2 -shared -fPIC ${FLOOR_CFLAGS:-} -o "$work/floor.so" "$here/preload_floor.c" -ldl

# gdb starts the program without a shell: the preload takes itself out of the environment of
# what the process it is loaded into execs (a shell would run the program without it).
run() {
    gdb -q -batch -ex "set startup-with-shell off" "$@" -ex "break main" -ex run -x "$here/hook_instructions.py" \
        --args "$work/hook_hot" 1000000 2>/dev/null | grep '^HOOK' | sed 's/^HOOK //'
}
report() {
    local label=$1; shift
    local out; out=$(run "$@" || true)
    if ! echo "$out" | grep -q '^free '; then
        echo "hook_instructions: gdb could not step through $label (is gdb installed?)" >&2
        exit 2
    fi
    local m f; m=$(echo "$out" | awk '$1=="malloc"{print $2}'); f=$(echo "$out" | awk '$1=="free"{print $2}')
    printf '%-24s %7s %7s %7s\n' "$label" "$m" "$f" "$((m + f))"
    echo "$out" | grep -v '^malloc \|^free ' || true
}
printf '%-24s %7s %7s %7s\n' "instructions per call" malloc free pair
report "glibc"
report "floor preload ${FLOOR_CFLAGS:-}" -ex "set environment LD_PRELOAD=$work/floor.so"
report "tidemark (recording)" -ex "set environment LD_PRELOAD=$preload" \
    -ex "set environment TIDEMARK_PRELOAD_OUTPUT=$work/hook.tdm"
report "tidemark (pymalloc role)" -ex "set environment LD_PRELOAD=$preload" \
    -ex "set environment TIDEMARK_PRELOAD_ALLOCATOR=pymalloc"

# CHURN=1: also one whole replacement of the benchmark's churn built without frame pointers
# (allocate, store, free the old object), from one `__rust_alloc` to the next after 110,000
# of them: where the hook's cost shows in time (README, "What a preload costs per call").
# A few minutes per row: gdb stops at every call it lets pass.
[ "${CHURN:-}" = 1 ] || exit 0
RUSTFLAGS="-C force-frame-pointers=no" cargo build -q --release -p tidemark-bench \
    --bin bench-system --target-dir "$root/target/nofp"
churn="$root/target/nofp/release/bench-system"
loop=0x$(nm "$churn" | awk '/___rust_alloc$/ && !n++ {print $1}')
churn_run() {
    HOOK_LOOP=$loop HOOK_SKIP=110000 gdb -q -batch -ex "set startup-with-shell off" "$@" -ex "break main" -ex run \
        -x "$here/hook_instructions.py" --args "$churn" churn --scale 0.05 2>/dev/null |
        grep '^HOOK' | sed 's/^HOOK //'
}
churn_report() {
    local label=$1; shift
    local out; out=$(churn_run "$@" || true)
    local n; n=$(echo "$out" | awk '$1=="iteration"{print $2}')
    [ -n "$n" ] || { echo "hook_instructions: gdb could not step through the churn ($label)" >&2; exit 2; }
    printf '%-24s %7s\n' "$label" "$n"
    echo "$out" | grep -v '^iteration ' || true
}
echo
printf '%-24s %7s\n' "per churn replacement" instructions
churn_report "glibc"
churn_report "floor preload ${FLOOR_CFLAGS:-}" -ex "set environment LD_PRELOAD=$work/floor.so"
churn_report "tidemark (recording)" -ex "set environment LD_PRELOAD=$preload" \
    -ex "set environment TIDEMARK_PRELOAD_OUTPUT=$work/churn.tdm"
