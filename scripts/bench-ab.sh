#!/usr/bin/env bash
# make bench-ab BEFORE=DIR: one change's effect, measured in one run. Compares the kvnode and kvctl
# in DIR (a saved earlier build) with this tree's release build on the same workload, alternating
# (before, after, before, after, ...) so that drifting background load hits both alike; each
# measurement gets a fresh 3-node cluster on 127.0.0.1. Prints a table and the after/before
# ratio of ops/s; writes nothing to docs/ (copy the figures into a finding by hand). Stops
# everything it started, also on Ctrl-C.
#
# Save a build first: mkdir -p /tmp/before && cp target/release/{kvnode,kvctl} /tmp/before/
#
# Environment (defaults in brackets): BENCH_SECONDS per measurement [8], BENCH_ROUNDS [3],
# BENCH_CLIENTS [128], BENCH_READ_RATIO [0: puts], BENCH_CONSISTENCY [linearizable],
# BENCH_VALUE_SIZE [256], plus bench-common.sh's BENCH_DIR and BENCH_PORT_BASE.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

BEFORE=${1:-${BEFORE:-}}
SECONDS_PER=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-128}
READ_RATIO=${BENCH_READ_RATIO:-0}
CONSISTENCY=${BENCH_CONSISTENCY:-linearizable}
VALUE_SIZE=${BENCH_VALUE_SIZE:-256}
RESULTS="$BENCH_DIR/results"
AFTER_KVNODE=$KVNODE
AFTER_KVCTL=$KVCTL

# One measurement against a fresh cluster of build $1 (before or after) in round $2; leaves
# RESULTS/$1-$2.json.
measure() {
  local build=$1 round=$2
  if [ "$build" = before ]; then
    KVNODE="$BEFORE/kvnode" KVCTL="$BEFORE/kvctl"
  else
    KVNODE=$AFTER_KVNODE KVCTL=$AFTER_KVCTL
  fi
  raftkv_start_fresh
  log "$build, round $round: $CLIENTS clients, read ratio $READ_RATIO, ${SECONDS_PER}s"
  bench raftkv --clients "$CLIENTS" --value-size "$VALUE_SIZE" --read-ratio "$READ_RATIO" \
    --consistency "$CONSISTENCY" --duration "${SECONDS_PER}s" >"$RESULTS/$build-$round.json"
  bench_cleanup
}

main() {
  [ -n "$BEFORE" ] && [ -x "$BEFORE/kvnode" ] && [ -x "$BEFORE/kvctl" ] \
    || die "usage: make bench-ab BEFORE=DIR (DIR holds an earlier build's kvnode and kvctl)"
  bench_init
  bench_build
  mkdir -p "$RESULTS"
  log "machine: $(machine_description)"
  local round build
  for round in $(seq "$ROUNDS"); do
    for build in before after; do measure "$build" "$round"; done
  done
  bench_drop_data
  python3 "$ROOT/scripts/bench-alternate-report.py" "$RESULTS" "$ROUNDS" before after before after \
    "after/before ops/s"
}

main "$@"
