#!/usr/bin/env bash
# poolheap's one entry point.  Each command installs what it needs (Debian).
#   ./run.sh demo            the fragmentation demo (the main job)
#   ./run.sh test            build every variant, run every test (and OCaml's testsuite on poolheap)
#   ./run.sh bench [--big]   the compaction benchmark with its peers, then the trace replay,
#                            medium-block throughput (bench/medtput.sh), the weak tables
#                            and pinning (bench/weak.sh) and the OCaml rows
#   ./run.sh soak MINUTES    long stress: TSan stress, mapping soak, fuzzing
#   ./run.sh fuzz MINUTES    the differential fuzzer, open-ended
#   ./run.sh install PREFIX  headers, static and shared library, pkg-config
#   ./run.sh ocaml           OCaml 5.3 on poolheap (built, bootstrapped, installed; prints the prefix)
#   ./run.sh ocaml-test [DIRS...]  OCaml's testsuite on stock 5.3 and on poolheap, side by side
#   ./run.sh ocaml-ci        the part of it ./run.sh test runs, against stock's committed results
set -euo pipefail
cd "$(dirname "$0")"

need_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "run.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build_pkgs=(ninja-build gcc clang clang-format libclang-rt-14-dev libcmocka-dev)
# the quick benchmark and demo that ./run.sh test also runs (xz-utils: the
# trace replay's compressed traces)
peer_pkgs=(libjemalloc-dev libjemalloc2 libmimalloc-dev libmimalloc2.0 libgc-dev ocaml-nox gnuplot-nox
  xz-utils)

build() {
  need_pkgs "${build_pkgs[@]}"
  tools/genninja.sh > build.ninja.new
  if ! cmp -s build.ninja build.ninja.new; then
    echo "run.sh: build.ninja was stale; regenerated (commit it)" >&2
    mv build.ninja.new build.ninja
  else
    rm -f build.ninja.new
  fi
  ninja -k 0 "$@"
}

cmd=${1:-help}
shift || true
case $cmd in
  test)
    need_pkgs "${peer_pkgs[@]}"
    # issue 10's judge (ocaml/ci.sh): the OCaml source from npm, built with make and gcc
    if [ "${POOLHEAP_OCAML_CI:-1}" != 0 ]; then
      command -v npm >/dev/null || need_pkgs npm
      need_pkgs make gcc
    fi
    build all
    exec tests/run_tests.sh "$@"
    ;;
  demo)
    need_pkgs gnuplot-nox libjemalloc2 libmimalloc2.0 libgc-dev
    # the full demo builds OCaml 5.3 (stock and poolheap's) when not cached
    case " $* " in *" --quick "*) ;; *) command -v npm >/dev/null || need_pkgs npm
      need_pkgs make gcc ;; esac
    build release
    exec demos/demo.sh "$@"
    ;;
  bench)
    need_pkgs libjemalloc-dev libmimalloc-dev libgc-dev ocaml-nox xz-utils
    build release
    rc=0
    bench/bench.sh "$@" || rc=$?
    # the trace replay (bench/trace/bench.sh, about 30 s), issue 11's medium-block
    # throughput beside mimalloc (bench/medtput.sh, about a minute) and issue 12's
    # weak tables and pinning (bench/weak.sh, beside OCaml 5.3), not in --quick
    case " $* " in *" --quick "*) ;; *) bench/trace/bench.sh || rc=$?
      bench/medtput.sh || rc=$?
      bench/weak.sh || rc=$? ;; esac
    exit $rc
    ;;
  soak)
    build all
    exec tests/soak.sh "${1:-30}"
    ;;
  fuzz)
    build all fuzz
    exec tests/fuzz.sh "${1:-10}"
    ;;
  ocaml)
    command -v npm >/dev/null || need_pkgs npm
    need_pkgs make gcc
    [ "${1:-}" = --tsan ] && need_pkgs libunwind-dev
    exec ocaml/build.sh "$@"
    ;;
  ocaml-test)
    command -v npm >/dev/null || need_pkgs npm
    need_pkgs make gcc
    [ "${1:-}" = --tsan ] && need_pkgs libunwind-dev
    exec ocaml/test.sh "$@"
    ;;
  ocaml-ci)
    command -v npm >/dev/null || need_pkgs npm
    need_pkgs make gcc
    exec ocaml/ci.sh "$@"
    ;;
  install)
    prefix=${1:?usage: ./run.sh install PREFIX}
    build build/libpoolheap.a build/libpoolheap.so
    install -d "$prefix/include" "$prefix/lib/pkgconfig"
    install -m 644 include/poolheap.h include/poolheap_pools.h "$prefix/include/"
    install -m 644 build/libpoolheap.a "$prefix/lib/"
    install -m 755 build/libpoolheap.so "$prefix/lib/"
    sed -e "s|@PREFIX@|$prefix|" poolheap.pc.in > "$prefix/lib/pkgconfig/poolheap.pc"
    echo "installed into $prefix"
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
