#!/usr/bin/env bash
# The Raft core must stay deterministic and free of I/O (DESIGN.md §4). The compiler cannot see
# "no clock" or "no files", so this check fails CI when the core crate gains a dependency outside
# an allow-list, or its source names an I/O, clock, thread or randomness API.
set -euo pipefail
cd "$(dirname "$0")/.."

allowed='^(raftkv-raft|bytes|thiserror|thiserror-impl|proc-macro2|quote|syn|unicode-ident)$'
status=0

deps=$(cargo tree -p raftkv-raft -e normal --prefix none --format '{p}' --offline 2>/dev/null \
  || cargo tree -p raftkv-raft -e normal --prefix none --format '{p}')
while read -r name _; do
  [ -z "$name" ] && continue
  if ! [[ "$name" =~ $allowed ]]; then
    echo "core purity: raftkv-raft depends on '$name', which is not on the allow-list" >&2
    status=1
  fi
done <<< "$deps"

forbidden='std::(fs|net|time|thread|process|env|io)\b|\bInstant\b|\bSystemTime\b|\btokio\b|\btonic\b|\bgetrandom\b|\brand::|\bOsRng\b|\bthread_rng\b'
# Comments may talk about clocks; code may not.
if grep -rnE "$forbidden" node/raft/src | grep -vE '^[^:]+:[0-9]+:\s*//'; then
  echo "core purity: node/raft/src uses an I/O, clock, thread or OS-randomness API (see above)" >&2
  status=1
fi

if [ "$status" -eq 0 ]; then
  echo "core purity: ok (raftkv-raft uses no I/O, clock, threads or OS randomness)"
fi
exit "$status"
