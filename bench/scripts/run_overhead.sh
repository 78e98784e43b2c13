#!/bin/bash
# What `tidemark run` costs a program, side by side with heaptrack and memray, as issue 6
# measures it: the benchmark's churn built without frame pointers, and a CPython script with
# PYTHONMALLOC=malloc. Interleaved rounds; for each run the median wall time and peak RSS of
# the whole process (/usr/bin/time) and their ratios to the untraced run (summarize.py).
#
#   bench/scripts/run_overhead.sh [ROUNDS] [churn|python|both]     (default 7, both)
#
# Needs a release build (built here), /usr/bin/time; heaptrack and memray (pip install
# memray, into the python that runs the script) are measured when installed. PYTHON names
# the real interpreter binary (not a pyenv shim: `tidemark run` does not follow a `#!`
# wrapper without --follow-fork).
set -euo pipefail
rounds=${1:-7}
which_runs=${2:-both}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
# shellcheck source=churn_build.sh
. "$here/churn_build.sh"
gcc -O2 -shared -fPIC -o "$work/floor.so" "$here/preload_floor.c" -ldl
has() { command -v "$1" >/dev/null 2>&1; }
has_memray() { "$python" -c 'import memray' >/dev/null 2>&1; }

# One line per run into $work/times: "workload round name seconds kilobytes".
measure() {
    local workload=$1 round=$2 name=$3; shift 3
    if ! /usr/bin/time -f "%e %M" -o "$work/t" "$@" >/dev/null 2>&1; then
        echo "run_overhead: $workload/$name failed in round $round (its time still counts)" >&2
    fi
    echo "$workload $round $name $(tail -1 "$work/t")" >>"$work/times"
}
round_churn() {
    local r=$1
    measure churn "$r" untraced "$churn" churn
    measure churn "$r" floor env LD_PRELOAD="$work/floor.so" "$churn" churn
    measure churn "$r" tidemark_q "$tidemark" run -q -o "$work/c.tdm" -- "$churn" churn
    measure churn "$r" tidemark "$tidemark" run -o "$work/c.tdm" -- "$churn" churn
    if has heaptrack; then
        measure churn "$r" heaptrack heaptrack -o "$work/c.ht" "$churn" churn
    fi
}
round_python() {
    local r=$1 script="$here/py_workload.py"
    measure python "$r" untraced env PYTHONMALLOC=malloc "$python" "$script"
    measure python "$r" tidemark_q env PYTHONMALLOC=malloc "$tidemark" run -q -o "$work/p.tdm" \
        -- "$python" "$script"
    measure python "$r" tidemark env PYTHONMALLOC=malloc "$tidemark" run -o "$work/p.tdm" \
        -- "$python" "$script"
    if has heaptrack; then
        measure python "$r" heaptrack env PYTHONMALLOC=malloc heaptrack -o "$work/p.ht" \
            "$python" "$script"
    fi
    if has_memray; then
        rm -f "$work/p.bin"
        measure python "$r" memray "$python" -m memray run --native --trace-python-allocators \
            -q -f -o "$work/p.bin" "$script"
    fi
}
for r in $(seq "$rounds"); do
    case $which_runs in
    churn) round_churn "$r" ;;
    python) round_python "$r" ;;
    *) round_churn "$r"; round_python "$r" ;;
    esac
    echo "round $r/$rounds done" >&2
done
python3 "$here/summarize.py" "$work/times" untraced
