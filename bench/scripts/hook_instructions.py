# gdb script for hook_instructions.sh: counts the instructions of one malloc and one free
# call of hook_hot, single-stepping from the call site until control is back in main.
#
# Callgrind would count them too, but it does not see the calls a preload library
# interposes here, so this steps through them instead (a few seconds per call).
# Environment: HOOK_SKIP (calls to let pass first, so that caches are warm),
# HOOK_DETAIL=1 (also the count per function), HOOK_LOOP=OFFSET (instead: one whole
# iteration of the program's loop, from an entry of the function at OFFSET in the program's
# file, which the loop calls once per iteration, to the next; an offset, not a name: a
# preload library may define a symbol of the same name).
import os

import gdb

SKIP = int(os.environ.get("HOOK_SKIP", "20000"))
DETAIL = os.environ.get("HOOK_DETAIL") == "1"
LOOP = os.environ.get("HOOK_LOOP")

gdb.execute("set pagination off")
gdb.execute("set confirm off")


def symbol(pc):
    text = gdb.execute("info symbol %d" % pc, to_string=True)
    return text.split(" in section")[0].split(" + ")[0].strip()


def count(site, back_in_main=True):
    """Instructions from entering `site` (a tail call) until control is back in main, or
    (back_in_main=False) until it is back at `site`."""
    gdb.execute("delete")
    gdb.execute("set language c")
    gdb.execute("break *%s" % site)
    gdb.execute("ignore $bpnum %d" % SKIP, to_string=True)
    gdb.execute("continue", to_string=True)
    start = int(gdb.parse_and_eval("$pc"))
    # Only this thread runs while stepping (the capture writer waits).
    gdb.execute("set scheduler-locking step")
    steps, per_function = 0, {}
    while True:
        gdb.execute("stepi", to_string=True)
        steps += 1
        pc = int(gdb.parse_and_eval("$pc"))
        if not back_in_main and pc == start:
            break
        name = symbol(pc)
        if back_in_main and name == "main":
            break
        per_function[name] = per_function.get(name, 0) + 1
    gdb.execute("set scheduler-locking off")
    return steps, per_function


def report(label, steps, per_function):
    print("HOOK %s %d" % (label, steps))
    if DETAIL:
        for name, n in sorted(per_function.items(), key=lambda kv: -kv[1]):
            print("HOOK   %5d  %s" % (n, name[:100]))


def program_base():
    """Where the program's file is mapped (its first mapping has file offset 0)."""
    path = gdb.current_progspace().filename
    for line in gdb.execute("info proc mappings", to_string=True).splitlines():
        if line.rstrip().endswith(path):
            return int(line.split()[0], 16)
    raise RuntimeError("no mapping of " + path)


if LOOP:
    report("iteration", *count(program_base() + int(LOOP, 16), back_in_main=False))
else:
    for label, site in (("malloc", "alloc_site"), ("free", "free_site")):
        report(label, *count(site))
gdb.execute("kill")
