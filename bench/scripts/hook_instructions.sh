#!/bin/bash
# Instructions per malloc and free call, exact and repeatable: glibc alone, the floor preload
# (preload_floor.c: interposition and a 16-byte row, nothing more), tidemark's preload
# recording a capture, and the preload serving the calls from its pymalloc role. Needs gcc, gdb and a release build (cargo build --release).
#
#   bench/scripts/hook_instructions.sh            # the table
#   HOOK_DETAIL=1 bench/scripts/hook_instructions.sh   # and the count per function
#   FLOOR_CFLAGS=-DEXTRA_LOADS=10 bench/scripts/hook_instructions.sh   # a floor variant
#   PRELOAD=/tmp/old/libtidemark_preload.so bench/scripts/hook_instructions.sh   # another build
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
preload=${PRELOAD:-$root/target/release/libtidemark_preload.so}
[ -f "$preload" ] || { echo "hook_instructions: $preload is missing: run cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -fomit-frame-pointer -o "$work/hook_hot" "$here/hook_hot.c"
gcc -O2 -shared -fPIC ${FLOOR_CFLAGS:-} -o "$work/floor.so" "$here/preload_floor.c" -ldl

run() {
    gdb -q -batch "$@" -ex "break main" -ex run -x "$here/hook_instructions.py" \
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
