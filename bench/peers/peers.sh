#!/usr/bin/env bash
# Peers of poolheap's benchmark: the same heap shapes (shared context workloads.md) under
# glibc malloc, jemalloc, mimalloc (LD_PRELOAD), Boehm GC, OCaml 4.13 and OCaml 5.3.
#
#   peers.sh build              build every peer program (not the OCaml 5.3 toolchain)
#   peers.sh run SHAPE [ARGS]   one JSON line per peer for SHAPE (W1|W2|W50|Wskew|Wbig, or
#                               "custom" with ARGS such as --n 200000 --domains 2 --keep 100)
#   peers.sh quick              CI smoke test: the peers that need no long build on small
#                               shapes; exits non-zero on a build failure, an error or a
#                               checksum mismatch
#   peers.sh worker T S K       worker(T, S, K) for the malloc peers and Boehm (S: bytes, k/M/G)
#   peers.sh tput [BLOCKS]      allocation throughput, 1 and 2 threads
#
# Every peer that cannot be built or run is reported as {"system":...,"error":...} on
# stdout, never skipped. Progress and logs go to stderr and $PEERS_OUT/logs.
# Env: PEERS_OUT (default <repo>/build/peers), CC (default gcc), PEERS_SEED (default
# random, printed), PEERS_OCAML53=0 to leave OCaml 5.3 out of `run` instead of building it
# (about 10 minutes, once, into ${POOLHEAP_CACHE:-$HOME/.cache/poolheap}).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${PEERS_OUT:-$REPO/build/peers}
CC=${CC:-gcc}
CFLAGS="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2"
CACHE=${POOLHEAP_CACHE:-$HOME/.cache/poolheap}
OCAML53=$CACHE/ocaml-5.3.0/bin/ocamlopt
# or stock 5.3.0 as ocaml/build.sh builds it (build_ocaml53.sh uses it then)
[ -x "$OCAML53" ] || [ ! -x "$CACHE/ocaml-5.3.0-stock/bin/ocamlopt" ] || OCAML53=$CACHE/ocaml-5.3.0-stock/bin/ocamlopt
LOGS=$OUT/logs
mkdir -p "$OUT" "$LOGS" "$OUT/events"

say() { echo "[peers] $*" >&2; }
json_err() { # system message
  local m=${2//\\/\\\\}; m=${m//\"/\\\"}; m=$(printf '%s' "$m" | tr '\n\t' '  ')
  printf '{"system":"%s","error":"%s"}\n' "$1" "$m"
}

# ---- Debian packages, installed only when missing -----------------------------------
APT_UPDATED=0
ensure_pkg() { # pkg...: returns non-zero if one cannot be installed
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    say "missing packages ${missing[*]} and not root"; return 1
  fi
  local SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo -n"
  say "installing ${missing[*]}"
  if [ $APT_UPDATED = 0 ]; then $SUDO apt-get update -qq >"$LOGS/apt-update.log" 2>&1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$LOGS/apt-install.log" 2>&1 || { say "apt-get install ${missing[*]} failed"; return 1; }
}

lib_path() { # package file-regex
  dpkg -L "$1" 2>/dev/null | grep -E "$2" | head -1
}

# ---- building --------------------------------------------------------------------------
# status of each build: "" = ok, otherwise the reason
declare -A WHY
build_c() { # name source extra-flags libs
  local name=$1 src=$2 extra=$3 libs=$4
  if $CC $CFLAGS $extra -I"$HERE" -o "$OUT/$name" "$HERE/$src" $libs >"$LOGS/$name.log" 2>&1; then
    WHY[$name]=""
  else
    WHY[$name]="build failed: $(head -c 400 "$LOGS/$name.log")"
    say "build of $name failed (log $LOGS/$name.log)"
  fi
}

build_all() {
  local c=""
  ensure_pkg gcc libc6-dev || c="gcc/libc6-dev missing"
  for n in frag_c worker_c alloc_tput; do
    if [ -n "$c" ]; then WHY[$n]=$c; else build_c $n $n.c "" "-lpthread"; fi
  done
  local g=$c
  [ -z "$g" ] && { ensure_pkg libgc-dev || g="libgc-dev not installable"; }
  for n in frag_c worker_c alloc_tput; do
    local b=${n%_c}_boehm; [ $n = alloc_tput ] && b=alloc_tput_boehm
    if [ -n "$g" ]; then WHY[$b]=$g; else build_c $b $n.c "-DBOEHM" "-lgc -lpthread"; fi
  done
  ensure_pkg libjemalloc2 || true
  ensure_pkg libmimalloc2.0 || true
  JEMALLOC=$(lib_path libjemalloc2 '/libjemalloc\.so\.2$')
  MIMALLOC=$(lib_path libmimalloc2.0 '/libmimalloc\.so\.2$')
  [ -z "$MIMALLOC" ] && MIMALLOC=$(lib_path libmimalloc2.0 '/libmimalloc\.so\.[0-9.]+$')
  # OCaml from Debian (4.13 on Debian 12): the sliding compactor
  WHY[frag_ocaml4]=""
  if ensure_pkg ocaml-nox && command -v ocamlopt >/dev/null; then
    OCAML4_VER=$(ocamlopt -version)
    local d=$OUT/ocaml4; mkdir -p "$d"; cp "$HERE/fragcore.ml" "$HERE/frag4.ml" "$d/"
    local inc=""; case $OCAML4_VER in 4.*) ;; *) inc="-I +unix" ;; esac
    (cd "$d" && ocamlopt $inc unix.cmxa fragcore.ml frag4.ml -o "$OUT/frag_ocaml4") \
      >"$LOGS/frag_ocaml4.log" 2>&1 || WHY[frag_ocaml4]="build failed: $(head -c 400 "$LOGS/frag_ocaml4.log")"
  else
    OCAML4_VER=4.13; WHY[frag_ocaml4]="ocaml-nox not installable"
  fi
}

build_ocaml53() { # builds the toolchain when allowed, then frag_ocaml53
  WHY[frag_ocaml53]=""
  if [ ! -x "$OCAML53" ] && [ "${PEERS_OCAML53:-1}" = 0 ]; then
    WHY[frag_ocaml53]="OCaml 5.3 not built (PEERS_OCAML53=0); run bench/peers/build_ocaml53.sh"
    return
  fi
  if [ ! -x "$OCAML53" ]; then
    ensure_pkg npm make || { WHY[frag_ocaml53]="npm/make not installable"; return; }
    say "building OCaml 5.3.0 (about 10 minutes, once; log $LOGS/ocaml53.log)"
  fi
  PEERS_OUT=$OUT "$HERE/build_ocaml53.sh" >"$LOGS/ocaml53.log" 2>&1 \
    || WHY[frag_ocaml53]="build failed: $(tail -c 400 "$LOGS/ocaml53.log")"
}

# ---- running ---------------------------------------------------------------------------
FAILED=0
run_peer() { # system binary-key env-prefix... -- args
  local sys=$1 key=$2; shift 2
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  if [ -n "${WHY[$key]:-}" ]; then json_err "$sys" "${WHY[$key]}"; FAILED=1; return; fi
  local outf=$LOGS/run-$sys.out errf=$LOGS/run-$sys.err rc=0
  env "${envs[@]}" "$OUT/$key" --system "$sys" "$@" >"$outf" 2>"$errf" || rc=$?
  cat "$errf" >&2
  if grep -q '^{' "$outf"; then
    grep '^{' "$outf"
    grep -q '"error"\|"ok":false' "$outf" && FAILED=1
    [ $rc != 0 ] && FAILED=1
  else
    json_err "$sys" "exit $rc, no output: $(tail -c 300 "$errf")"; FAILED=1
  fi
}

preload_ok() { # var-name system
  [ -n "$1" ] && [ -f "$1" ]
}

run_frag_peers() { # args... ; with_ocaml53 in $WITH53
  local seed=${PEERS_SEED:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}
  say "seed $seed"
  run_peer glibc frag_c -- --seed "$seed" "$@"
  if preload_ok "$JEMALLOC"; then run_peer jemalloc frag_c LD_PRELOAD="$JEMALLOC" -- --seed "$seed" "$@"
  else json_err jemalloc "libjemalloc.so.2 not found (package libjemalloc2)"; FAILED=1; fi
  if preload_ok "$MIMALLOC"; then run_peer mimalloc frag_c LD_PRELOAD="$MIMALLOC" -- --seed "$seed" "$@"
  else json_err mimalloc "libmimalloc.so.2 not found (package libmimalloc2.0)"; FAILED=1; fi
  run_peer boehm frag_boehm -- --seed "$seed" "$@"
  run_peer "ocaml-$OCAML4_VER" frag_ocaml4 OCAMLRUNPARAM=O=1000000 -- --seed "$seed" "$@"
  if [ "$WITH53" = 1 ]; then
    run_peer ocaml-5.3 frag_ocaml53 OCAML_RUNTIME_EVENTS_DIR="$OUT/events" -- --seed "$seed" "$@"
  fi
}

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 1; }

cmd=${1:-}; [ -n "$cmd" ] && shift
case $cmd in
  build)
    build_all; build_ocaml53
    for k in "${!WHY[@]}"; do [ -n "${WHY[$k]}" ] && { json_err "$k" "${WHY[$k]}"; FAILED=1; }; done
    exit $FAILED ;;
  run)
    [ $# -ge 1 ] || usage
    shape=$1; shift
    build_all; build_ocaml53; WITH53=1
    if [ "$shape" = custom ]; then run_frag_peers "$@"; else run_frag_peers --shape "$shape" "$@"; fi
    exit $FAILED ;;
  quick)
    build_all; WITH53=0
    run_frag_peers --n 200000 --domains 1 --keep 100
    run_frag_peers --n 100000 --domains 2 --keep 500
    # worker and throughput: tiny runs so that they cannot rot either
    for s in glibc boehm; do
      k=worker_c; [ $s = boehm ] && k=worker_boehm
      run_peer $s $k -- --tasks 2 --bytes 8M --keep 100
      k=alloc_tput; [ $s = boehm ] && k=alloc_tput_boehm
      run_peer $s $k -- --blocks 100000
    done
    if [ $FAILED != 0 ]; then say "quick: FAILED"; echo "0 passed, 1 failed"; exit 1; fi
    echo "1 passed, 0 failed"; exit 0 ;;
  worker)
    [ $# -ge 3 ] || usage
    build_all
    args=(--tasks "$1" --bytes "$2" --keep "$3" --seed "${PEERS_SEED:-$(( (RANDOM << 15) ^ RANDOM ))}")
    run_peer glibc worker_c -- "${args[@]}"
    if preload_ok "$JEMALLOC"; then run_peer jemalloc worker_c LD_PRELOAD="$JEMALLOC" -- "${args[@]}"
    else json_err jemalloc "libjemalloc.so.2 not found"; FAILED=1; fi
    if preload_ok "$MIMALLOC"; then run_peer mimalloc worker_c LD_PRELOAD="$MIMALLOC" -- "${args[@]}"
    else json_err mimalloc "libmimalloc.so.2 not found"; FAILED=1; fi
    run_peer boehm worker_boehm -- "${args[@]}"
    exit $FAILED ;;
  tput)
    build_all
    args=(--blocks "${1:-4000000}" --threads 1,2)
    [ -n "${PEERS_SEED:-}" ] && args+=(--seed "$PEERS_SEED")
    run_peer glibc alloc_tput -- "${args[@]}"
    if preload_ok "$JEMALLOC"; then run_peer jemalloc alloc_tput LD_PRELOAD="$JEMALLOC" -- "${args[@]}"
    else json_err jemalloc "libjemalloc.so.2 not found"; FAILED=1; fi
    if preload_ok "$MIMALLOC"; then run_peer mimalloc alloc_tput LD_PRELOAD="$MIMALLOC" -- "${args[@]}"
    else json_err mimalloc "libmimalloc.so.2 not found"; FAILED=1; fi
    run_peer boehm alloc_tput_boehm -- "${args[@]}"
    exit $FAILED ;;
  *) usage ;;
esac
