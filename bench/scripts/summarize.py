"""Summarizes interleaved runs for the preload scripts (run_overhead.sh, preload_allocators.sh).

Input: lines "GROUP ROUND NAME SECONDS KILOBYTES" (wall time and peak RSS of one run, as
/usr/bin/time -f "%e %M" prints them). For each group: per name the median time, its ratio to
the baseline's median, the median of the per-round ratios to the baseline's run in the same
round ("paired", steadier on a shared machine), and the median peak RSS and its ratio.

    python3 summarize.py TIMES BASELINE
"""
import collections
import statistics
import sys


def main(path, baseline):
    runs = collections.defaultdict(lambda: collections.defaultdict(dict))
    for line in open(path):
        group, rnd, name, secs, kb = line.split()
        runs[group][name][int(rnd)] = (float(secs), int(kb))
    for group, by_name in runs.items():
        base = by_name[baseline]
        t0 = statistics.median(t for t, _ in base.values())
        m0 = statistics.median(m for _, m in base.values())
        lo, hi = min(t for t, _ in base.values()), max(t for t, _ in base.values())
        print(f"{group}: {baseline} {lo:.2f}-{hi:.2f} s")
        print(f"  {'run':12} {'time s':>7} {'ratio':>6} {'paired':>7} {'RSS MiB':>8} {'ratio':>6}")
        for name, by_round in by_name.items():
            t = statistics.median(t for t, _ in by_round.values())
            m = statistics.median(m for _, m in by_round.values())
            paired = statistics.median(v[0] / base[r][0] for r, v in by_round.items())
            print(f"  {name:12} {t:7.2f} {t / t0:6.2f} {paired:7.2f} {m / 1024:8.1f} {m / m0:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
