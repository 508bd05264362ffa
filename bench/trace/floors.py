#!/usr/bin/env python3
"""bench/trace/floors.py -- poolheap's floor for a trace's live blocks at its
end, with the class rule the heap uses and with finer ones (issue 11).

  bench/trace/floors.py [TRACE.pht.xz ...]      (default: every trace here)

The floor is what the replay's "poolheap floor, classes served" row computes
(replay.c, proj_init) at the trace's last point: every live block costs its
slot's share of a full pool (pool bytes / slots), a large block its pages.
It is a lower bound: a compaction cannot pack below it.  This script
recomputes it from the trace itself, with the heap's layout (heap/sizeclass.c:
32 KiB units, a 64-byte pool header and a live bitmap in 64-byte lines, the
small classes up to the largest that leaves 8 slots in one unit, medium pools
of the fewest units that hold 8 slots, large blocks page-rounded after a
64-byte header) and the class spacing as a parameter: w_{k+1} = max(w_k + 1,
floor(w_k * (n + 1) / n)); n = 7 is the heap's rule (heap.sizeclass: no
request wastes 1/8 of its slot), larger n are finer rules, and "word" is one
class per word size.  So it says how fine the classes would have to be for
the floor alone to fall below a malloc's measured RSS.  Sizes are replayed as
replay.c does: at least 8 bytes, ceil(size / 8) fields and a header word.
Prints one line per trace and rule, in MiB.
"""
import bisect
import lzma
import os
import sys

UNIT = 32768
POOL_HDR = 64
MAX_SMALL_WSIZE = 257
MEDIUM_TOP_WSIZE = 32768
LARGE_HDR = 64
PAGE = 4096


def live_sizes(path):
    """The sizes of the blocks live at the trace's end (replay.c's format:
    "PHT1\\n", then LEB128 varints, size << 1 or age << 1 | 1)."""
    data = lzma.open(path).read()
    if data[:5] != b"PHT1\n":
        sys.exit("%s: not a PHT1 trace" % path)
    sizes, live = [], []
    i, n = 5, len(data)
    while i < n:
        v = shift = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if v & 1:
            live[len(sizes) - 1 - (v >> 1)] = False
        else:
            sizes.append(v >> 1)
            live.append(True)
    return [s for s, alive in zip(sizes, live) if alive]


def hdr_for(bits):
    return POOL_HDR + (bits + 511) // 512 * 64


def layout(nbytes, slot):
    """heap.pool.hdr: the most slots of `slot` bytes after the header."""
    k = (nbytes - POOL_HDR) // slot
    while k > 0 and hdr_for(k) + k * slot > nbytes:
        k -= 1
    return k


def classes(n):
    """(slot words, cost in bytes of one slot's share of a full pool)."""
    wmax = min(MAX_SMALL_WSIZE, (UNIT - hdr_for((UNIT - POOL_HDR) // 16)) // 8 // 8)
    out, w = [], 2
    step = (lambda w: w + 1) if n is None else (lambda w: max(w + 1, w * (n + 1) // n))
    while w < wmax:
        out.append((w, UNIT / layout(UNIT, w * 8)))
        w = step(w)
    out.append((wmax, UNIT / layout(UNIT, wmax * 8)))
    w = step(wmax)
    while True:
        cw = min(w, MEDIUM_TOP_WSIZE)
        units = (POOL_HDR + 8 * cw * 8 + UNIT - 1) // UNIT
        while layout(units * UNIT, cw * 8) < 8:
            units += 1
        out.append((cw, units * UNIT / layout(units * UNIT, cw * 8)))
        if cw == MEDIUM_TOP_WSIZE:
            return out
        w = step(w)


def floor_bytes(sizes, table):
    ws = [w for w, _ in table]
    total = 0.0
    for s in sizes:
        w = (max(s, 8) + 7) // 8 + 1
        if w > MEDIUM_TOP_WSIZE:
            total += (LARGE_HDR + 8 * w + PAGE - 1) // PAGE * PAGE
        else:
            total += table[bisect.bisect_left(ws, w)][1]
    return total


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    traces = sys.argv[1:] or sorted(
        os.path.join(here, f) for f in os.listdir(here) if f.endswith(".pht.xz"))
    rules = [(7, "1/7 (the heap's rule)"), (15, "1/15"), (31, "1/31"),
             (63, "1/63"), (None, "one class per word")]
    tables = [(classes(n), what) for n, what in rules]
    for t in traces:
        sizes = live_sizes(t)
        name = os.path.basename(t).split(".")[0]
        live = sum(max(s, 8) for s in sizes) / 2**20
        for table, what in tables:
            print("%-7s live %7.2f MiB  floor %7.2f MiB  classes %3d  spacing %s"
                  % (name, live, floor_bytes(sizes, table) / 2**20, len(table), what))


if __name__ == "__main__":
    main()
