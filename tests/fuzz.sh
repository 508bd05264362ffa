#!/usr/bin/env bash
# Runs the differential fuzzer (build/fuzz/fuzz_model, built by `ninja fuzz`)
# open-ended for MINUTES on the checked-in corpus.
# Usage: tests/fuzz.sh [MINUTES]   (default 10; env JOBS=N runs N workers)
# New interesting inputs go to build/fuzz/corpus (tests/fuzz_corpus is only
# read).  A crash or model mismatch is copied into tests/fuzz_corpus/ as
# crash-<sha1> so that tests/test_fuzz_replay keeps replaying it in CI; the
# script then fails.  Ends with a line "fuzz: N executions, M mismatches".
set -uo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
jobs=${JOBS:-1}
bin=build/fuzz/fuzz_model
[ -x "$bin" ] || { echo "fuzz.sh: $bin missing (ninja fuzz)" >&2; exit 2; }
work=build/fuzz/corpus art=build/fuzz/artifacts logs=build/fuzz/logs
mkdir -p "$work" "$art" "$logs"
rm -f "$logs"/*.log
export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
secs=$((minutes * 60))
pids=()
for j in $(seq 1 "$jobs"); do
  "$bin" -max_total_time="$secs" -max_len=2048 -timeout=60 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$art/" \
    "$work" tests/fuzz_corpus >"$logs/$j.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
execs=0
for l in "$logs"/*.log; do
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$l" | tail -1)
  execs=$((execs + ${n:-0}))
done
found=0
for f in "$art"/crash-* "$art"/timeout-* "$art"/leak-* "$art"/oom-*; do
  [ -e "$f" ] || continue
  found=$((found + 1))
  cp "$f" "tests/fuzz_corpus/$(basename "$f")"
  echo "fuzz.sh: finding $(basename "$f") copied to tests/fuzz_corpus/" >&2
done
grep -h -A3 "MISMATCH\|ERROR: " "$logs"/*.log | head -40
echo "fuzz: $execs executions, $found mismatches or crashes (logs in $logs)"
[ "$status" -eq 0 ] && [ "$found" -eq 0 ]
