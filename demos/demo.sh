#!/usr/bin/env bash
# The fragmentation demo: what `./run.sh demo` runs after building the release
# variant.  Under 2 minutes on 2 cores, plus, the first time only, the build
# of OCaml 5.3 (stock and on poolheap, ocaml/build.sh: 10-20 minutes each,
# cached in POOLHEAP_CACHE).
#
#   demos/demo.sh [--quick] [--json] [--seed S]
#
#   --quick   a small version (frag N = 200,000; worker 4 tasks of 16 MiB), a
#             few seconds; CI runs it so that the demo cannot rot
#   --json    stdout carries only the figures as JSON lines (the text goes to
#             stderr): poolheap's and every peer's frag line, the census
#             lines, one line per worker task and system, and the verdict
#   --seed S  replay a run (the seed is printed; default: random)
#
# It runs, all on the same seed so that every system builds the same graph:
#   1-3. build/demos/demo_frag: frag(N, 1, K) in poolheap, the fragmentation
#        map (ph_census) and RSS / committed / mappings before and after
#        ph_compact, the phase times and the checksums;
#   4.   the peers of bench/peers (frag_c.c under glibc malloc, jemalloc and
#        mimalloc by LD_PRELOAD, and built for Boehm GC; frag.ml on stock
#        OCaml 5.3 and on OCaml 5.3 with poolheap's shared heap, the two
#        OCaml rows of 5.); compiled here into build/demo/peers.
#        Expected: every peer's checksum is poolheap's; the non-moving peers
#        keep their RSS; both OCaml runtimes compact, stock's mappings grow
#        by hundreds (it unmaps pool by pool), poolheap's runtime's do not;
#   5.   worker(T, S, K) for poolheap with and without compaction and the
#        peers (worker_c.c), RSS after each task, plotted by gnuplot into
#        build/demo/worker-rss.png; and the same worker written in OCaml
#        (bench/peers/worker.ml, Gc.compact after each task) on stock OCaml
#        5.3 ("ocaml-5.3") and on OCaml 5.3 with poolheap's shared heap
#        ("ocaml-5.3-poolheap", ocaml/build.sh's prefix for these sources).
#        Expected: every system keeps the same blocks (the report checks the
#        table bytes after each task); poolheap with compaction stays flat
#        near its live data while the collect-only run, the malloc peers and
#        Boehm keep about the size of one task's garbage; both OCaml runtimes
#        compact, so both stay far below the malloc peers; poolheap's runtime
#        stays flat at its first task's RSS with constant mappings, stock's
#        sits higher from the second task on (its large blocks go through
#        malloc, and glibc keeps freed ones: about 7 MiB at 128 MiB tasks)
#        and its mappings move by hundreds from task to task (it unmaps pool
#        by pool).  The table gives each system's fewest and most mappings.
#   then a three-line verdict computed from those figures.
# A peer that cannot be built or run is reported as NOT RUN, never skipped.
# Exit status: 0, or 1 if anything failed (a peer included).
# OCaml: the full demo builds both runtimes into the cache when missing (a
# build that fails is one NOT RUN line per OCaml row; the rest runs on);
# --quick (./run.sh test) never builds OCaml: it uses the prefixes already
# built (ocaml/ci.sh builds poolheap's) and prints "not shown" for the others.
# Env: CC (default gcc), POOLHEAP_CACHE (where ocaml/build.sh and
# bench/peers/build_ocaml53.sh keep OCaml 5.3; default ~/.cache/poolheap).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$REPO/build/demo
BIN=$REPO/build/demos
PEERSRC=$REPO/bench/peers
CC=${CC:-gcc}
CACHE=${POOLHEAP_CACHE:-$HOME/.cache/poolheap}

quick=0 json=0 seed=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --json) json=1 ;;
    --seed) seed=${2:?--seed needs a value}; shift ;;
    *) sed -n '7,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
# 53 bits at most, so that the seed is an exact JSON number everywhere
[ -n "$seed" ] || seed=$(( ((RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM) ^ ($$ << 20) ))

if [ $quick = 1 ]; then
  N=200000 K=100 T=4 S=16M SHAPE=() WK=100
else
  N=4000000 K=100 T=8 S=128M SHAPE=(--shape W1) WK=100
fi

# --json: the text goes to stderr, the JSON lines to the real stdout
if [ $json = 1 ]; then exec 3>&1 1>&2; fi

mkdir -p "$OUT/peers" "$OUT/logs" "$OUT/events"
FRAG=$OUT/frag.jsonl WORK=$OUT/worker.jsonl VERD=$OUT/verdict.jsonl
rm -f "$FRAG" "$WORK" "$VERD" "$OUT/worker-rss.png" "$OUT/worker-rss.dat"
FAILED=0
T0=$(date +%s.%N)

json_err() { # system message >> file
  local m=${2//\\/\\\\}; m=${m//\"/\\\"}; m=$(printf '%s' "$m" | tr '\n\t' '  ')
  printf '{"system":"%s","error":"%s"}\n' "$1" "$m" >>"$3"
}
elapsed() { echo "$(date +%s.%N) $1" | awk '{printf "%.1f", $1 - $2}'; }

for b in demo_frag demo_worker demo_report; do
  if [ ! -x "$BIN/$b" ]; then
    echo "demo: $BIN/$b is missing; build first: ./run.sh demo (or ninja release)"
    exit 1
  fi
done

echo "poolheap demo: a heap that fragments, and what each system gives back to the OS"
echo "seed $seed (replay: ./run.sh demo$([ $quick = 1 ] && echo ' --quick') --seed $seed)$([ $quick = 1 ] && echo '; QUICK mode: small shapes')"
echo

# ---- 1-3. poolheap on the frag shape ---------------------------------------
if ! "$BIN/demo_frag" --n $N --keep $K --seed "$seed" --json "$FRAG"; then
  echo "demo: demo_frag FAILED (exit $?)"
  grep -q '"system":"poolheap"' "$FRAG" 2>/dev/null || json_err poolheap "demo_frag failed" "$FRAG"
  FAILED=1
fi

# ---- build the peers (bench/peers sources, our own gcc commands) -----------
declare -A WHY
pkg_lib() { # package file-regex
  dpkg -L "$1" 2>/dev/null | grep -E "$2" | head -1
}
build_peer() { # name source extra-flags libs
  local log=$OUT/logs/build-$1.log
  if [ ! -f "$PEERSRC/$2" ]; then WHY[$1]="$PEERSRC/$2 not found"; return; fi
  local rc=0
  # shellcheck disable=SC2086 # $3 and $4 are lists of flags
  $CC -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra $3 -I"$PEERSRC" -o "$OUT/peers/$1" \
    "$PEERSRC/$2" $4 >"$log" 2>&1 || rc=$?
  if [ $rc = 0 ]; then
    WHY[$1]=""
  else
    WHY[$1]="build failed ($CC exit $rc, log $log): $(head -c 300 "$log" | tr '\n' ' ')"
  fi
}
build_peer frag_c frag_c.c "" "-lpthread"
build_peer worker_c worker_c.c "" ""
if [ -f /usr/include/gc/gc.h ] || [ -f /usr/include/gc.h ]; then
  build_peer frag_boehm frag_c.c -DBOEHM "-lgc -lpthread"
  build_peer worker_boehm worker_c.c -DBOEHM "-lgc"
else
  WHY[frag_boehm]="Boehm GC headers missing (Debian package libgc-dev)"
  WHY[worker_boehm]=${WHY[frag_boehm]}
fi
# OCaml 5.3.0, stock and on poolheap (ocaml/build.sh; cached in $CACHE): the
# full demo builds what is missing (once, 10-20 minutes each on 2 cores);
# --quick only takes what is built already (./run.sh test's ocaml/ci.sh builds
# poolheap's) and otherwise says so in one line.  Stock is ocaml/build.sh's
# prefix, or the one bench/peers/build_ocaml53.sh built.
declare -A OPREFIX
ocaml_prefix() { # stock|poolheap: OPREFIX[$1], or WHY[ocaml-$1] / NOSHOW[$1]
  local side=$1 arg="" p rc=0 log=$OUT/logs/build-ocaml-$1.log
  [ "$side" = stock ] && arg=stock
  if p=$("$REPO/ocaml/build.sh" $arg --cached 2>/dev/null | tail -1) && [ -x "$p/bin/ocamlopt" ]; then
    OPREFIX[$side]=$p; return
  fi
  if [ "$side" = stock ] && [ -x "$CACHE/ocaml-5.3.0/bin/ocamlopt" ] \
     && [ "$("$CACHE/ocaml-5.3.0/bin/ocamlopt" -version 2>/dev/null)" = 5.3.0 ]; then
    OPREFIX[$side]=$CACHE/ocaml-5.3.0; return
  fi
  if [ $quick = 1 ]; then
    NOSHOW[$side]="not built in $CACHE (./run.sh demo builds it: ocaml/build.sh${arg:+ $arg})"
    return
  fi
  echo "  building OCaml 5.3.0 ($side) into $CACHE once: 10-20 minutes on 2 cores (log $log)"
  p=$("$REPO/ocaml/build.sh" $arg 2>"$log" | tail -1) || rc=$?
  if [ $rc = 0 ] && [ -x "$p/bin/ocamlopt" ]; then
    OPREFIX[$side]=$p
  else
    WHY[ocaml-$side]="ocaml/build.sh${arg:+ $arg} failed (exit $rc, log $log): $(tail -c 300 "$log" | tr '\n' ' ')"
  fi
}
declare -A NOSHOW
ocaml_prefix stock
ocaml_prefix poolheap
# ocaml_peer KEY SIDE SOURCES...: $OUT/peers/KEY compiled with that side's
# ocamlopt (again when a source is newer or the prefix changed), or WHY[KEY]
ocaml_peer() {
  local key=$1 side=$2 f stale=0
  shift 2
  local bin=$OUT/peers/$key dir=$OUT/ocaml/$key prefix=${OPREFIX[$side]:-}
  local log=$OUT/logs/build-$key.log
  if [ -z "$prefix" ]; then WHY[$key]=${WHY[ocaml-$side]:-"no OCaml 5.3 ($side)"}; return; fi
  WHY[$key]=""
  [ -x "$bin" ] && [ "$(cat "$bin.prefix" 2>/dev/null)" = "$prefix" ] || stale=1
  for f in "$@"; do [ "$PEERSRC/$f" -nt "$bin" ] && stale=1; done
  [ $stale = 0 ] && return
  rm -rf "$dir" "$bin.prefix"; mkdir -p "$dir"
  for f in "$@"; do cp "$PEERSRC/$f" "$dir/"; done
  if (cd "$dir" && "$prefix/bin/ocamlopt" -I +runtime_events -I +unix unix.cmxa \
        runtime_events.cmxa -o "$bin" "$@") >"$log" 2>&1; then
    echo "$prefix" >"$bin.prefix"
  else
    WHY[$key]="build failed (log $log): $(head -c 300 "$log" | tr '\n' ' ')"
  fi
}

JEMALLOC=$(pkg_lib libjemalloc2 '/libjemalloc\.so\.2$')
MIMALLOC=$(pkg_lib libmimalloc2.0 '/libmimalloc\.so\.[0-9.]+$')

run_peer() { # system binary-key out-file env... -- args...
  local sys=$1 key=$2 outf=$3; shift 3
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local bin=$OUT/peers/$key
  case $key in /*) bin=$key ;; esac
  if [ -n "${WHY[$key]:-}" ]; then
    printf '  %-22s NOT RUN: %s\n' "$sys" "${WHY[$key]}"
    json_err "$sys" "${WHY[$key]}" "$outf"; FAILED=1; return
  fi
  local t0 tmp rc=0
  tmp=$OUT/logs/run-$sys-$(basename "$outf" .jsonl).out
  t0=$(date +%s.%N)
  printf '  %-22s ' "$sys"
  env "${envs[@]}" "$bin" --system "$sys" "$@" >"$tmp" 2>"$OUT/logs/run-$sys.err" || rc=$?
  if grep -q '^{' "$tmp"; then
    grep '^{' "$tmp" >>"$outf"
    if grep -q '"error"\|"ok":false' "$tmp" || [ $rc != 0 ]; then
      echo "FAILED (exit $rc; log $OUT/logs/run-$sys.err)"; FAILED=1
    else
      echo "done in $(elapsed "$t0") s"
    fi
  else
    echo "NOT RUN: exit $rc, no output"
    json_err "$sys" "exit $rc, no output: $(tail -c 300 "$OUT/logs/run-$sys.err")" "$outf"
    FAILED=1
  fi
}
preloaded() { # system lib-path out-file binary-key package -- args
  local sys=$1 lib=$2 outf=$3 key=$4 pkg=$5; shift 5
  if [ -n "$lib" ] && [ -f "$lib" ]; then
    run_peer "$sys" "$key" "$outf" LD_PRELOAD="$lib" "$@"
  else
    printf '  %-22s NOT RUN: lib%s.so not found (Debian package %s)\n' "$sys" "$sys" "$pkg"
    json_err "$sys" "lib$sys.so not found (Debian package $pkg)" "$outf"; FAILED=1
  fi
}
# ocaml_rows PROGRAM SOURCE OUT-FILE ENV... -- ARGS...: fragcore.ml + SOURCE
# run as "ocaml-5.3" (stock) and "ocaml-5.3-poolheap", or for a runtime that
# --quick found unbuilt one "not shown" line
ocaml_rows() {
  local prog=$1 src=$2 outf=$3 side sys
  shift 3
  for side in stock poolheap; do
    sys=ocaml-5.3; [ $side = poolheap ] && sys=ocaml-5.3-poolheap
    if [ -n "${NOSHOW[$side]:-}" ]; then
      printf '  %-22s not shown: %s\n' "$sys" "${NOSHOW[$side]}"; continue
    fi
    ocaml_peer "${prog}_ocaml53_$side" $side fragcore.ml "$src"
    run_peer "$sys" "${prog}_ocaml53_$side" "$outf" "$@"
  done
}

# ---- 4. the peers on the same frag shape -----------------------------------
echo
echo "== 4. The same heap under other systems (same seed, so the same graph: the checksums say so)"
echo "  (bench/peers programs, compiled into $OUT/peers; jemalloc and mimalloc by LD_PRELOAD)"
FRAG_ARGS=("${SHAPE[@]}" --n "$N" --keep "$K" --domains 1 --seed "$seed")
[ ${#SHAPE[@]} -gt 0 ] && FRAG_ARGS=("${SHAPE[@]}" --seed "$seed")
run_peer glibc frag_c "$FRAG" -- "${FRAG_ARGS[@]}"
preloaded jemalloc "$JEMALLOC" "$FRAG" frag_c libjemalloc2 -- "${FRAG_ARGS[@]}"
preloaded mimalloc "$MIMALLOC" "$FRAG" frag_c libmimalloc2.0 -- "${FRAG_ARGS[@]}"
run_peer boehm frag_boehm "$FRAG" -- "${FRAG_ARGS[@]}"
# frag.ml on OCaml 5.3, stock and on poolheap: built above in the full demo,
# only if cached in --quick
ocaml_rows frag frag.ml "$FRAG" OCAML_RUNTIME_EVENTS_DIR="$OUT/events" -- "${FRAG_ARGS[@]}"
if [ -x "$REPO/build/peers/frag_ocaml4" ] && command -v ocamlopt >/dev/null; then
  run_peer "ocaml-$(ocamlopt -version)" "$REPO/build/peers/frag_ocaml4" "$FRAG" \
    OCAMLRUNPARAM=O=1000000 -- "${FRAG_ARGS[@]}"
fi

"$BIN/demo_report" --frag "$FRAG" --section frag || FAILED=1

# ---- 5. the worker shape ----------------------------------------------------
echo
echo "== 5. worker(T = $T tasks, S = ${S%M} MiB per task, K = $WK): RSS sampled after every task"
WARGS=(--tasks "$T" --bytes "$S" --keep "$WK" --seed "$seed")
for mode in compact collect; do
  sys=poolheap; [ $mode = collect ] && sys=poolheap-collect-only
  t0=$(date +%s.%N)
  printf '  %-22s ' "$sys"
  if "$BIN/demo_worker" --mode $mode "${WARGS[@]}" --json "$WORK" 2>"$OUT/logs/run-$sys.err"; then
    echo "done in $(elapsed "$t0") s"
  else
    echo "FAILED (log $OUT/logs/run-$sys.err)"; FAILED=1
    grep -q "\"system\":\"$sys\"" "$WORK" || json_err "$sys" "demo_worker failed" "$WORK"
  fi
done
run_peer glibc worker_c "$WORK" -- "${WARGS[@]}"
preloaded jemalloc "$JEMALLOC" "$WORK" worker_c libjemalloc2 -- "${WARGS[@]}"
preloaded mimalloc "$MIMALLOC" "$WORK" worker_c libmimalloc2.0 -- "${WARGS[@]}"
run_peer boehm worker_boehm "$WORK" -- "${WARGS[@]}"
# bench/peers/worker.ml: the same worker in OCaml, Gc.compact after each task
ocaml_rows worker worker.ml "$WORK" -- "${WARGS[@]}"

"$BIN/demo_report" --worker "$WORK" --section worker --plot "$OUT" \
  --title "worker(T = $T, S = ${S%M} MiB, K = $WK)" || FAILED=1

PNG=$OUT/worker-rss.png
if command -v gnuplot >/dev/null; then
  term="pngcairo size 1000,620 font 'sans,11'"
  gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || term="png size 1000,620"
  if gnuplot -e "set terminal $term" "$OUT/worker-rss.gp" 2>"$OUT/logs/gnuplot.log" && [ -s "$PNG" ]; then
    echo "  plot: $PNG"
  else
    echo "  plot: gnuplot FAILED: $(head -c 300 "$OUT/logs/gnuplot.log")"; FAILED=1
  fi
else
  echo "  plot: NOT DRAWN: gnuplot not installed (Debian package gnuplot-nox); data in $OUT/worker-rss.dat"
  FAILED=1
fi

"$BIN/demo_report" --frag "$FRAG" --worker "$WORK" --section verdict --json "$VERD" || FAILED=1
echo
echo "demo finished in $(elapsed "$T0") s$([ $FAILED = 1 ] && echo '; SOMETHING FAILED (see above)')"

if [ $json = 1 ]; then cat "$FRAG" "$WORK" "$VERD" >&3; fi
exit $FAILED
