#!/usr/bin/env bash
# ./run.sh ocaml-test [DIRS...]: OCaml's own testsuite on stock 5.3.0 and on
# the poolheap runtime (both built by ocaml/build.sh, with ocamltest), both
# summaries side by side and every test whose result differs.
#   DIRS: directories under testsuite/tests (default: the heap's own set
#   below); "all" runs the whole testsuite.
# ./run.sh ocaml-test --tsan [DIRS...]: the same on both runtimes built with
#   OCaml's ThreadSanitizer mode (--enable-tsan; default DIRS: tsan
#   parallel), plus every TSan report that involves the binding or poolheap.
# Logs: $CACHE/ocaml-test/{stock,poolheap}.log (ocaml-test-all/ for "all")
# Env: POOLHEAP_OCAML_PREFIX: test that poolheap build (its PREFIX-tree)
#      instead of building the current sources; USE_RUNTIME=d (or i): the
#      tests run with that runtime variant (OCaml's testsuite variable; d is
#      the debug runtime, with OCaml's assertions); OCAML_TEST_SKIP="DIR...":
#      directories left out of "all" (e.g. memory-model, which the CI step
#      runs on both runtimes; its domains spin against each other and take
#      minutes instead of seconds on loaded cores).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"

TSAN=""
if [ "${1:-}" = --tsan ]; then TSAN=-tsan; shift; fi
DEFAULT_DIRS=(compaction gc-roots weak-ephe-final parallel lib-domain misc)
[ -n "$TSAN" ] && DEFAULT_DIRS=(tsan parallel)
if [ $# -eq 0 ]; then DIRS=("${DEFAULT_DIRS[@]}"); else DIRS=("$@"); fi

STOCK_TREE=$("$HERE/build.sh" stock ${TSAN:+--tsan} | tail -1)-tree
PH_PREFIX=${POOLHEAP_OCAML_PREFIX:-$("$HERE/build.sh" ${TSAN:+--tsan} | tail -1)}
PH_TREE=$PH_PREFIX-tree
OUT=$CACHE/ocaml-test${USE_RUNTIME:+-$USE_RUNTIME}$TSAN
[ "${DIRS[0]}" = all ] && OUT=$OUT-all
mkdir -p "$OUT"

run_suite() { # $1 name, $2 tree
  local name=$1 tree=$2 list=$OUT/$1.list t0
  if [ "${DIRS[0]}" = all ]; then
    ls -d "$tree"/testsuite/tests/*/ | sed "s|^$tree/testsuite/||; s|/$||" \
      | grep -vxF -f <(for d in ${OCAML_TEST_SKIP:-}; do echo "tests/$d"; done; echo /) > "$list.new"
  else
    for d in "${DIRS[@]}"; do echo "tests/$d"; done > "$list.new"
  fi
  # stock's results are kept for the same directories (its build never
  # changes); OCAML_TEST_STOCK=1 runs it again
  if [ "$name" = stock ] && [ "${OCAML_TEST_STOCK:-0}" != 1 ] && [ -s "$OUT/stock.log" ] \
     && cmp -s "$list" "$list.new" && grep -q "tests considered" "$OUT/stock.log"; then
    rm -f "$list.new"
    log "stock: results of $OUT/stock.log reused (same directories)"
    return 0
  fi
  mv "$list.new" "$list"
  log "testsuite on $name: $(tr '\n' ' ' < "$list")"
  t0=$(date +%s)
  # the testsuite's own log and failure stamp outside the tree, so that runs
  # of other directories in the same tree (ocaml/ci.sh) do not mix with it
  make -C "$tree/testsuite" one LIST="$list" TESTLOG="$OUT/$name.testlog" \
    failstamp="$OUT/$name.failstamp" > "$OUT/$name.log" 2>&1 || true
  echo $(( $(date +%s) - t0 )) > "$OUT/$name.seconds"
}

run_suite stock "$STOCK_TREE"
run_suite poolheap "$PH_TREE"

results "$OUT/stock.log" "$STOCK_TREE" | sort > "$OUT/stock.results"
results "$OUT/poolheap.log" "$PH_TREE" | sort > "$OUT/poolheap.results"

echo
echo "== summaries (DIRS: ${DIRS[*]})"
paste -d'|' <(echo "stock 5.3.0 ($(cat "$OUT/stock.seconds") s)"; summary "$OUT/stock.log") \
            <(echo "poolheap ($(cat "$OUT/poolheap.seconds") s)"; summary "$OUT/poolheap.log") \
  | awk -F'|' '{ printf "  %-54s %s\n", $1, $2 }'
echo
echo "== tests whose result differs (stock -> poolheap)"
join -j1 -t$'\t' -a1 -a2 -e MISSING -o 0,1.2,2.2 \
  <(sed -E 's/^(.*) => (.*)$/\1\t\2/' "$OUT/stock.results" | sort -t$'\t' -k1,1) \
  <(sed -E 's/^(.*) => (.*)$/\1\t\2/' "$OUT/poolheap.results" | sort -t$'\t' -k1,1) \
  | awk -F'\t' '$2 != $3 { n++; printf "  %s: %s -> %s\n", $1, $2, $3 } END { if (!n) print "  none" }'
if [ -n "$TSAN" ]; then
  echo
  echo "== ThreadSanitizer reports (test outputs under _ocamltest)"
  for side in stock:$STOCK_TREE poolheap:$PH_TREE; do
    name=${side%%:*} tree=${side#*:} total=0 ours=0
    while IFS= read -r f; do
      n=$(grep -c "WARNING: ThreadSanitizer" "$f" || true)
      total=$((total + n))
      if grep -qE "runtime/poolheap/|shared_heap\.c|[[:space:]](php|ph)_[a-z_]+[[:space:]]" "$f"; then
        ours=$((ours + n)); echo "  $name: report involving poolheap in ${f#$tree/testsuite/}"
      fi
    done < <(for d in "${DIRS[@]}"; do
               grep -rlE "WARNING: ThreadSanitizer" "$tree/testsuite/tests/$d/_ocamltest" 2>/dev/null || true
             done | sort -u)
    echo "  $name: $total reports in test outputs, $ours in files naming shared_heap.c or poolheap (stock: its own shared heap)"
  done
fi
echo
echo "logs: $OUT/stock.log $OUT/poolheap.log"
