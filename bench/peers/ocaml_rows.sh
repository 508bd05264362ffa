#!/usr/bin/env bash
# Issue 10's bench rows: the same OCaml programs on stock OCaml 5.3.0 and on
# OCaml 5.3.0 with its shared heap replaced by poolheap (ocaml/build.sh), side
# by side, medians of RUNS runs, the goals beside the figures.
#
#   bench/peers/ocaml_rows.sh [--runs N] [--shapes "W1 W2 W50 Wbig"] [--seed S]
#                             [--order "W1 Wbig compile bintrees W2 W50"] [--append]
#                             [--offsets "0 16 32 48"]
#   --order: the programs to run, in that order; --append: add to build/bench/ocaml.jsonl
#   (the table then covers the runs already there too)
#
# Rows:
#   frag SHAPE   bench/peers/frag.ml built with each prefix's ocamlopt: Gc.compact as a
#                whole, its compaction phase and its evacuate / forward / release spans
#                (runtime events, both runtimes emit them), RSS and mappings before and
#                after; the same seed on both (the checksums must agree)
#   compile      the compiler compiling itself: each prefix's ocamlopt.opt (a native
#                program on that runtime) compiles the OCaml compiler's front end
#                (utils parsing typing file_formats lambda: 227 files of the stock build
#                tree, generated ones included, in dependency order) in one process:
#                wall time and peak RSS
#   bintrees     bench/peers/bintrees.ml, depth 21 on 2 domains: wall time, peak RSS;
#                built at every code offset of --offsets (bench.offsets; bytes of padding linked
#                before the program's code, default "0 16 32 48"), every offset run
#                in every round, the medians taken over all of them: the program's two
#                hot functions are a few dozen bytes each, and where they fall in a
#                32/64-byte window moves the run time by up to ~15% (measured: stock
#                5.3's binary at its four offsets, depth 18 on one domain, medians of
#                6: 0.76-0.88 s user); the runtime's own size decides that placement,
#                so one offset per runtime compares layouts, not runtimes
# Program by program, RUNS rounds each on both runtimes, the order of the two
# swapped every round.  Goals (issue 10): on W1 and Wbig the compaction phase <= 0.5x
# stock, Gc.compact as a whole <= 0.8x stock, RSS after <= stock, mappings after
# <= before; compile and bintrees time <= 1.05x stock, peak RSS <= stock.
# Timing goals that are missed print as MISSED and do not change the exit
# status; a run that fails or checksums that differ exit 1.
# Writes build/bench/ocaml.jsonl (every run) and build/bench/ocaml.md (the table).
# Env: POOLHEAP_CACHE, JOBS (as ocaml/build.sh: both prefixes are built when missing).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$REPO/build/bench
W=$OUT/ocaml
RUNS=3
SHAPES="W1 W2 W50 Wbig"
ORDER=""
APPEND=0
OFFSETS="0 16 32 48"
SEED=${BENCH_SEED:-$(((RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM))}
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --shapes) SHAPES=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --order) ORDER=$2; shift ;;
    --append) APPEND=1 ;;
    --offsets) OFFSETS=$2; shift ;;
    *) sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
say() { echo "[ocaml-rows] $*" >&2; }
mkdir -p "$W"
JSON=$OUT/ocaml.jsonl
[ $APPEND = 1 ] || : >"$JSON"

STOCK=$("$REPO/ocaml/build.sh" stock | tail -1) || { say "stock build failed"; exit 1; }
PH=$("$REPO/ocaml/build.sh" | tail -1) || { say "poolheap build failed"; exit 1; }
say "stock $STOCK, poolheap $PH, seed $SEED, $RUNS runs"

# the programs, built with each prefix
for side in stock:$STOCK poolheap:$PH; do
  name=${side%%:*} prefix=${side#*:}
  d=$W/$name; mkdir -p "$d"
  cp "$HERE/fragcore.ml" "$HERE/frag.ml" "$HERE/bintrees.ml" "$d/"
  (cd "$d" && "$prefix/bin/ocamlopt" -I +runtime_events -I +unix unix.cmxa runtime_events.cmxa \
      -o frag fragcore.ml frag.ml && "$prefix/bin/ocamlopt" -I +unix -c bintrees.ml) \
    >"$d/build.log" 2>&1 || { say "building the programs with $prefix failed: $(tail -5 "$d/build.log")"; exit 1; }
  # bintrees at each code offset: an object of OFF bytes of .text.unlikely, which
  # the linker places before every function of .text (the program's first)
  for off in $OFFSETS; do
    printf '__asm__(".section .text.unlikely,\\"ax\\",@progbits\\n.p2align 4\\n.skip %d\\n.previous");\n' \
      "$off" >"$d/pad$off.c"
    (cd "$d" && ${CC:-cc} -c pad$off.c -o pad$off.o && \
       "$prefix/bin/ocamlopt" -I +unix unix.cmxa pad$off.o bintrees.cmx -o bintrees-$off) \
      >>"$d/build.log" 2>&1 || { say "building bintrees at offset $off with $prefix failed: $(tail -5 "$d/build.log")"; exit 1; }
  done
done
# where each binary's hot function landed (address mod 64), for the JSON lines
align() {
  local a
  a=$(nm "$1" | awk '/ T camlBintrees[.$_]*check_/ { print $1; exit }')
  echo $((${a:+0x$a} % 64))
}

# the compile workload: the compiler's own sources from the stock build tree
# (generated files included), the same for both runtimes
SRC=$W/compiler-src
if [ ! -f "$SRC/.order" ]; then
  rm -rf "$SRC"; mkdir -p "$SRC"
  for d in utils parsing typing file_formats lambda; do
    cp "$STOCK-tree/$d"/*.ml "$STOCK-tree/$d"/*.mli "$SRC/" 2>/dev/null
  done
  # the pieces config.ml is made of, and the formats that need the back end
  (cd "$SRC" && rm -f config.common.ml config.fixed.ml config.generated.ml config_boot.ml* \
     config_main.ml* linear_format.* cmx_format.* cmxs_format.*)
  (cd "$SRC" && "$STOCK/bin/ocamldep" -sort *.mli *.ml >.order.tmp) && mv "$SRC/.order.tmp" "$SRC/.order"
fi

measure() { # name side -- command...: one JSON line: wall ms, CPU ms (user + system) and peak RSS of the command
  local prog=$1 side=$2
  shift 3
  python3 - "$prog" "$side" "$@" <<'PY'
import json, resource, subprocess, sys, time
prog, side, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t = time.monotonic()
r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
ms = (time.monotonic() - t) * 1000
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
j = {"program": prog, "system": side, "ms": round(ms, 1), "cpu_ms": round((ru.ru_utime + ru.ru_stime) * 1000, 1),
     "peak_rss": ru.ru_maxrss * 1024, "rc": r.returncode}
for line in r.stdout.decode(errors="replace").splitlines():
    if line.startswith("{"):
        try:
            j["out"] = json.loads(line)
        except ValueError:
            pass
if r.returncode != 0:
    j["error"] = r.stderr.decode(errors="replace")[-400:]
print(json.dumps(j))
PY
}

compile_dir() { # side: a fresh copy of the workload's sources
  local dir=$W/compile-$1
  rm -rf "$dir"; mkdir -p "$dir"; cp "$SRC"/*.ml "$SRC"/*.mli "$dir/"
  echo "$dir"
}

# program by program (so that an interrupted run leaves whole rows), RUNS
# rounds each, the two runtimes' order swapped every round
sides() { if [ $(($1 % 2)) = 1 ]; then echo "stock poolheap"; else echo "poolheap stock"; fi; }
for prog in ${ORDER:-$SHAPES compile bintrees}; do
  for ((r = 1; r <= RUNS; r++)); do
    for side in $(sides $r); do
      prefix=$STOCK; [ $side = poolheap ] && prefix=$PH
      say "round $r: $prog on $side"
      case $prog in
        compile)
          dir=$(compile_dir "$side")
          # shellcheck disable=SC2046
          measure compile "$side" -- env -C "$dir" "$prefix/bin/ocamlopt.opt" -w -a -c $(cat "$SRC/.order") >>"$JSON" ;;
        bintrees) # every offset, starting one further each round
          set -- $OFFSETS
          for ((k = 0; k < $#; k++)); do
            i=$(((k + r - 1) % $# + 1)); off=${!i}
            measure bintrees "$side" -- "$W/$side/bintrees-$off" 21 2 \
              | sed "s/^{/{\"offset\":$off,\"check_mod64\":$(align "$W/$side/bintrees-$off"),/" >>"$JSON"
          done ;;
        *)
          "$W/$side/frag" --system "ocaml-5.3-$side" --shape "$prog" --seed "$SEED" \
            >"$W/frag.out" 2>>"$W/frag.err"
          grep '^{' "$W/frag.out" | sed "s/^{/{\"program\":\"frag\",\"side\":\"$side\",\"round\":$r,/" >>"$JSON" \
            || echo "{\"program\":\"frag\",\"side\":\"$side\",\"shape\":\"$prog\",\"error\":\"no output\"}" >>"$JSON" ;;
      esac
    done
  done
done

python3 - "$JSON" "$OUT/ocaml.md" "$RUNS" "$SEED" <<'PY'
import json, sys
path, md, runs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.startswith("{")]
out, bad = [], []
def p(s=""): out.append(s)
def median(xs):
    xs = sorted(x for x in xs if isinstance(x, (int, float)))
    if not xs: return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
def goal(ok, text):
    return ("met" if ok else "MISSED") + " (" + text + ")"
for r in rows:
    if "error" in r: bad.append("%s %s: %s" % (r.get("program"), r.get("side") or r.get("system"), r["error"][:200]))
    if r.get("program") == "frag" and r.get("ok") is not True and "error" not in r:
        bad.append("frag %s %s round %s: checksum %s -> %s" % (r.get("shape"), r.get("side"), r.get("round"), r.get("checksum_before"), r.get("checksum_after")))
    if r.get("program") == "bintrees" and r.get("out", {}).get("ok") is not True:
        bad.append("bintrees %s: not ok" % r.get("system"))
p("## OCaml 5.3.0: stock and poolheap runtimes (issue 10), medians of %d runs, seed %s" % (runs, seed))
p()
p("| shape | runtime | Gc.compact ms | compaction phase ms | evacuate / forward / release ms | RSS before -> after MB | mappings before -> after | checksums |")
p("|---|---|---|---|---|---|---|---|")
frag = [r for r in rows if r.get("program") == "frag" and "error" not in r]
shapes = []
for r in frag:
    if r["shape"] not in shapes: shapes.append(r["shape"])
goals = []
for s in shapes:
    med = {}
    for side in ("stock", "poolheap"):
        rs = [r for r in frag if r["shape"] == s and r["side"] == side]
        if not rs: continue
        m = {f: median([r.get(f) for r in rs]) for f in ("compact_ms", "compact_phase_ms", "evacuate_ms", "update_ms", "release_ms", "rss_before", "rss_after", "maps_before", "maps_after")}
        med[side] = m
        sums = sorted({str(r.get("checksum_before")) for r in rs})
        f = lambda x, fmt="%.1f": "—" if x is None else fmt % x
        p("| %s | %s | %s | %s | %s / %s / %s | %s -> %s | %s -> %s | %s |" % (
            s, side, f(m["compact_ms"]), f(m["compact_phase_ms"]), f(m["evacuate_ms"]), f(m["update_ms"]), f(m["release_ms"]),
            f(m["rss_before"] and m["rss_before"] / 1048576), f(m["rss_after"] and m["rss_after"] / 1048576),
            f(m["maps_before"], "%d"), f(m["maps_after"], "%d"), ",".join(sums)))
    sums = {str(r.get("checksum_before")) for r in frag if r["shape"] == s}
    if len(sums) > 1: bad.append("frag %s: checksums differ between runs/runtimes: %s" % (s, sorted(sums)))
    if s in ("W1", "Wbig") and "stock" in med and "poolheap" in med:
        a, b = med["poolheap"], med["stock"]
        if a["compact_phase_ms"] and b["compact_phase_ms"]:
            q = a["compact_phase_ms"] / b["compact_phase_ms"]
            goals.append("%s compaction phase <= 0.5x stock: %.2fx, %s" % (s, q, goal(q <= 0.5, "%.1f / %.1f ms" % (a["compact_phase_ms"], b["compact_phase_ms"]))))
        q = a["compact_ms"] / b["compact_ms"]
        goals.append("%s Gc.compact <= 0.8x stock: %.2fx, %s" % (s, q, goal(q <= 0.8, "%.1f / %.1f ms" % (a["compact_ms"], b["compact_ms"]))))
        goals.append("%s RSS after <= stock: %s" % (s, goal(a["rss_after"] <= b["rss_after"], "%.1f / %.1f MB" % (a["rss_after"] / 1048576, b["rss_after"] / 1048576))))
        grew = [r for r in frag if r["shape"] == s and r["side"] == "poolheap" and r["maps_after"] > r["maps_before"]]
        goals.append("%s mappings after <= before (every poolheap run): %s" % (s, goal(not grew, ", ".join("%d->%d" % (r["maps_before"], r["maps_after"]) for r in frag if r["shape"] == s and r["side"] == "poolheap"))))
p()
p("| program | runtime | runs | wall s | CPU s (user + system) | peak RSS MB |")
p("|---|---|---|---|---|---|")
for prog, what in (("compile", "ocamlopt.opt compiles the compiler's front end"), ("bintrees", "binary trees, depth 21, 2 domains")):
    med = {}
    for side in ("stock", "poolheap"):
        rs = [r for r in rows if r.get("program") == prog and r.get("system") == side and "error" not in r]
        if not rs: continue
        med[side] = (median([r["ms"] for r in rs]), median([r["peak_rss"] for r in rs]), median([r.get("cpu_ms") for r in rs]))
        cpu = "—" if med[side][2] is None else "%.2f" % (med[side][2] / 1000)
        p("| %s (%s) | %s | %d | %.2f | %s | %.1f |" % (prog, what, side, len(rs), med[side][0] / 1000, cpu, med[side][1] / 1048576))
    if len(med) == 2:
        q = med["poolheap"][0] / med["stock"][0]
        goals.append("%s time <= 1.05x stock: %.3fx, %s" % (prog, q, goal(q <= 1.05, "%.2f / %.2f s" % (med["poolheap"][0] / 1000, med["stock"][0] / 1000))))
        if med["poolheap"][2] and med["stock"][2]:
            goals.append("%s CPU time (user + system; the wall time above is at the mercy of the machine's load) <= 1.05x stock: %.3fx, %s" % (
                prog, med["poolheap"][2] / med["stock"][2], goal(med["poolheap"][2] <= 1.05 * med["stock"][2], "%.2f / %.2f s" % (med["poolheap"][2] / 1000, med["stock"][2] / 1000))))
        offs = sorted({r["offset"] for r in rows if r.get("program") == prog and "offset" in r})
        if len(offs) > 1:
            by = []
            for o in offs:
                m = {}
                for side in ("stock", "poolheap"):
                    rs = [r for r in rows if r.get("program") == prog and r.get("system") == side and r.get("offset") == o and "error" not in r]
                    if rs: m[side] = (median([r["ms"] for r in rs]), median([r.get("cpu_ms") for r in rs]), rs[0].get("check_mod64"))
                if len(m) == 2:
                    by.append("offset %d: wall %.2f / %.2f s (%.3fx), CPU %.2f / %.2f s (%.3fx), check at %s / %s mod 64" % (
                        o, m["poolheap"][0] / 1000, m["stock"][0] / 1000, m["poolheap"][0] / m["stock"][0],
                        m["poolheap"][1] / 1000, m["stock"][1] / 1000, m["poolheap"][1] / m["stock"][1], m["poolheap"][2], m["stock"][2]))
            goals.append("%s by code offset (medians), poolheap / stock: %s" % (prog, "; ".join(by)))
        q = med["poolheap"][1] / med["stock"][1]
        goals.append("%s peak RSS <= stock: %.3fx, %s" % (prog, q, goal(q <= 1.0, "%.1f / %.1f MB" % (med["poolheap"][1] / 1048576, med["stock"][1] / 1048576))))
p()
p("Goals (issue 10):")
for g in goals: p("- " + g)
if bad:
    p()
    p("Failures:")
    for b in bad: p("- " + b)
text = "\n".join(out)
print(text)
open(md, "w").write(text + "\n")
sys.exit(1 if bad else 0)
PY
