#!/bin/bash
# bench/peers/ocaml_rss_pairs.sh: issue 10's "RSS after Gc.compact <= stock",
# paired.  frag.ml's RSS after Gc.compact moves by 1 MiB (W1; Wbig 4 MiB)
# from run to run on both runtimes alike: OCaml's compressed mark stack (an
# addrmap, runtime/addrmap.c) doubles when a probe chain reaches 100, and its
# hash is of absolute addresses, so ASLR decides (ocaml/README.md).  A median
# of 3 is then a lottery.  This runs stock 5.3, and the poolheap runtime on
# the same seed each round (order rotated), logs each run's large mallocs
# (bench/peers/bigalloc_log.c, LD_PRELOAD) to know the sizes of the blocks
# of 1-8 MiB malloc'd and not freed at the end (the table's among them), and
# compares RSS after between the two runs of a round where those agree.
#
#   bench/peers/ocaml_rss_pairs.sh [--shape W1|Wbig|...] [--rounds N] [--seed S]
#
# Prints one line per run and the medians: all runs, and the paired
# difference (poolheap - stock) over the rounds where those agree.  Exit
# status: 0 if every run completed with its checksums equal (frag's "ok"),
# whatever the figures.  Env: POOLHEAP_CACHE (as ocaml/build.sh).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
W=$REPO/build/bench/ocaml_pairs
SHAPE=W1
ROUNDS=8
SEED=${BENCH_SEED:-$((RANDOM * 1000))}
while [ $# -gt 0 ]; do
  case $1 in
    --shape) SHAPE=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    *) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
say() { echo "[ocaml-rss-pairs] $*" >&2; }
mkdir -p "$W"
STOCK=$("$REPO/ocaml/build.sh" stock | tail -1) || { say "stock build failed"; exit 1; }
PH=$("$REPO/ocaml/build.sh" | tail -1) || { say "poolheap build failed"; exit 1; }
cc -shared -fPIC -O2 -Wall -Wextra -o "$W/bigalloc_log.so" "$HERE/bigalloc_log.c" -ldl ||
  { say "building the shim failed"; exit 1; }
for side in stock:$STOCK poolheap:$PH; do
  name=${side%%:*} prefix=${side#*:}
  mkdir -p "$W/$name"
  cp "$HERE/fragcore.ml" "$HERE/frag.ml" "$W/$name/"
  (cd "$W/$name" && "$prefix/bin/ocamlopt" -I +runtime_events -I +unix unix.cmxa \
    runtime_events.cmxa -o frag fragcore.ml frag.ml) >"$W/$name/build.log" 2>&1 ||
    { say "building frag with $prefix failed"; exit 1; }
done
say "stock $STOCK, poolheap $PH, $SHAPE, $ROUNDS rounds from seed $SEED"
RUNS=$W/runs.txt
: >"$RUNS"
bad=0
for i in $(seq "$ROUNDS"); do
  seed=$((SEED + i))
  order="stock poolheap"
  [ $((i % 2)) = 0 ] && order="poolheap stock"
  for s in $order; do
    BIGALLOC_LOG=$W/alloc.log LD_PRELOAD=$W/bigalloc_log.so \
      "$W/$s/frag" --system "$s" --shape "$SHAPE" --seed "$seed" >"$W/frag.out" 2>/dev/null
    rss=$(grep -o '"rss_after":[0-9]*' "$W/frag.out" | cut -d: -f2)
    ok=$(grep -o '"ok":[a-z]*' "$W/frag.out" | cut -d: -f2)
    # the sizes of the blocks of 1-8 MiB still allocated at the end (sorted,
    # "+"-joined): the addrmap's among them (stock mallocs OCaml's large
    # blocks too, frag's bigger ones: those are left out)
    table=$(awk '$1 != "free" { live[$3] = $2 } $1 == "free" { delete live[$3] }
      END { for (p in live) if (live[p] <= 8388608) print live[p] }' "$W/alloc.log" |
      sort -n | paste -sd+)
    [ "$ok" = true ] && [ -n "$rss" ] || { bad=1; say "round $i $s: no result"; continue; }
    echo "$s $seed $rss $table" | tee -a "$RUNS"
  done
done
python3 - "$RUNS" "$SHAPE" <<'PY'
import collections, statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for side, seed, rss, table in rows:
    by[seed][side] = (int(rss), table)
for side in ("stock", "poolheap"):
    v = [by[k][side][0] for k in by if side in by[k]]
    if v:
        print("%s %s: %d runs, RSS after median %.3f MB" % (sys.argv[2], side, len(v), st.median(v) / 1e6))
d = [(by[k]["poolheap"][0] - by[k]["stock"][0]) / 1e3 for k in by
     if len(by[k]) == 2 and by[k]["poolheap"][1] == by[k]["stock"][1]]
if d:
    print("%s poolheap - stock, rounds whose large malloc\'d blocks agree: n=%d, median %+.0f KB (min %+.0f, max %+.0f)"
          % (sys.argv[2], len(d), st.median(d), min(d), max(d)))
else:
    print("%s: no round whose large malloc\'d blocks agree" % sys.argv[2])
PY
exit $bad
