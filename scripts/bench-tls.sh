#!/usr/bin/env bash
# make bench-tls: what TLS costs. Put/s and latency at 128 clients (8 connections, 256 B values)
# against a 3-node raftkv on 127.0.0.1 without TLS and with TLS on both ports, alternating
# (plain, TLS, plain, TLS, ...) in one run so that drifting background load hits both alike.
# Writes the bench-tls section of docs/benchmarks.md. Stops everything it started, also on Ctrl-C.
#
# Environment: BENCH_SECONDS (per measurement, default 10), BENCH_ROUNDS (default 2),
# BENCH_CLIENTS (default 128), plus bench-common.sh's BENCH_DIR, BENCH_PORT_BASE, BENCH_PROFILE.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

SECONDS_PER=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-128}
RESULTS="$BENCH_DIR/results"

# One measurement against a fresh cluster; $1 is plain or tls, $2 the round. Prints nothing;
# leaves RESULTS/$1-$2.json.
measure() {
  local mode=$1 round=$2
  if [ "$mode" = tls ]; then
    export RAFTKV_TLS_DIR="$BENCH_DIR/certs" RAFTKV_CACERT="$BENCH_DIR/certs/ca.crt" \
      RAFTKV_CERT="$BENCH_DIR/certs/client.crt" RAFTKV_KEY="$BENCH_DIR/certs/client.key"
  else
    unset RAFTKV_TLS_DIR RAFTKV_CACERT RAFTKV_CERT RAFTKV_KEY
  fi
  raftkv_start_fresh
  log "$mode, round $round: put, $CLIENTS clients on $CONNECTIONS connections, ${SECONDS_PER}s"
  bench raftkv --clients "$CLIENTS" --value-size 256 --read-ratio 0 \
    --duration "${SECONDS_PER}s" >"$RESULTS/$mode-$round.json"
  bench_cleanup
}

main() {
  bench_init
  bench_build
  mkdir -p "$RESULTS"
  "$KVCTL" certs --dir "$BENCH_DIR/certs" >/dev/null
  local machine round mode
  machine=$(machine_description)
  log "machine: $machine"
  for round in $(seq "$ROUNDS"); do
    for mode in plain tls; do measure "$mode" "$round"; done
  done
  bench_drop_data

  local body="$BENCH_DIR/section.md"
  {
    echo "## TLS on both ports vs none (issue 13, \`make bench-tls\`)"
    echo
    echo "Measured $machine"
    echo
    echo "Method: a fresh 3-node raftkv ($BENCH_PROFILE \`kvnode\`) on 127.0.0.1 per measurement, without"
    echo "TLS and with TLS on the peer and client ports (certificates from \`kvctl certs\`, ECDSA"
    echo "P-256), alternating in one run; \`kvctl bench\`, $CLIENTS closed-loop clients on"
    echo "$CONNECTIONS connections, puts of 256 B values, ${SECONDS_PER} s each."
    echo
    python3 "$ROOT/scripts/bench-alternate-report.py" "$RESULTS" "$ROUNDS" plain tls plain TLS \
      "TLS/plain put/s"
    echo
    echo "Reproduce: \`make bench-tls\` (BENCH_SECONDS=$SECONDS_PER BENCH_ROUNDS=$ROUNDS)."
  } >"$body"
  write_section bench-tls "$body"
}

main "$@"
