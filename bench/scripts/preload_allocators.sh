#!/bin/bash
# Programs run on tidemark's allocator through the preload library (LD_PRELOAD with
# TIDEMARK_PRELOAD_ALLOCATOR=pymalloc, what `tidemark run --allocator pymalloc` sets; preloaded
# by hand so that the RSS is the program's, not the larger of it and `tidemark run`), side by
# side with glibc and with mimalloc and jemalloc preloaded the same way (measured when
# installed: apt-get install libmimalloc2.0 libjemalloc2).
# Interleaved rounds; per program and allocator the median wall time and peak RSS of the whole
# process (/usr/bin/time) and their ratios to glibc (summarize.py).
#
#   bench/scripts/preload_allocators.sh [ROUNDS]      (default 7)
#
# Programs: hook_hot.c (20M malloc/free pairs, cache-resident), the C churn of the tests
# (tests/tests/programs/run_churn.c, 10M), the benchmark's churn (a Rust program on the C
# malloc family), and the CPython script with PYTHONMALLOC=malloc (PYTHON names the real
# interpreter binary, as in run_overhead.sh).
set -euo pipefail
rounds=${1:-7}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
# shellcheck source=churn_build.sh
. "$here/churn_build.sh"
gcc -O2 -o "$work/hook_hot" "$here/hook_hot.c"
gcc -O2 -o "$work/run_churn" "$root/tests/tests/programs/run_churn.c"
allocators=(glibc tidemark)
libdir=/usr/lib/x86_64-linux-gnu
[ -e "$libdir/libmimalloc.so.2" ] && allocators+=(mimalloc)
[ -e "$libdir/libjemalloc.so.2" ] && allocators+=(jemalloc)

# One line per run into $work/times: "program round allocator seconds kilobytes".
measure() {
    local program=$1 round=$2 allocator=$3; shift 3
    local run=()
    case $allocator in
    glibc) run=(env) ;;
    tidemark)
        run=(env LD_PRELOAD="$root/target/release/libtidemark_preload.so"
            TIDEMARK_PRELOAD_ALLOCATOR=pymalloc)
        ;;
    mimalloc) run=(env LD_PRELOAD="$libdir/libmimalloc.so.2") ;;
    jemalloc) run=(env LD_PRELOAD="$libdir/libjemalloc.so.2") ;;
    esac
    if ! /usr/bin/time -f "%e %M" -o "$work/t" "${run[@]}" "$@" >/dev/null 2>&1; then
        echo "preload_allocators: $program on $allocator failed in round $round" >&2
    fi
    echo "$program $round $allocator $(tail -1 "$work/t")" >>"$work/times"
}
for r in $(seq "$rounds"); do
    for a in "${allocators[@]}"; do
        measure hook_hot "$r" "$a" "$work/hook_hot" 20000000
        measure c_churn "$r" "$a" "$work/run_churn" 10000000
        measure bench_churn "$r" "$a" "$churn" churn
        PYTHONMALLOC=malloc measure python "$r" "$a" "$python" "$here/py_workload.py"
    done
    echo "round $r/$rounds done" >&2
done
python3 "$here/summarize.py" "$work/times" glibc
