#!/usr/bin/env bash
# Checks that every C source and header the repository tracks is formatted
# by clang-format with the repository's .clang-format (style.md: one format,
# no hand-aligned exceptions).  Prints each file that differs and the first
# lines of its diff.  Usage: tools/format.sh [--fix]   (exit 0 when all are)
set -uo pipefail
cd "$(dirname "$0")/.."
cf=$(command -v clang-format || command -v clang-format-14) ||
  { echo "format.sh: clang-format not found (Debian: apt-get install clang-format)" >&2; exit 2; }
fix=0
[ "${1:-}" = --fix ] && fix=1
bad=0 n=0
while IFS= read -r f; do
  n=$((n + 1))
  if [ "$fix" = 1 ]; then
    "$cf" -i "$f"
  elif ! "$cf" --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "format.sh: $f is not clang-formatted:"
    "$cf" "$f" | diff "$f" - | head -8
    bad=$((bad + 1))
  fi
done < <(git ls-files '*.c' '*.h')
[ "$fix" = 1 ] && { echo "format.sh: formatted $n files"; exit 0; }
echo "format.sh: $n files, $bad not formatted"
[ "$bad" -eq 0 ]
