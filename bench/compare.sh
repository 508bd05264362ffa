#!/usr/bin/env bash
# Alternating rounds of bench/compact for several builds of the library, in one
# run (timings on shared machines are noisy: compare side by side, take medians).
#   bench/compare.sh ROUNDS SHAPE NAME=PATH/TO/build/bench/compact ...
# Prints "SHAPE NAME {json}" per run (seed 7, one run each); e.g. against an
# older commit built in a git worktree:
#   bench/compare.sh 3 W1 old=/tmp/old/build/bench/compact new=build/bench/compact
set -euo pipefail
rounds=$1 shape=$2
shift 2
for _ in $(seq "$rounds"); do
  for nb in "$@"; do
    name=${nb%%=*} bin=${nb#*=}
    line=$("$bin" --shape "$shape" --runs 1 --seed 7 2>/dev/null | grep '^{' | tail -1)
    echo "$shape $name $line"
  done
done
