#!/usr/bin/env bash
# Allocation throughput for medium blocks (issue 11: 2 KiB - 256 KiB), poolheap
# beside mimalloc, glibc and jemalloc, 1 and 2 threads (poolheap: domains).
#
#   bench/medtput.sh [--runs N] [--bytes B] [--mixes "log 3k 40k 200k"] [--seed S]
#
# Runs build/bench/medtput (poolheap) and bench/peers/med_tput.c (glibc; jemalloc and
# mimalloc of Debian's libjemalloc2 and libmimalloc2.0 by LD_PRELOAD) on the same plan (bench/peers/med_common.h:
# sizes log-uniform over 2-256 KiB ("log") or fixed (3k, 40k, 200k); 5% survive in a
# ring of about 16 MiB per thread, the rest die 16 allocations later; half raw, half
# scanned), B bytes per run (default 1G), N rounds (default 3), each round every
# system and thread count once in turn (the order rotates every round), each run a
# fresh process. What is timed: every allocation, the initialisation of its block and
# the store of its root, from a barrier to the last thread done; on poolheap that
# includes every collection the pacing starts (gc_percent 100) with its sweep and
# release, on the peers every free. Prints medians per system, mix and thread count
# (blocks/s, bytes/s), the ratio to mimalloc (goal >= 0.9) and the checksums (equal
# across systems for a mix: the survivors' sizes and ids). JSON lines in
# build/bench/medtput.jsonl, the table in build/bench/medtput.md.
# A fifth row, mimalloc-batched, is mimalloc with its frees queued and done
# whenever the queue holds 16 MiB (med_tput --defer 16M: memory comes back in
# batches about as often as poolheap's paced collections give it back; not
# a goal, it shows how much of the gap is when memory is reused).
# Exit status 1 if a run failed or checksums differ; a missed goal is reported only.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$REPO/build/bench
BIN=$OUT/medtput
RUNS=3
BYTES=1G
MIXES="log 3k 40k 200k"
SEED=${BENCH_SEED:-$(( (RANDOM << 15) ^ RANDOM ))}
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:-}; shift ;;
    --bytes) BYTES=$2; shift ;;
    --mixes) MIXES=$2; shift ;;
    --seed) SEED=$2; shift ;;
    *) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
case $RUNS in '' | *[!0-9]* | 0) echo "medtput.sh: --runs needs a positive integer" >&2; exit 2 ;; esac
say() { echo "[medtput] $*" >&2; }
mkdir -p "$OUT"
JSONL=$OUT/medtput.jsonl
LOG=$OUT/medtput.log
: >"$JSONL"
: >"$LOG"
(cd "$REPO" && ninja build/bench/medtput) >>"$LOG" 2>&1 || say "ninja build/bench/medtput failed (log $LOG)"
# the peers' program, with peers.sh's flags; jemalloc and mimalloc from Debian's packages
PEER=$REPO/build/peers/med_tput
mkdir -p "$REPO/build/peers"
${CC:-gcc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -I"$HERE/peers" -o "$PEER" \
  "$HERE/peers/med_tput.c" -lpthread -lm >>"$LOG" 2>&1 || say "build of $PEER failed (log $LOG)"
lib_path() { dpkg -L "$1" 2>/dev/null | grep -E "$2" | head -1; }
JEMALLOC=$(lib_path libjemalloc2 '/libjemalloc\.so\.2$')
MIMALLOC=$(lib_path libmimalloc2.0 '/libmimalloc\.so\.2$')
[ -z "$MIMALLOC" ] && MIMALLOC=$(lib_path libmimalloc2.0 '/libmimalloc\.so\.[0-9.]+$')

SYSTEMS=(poolheap mimalloc glibc jemalloc mimalloc-batched)
DEFER=16M # mimalloc-batched: med_tput --defer (the old ring's 16 MiB, MED_OLD_BYTES)
say "mixes $MIXES, $BYTES per run, $RUNS rounds, seed $SEED"
one() { # system mix threads
  local out="" rc=0 why=""
  if [ "$1" = poolheap ]; then
    if [ -x "$BIN" ]; then
      out=$("$BIN" --mix "$2" --threads "$3" --bytes "$BYTES" --seed "$SEED" 2>>"$LOG") || rc=$?
    fi
  else
    local pre="" defer=0
    case $1 in
      jemalloc) pre=$JEMALLOC ;;
      mimalloc) pre=$MIMALLOC ;;
      mimalloc-batched) pre=$MIMALLOC defer=$DEFER ;;
    esac
    if [ "$1" != glibc ] && [ -z "$pre" ]; then
      why="lib$1 not found (Debian package libjemalloc2 / libmimalloc2.0)"
    elif [ -x "$PEER" ]; then
      out=$(env ${pre:+LD_PRELOAD="$pre"} "$PEER" --system "$1" --mix "$2" --threads "$3" \
        --bytes "$BYTES" --seed "$SEED" --defer "$defer" 2>>"$LOG") || rc=$?
    fi
  fi
  if printf '%s\n' "${out:-}" | grep -q '^{'; then
    printf '%s\n' "$out" | grep '^{' | sed "s/^{/{\"round\":$r,/" >>"$JSONL"
  else
    printf '{"round":%d,"system":"%s","mix":"%s","threads":%d,"error":"%s"}\n' \
      "$r" "$1" "$2" "$3" "${why:-exit $rc, no output (log $LOG)}" >>"$JSONL"
  fi
}
for ((r = 1; r <= RUNS; r++)); do
  for mix in $MIXES; do
    for t in 1 2; do
      # rotate the systems' order each round
      for ((k = 0; k < ${#SYSTEMS[@]}; k++)); do
        s=${SYSTEMS[$(((k + r) % ${#SYSTEMS[@]}))]}
        say "round $r: $s $mix, $t thread(s)"
        one "$s" "$mix" "$t"
      done
    done
  done
done

python3 - "$JSONL" "$OUT/medtput.md" "$BYTES" "$SEED" <<'PY'
import json, sys
path, md, nbytes, seed = sys.argv[1:5]
rows = [json.loads(l) for l in open(path) if l.startswith("{")]
out = []
def p(s=""):
    out.append(s)
bad = []
def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
groups = {}
for r in rows:
    if "error" in r:
        bad.append("%s %s %s threads: %s" % (r.get("system"), r.get("mix"), r.get("threads"), r["error"]))
        continue
    groups.setdefault((r["mix"], r["threads"]), {}).setdefault(r["system"], []).append(r)
order = ["poolheap", "mimalloc", "glibc", "jemalloc", "mimalloc-batched"]
mixes = []
for (mix, t) in groups:
    if mix not in mixes:
        mixes.append(mix)
p("## Medium-block allocation throughput (issue 11)")
p()
p("%s bytes per run, seed %s; medians over the runs (column by column). Timed: allocation, "
  "block initialisation and root store from a barrier to the last thread done; poolheap's "
  "includes every paced collection (gc_percent 100), the peers' every free; GC ms: "
  "poolheap's stop-the-world sections within it, as domain 0 saw them. "
  "ratio = poolheap blocks/s over mimalloc's (goal >= 0.9). mimalloc-batched: mimalloc "
  "with its frees queued and done whenever the queue holds 16 MiB, about as often as "
  "poolheap's collections give memory back (not a goal)." % (nbytes, seed))
goals = []
for mix in mixes:
    for t in (1, 2):
        g = groups.get((mix, t))
        if not g:
            continue
        p()
        p("### mix %s, %d thread%s" % (mix, t, "s" if t > 1 else ""))
        p()
        p("| system | runs | ms | M blocks/s | GB/s | x mimalloc | collections | GC ms | minor faults | peak RSS MB | checksum |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        mi = g.get("mimalloc")
        mi_bps = median([r["blocks_per_sec"] for r in mi]) if mi else None
        sums = {}
        for s in sorted(g, key=lambda s: order.index(s) if s in order else 9):
            rs = g[s]
            bps = median([r["blocks_per_sec"] for r in rs])
            ratio = bps / mi_bps if mi_bps else None
            for r in rs:
                sums.setdefault(r["checksum"], set()).add(s)
            p("| %s | %d | %.0f | %.3f | %.2f | %s | %s | %s | %.0f | %.1f | %s |" % (
                s, len(rs), median([r["ms"] for r in rs]), bps / 1e6,
                median([r["bytes_per_sec"] for r in rs]) / 1e9,
                "%.2f" % ratio if ratio is not None else "—",
                "%.0f" % median([r["collections"] for r in rs]) if "collections" in rs[0] else "—",
                "%.0f" % median([r["gc_ms"] for r in rs]) if "gc_ms" in rs[0] else "—",
                median([r["minflt"] for r in rs]), median([r["maxrss"] for r in rs]) / 1048576,
                ",".join(str(c) for c in sorted({r["checksum"] for r in rs}))))
            if s == "poolheap" and ratio is not None:
                mb = g.get("mimalloc-batched")
                mb_bps = median([r["blocks_per_sec"] for r in mb]) if mb else None
                goals.append((mix, t, ratio, bps / mb_bps if mb_bps else None))
        if len(sums) > 1:
            bad.append("mix %s, %d threads: checksums differ: %s" % (
                mix, t, "; ".join("%s=%s" % (c, ",".join(sorted(v))) for c, v in sums.items())))
p()
p("Goal (issue 11): poolheap >= 0.9x mimalloc's allocations/s, 1 and 2 domains:")
for mix, t, ratio, batched in goals:
    p("- %s mix %s, %d thread%s: %.2fx%s" % (
        "met" if ratio >= 0.9 else "MISSED", mix, t, "s" if t > 1 else "", ratio,
        " (%.2fx mimalloc-batched)" % batched if batched else ""))
if bad:
    p()
    p("Failures:")
    for b in bad:
        p("- " + b)
text = "\n".join(out)
print(text)
open(md, "w").write(text + "\n")
sys.exit(1 if bad else 0)
PY
