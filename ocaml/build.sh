#!/usr/bin/env bash
# ./run.sh ocaml: OCaml 5.3.0 with its shared heap replaced by poolheap's pool
# layer (ocaml/shared_heap.c), bootstrapped (make world.opt: the compiler
# compiles itself on poolheap) and installed into a cached prefix, printed as
# the last line.  Builds what is missing only.
#
#   ocaml/build.sh [--tsan]        the poolheap toolchain (--tsan: OCaml's
#                                  ThreadSanitizer mode, --enable-tsan)
#   ocaml/build.sh stock [--tsan]  stock 5.3.0 built the same way (ocaml-test)
#   ... --cached                   build nothing: print the prefix if it is
#                                  built, else exit 1 (the quick demo uses it)
#
# Env: POOLHEAP_CACHE (default $HOME/.cache/poolheap), JOBS (default nproc).
# Layout in the cache:
#   ocaml-5.3.0-src                      the npm package, unpacked (shared)
#   ocaml-5.3.0-poolheap-HASH            the install prefix (bin/ocamlopt ...)
#   ocaml-5.3.0-poolheap-HASH-tree       its build tree (the testsuite runs here)
#   ocaml-5.3.0-stock, ...-stock-tree    stock, configured the same way
#   ...-tsan, ...-tsan-tree               the same with --enable-tsan
# HASH covers the binding, the library sources it adds and PATCH_VERSION
# (bump it when the way the tree is patched changes).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/common.sh"

PATCH_VERSION=1
CACHED=0
if [ "${*: -1}" = --cached ]; then CACHED=1; set -- "${@:1:$(($# - 1))}"; fi
if [ "${1:-}" = stock ]; then
  if [ $CACHED = 1 ]; then
    p=$STOCK_PREFIX${2:+-tsan}
    [ -f "$p-tree/.built" ] && [ -x "$p/bin/ocamlopt" ] || { log "stock OCaml not built in $p"; exit 1; }
    echo "$p"; exit 0
  fi
  build_stock "${2:+-tsan}"
  echo "$STOCK_PREFIX${2:+-tsan}"
  exit 0
fi
TSAN=""
[ "${1:-}" = --tsan ] && TSAN=-tsan

# poolheap's library: the pool layer's sources only (os/ heap/ compact/:
# the OS layer, units, pools and the compactor), not the managed collector
# (gc/ api/ barrier/ roots/).
LIB_DIRS=()
for d in os heap compact; do
  [ -d "$REPO/$d" ] && LIB_DIRS+=("$d")
done
LIB_FILES=$(cd "$REPO" && find include "${LIB_DIRS[@]}" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)

HASH=$( (echo "patch $PATCH_VERSION"; cd "$REPO" && cat ocaml/shared_heap.c $LIB_FILES) \
        | sha256sum | cut -c1-12)
PREFIX=$CACHE/ocaml-5.3.0-poolheap-$HASH$TSAN
TREE=$PREFIX-tree

if [ -f "$TREE/.built" ] && [ -x "$PREFIX/bin/ocamlopt" ]; then
  log "poolheap OCaml already built in $PREFIX"
  echo "$PREFIX"
  exit 0
fi
[ $CACHED = 1 ] && { log "poolheap OCaml of these sources not built in $PREFIX"; exit 1; }

fetch_ocaml_src
log "preparing $TREE"
rm -rf "$TREE"
cp -a "$OCAML_SRC" "$TREE"

# The binding in place of OCaml's shared heap; the library under runtime/poolheap.
cp "$REPO/ocaml/shared_heap.c" "$TREE/runtime/shared_heap.c"
mkdir -p "$TREE/runtime/poolheap"
(cd "$REPO" && cp -r --parents $LIB_FILES "$TREE/runtime/poolheap/")

# One wrapper per library source in runtime/ (OCaml's runtime rules build
# runtime/NAME.c into every variant: .b .bd .bi .bpic .n .nd .ni .npic).
SOURCES=""
for f in $LIB_FILES; do
  case $f in *.c) ;; *) continue ;; esac
  name=poolheap_$(echo "${f%.c}" | tr '/' '_')
  echo "#include \"poolheap/$f\"" > "$TREE/runtime/$name.c"
  SOURCES="$SOURCES $name"
done
cat > "$TREE/runtime/poolheap.mk" <<MK
# Added by poolheap's ocaml/build.sh: poolheap's library in every runtime
# variant; its own assertions off except in the debug runtime (d).
POOLHEAP_C_SOURCES =$SOURCES
POOLHEAP_MODE = -DNDEBUG
runtime/poolheap_%.bd.\$(O) runtime/poolheap_%.nd.\$(O): POOLHEAP_MODE = -DPH_DEBUG=1
runtime/poolheap_%: CPPFLAGS += -D_GNU_SOURCE -Iruntime/poolheap/include -Iruntime/poolheap \$(POOLHEAP_MODE)
\$(DEPDIR)/runtime/poolheap_%: CPPFLAGS += -D_GNU_SOURCE -Iruntime/poolheap/include -Iruntime/poolheap
MK
# The only change to OCaml's build files: two lines of the root Makefile.
sed -i -e 's|^runtime_COMMON_C_SOURCES = \\$|include runtime/poolheap.mk\nruntime_COMMON_C_SOURCES = \\\n  $(POOLHEAP_C_SOURCES) \\|' \
  "$TREE/Makefile"
grep -q '^include runtime/poolheap.mk$' "$TREE/Makefile" || { log "patching Makefile failed"; exit 2; }

if [ -n "$TSAN" ]; then build_tree "$TREE" "$PREFIX" --enable-tsan
else build_tree "$TREE" "$PREFIX"; fi
# the binding really is in every installed runtime variant
for lib in libasmrun libasmrund libasmruni libasmrun_pic libcamlrun libcamlrund libcamlruni libcamlrun_pic; do
  n=$(nm "$PREFIX/lib/ocaml/$lib.a" 2>/dev/null | grep -c ' T php_compact_stw$' || true)
  [ "$n" = 1 ] || { log "$lib.a has no poolheap in it"; exit 2; }
done
log "poolheap OCaml: $PREFIX (built in $(cat "$TREE/.build_seconds") s)"
echo "$PREFIX"
