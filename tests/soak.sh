#!/usr/bin/env bash
# Long reliability runs (./run.sh soak MINUTES builds everything, then this).
# Usage: tests/soak.sh MINUTES
# MINUTES are shared between:
#   1. test_mapsoak at full size (release build): >= 300 fragment-then-compact
#      cycles with a heap peak > 1 GB (POOLHEAP_SOAK_CYCLES/PEAK_MB);
#   2. the TSan stress test (build/tsan/tests/test_stress) for its share, via
#      POOLHEAP_STRESS_SECONDS, if it exists;
#   3. the fuzzer (tests/fuzz.sh MINUTES) for its share, if present.
# Prints one summary line per part and exits non-zero if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -gt 0 ] || { echo "usage: $0 MINUTES" >&2; exit 2; }
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 ${ASAN_OPTIONS:-}"
parts=1
[ -x build/tsan/tests/test_stress ] && parts=$((parts + 1))
[ -x tests/fuzz.sh ] && parts=$((parts + 1))
share=$(( minutes * 60 / parts ))
log=$(mktemp -d /tmp/poolheap-soak.XXXXXX)
summary=()
status=0

run_part() { # name seconds-limit command...
  local name=$1 limit=$2; shift 2
  local start=$(date +%s) rc
  echo "=== soak: $name (up to ${limit}s)"
  timeout --kill-after=30 "$limit" "$@" > "$log/$name.log" 2>&1
  rc=$?
  tail -n 5 "$log/$name.log"
  local took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    summary+=("ok     $name (${took}s)")
  else
    summary+=("FAILED $name (exit $rc, ${took}s; log $log/$name.log)")
    status=1
  fi
}

# 1. mapping soak: at least 300 cycles and a 1100 MB peak; more cycles if the
# share allows (about 3 s per cycle at 1.1 GB on a 2-core machine, so the
# 300-cycle minimum takes ~15 minutes whatever MINUTES says).
cycles=$(( share / 3 ))
[ "$cycles" -lt 300 ] && cycles=300
POOLHEAP_SOAK_CYCLES=$cycles POOLHEAP_SOAK_PEAK_MB=1100 \
  run_part mapsoak $(( share > 1800 ? share * 2 : 3600 )) build/tests/test_mapsoak
grep -h "^mapsoak:" "$log/mapsoak.log" | sed 's/^/  /'

# 2. TSan stress (the other half of issue 4), if built.
if [ -x build/tsan/tests/test_stress ]; then
  POOLHEAP_STRESS_SECONDS=$share run_part stress $(( share + 300 )) build/tsan/tests/test_stress
fi

# 3. the differential fuzzer, if present.
if [ -x tests/fuzz.sh ]; then
  fm=$(( share / 60 )); [ "$fm" -lt 1 ] && fm=1
  run_part fuzz $(( share + 600 )) tests/fuzz.sh "$fm"
fi

echo "=== soak summary ($minutes minutes requested, logs in $log)"
printf '  %s\n' "${summary[@]}"
exit $status
