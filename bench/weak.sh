#!/usr/bin/env bash
# Issue 12's figures (DESIGN.md: gc.weak, gc.pin), run by `./run.sh bench`
# (not --quick):
#  - a weak hash table and an ephemeron table of N entries (90% dropped),
#    bench/weak.c on poolheap beside bench/peers/weak.ml on stock OCaml 5.3
#    (Weak, Ephemeron.K1): medians of RUNS runs of the collection that
#    clears the table (ph_collect / Gc.full_major) and of VmRSS after the
#    compaction.  Goals: collection <= 0.5x OCaml's; memory after
#    compaction <= OCaml's.  Both sides also report the process's CPU time
#    in the collection (collect_cpu_ms), shown below the table.
#    The same work: ph_collect starts from a heap holding every dropped
#    entry (gc_percent 0: no collection while the table is built), so the
#    goal row's OCaml runs with --hold-major (no major GC work during the
#    build; the timed Gc.full_major then finds the same garbage); the row
#    "OCaml defaults" is OCaml with its incremental major GC running during
#    the (untimed) build, which clears and sweeps about half of the dropped
#    entries before the timed Gc.full_major starts.  The row "poolheap,
#    transparent huge pages" is bench/weak with --huge transparent (OCaml
#    5.3 never madvises its pools): not a goal row.
#  - pinning: bench/compact's W1 with 10 per mille of the survivors pinned
#    against the same run unpinned.  Goal: RSS after <= 1.15x.
# Each run is its own process; poolheap and OCaml alternate.  Prints one
# JSON line per run, then the table with "met" / "NOT met".
#   bench/weak.sh [--n N] [--runs R]
# Env: POOLHEAP_CACHE (default $HOME/.cache/poolheap; the stock 5.3
# toolchain is ocaml-5.3.0-stock there, built by bench/peers/build_ocaml53.sh
# for its frag peer), PEERS_OUT (default <repo>/build/peers).
# Exit: 0 when every run was ok (goals are reported, not enforced), 1 else.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${POOLHEAP_CACHE:-$HOME/.cache/poolheap}
OUT=${PEERS_OUT:-$REPO/build/peers}
N=1000000
RUNS=3
while [ $# -gt 0 ]; do
  case $1 in
  --n) N=$2; shift 2 ;;
  --runs) RUNS=$2; shift 2 ;;
  *) echo "usage: bench/weak.sh [--n N] [--runs R]" >&2; exit 2 ;;
  esac
done
say() { echo "[weak] $*" >&2; }
mkdir -p "$OUT"
RES=$OUT/weak-results.jsonl
: >"$RES"
rc=0

PH=$REPO/build/bench/weak
CMP=$REPO/build/bench/compact
[ -x "$PH" ] && [ -x "$CMP" ] || { say "build/bench/weak and compact missing (ninja release)"; exit 1; }

# the OCaml peer, with the stock 5.3 toolchain (the one frag.ml's peer uses)
OCAMLOPT=""
for p in "$CACHE/ocaml-5.3.0-stock/bin/ocamlopt" "$CACHE/ocaml-5.3.0/bin/ocamlopt"; do
  [ -x "$p" ] && [ "$("$p" -version 2>/dev/null)" = 5.3.0 ] && { OCAMLOPT=$p; break; }
done
ML=""
if [ -z "$OCAMLOPT" ]; then
  say "no OCaml 5.3.0 toolchain in $CACHE (bench/peers/build_ocaml53.sh builds it): poolheap only"
else
  d=$OUT/weak-ml
  mkdir -p "$d"
  cp "$HERE/peers/weak.ml" "$d/"
  libs="-I +unix -I +runtime_events unix.cmxa runtime_events.cmxa"
  # shellcheck disable=SC2086
  if (cd "$d" && "$OCAMLOPT" -O2 $libs weak.ml -o weak_ocaml53 2>"$d/build.log" ||
      "$OCAMLOPT" $libs weak.ml -o weak_ocaml53 2>"$d/build.log"); then
    ML=$d/weak_ocaml53
  else
    say "weak.ml did not build: $(tail -c 300 "$d/build.log")"
    rc=1
  fi
fi

one() { # command...: one JSON line to $RES (and stdout)
  local line
  line=$("$@" 2>>"$OUT/weak-stderr.log" | grep '^{' | tail -1)
  if [ -z "$line" ]; then
    say "no result from: $*"
    rc=1
    return
  fi
  echo "$line" | tee -a "$RES"
  case $line in *'"ok":false'*|*'"error"'*) rc=1 ;; esac
}

for r in $(seq 1 "$RUNS"); do
  for t in weak ephemeron; do
    one "$PH" --n "$N" --table "$t"
    one "$PH" --n "$N" --table "$t" --huge transparent
    [ -n "$ML" ] && one "$ML" --n "$N" --table "$t" --hold-major
    [ -n "$ML" ] && one "$ML" --n "$N" --table "$t"
  done
  # the same seed for both: the same heap, with and without pins
  one "$CMP" --shape W1 --release decommit --seed "$r"
  one "$CMP" --shape W1 --release decommit --seed "$r" --pin 10
done

python3 - "$RES" <<'PY' || rc=1
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(sel, key):
    v = [r[key] for r in rows if sel(r) and key in r]
    return (statistics.median(v), len(v)) if v else (None, 0)
def verdict(ok):
    return "met" if ok else "NOT met"
out = ["", "issue 12 figures (medians; n = runs)", ""]
out.append("OCaml's Gc.full_major with the major GC held off during the build (--hold-major): "
           "both timed collections start from every dropped entry still in the heap")
out.append("")
out.append("| table | poolheap collect ms | OCaml 5.3 full_major ms | ratio (goal <= 0.5) | "
           "poolheap RSS after MiB | OCaml RSS after MiB | ratio (goal <= 1) |")
out.append("|---|---|---|---|---|---|---|")
cpu = []
for t in ("weak", "ephemeron"):
    ph = lambda r: r.get("system") == "poolheap" and r.get("table") == t and r.get("huge", "off") == "off"
    pt = lambda r: r.get("system") == "poolheap" and r.get("table") == t and r.get("huge") == "transparent"
    ml = lambda r: r.get("system") == "ocaml-5.3" and r.get("table") == t and r.get("hold_major")
    md = lambda r: r.get("system") == "ocaml-5.3" and r.get("table") == t and not r.get("hold_major")
    pc, n1 = med(ph, "collect_ms"); oc, n2 = med(ml, "collect_ms")
    pr, _ = med(ph, "rss_after"); orr, _ = med(ml, "rss_after")
    if pc is None:
        out.append(f"| {t} | no result | | | | | |"); continue
    if oc is None:
        out.append(f"| {t} | {pc:.1f} (n={n1}) | no OCaml result | | {pr/2**20:.1f} | | |"); continue
    c = pc / oc; m = pr / orr
    out.append(f"| {t} | {pc:.1f} (n={n1}) | {oc:.1f} (n={n2}) | {c:.2f} {verdict(c <= 0.5)} | "
               f"{pr/2**20:.1f} | {orr/2**20:.1f} | {m:.2f} {verdict(m <= 1.0)} |")
    dc, n3 = med(md, "collect_ms")
    if dc is not None:
        out.append(f"| {t}, OCaml defaults | {pc:.1f} (n={n1}) | {dc:.1f} (n={n3}) | {pc/dc:.2f} | | | |")
    tc, n4 = med(pt, "collect_ms"); tr, _ = med(pt, "rss_after")
    if tc is not None:
        out.append(f"| {t}, poolheap transparent huge pages | {tc:.1f} (n={n4}) | {oc:.1f} (n={n2}) | "
                   f"{tc/oc:.2f} | {tr/2**20:.1f} | {orr/2**20:.1f} | {tr/orr:.2f} |")
    pu, _ = med(ph, "collect_cpu_ms"); ou, _ = med(ml, "collect_cpu_ms")
    du, _ = med(md, "collect_cpu_ms"); tu, _ = med(pt, "collect_cpu_ms")
    if pu is not None and ou:
        cpu.append(f"{t}: collection CPU time poolheap {pu:.1f} ms, OCaml {ou:.1f} ms: "
                   f"{pu/ou:.2f}x" + (f" (OCaml defaults {du:.1f} ms: {pu/du:.2f}x)" if du else "")
                   + (f"; poolheap with transparent huge pages {tu:.1f} ms: {tu/ou:.2f}x" if tu else ""))
if cpu:  # the same collections in CPU time (not the time spent waiting for a core)
    out += ["", "medians of the process CPU time in the collection (a shared machine's "
            "load does not count):"] + cpu
un = lambda r: r.get("shape") == "W1" and "pin_permille" not in r
pi = lambda r: r.get("shape") == "W1" and r.get("pin_permille") == 10
a, na = med(un, "rss_after"); b, nb = med(pi, "rss_after")
out.append("")
if a and b:
    out.append(f"pinning: W1 RSS after compaction, 10 per mille pinned {b/2**20:.1f} MiB (n={nb}) "
               f"vs unpinned {a/2**20:.1f} MiB (n={na}): {b/a:.3f}x (goal <= 1.15) {verdict(b/a <= 1.15)}")
else:
    out.append("pinning: no result")
print("\n".join(out))
PY
exit $rc
