#!/usr/bin/env bash
# Checks the layering of DESIGN.md (Layers): os < heap < compact < barrier
# < roots < gc < api.  1: no #include of a file in a higher layer's
# directory; 2: no object of a layer uses a symbol defined by a higher
# layer (needs the release objects: ninja build/libpoolheap.a); 3: every
# tag cited in a comment is defined in DESIGN.md; 4: a layer's header names
# a type declared by a higher layer's header only as that layer's one
# pointer (`struct X;` and `struct X *field;`, DESIGN.md: heap.state).
# Usage: tools/layers.sh   (exit 0 when both hold)
set -uo pipefail
cd "$(dirname "$0")/.."
layers=(os heap compact barrier roots gc api)
rank() {
  local i
  for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done
  echo -1
}
bad=0
for d in "${layers[@]}"; do
  r=$(rank "$d")
  for f in "$d"/*.[ch]; do
    while read -r inc; do
      ir=$(rank "${inc%%/*}")
      if [ "$ir" -gt "$r" ]; then echo "include goes up: $f includes $inc"; bad=1; fi
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
  done
done
declare -A def
for d in "${layers[@]}"; do
  for o in build/obj/"$d"/*.o; do
    [ -f "${d}/$(basename "$o" .o).c" ] || continue # stale object
    for s in $(nm --defined-only -g "$o" | awk '{print $3}'); do def[$s]=$d; done
  done
done
for d in "${layers[@]}"; do
  r=$(rank "$d")
  for o in build/obj/"$d"/*.o; do
    [ -f "${d}/$(basename "$o" .o).c" ] || continue
    for s in $(nm -u "$o" | awk '{print $2}'); do
      sd=${def[$s]:-}
      [ -n "$sd" ] || continue
      if [ "$(rank "$sd")" -gt "$r" ]; then echo "call goes up: $o uses $s ($sd/)"; bad=1; fi
    done
  done
done
# 3: every DESIGN.md tag a comment cites (word.word, a layer's name first)
# is defined there, as a heading or in backquotes.
for t in $(grep -rohE '\b(os|heap|compact|barrier|roots|gc|api|mark|domain|tests)\.[a-z_]+(\.[a-z_]+)*\b' \
  "${layers[@]}" tests bench demos include --include=*.c --include=*.h |
  grep -vE '\.(c|h|sh|md|txt|log)$|^os\.(committed|reserved|mappings|huge_fallbacks|path)' | sort -u); do
  if ! grep -qE "^#{2,3} \`?$t\`?( |$)|\`$t\`" DESIGN.md; then
    echo "tag not in DESIGN.md: $t"
    bad=1
  fi
done
# 4: the types each layer's headers declare (struct tags, typedef names);
# in a lower layer's header such a type appears only in `struct X;` or as
# a pointer field `struct X *f;`, at most one per layer above in a struct.
declare -A tdef
for d in "${layers[@]}"; do
  for t in $(sed -nE 's/^(typedef )?struct ([a-z_0-9]+) \{.*/\2/p; s/^} ([a-z_0-9]+);.*/\1/p' "$d"/*.h); do
    tdef[$t]=$d
  done
done
for d in "${layers[@]}"; do
  r=$(rank "$d")
  for f in "$d"/*.h; do
    declare -A seen=()
    for t in "${!tdef[@]}"; do
      td=${tdef[$t]}
      [ "$(rank "$td")" -gt "$r" ] || continue
      # each line naming t, prefixed by the struct it lies in
      while IFS=$'\x1f' read -r in line; do
        if [[ $line =~ ^struct\ $t\;  ]]; then continue; fi
        if [[ -n $in && $line =~ ^\ \ struct\ $t\ \*[a-z_]+\; ]]; then
          if [ -n "${seen[$in/$td]:-}" ]; then
            echo "type goes down: $f: struct $in has two pointers into $td/ ($t, ${seen[$in/$td]})"
            bad=1
          fi
          seen[$in/$td]=$t
          continue
        fi
        echo "type goes down: $f names $td/'s $t other than by one pointer: $line"
        bad=1
      done < <(awk -v t="$t" '/^(typedef )?struct [a-z_0-9]+ \{/ { s = $0; sub(/^(typedef )?struct /, "", s); sub(/ .*/, "", s) }
        /^}/ { s = "" }
        $0 ~ "(^|[^a-z_0-9])" t "([^a-z_0-9]|$)" { print s "\x1f" $0 }' "$f")
    done
    unset seen
  done
done
[ "$bad" = 0 ] && echo "layers ok: no include and no call goes up; every cited tag is defined; no type goes down"
exit "$bad"
