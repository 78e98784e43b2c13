"""An allocation-heavy CPython workload for the preload figures in README.md: dicts, lists, strings,
a sort and a JSON round trip (about 6.7M mallocs with PYTHONMALLOC=malloc at the default size)."""
import json
import sys


def build(n):
    records = []
    for i in range(n):
        records.append({"id": i, "name": "item-%d" % i, "tags": ["t%d" % (i % 7), "x" * (i % 13)]})
    return records


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    total = 0
    for _ in range(3):
        records = build(n)
        words = sorted(r["name"][::-1] for r in records)
        text = json.dumps(records)
        back = json.loads(text)
        total += len(words) + len(back) + len(text)
    print(total)


main()
