# Shared by ocaml/build.sh and ocaml/test.sh (sourced, not run).
# The npm registry's `ocaml` package 5.3.0 is the OCaml source tree; it is
# fetched once into $CACHE/ocaml-5.3.0-src, as bench/peers/build_ocaml53.sh does.
CACHE=${POOLHEAP_CACHE:-$HOME/.cache/poolheap}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
OCAML_SRC=$CACHE/ocaml-5.3.0-src
STOCK_TREE=$CACHE/ocaml-5.3.0-stock-tree
STOCK_PREFIX=$CACHE/ocaml-5.3.0-stock

log() { echo "[ocaml] $*" >&2; }

fetch_ocaml_src() {
  [ -x "$OCAML_SRC/configure" ] && return 0
  command -v npm >/dev/null || { log "npm not found"; return 2; }
  mkdir -p "$CACHE"
  local tmp tgz
  tmp=$(mktemp -d "$CACHE/npm.XXXXXX")
  log "fetching ocaml@5.3.0 from the npm registry into $tmp"
  (cd "$tmp" && npm pack ocaml@5.3.0 --silent >/dev/null 2>&1 || npm pack ocaml@5.3.0)
  tgz=$(ls "$tmp"/ocaml-5.3.0.tgz)
  rm -rf "$OCAML_SRC"; mkdir -p "$OCAML_SRC"
  tar -xzf "$tgz" -C "$OCAML_SRC" --strip-components=1
  rm -rf "$tmp"
  [ -f "$OCAML_SRC/configure" ] || { log "ocaml@5.3.0 tarball has no configure script"; return 2; }
  chmod +x "$OCAML_SRC/configure"
}

# A build tree: a copy of the source, configured with ocamltest (and any
# further configure arguments), world.opt, installed.  $1 tree, $2 prefix,
# then configure arguments.  Skipped when $1/.built exists.
build_tree() {
  local tree=$1 prefix=$2 t0
  shift 2
  [ -f "$tree/.built" ] && [ -x "$prefix/bin/ocamlopt" ] && return 0
  t0=$(date +%s)
  log "configuring $tree (prefix $prefix) $*"
  (cd "$tree" && ./configure --prefix="$prefix" --enable-ocamltest --disable-ocamldoc "$@" \
      >configure.log 2>&1) || { tail -30 "$tree/configure.log" >&2; return 2; }
  log "make -j$JOBS world.opt in $tree (10-20 minutes on 2 cores)"
  # OCaml's parallel build has been seen to stop once on a missing .cmi
  # (stdlib__Filename.cmi at -j2); make then resumes serially where it stopped
  if ! (cd "$tree" && make -j"$JOBS" world.opt >make.log 2>&1); then
    log "make -j$JOBS world.opt failed; resuming with make -j1 (the first log: make-j.log)"
    mv "$tree/make.log" "$tree/make-j.log"
    (cd "$tree" && make world.opt >make.log 2>&1) \
      || { tail -60 "$tree/make.log" >&2; return 2; }
  fi
  log "make install"
  (cd "$tree" && make install >install.log 2>&1) || { tail -40 "$tree/install.log" >&2; return 2; }
  echo $(( $(date +%s) - t0 )) > "$tree/.build_seconds"
  touch "$tree/.built"
  log "built $tree in $(cat "$tree/.build_seconds") s"
}

# Stock 5.3.0, configured as the poolheap build is.  $1: "" or -tsan.
build_stock() {
  local sfx=${1:-} prefix=$STOCK_PREFIX${1:-}
  local tree=$prefix-tree
  fetch_ocaml_src || return 2
  if [ ! -f "$tree/.built" ]; then
    rm -rf "$tree"; cp -a "$OCAML_SRC" "$tree"
  fi
  if [ "$sfx" = -tsan ]; then build_tree "$tree" "$prefix" --enable-tsan
  else build_tree "$tree" "$prefix"; fi
}

# one line per test: "DIR TEST-DESCRIPTION => RESULT", the tree's path as TREE;
# RESULT without its details (the paths in "failed (program output ...)"
# differ between runs), and not the "> " lines of a failed test's own log
results() { # $1 log, $2 tree
  awk '/^Running tests from / { d = $4; gsub(/[\047.]*$/, "", d); gsub(/^\047/, "", d); next }
       /^> / { next }
       / => / { line = $0; sub(/^ *\.\.\. */, "", line); i = index(line, " => ")
                r = substr(line, i + 4); sub(/ \(.*$/, "", r); print d " " substr(line, 1, i - 1) " => " r }' "$1" \
    | awk -v t="$2" '{ while ((i = index($0, t)) > 0) $0 = substr($0, 1, i - 1) "TREE" substr($0, i + length(t)); print }'
}

# the summary lines of a testsuite log (summarize.awk's)
summary() { grep -E "^ *[0-9]+ tests? (passed|skipped|failed|not started|considered)|^ *[0-9]+ unexpected errors?|^Summary" "$1" | sed 's/^ *//'; }
