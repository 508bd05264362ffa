#!/usr/bin/env bash
# Build OCaml 5.3.0 (the npm registry's `ocaml` package 5.3.0 is the OCaml source tree)
# once into a cache folder outside the repository, then compile frag.ml with it.
#
#   bench/peers/build_ocaml53.sh            toolchain (if missing) + frag53 binary
#   bench/peers/build_ocaml53.sh toolchain  toolchain only
#
# Env: POOLHEAP_CACHE (default $HOME/.cache/poolheap), PEERS_OUT (default <repo>/build/peers).
# Idempotent: the toolchain is skipped when $PREFIX/bin/ocamlopt reports 5.3.0.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${POOLHEAP_CACHE:-$HOME/.cache/poolheap}
PREFIX=$CACHE/ocaml-5.3.0
# stock 5.3.0 as ocaml/build.sh stock builds it (the same source and runtime,
# with ocamltest) serves as well, so that the two builds are not both paid
STOCK=$CACHE/ocaml-5.3.0-stock
OUT=${PEERS_OUT:-$REPO/build/peers}
MODE=${1:-all}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

log() { echo "[build_ocaml53] $*" >&2; }

have_toolchain() {
  [ -x "$PREFIX/bin/ocamlopt" ] && [ "$("$PREFIX/bin/ocamlopt" -version 2>/dev/null)" = "5.3.0" ] \
    && [ -f "$PREFIX/lib/ocaml/runtime_events/runtime_events.cmxa" ]
}

if ! have_toolchain && [ -x "$STOCK/bin/ocamlopt" ] \
   && [ "$("$STOCK/bin/ocamlopt" -version 2>/dev/null)" = "5.3.0" ]; then
  PREFIX=$STOCK
fi
if have_toolchain; then
  log "OCaml 5.3.0 already built in $PREFIX"
else
  command -v make >/dev/null && command -v gcc >/dev/null || { log "need gcc and make"; exit 2; }
  # the npm source, fetched once into the cache (shared with ocaml/build.sh)
  # shellcheck source=../../ocaml/common.sh
  . "$REPO/ocaml/common.sh"
  fetch_ocaml_src || exit 2
  SRC=$OCAML_SRC
  log "configuring (prefix $PREFIX)"
  cd "$SRC"
  ./configure --prefix="$PREFIX" --disable-ocamldoc --disable-ocamltest >configure.log 2>&1 \
    || ./configure --prefix="$PREFIX" >configure.log 2>&1 \
    || { tail -30 configure.log >&2; exit 2; }
  log "make -j$JOBS (about 10 minutes on 2 cores)"
  make -j"$JOBS" >make.log 2>&1 || { tail -40 make.log >&2; exit 2; }
  log "make install"
  make install >install.log 2>&1 || { tail -40 install.log >&2; exit 2; }
  have_toolchain || { log "install finished but $PREFIX/bin/ocamlopt is not 5.3.0"; exit 2; }
  log "OCaml 5.3.0 installed in $PREFIX"
fi

[ "$MODE" = toolchain ] && exit 0

mkdir -p "$OUT/ocaml53"
cp "$HERE/fragcore.ml" "$HERE/frag.ml" "$OUT/ocaml53/"
cd "$OUT/ocaml53"
"$PREFIX/bin/ocamlopt" -I +runtime_events -I +unix unix.cmxa runtime_events.cmxa \
  -o "$OUT/frag_ocaml53" fragcore.ml frag.ml
log "built $OUT/frag_ocaml53"
