#!/usr/bin/env bash
# ./run.sh ocaml-test [DIRS...]: OCaml's own testsuite on stock 5.3.0 and on
# the poolheap runtime (both built by ocaml/build.sh, with ocamltest), both
# summaries side by side and every test whose result differs.
#   DIRS: directories under testsuite/tests (default: the heap's own set
#   below); "all" runs the whole testsuite.
# Logs: $CACHE/ocaml-test/{stock,poolheap}.log
# Env: POOLHEAP_OCAML_PREFIX: test that poolheap build (its PREFIX-tree)
#      instead of building the current sources; USE_RUNTIME=d (or i): the
#      tests run with that runtime variant (OCaml's testsuite variable; d is
#      the debug runtime, with OCaml's assertions).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"

DEFAULT_DIRS=(compaction gc-roots weak-ephe-final parallel lib-domain misc)
if [ $# -eq 0 ]; then DIRS=("${DEFAULT_DIRS[@]}"); else DIRS=("$@"); fi

"$HERE/build.sh" stock >/dev/null
PH_PREFIX=${POOLHEAP_OCAML_PREFIX:-$("$HERE/build.sh" | tail -1)}
PH_TREE=$PH_PREFIX-tree
OUT=$CACHE/ocaml-test${USE_RUNTIME:+-$USE_RUNTIME}
mkdir -p "$OUT"

run_suite() { # $1 name, $2 tree
  local name=$1 tree=$2 list=$OUT/$1.list t0
  if [ "${DIRS[0]}" = all ]; then
    ls -d "$tree"/testsuite/tests/*/ | sed "s|^$tree/testsuite/||; s|/$||" > "$list.new"
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
  make -C "$tree/testsuite" one LIST="$list" > "$OUT/$name.log" 2>&1 || true
  echo $(( $(date +%s) - t0 )) > "$OUT/$name.seconds"
}

# one line per test: "DIR TEST-DESCRIPTION => RESULT"
results() {
  awk '/^Running tests from / { d = $4; gsub(/[\047.]*$/, "", d); gsub(/^\047/, "", d); next }
       / => / { line = $0; sub(/^ *\.\.\. */, "", line); print d " " line }' "$1"
}

run_suite stock "$STOCK_TREE"
run_suite poolheap "$PH_TREE"

results "$OUT/stock.log" | sort > "$OUT/stock.results"
results "$OUT/poolheap.log" | sort > "$OUT/poolheap.results"

summary() { grep -E "^ *[0-9]+ tests? (passed|skipped|failed|not started|considered)|^ *[0-9]+ unexpected errors?|^Summary" "$1" | sed 's/^ *//'; }
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
echo
echo "logs: $OUT/stock.log $OUT/poolheap.log"
