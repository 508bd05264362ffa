#!/usr/bin/env python3
"""Where a program's resident memory is at its peak, mapping by mapping.

    bench/peers/rss_peak.py [--interval MS] [--top N] [--json FILE] [--strace]
                            [--census poolheap|stock] -- CMD ARGS...

Runs CMD and reads /proc/PID/smaps_rollup every MS milliseconds (default 5);
whenever the resident total is the highest so far, it reads /proc/PID/smaps
and keeps that sample.  At the end it prints the peak sample's mappings,
largest resident first, each with its size, its resident and anonymous kB,
and a kind:
  binary     file-backed mappings (the program, libc, ...)
  [heap]     malloc's main arena (brk)
  [stack]    the main thread's stack
  arena      a 64 MiB-aligned anonymous mapping of at most 64 MiB with a
             PROT_NONE remainder after it: a malloc arena of another thread
  guard      PROT_NONE (reserved, never resident)
  anon       any other anonymous mapping (poolheap's chunks, OCaml's minor
             heaps and stock's pools, thread stacks, mmapped malloc blocks)
then the sums by kind and ru_maxrss (the kernel's high-water, which the
sampler can miss by the pages touched between two samples).
--json FILE also writes the peak sample (every mapping) as JSON.
--strace runs CMD under `strace -f -k` (its mmap, munmap and mremap calls with
their call stacks) and, at the peak sample, reads /proc/PID/pagemap: every
resident anonymous page is charged to the call that mapped it last, named by
the first functions of its stack that are not the mapping wrappers
(caml_mem_map, ph_os_reserve, glibc's malloc internals, ...), and the
resident kB are printed by that name (kernel-merged mappings are split back
into what each caller mapped).  strace slows the mappings down; the peak it
finds is of a slightly different run.
--census RUNTIME (an OCaml 5.3 program, 32 KiB pools): whenever the resident
total has grown by 1 MB since the last census, the process is stopped
(SIGSTOP), every resident 32 KiB pool of its anonymous read-write mappings
is classified from its header through /proc/PID/mem, and it is continued;
one line per census, then the census at the peak.  poolheap: "pool owner N"
(signature POOL, the owner's index), "free unit" (DEAD: a freed pool or
large block, free and committed), "other" (minor heaps, malloc'd memory);
stock: "pool owner ADDR" (the domain state's address), "free pool" (owner
NULL: on stock's free list), "not a pool".  The stops slow the run down
(~3-5x): the peak is of a slower run, the breakdown is what it shows.
The sampled process's own stdout and stderr pass through.
"""
import bisect
import json
import os
import re
import signal
import struct
import resource
import subprocess
import sys
import time


def rollup_rss(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def smaps(pid):
    maps, cur = [], None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    cur = {"start": lo, "end": hi, "perms": parts[1],
                           "name": parts[5] if len(parts) > 5 else "",
                           "inode": int(parts[4])}
                    maps.append(cur)
                elif cur is not None and parts[0] in ("Rss:", "Anonymous:", "Private_Dirty:"):
                    cur[parts[0][:-1].lower()] = int(parts[1])
    except OSError:
        return None
    return maps


WRAPPERS = {"mmap", "mmap64", "__mmap", "munmap", "__munmap", "mremap", "caml_plat_mem_map",
            "caml_mem_map", "caml_plat_mem_commit", "caml_mem_commit", "map_aligned",
            "ph_os_reserve", "ph_os_commit", "sysmalloc", "_int_malloc", "__libc_malloc",
            "malloc", "_int_memalign", "_mid_memalign", "new_heap", "alloc_new_heap",
            "arena_get2", "tcache_init", "__libc_calloc", "calloc", "realloc",
            "_int_realloc", "__libc_realloc", "caml_stat_alloc_noexc", "caml_stat_alloc",
            "caml_stat_calloc_noexc", "caml_stat_resize_noexc", "caml_stat_alloc_aligned_noexc"}
FRAME = re.compile(r"^ > ([^(]*)\(([^+)]*)")
CALL = re.compile(r"^(\d+) +(mmap|munmap|mremap)\((\w+), (\d+)(?:, (\d+))?.*= (0x[0-9a-f]+|0|-1)")


def strace_regions(path, upto):
    """The strace log's mapping calls up to byte offset upto, replayed:
    a list of (start, end, label), the latest call covering an address last.
    Calls after upto follow, their labels marked (later)."""
    events, cur, pending = [], None, {}
    with open(path, errors="replace") as f:
        pos = 0
        for line in f:
            pos += len(line)
            m = FRAME.match(line)
            if m:
                if cur is not None:
                    cur["frames"].append((os.path.basename(m.group(1)), m.group(2)))
                continue
            pid = line.split(" ", 1)[0]
            if "<unfinished ...>" in line:
                pending[pid] = line.split("<unfinished", 1)[0]
                cur = None
                continue
            if "resumed>" in line and pid in pending:
                line = pending.pop(pid) + line.split("resumed>", 1)[1]
            m = CALL.match(line)
            cur = None
            if m and m.group(6) not in ("-1",):
                cur = {"call": m.group(2), "addr": int(m.group(3), 16) if m.group(3) != "NULL" else 0,
                       "len": int(m.group(4)), "ret": int(m.group(6), 16), "frames": [],
                       "later": pos > upto}
                events.append(cur)
    def label(e):
        fr = [f for _, f in e["frames"]]
        k = 0
        while k < len(fr) and (fr[k] in WRAPPERS or fr[k] == ""):
            k += 1
        name = "<".join(fr[k:k + 3]) or "?"
        if any(f in ("sysmalloc", "new_heap", "alloc_new_heap") for f in fr[:k]):
            name = "malloc:" + name
        return name + (" (later)" if e["later"] else "")
    regions = []
    for e in events:
        pg = lambda x: (x + 4095) & ~4095
        if e["call"] == "mmap":
            regions.append([e["ret"], e["ret"] + pg(e["len"]), label(e)])
        elif e["call"] == "munmap" and not e["later"]:
            regions.append([e["addr"], e["addr"] + pg(e["len"]), None])
        elif e["call"] == "mremap":
            regions.append([e["ret"], e["ret"] + pg(e["len"]), label(e)])
    return regions


def pagemap_present(pid, maps):
    """The resident pages of the anonymous mappings, as a sorted list of page
    addresses."""
    pages = []
    try:
        f = open("/proc/%d/pagemap" % pid, "rb")
    except OSError:
        return None
    with f:
        for m in maps:
            if m["inode"] or not m.get("rss"):
                continue
            n = (m["end"] - m["start"]) >> 12
            f.seek((m["start"] >> 12) * 8)
            data = f.read(n * 8)
            for i, e in enumerate(struct.unpack("<%dQ" % (len(data) // 8), data)):
                if e >> 63:
                    pages.append(m["start"] + (i << 12))
    return pages


def attribute(pages, regions):
    """kB resident per label: each page to the last region covering it."""
    by = {}
    # last writer wins: walk the regions backwards, each page charged once
    left = sorted(pages)
    for lo, hi, lab in reversed(regions):
        if not left:
            break
        a = bisect.bisect_left(left, lo)
        b = bisect.bisect_left(left, hi)
        if a == b:
            continue
        if lab is not None:
            by[lab] = by.get(lab, 0) + 4 * (b - a)
        del left[a:b]
    if left:
        by["(no mapping call seen)"] = 4 * len(left)
    return by


POOL = 32768


def census(pid, maps, runtime):
    """kB of resident 32 KiB pools by what their headers say."""
    res = {}
    def add(k, kb):
        res[k] = res.get(k, 0) + kb
    with open("/proc/%d/pagemap" % pid, "rb") as pm, open("/proc/%d/mem" % pid, "rb") as mem:
        def header(a, n):
            mem.seek(a)
            return mem.read(n)
        for m in maps:
            if (m["inode"] or not m.get("rss") or not m["perms"].startswith("rw")
                    or m["name"].startswith("[")):
                continue
            n = (m["end"] - m["start"]) >> 12
            pm.seek((m["start"] >> 12) * 8)
            d = pm.read(n * 8)
            present = [e >> 63 for e in struct.unpack("<%dQ" % (len(d) // 8), d)]
            if runtime == "poolheap":  # units are aligned to their size
                base = (m["start"] + POOL - 1) & ~(POOL - 1)
            else:  # stock maps each pool alone: the page offset where most
                # 32 KiB steps hold a pool header (a size class 1..31 at +24)
                best = (-1, 0)
                for k in range(8):
                    a, v = m["start"] + (k << 12), 0
                    while a + POOL <= m["end"] and v < 4000:
                        if present[(a - m["start"]) >> 12]:
                            v += 1 <= struct.unpack("<I", header(a + 24, 4))[0] < 32
                        a += POOL
                    best = max(best, (v, -k))
                base = m["start"] - (best[1] << 12)
            add("other", 4 * sum(present[:(base - m["start"]) >> 12]))
            a = base
            while a + POOL <= m["end"]:
                i = (a - m["start"]) >> 12
                r = sum(present[i:i + 8])
                if r and not present[i]:
                    add("other", 4 * r)
                elif r and runtime == "poolheap":
                    sig, _, _, _, owner = struct.unpack_from("<IBBHI", header(a, 12))
                    add("pool owner %d" % owner if sig == 0x504f4f4c else
                        "free unit" if sig == 0xdeadd00d else "other", 4 * r)
                elif r:
                    _, _, owner, sz = struct.unpack_from("<QQQI", header(a, 28))
                    add("not a pool" if not 1 <= sz < 32 else
                        "free pool" if owner == 0 else "pool owner %x" % owner, 4 * r)
                a += POOL
            add("other", 4 * sum(present[((a - m["start"]) >> 12):]))
    return res


def census_line(res):
    return ", ".join("%s %.1f MB" % (k, v / 1024)
                     for k, v in sorted(res.items(), key=lambda kv: -kv[1]) if v >= 256)


def kind(m, nxt):
    if m["inode"] or m["name"].startswith("/"):
        return "binary"
    if m["name"] in ("[heap]", "[stack]"):
        return m["name"]
    if m["name"].startswith("["):
        return "binary"
    if m["perms"].startswith("---"):
        return "guard"
    size = m["end"] - m["start"]
    mb64 = 64 << 20
    if (m["start"] % mb64 == 0 and size < mb64 and nxt is not None
            and nxt["start"] == m["end"] and nxt["perms"].startswith("---")
            and (nxt["end"] - m["start"]) == mb64):
        return "arena"
    return "anon"


def main(argv):
    interval, top, out, trace, runtime = 5.0, 25, None, None, None
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] == "--interval":
            interval = float(argv[i + 1]); i += 2
        elif argv[i] == "--top":
            top = int(argv[i + 1]); i += 2
        elif argv[i] == "--strace":
            trace = "/tmp/rss_peak.%d.strace" % os.getpid(); i += 1
        elif argv[i] == "--census" and i + 1 < len(argv) and argv[i + 1] in ("poolheap", "stock"):
            runtime = argv[i + 1]; i += 2
        elif argv[i] == "--json":
            out = argv[i + 1]; i += 2
        else:
            sys.stderr.write(__doc__); return 2
    cmd = argv[i + 1:]
    if not cmd:
        sys.stderr.write(__doc__); return 2
    if trace:
        cmd = ["strace", "-f", "-k", "-qq", "-e", "trace=mmap,munmap,mremap", "-o", trace, "--"] + cmd
    p = subprocess.Popen(cmd)
    pid = p.pid
    if trace:  # the traced program: strace's child
        pid = None
        while pid is None and p.poll() is None:
            try:
                with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                    c = f.read().split()
                pid = int(c[0]) if c else None
            except OSError:
                pass
            time.sleep(0.001)
    best, best_maps, best_t, t0, samples = -1, None, 0.0, time.monotonic(), 0
    best_pages, best_off, best_census, last_census = None, 0, None, 0
    while p.poll() is None and pid is not None:
        rss = rollup_rss(pid)
        samples += 1
        if runtime and rss is not None and rss > last_census + 1024:
            os.kill(pid, signal.SIGSTOP)
            try:
                for _ in range(200):  # until it is stopped
                    with open("/proc/%d/stat" % pid) as f:
                        if f.read().rsplit(") ", 1)[1][0] in "Tt":
                            break
                    time.sleep(0.0005)
                m = smaps(pid)
                if m:
                    res = census(pid, m, runtime)
                    tot = sum(x.get("rss", 0) for x in m)
                    print("census at %.1f MB: %s" % (tot / 1024, census_line(res)), flush=True)
                    if tot > best:
                        best, best_maps, best_census = tot, m, res
                        best_t = time.monotonic() - t0
                last_census = rss
            except OSError:
                pass
            finally:
                os.kill(pid, signal.SIGCONT)
        if rss is not None and rss > best:
            m = smaps(pid)
            if m:
                best, best_maps = sum(x.get("rss", 0) for x in m), m
                best_t = time.monotonic() - t0
                if trace:
                    best_pages = pagemap_present(pid, m)
                    best_off = os.path.getsize(trace)
        time.sleep(interval / 1000)
    rc = p.wait()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if best_maps is None:
        print("rss_peak: no sample (rc %d)" % rc)
        return 1
    for k, m in enumerate(best_maps):
        m["kind"] = kind(m, best_maps[k + 1] if k + 1 < len(best_maps) else None)
    print("rss_peak: peak sample %.1f MB at %.2f s (%d samples), ru_maxrss %.1f MB, rc %d"
          % (best / 1024, best_t, samples, maxrss / 1024, rc))
    print("%-27s %5s %-10s %10s %10s %10s" % ("mapping", "perms", "kind", "size kB", "rss kB", "anon kB"))
    for m in sorted(best_maps, key=lambda x: -x.get("rss", 0))[:top]:
        print("%012x-%012x %5s %-10s %10d %10d %10d %s" % (
            m["start"], m["end"], m["perms"], m["kind"], (m["end"] - m["start"]) >> 10,
            m.get("rss", 0), m.get("anonymous", 0), m["name"]))
    sums = {}
    for m in best_maps:
        s = sums.setdefault(m["kind"], [0, 0, 0])
        s[0] += 1; s[1] += m.get("rss", 0); s[2] += (m["end"] - m["start"]) >> 10
    print("by kind: " + ", ".join("%s %d maps %.1f MB rss" % (k, v[0], v[1] / 1024)
                                  for k, v in sorted(sums.items(), key=lambda kv: -kv[1][1])))
    if best_census is not None:
        print("census at the peak sample: " + census_line(best_census))
    if trace and best_pages is not None:
        by = attribute(best_pages, strace_regions(trace, best_off))
        print("resident anonymous kB by the call that mapped them (%.1f MB):" % (sum(by.values()) / 1024))
        for lab, kb in sorted(by.items(), key=lambda kv: -kv[1]):
            if kb >= 64:
                print("%10d  %s" % (kb, lab))
        os.unlink(trace)
    if out:
        with open(out, "w") as f:
            json.dump({"peak_kb": best, "t": best_t, "maxrss_kb": maxrss, "rc": rc,
                       "maps": best_maps}, f)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
