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
#    Both rows carry ph_census's rows (--census 1): the table is followed
#    by where the pools' committed bytes go in each.  The same pair with
#    128 KiB pools (--pool-size) is shown too.
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
  one "$CMP" --shape W1 --release decommit --seed "$r" --census 1
  one "$CMP" --shape W1 --release decommit --seed "$r" --pin 10 --census 1
  # the same pair with pools of 128 KiB (compact.pin.floor: a pinned pool
  # keeps its pinned blocks' pages, which fewer, larger pools share more)
  one "$CMP" --shape W1 --release decommit --seed "$r" --pool-size 131072
  one "$CMP" --shape W1 --release decommit --seed "$r" --pool-size 131072 --pin 10
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
def w1(pin, ps=32768):  # W1 runs with or without pins, of pool size ps
    return lambda r: (r.get("shape") == "W1" and r.get("pool_size", 32768) == ps and
                      (r.get("pin_permille") == 10 if pin else "pin_permille" not in r))
un, pi = w1(False), w1(True)
a, na = med(un, "rss_after"); b, nb = med(pi, "rss_after")
out.append("")
if a and b:
    out.append(f"pinning: W1 RSS after compaction, 10 per mille pinned {b/2**20:.1f} MiB (n={nb}) "
               f"vs unpinned {a/2**20:.1f} MiB (n={na}): {b/a:.3f}x (goal <= 1.15) {verdict(b/a <= 1.15)}")
else:
    out.append("pinning: no result")
a3, na3 = med(un, "rss_next_gc"); b3, nb3 = med(pi, "rss_next_gc")
if a3 and b3:  # the pages given back must stay back at the next collection
    out.append(f"  after the next ph_collect: pinned {b3/2**20:.1f} MiB (n={nb3}) vs unpinned "
               f"{a3/2**20:.1f} MiB (n={na3}): {b3/a3:.3f}x (goal <= 1.15) {verdict(b3/a3 <= 1.15)}")
a2, na2 = med(w1(False, 131072), "rss_after"); b2, nb2 = med(w1(True, 131072), "rss_after")
if a2 and b2:
    out.append(f"  with 128 KiB pools (cfg.pool_size): pinned {b2/2**20:.1f} MiB (n={nb2}) vs unpinned "
               f"{a2/2**20:.1f} MiB (n={na2}): {b2/a2:.3f}x")
# where the pools' committed bytes go after the compaction (ph_census), the
# first seed's pair: live slots, free slots, the rest (pool headers and
# bitmaps, slot tails, slots straddling a hole); the classes that differ most
def census(sel):
    rs = [r for r in rows if sel(r) and "census" in r]
    return {c["class"]: c for c in rs[0]["census"]} if rs else None
cu, cp = census(un), census(pi)
if cu and cp:
    M = 2**20
    def line(name, cs):
        t = {k: sum(c[k] for c in cs.values()) for k in ("committed", "live", "free")}
        hf = sum(c["free"] for c in cs.values() if c["holed_pools"])
        return (f"  {name}: pools {sum(c['pools'] for c in cs.values())} "
                f"({sum(c['holed_pools'] for c in cs.values())} with holes), committed "
                f"{t['committed']/M:.2f} MiB = live {t['live']/M:.2f} + free {t['free']/M:.2f} "
                f"(in pools with holes {hf/M:.2f}) + headers/tails {(t['committed']-t['live']-t['free'])/M:.2f}")
    out += ["", "pinning: pool bytes after compaction (ph_census, first seed):",
            line("unpinned", cu), line("pinned", cp)]
    rp = [r for r in rows if pi(r) and "pin_floor_bytes" in r]
    if rp:  # the pools with holes against the pages they must keep
        r = rp[0]
        hc = sum(c["committed"] - (c["pools"] - c["holed_pools"]) * r["pool_size"]
                 for c in cp.values())
        out.append(f"  pinned: the {sum(c['holed_pools'] for c in cp.values())} pools with holes "
                   f"(of {r['pin_pools']} holding a pinned block) commit {hc/M:.2f} MiB; the pages "
                   f"holding a pinned block's slot: {r['pin_floor_bytes']/M:.2f} MiB")
        pc = sum(c["committed"] for c in cp.values())
        ru = [x for x in rows if un(x) and x.get("seed") == r.get("seed")]
        if ru and "pin_bound_bytes" in r:
            est = (r["rss_after"] - pc + r["pin_bound_bytes"]) / ru[0]["rss_after"]
            out.append(f"  at least, the pools would need {r['pin_bound_bytes']/M:.2f} MiB (pinned "
                       f"blocks' pages, then whole pools): RSS ratio about {est:.3f}x")
    d = sorted(set(cu) | set(cp), key=lambda k: -(cp.get(k, {}).get("committed", 0) -
                                                 cu.get(k, {}).get("committed", 0)))
    out.append("  pinned - unpinned committed, largest classes: " + ", ".join(
        f"{cp.get(k, cu.get(k))['slot_bytes']} B slots {(cp.get(k, {}).get('committed', 0) - cu.get(k, {}).get('committed', 0))/M:+.2f} MiB"
        f" (free {cp.get(k, {}).get('free', 0)/M:.2f})" for k in d[:4]))
print("\n".join(out))
PY
exit $rc
