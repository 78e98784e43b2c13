#!/bin/bash
# What each instruction per malloc/free costs on the benchmark's churn, measured with the
# floor preload (preload_floor.c) and variants of it that do N more loads or stores per call,
# side by side with tidemark run -q, interleaved rounds, medians of the whole process's wall
# time (/usr/bin/time) and their ratio to the untraced run.
#
#   bench/scripts/preload_floor.sh [ROUNDS]      (default 7; about 30 s a round)
#
# The churn binary is built without frame pointers (target/nofp), as issue 6 asks.
set -euo pipefail
rounds=${1:-7}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=churn_build.sh
. "$here/churn_build.sh"
variants=(floor:"" loads10:-DEXTRA_LOADS=10 loads30:-DEXTRA_LOADS=30 stores30:-DEXTRA_STORES=30)
for v in "${variants[@]}"; do
    gcc -O2 -shared -fPIC ${v#*:} -o "$work/${v%%:*}.so" "$here/preload_floor.c" -ldl
done
times="$work/times"
measure() {
    local name=$1; shift
    /usr/bin/time -f "$name %e" -a -o "$times" "$@" >/dev/null 2>&1
}
for r in $(seq "$rounds"); do
    measure plain "$churn" churn
    for v in "${variants[@]}"; do
        measure "${v%%:*}" env LD_PRELOAD="$work/${v%%:*}.so" "$churn" churn
    done
    measure tidemark_q "$tidemark" run -q -o "$work/churn.tdm" -- "$churn" churn
    echo "round $r/$rounds done" >&2
done
python3 - "$times" <<'PY'
import collections, statistics, sys
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, wall = line.split()[:2]
    runs.setdefault(name, []).append(float(wall))
base = statistics.median(runs["plain"])
print(f"{'run':12} {'median s':>9} {'ratio':>6}  all (s)")
for name, walls in runs.items():
    m = statistics.median(walls)
    print(f"{name:12} {m:9.2f} {m / base:6.2f}  {' '.join(f'{w:.2f}' for w in sorted(walls))}")
PY
