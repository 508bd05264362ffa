#!/usr/bin/env bash
# Re-captures the allocation traces of bench/trace/*.pht.xz (issue 11's trace
# replay): builds the LD_PRELOAD shim (shim/shim.c), runs each program below
# under it, keeps the process with the most records (gcc: cc1; the others:
# the program itself), packs it with `replay pack` and compresses it with xz.
#
#   bench/trace/capture.sh [NAME...]     (default: every program)
#
# Programs: python (python3 with PYTHONMALLOC=malloc, so every object is a
# malloc, running a small JSON/dict/string script), perl (a text and hash
# script), sqlite (sqlite3 building, indexing and querying a database), gcc
# (cc1 compiling heap/pools.c at -O2), git (git log -p -M over this repository
# and git blame DESIGN.md; the trace is the larger of the two).
# Each trace is capped at PHTRACE_MAX records (default 3 million: the first
# 3 million calls of the process) so that a compressed trace stays at a few
# MB.  Needs gcc, xz, python3, perl, sqlite3 and git (Debian: one apt-get).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export PHTRACE_MAX=${PHTRACE_MAX:-3000000}
REPLAY=$REPO/build/bench/trace/replay
(cd "$REPO" && ninja build/bench/trace/replay >/dev/null)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$WORK/shim.so" "$HERE/shim/shim.c"

run_python() {
  cat >"$WORK/prog.py" <<'PY'
import json, random
random.seed(11)
docs = []
for i in range(60000):
    d = {"id": i, "name": "item%d" % i, "tags": ["t%d" % random.randrange(500) for _ in range(random.randrange(8))],
         "body": "x" * random.randrange(4000)}
    docs.append(d)
    if len(docs) > 20000:
        docs = docs[random.randrange(5000):]
text = json.dumps(docs)
back = json.loads(text)
words = {}
for d in back:
    for t in d["tags"]:
        words.setdefault(t, []).append(d["id"])
print(len(text), len(words))
PY
  PYTHONMALLOC=malloc /usr/bin/python3 "$WORK/prog.py"
}

run_perl() {
  cat >"$WORK/prog.pl" <<'PL'
srand(11);
my %h; my @keep;
for my $i (1 .. 150000) {
  my $s = join(",", map { int(rand(1e6)) } 1 .. int(rand(40)));
  $h{"k$i"} = $s;
  push @keep, $s x int(rand(30)) if $i % 7 == 0;
  delete $h{"k" . ($i - 20000)} if $i > 20000;
  shift @keep if @keep > 3000;
}
my $n = 0;
for my $k (sort keys %h) { $n++ if $h{$k} =~ /(\d+),\1/; }
print "$n\n";
PL
  perl "$WORK/prog.pl"
}

run_sqlite() {
  cat >"$WORK/prog.sql" <<'SQL'
PRAGMA cache_size = -16000;
CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b BLOB, c INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO t SELECT i, hex(randomblob(1 + i % 200)), randomblob(i % 5000), i * 7 % 1000 FROM n;
CREATE INDEX ta ON t(a);
CREATE INDEX tc ON t(c);
SELECT c, count(*), sum(length(b)) FROM t GROUP BY c ORDER BY 3 DESC LIMIT 5;
DELETE FROM t WHERE id % 3 = 0;
SELECT count(*) FROM t WHERE a LIKE '%AB%';
VACUUM;
SQL
  sqlite3 "$WORK/db.sqlite" <"$WORK/prog.sql"
}

run_gcc() {
  gcc -O2 -std=c11 -D_GNU_SOURCE -I"$REPO/include" -I"$REPO" -c "$REPO/heap/pools.c" -o "$WORK/pools.o"
}

run_git() {
  git -C "$REPO" log -p --stat -M >/dev/null
  git -C "$REPO" blame DESIGN.md >/dev/null
}

NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(python perl sqlite gcc git)
for name in "${NAMES[@]}"; do
  dir=$WORK/$name
  mkdir -p "$dir"
  echo "capture.sh: $name" >&2
  PHTRACE_DIR=$dir LD_PRELOAD=$WORK/shim.so "run_$name" >/dev/null
  big=$(ls -S "$dir"/raw.* | head -1)
  "$REPLAY" pack "$big" "$WORK/$name.pht"
  xz -9e -T1 -c "$WORK/$name.pht" >"$HERE/$name.pht.xz"
  ls -l "$HERE/$name.pht.xz" >&2
done
