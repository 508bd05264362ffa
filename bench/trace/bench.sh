#!/usr/bin/env bash
# The trace replay (issue 11): every trace of bench/trace/*.pht.xz replayed on
# poolheap (ph_alloc, roots, ph_compact after every 1/8 of the events) and on
# glibc, jemalloc and mimalloc (LD_PRELOAD; malloc_trim(0), the arenas' purge,
# mi_collect(true) at the same points).  See replay.c for what a run does.
#
#   bench/trace/bench.sh [--runs N] [TRACE...]     (default: every trace, 1 run)
#
# Prints, per trace, the resident bytes of the heap over the live bytes at each
# of the 8 points for every system (the median over the runs), the figure
# checks of issue 11 (poolheap's RSS <= 1.3 x (live + 1 MiB) at every point,
# and at the end below every malloc peer's), where poolheap's RSS is at the
# end (pools, their pages of free slots only, large blocks, outside the heap),
# and writes every JSON line to
# build/bench/trace/results.jsonl, the table to build/bench/trace/results.md.
# Exit status 1 on a correctness failure (a run not ok: ph_verify, or the
# checksum changed by a compaction; checksums that differ between systems at
# the same point; a system that did not run); the RSS goals are printed as
# PASS/FAIL and do not change it.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$REPO/build/bench/trace
REPLAY=$OUT/replay
RUNS=1
TRACES=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs)
      RUNS=${2:-}
      shift
      ;;
    -*)
      sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
    *) TRACES+=("$1") ;;
  esac
  shift
done
case $RUNS in '' | *[!0-9]* | 0)
  echo "trace/bench.sh: --runs needs a positive integer" >&2
  exit 2
  ;;
esac
if [ ${#TRACES[@]} -eq 0 ]; then
  for f in "$HERE"/*.pht.xz; do TRACES+=("$(basename "$f" .pht.xz)"); done
fi
say() { echo "[trace] $*" >&2; }
mkdir -p "$OUT"
(cd "$REPO" && ninja build/bench/trace/replay >/dev/null) || {
  say "ninja build/bench/trace/replay failed"
  exit 1
}
lib() { # a shared library of the system, by file name pattern
  ldconfig -p 2>/dev/null | awk -v p="$1" '$1 ~ p { print $NF; exit }'
}
JEMALLOC=$(lib '^libjemalloc\\.so\\.2$')
MIMALLOC=$(lib '^libmimalloc\\.so\\.2')
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
START=$(date +%s)
for t in "${TRACES[@]}"; do
  xz -dc "$HERE/$t.pht.xz" >"$OUT/$t.pht" || {
    printf '{"trace":"%s","system":"all","error":"cannot decompress"}\n' "$t" >>"$RESULTS"
    continue
  }
  for ((r = 1; r <= RUNS; r++)); do
    for sys in poolheap glibc jemalloc mimalloc; do
      pre="" args=(run "$OUT/$t.pht" --name "$t")
      case $sys in
        poolheap) args+=(--system poolheap) ;;
        jemalloc) pre=$JEMALLOC ;;
        mimalloc) pre=$MIMALLOC ;;
      esac
      if [ "$sys" != poolheap ] && [ "$sys" != glibc ] && [ -z "$pre" ]; then
        printf '{"trace":"%s","system":"%s","error":"library not found"}\n' "$t" "$sys" >>"$RESULTS"
        continue
      fi
      say "$t on $sys, run $r"
      tmp=$(mktemp)
      LD_PRELOAD=$pre "$REPLAY" "${args[@]}" >"$tmp" 2>>"$OUT/bench.log"
      rc=$?
      if grep -q "\"system\":\"$sys\"" "$tmp"; then
        sed "s/^{/{\"run\":$r,/" "$tmp" >>"$RESULTS"
      else
        printf '{"trace":"%s","system":"%s","error":"exit %s, no output (or not the expected allocator)"}\n' \
          "$t" "$sys" "$rc" >>"$RESULTS"
      fi
      rm -f "$tmp"
    done
  done
  rm -f "$OUT/$t.pht"
done
say "done in $(($(date +%s) - START)) s"

python3 - "$RESULTS" "$RUNS" "$OUT/results.md" <<'PY'
import json, sys
path, runs, md = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.startswith("{")]
errors = [r for r in rows if "error" in r]
rows = [r for r in rows if "error" not in r]
out, bad, goals, info = [], [], [], []
def p(s=""):
    out.append(s)
def median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
systems = ["poolheap", "glibc", "jemalloc", "mimalloc"]
traces = []
for r in rows:
    if r["trace"] not in traces:
        traces.append(r["trace"])
p("## Trace replay (issue 11)")
p()
p("RSS of the heap / live bytes after the release call at each 1/8 of the trace "
  "(poolheap: ph_compact; glibc: malloc_trim(0); jemalloc: arena purge; mimalloc: "
  "mi_collect(true)); medians over %d run%s. Live: the trace's sizes over live blocks; "
  "where less than 1 MiB is live, the RSS itself in parentheses. CPU s and minor faults: the "
  "whole replay (user + system time; it includes filling every block and the checksums). "
  "The floor rows: what poolheap's pools and large blocks need at least for the live blocks "
  "(a slot's share of a full pool, a large block's pages), with the classes served (small "
  "and medium, DESIGN.md's heap.sizeclass) and, for comparison, with every block above the "
  "small classes a page-rounded large block (the layout before medium pools): a computed "
  "bound, not a measurement." % (runs, "s" if runs > 1 else ""))
for t in traces:
    rs = [r for r in rows if r["trace"] == t]
    pts = sorted({r["point"] for r in rs})
    p()
    p("### %s" % t)
    p()
    p("| system | " + " | ".join("%d/8" % k for k in pts) + " | RSS end MB | anon end MB | live end MB | CPU s | minor faults |")
    p("|---|" + "---|" * (len(pts) + 5))
    end, anon = {}, {}
    for s in systems:
        sr = [r for r in rs if r["system"] == s]
        if not sr:
            continue
        cells = []
        for k in pts:
            kr = [r for r in sr if r["point"] == k]
            if not kr:
                cells.append("—")
            elif kr[0]["live_bytes"] < 1048576:  # a ratio to almost nothing says nothing
                cells.append("(%.1f MB)" % (median([r["rss"] for r in kr]) / 1048576))
            else:
                cells.append("%.2f" % median([r["rss_over_live"] for r in kr]))
        last = [r for r in sr if r["point"] == pts[-1]]
        end[s] = median([r["rss"] for r in last])
        anon[s] = median([r.get("anon", 0) for r in last])
        p("| %s | %s | %.1f | %.1f | %.1f | %.2f | %d |" % (
            s, " | ".join(cells), end[s] / 1048576, anon[s] / 1048576,
            last[0]["live_bytes"] / 1048576,
            median([r["cpu_ms"] for r in last]) / 1000, median([r["minor_faults"] for r in last])))
    # poolheap's floor for the live blocks (replay.c, proj_init): the classes
    # served, and the same blocks above the small classes as large blocks
    ph = [r for r in rs if r["system"] == "poolheap" and "floor_now" in r]
    for f, what in (("floor_now", "poolheap floor, classes served"),
                    ("floor_large", "poolheap floor, no medium classes")):
        if not ph:
            break
        cells = []
        for k in pts:
            kr = [r for r in ph if r["point"] == k]
            if not kr or kr[0]["live_bytes"] < 1048576:
                cells.append("—")
            else:
                cells.append("%.2f" % median([r[f] / r["live_bytes"] for r in kr]))
        last = [r for r in ph if r["point"] == pts[-1]]
        p("| %s | %s | %.1f | | | | |" % (what, " | ".join(cells), median([r[f] for r in last]) / 1048576))
    # where poolheap's RSS is at the end (replay.c, where): the run of
    # median RSS at the last point
    last = sorted((r for r in rs if r["system"] == "poolheap" and r["point"] == pts[-1]
                   and "heap_resident" in r), key=lambda r: r["rss"])
    if last:
        w = last[(len(last) - 1) // 2]
        mb = lambda x: x / 1048576
        p()
        p("poolheap at the end (run of median RSS, %.2f MB): pools %.2f MB resident "
          "(slots holding blocks %.2f MB, pages holding only free slots %.2f MB, "
          "%.2f MB of them in medium pools), "
          "large blocks %.2f MB, free units %.2f MB; outside the heap %.2f MB (the "
          "collector's own memory, malloc, stacks, code pages); live %.2f MB." % (
              mb(w["rss"]), mb(w["pools_resident"]), mb(w["pools_live_slots"]),
              mb(w["pools_free_pages"]), mb(w.get("pools_free_pages_medium", 0)),
              mb(w["large_resident"]),
              mb(w["free_units_resident"]), mb(w["rss"] - w["heap_resident"]),
              mb(w["live_bytes"])))
    # correctness
    for r in rs:
        if not r.get("ok"):
            bad.append("%s %s point %d run %s: not ok (verify %s, checksum %s -> %s)" % (
                t, r["system"], r["point"], r.get("run"), r.get("verify", "-"),
                r.get("checksum_before"), r.get("checksum")))
    for k in pts:
        sums = {r["checksum"] for r in rs if r["point"] == k}
        if len(sums) > 1:
            bad.append("%s point %d: checksums differ between systems: %s" % (t, k, sorted(sums)))
    ph = [r for r in rs if r["system"] == "poolheap"]
    if ph:
        worst = max(ph, key=lambda r: r["rss_over_live_1m"])
        goals.append(("%s: poolheap RSS <= 1.3 x (live + 1 MiB) at every point" % t,
                      worst["rss_over_live_1m"] <= 1.3,
                      "worst %.2f at point %d" % (worst["rss_over_live_1m"], worst["point"])))
        peers = {s: v for s, v in end.items() if s != "poolheap"}
        if peers:
            goals.append(("%s: poolheap RSS at the end below every malloc peer's" % t,
                          all(end["poolheap"] < v for v in peers.values()),
                          "poolheap %.2f MB; %s" % (end["poolheap"] / 1048576, ", ".join(
                              "%s %.2f MB" % (s, v / 1048576) for s, v in peers.items()))))
            # the same with anonymous memory only (replay.c, anon_bytes):
            # reported beside the goal, not instead of it
            ap = {s: v for s, v in anon.items() if s != "poolheap"}
            info.append("%s: anonymous memory at the end, poolheap %.2f MB; %s: %s" % (
                t, anon["poolheap"] / 1048576, ", ".join(
                    "%s %.2f MB" % (s, v / 1048576) for s, v in ap.items()),
                "below every peer's" if all(anon["poolheap"] < v for v in ap.values())
                else "not below every peer's"))
for r in errors:
    bad.append("%s on %s: %s" % (r.get("trace"), r.get("system"), r.get("error")))
p()
p("### Goals (issue 11; not a correctness failure)")
p()
for name, ok, val in goals:
    p("- %s %s: %s" % ("PASS" if ok else "FAIL", name, val))
p()
if info:
    p("Anonymous memory only (the heap's pages and every other written private page, "
      "without the code pages of the binary and its libraries, whose count varies with "
      "the kernel's fault-around; not a goal):")
    p()
    for i in info:
        p("- " + i)
    p()
if bad:
    p("Correctness failures:")
    for b in bad:
        p("- " + b)
else:
    p("Every run ok (ph_verify clean, survivors' checksum unchanged by each compaction), "
      "checksums equal across systems at every point.")
text = "\n".join(out)
print(text)
open(md, "w").write(text + "\n")
sys.exit(1 if bad else 0)
PY
