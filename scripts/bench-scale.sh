#!/usr/bin/env bash
# make bench-scale: memory and restart time of a 3-node raftkv holding many keys.
#
# Starts a 3-node raftkv (release kvnode) on 127.0.0.1, loads BENCH_SCALE_KEYS keys (default
# 1,000,000) of BENCH_SCALE_VALUE bytes (default 256) with `kvctl bench --key-order sequential`
# (many closed-loop clients; each key written once), and reports each node's resident memory
# (VmRSS from /proc) against the raw bytes loaded. Then it stops all three nodes (SIGTERM), starts
# them again and reports the time from the first process start to the first linearizable read
# served, and the memory after the restart. Writes the bench-scale section of
# docs/benchmarks.md and stops everything it started, also on Ctrl-C.
#
# Environment: BENCH_SCALE_KEYS [1000000; e.g. 20000 for a quick try], BENCH_SCALE_VALUE [256],
# BENCH_SCALE_CLIENTS [256], BENCH_CONNECTIONS [8], BENCH_NOTE, BENCH_DIR, BENCH_PORT_BASE.
set -euo pipefail

# shellcheck disable=SC1091  # sourced from this script's own directory
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

KEYS="${BENCH_SCALE_KEYS:-1000000}"
VALUE="${BENCH_SCALE_VALUE:-256}"
CLIENTS="${BENCH_SCALE_CLIENTS:-256}"
# `kvctl bench`'s keys: the default prefix and an 8-digit index.
KEY_BYTES=$((${#KEYS} > 8 ? 6 + ${#KEYS} : 14))

# VmRSS of node ID in MiB.
rss_mib() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/${RAFTKV_PIDS[$1]}/status"
}

# Size of node ID's data directory in MiB.
data_mib() {
  du -sk "$BENCH_DIR/raftkv/node-$1" | awk '{ printf "%.1f", $1 / 1024 }'
}

main() {
  bench_init
  bench_build
  local machine endpoints
  machine=$(machine_description)
  endpoints=$(raftkv_endpoints)
  log "machine: $machine"

  raftkv_start
  log "raftkv up in $(wait_serving "$endpoints")s; loading $KEYS keys x $VALUE B"
  # Before the load: what a node costs with no data (runtime, buffers, code).
  local -A rss_empty
  local id
  for id in 1 2 3; do rss_empty[$id]=$(rss_mib "$id"); done
  local load="$BENCH_DIR/load.json"
  bench_load raftkv "$VALUE" "$CLIENTS" >"$load" \
    || die "the load failed: $(cat "$load")"
  local last_key
  last_key=$(printf 'bench/%08d' $((KEYS - 1)))
  # The last key written is readable once the leader has applied the whole load.
  wait_serving "$endpoints" 300 "$last_key" >/dev/null
  local -A rss_loaded data
  for id in 1 2 3; do
    rss_loaded[$id]=$(rss_mib "$id")
    data[$id]=$(data_mib "$id")
  done

  log "restarting all three nodes"
  for id in 1 2 3; do kill -TERM "${RAFTKV_PIDS[$id]}" 2>/dev/null || true; done
  for id in 1 2 3; do raftkv_stop_node "$id"; done
  local started=$EPOCHREALTIME restart
  for id in 1 2 3; do raftkv_start_node "$id"; done
  restart=$(wait_serving "$endpoints" 600 "$last_key" "$started")
  log "serving a linearizable read ${restart}s after the first process start"
  local -A rss_restarted
  for id in 1 2 3; do rss_restarted[$id]=$(rss_mib "$id"); done
  bench_cleanup
  bench_drop_data

  local raw_mib body="$BENCH_DIR/section.md"
  raw_mib=$(awk -v n="$KEYS" -v k="$KEY_BYTES" -v v="$VALUE" 'BEGIN { printf "%.1f", n * (k + v) / 1048576 }')
  {
    echo "## Memory and restart with many keys (issue 12, \`make bench-scale\`)"
    echo
    [ -z "${BENCH_NOTE:-}" ] || { echo "**$BENCH_NOTE**"; echo; }
    echo "Measured $machine"
    echo
    python3 - "$load" "$KEYS" "$VALUE" "$KEY_BYTES" <<'EOF'
import json, sys
report, keys, value, key_bytes = json.load(open(sys.argv[1])), *sys.argv[2:]
errors = report["errors"]["total"]
print(f"Loaded {int(keys):,} keys of {key_bytes} B with {value}-byte values through "
      f"{report['clients']} closed-loop clients on {report['connections']} connections: "
      f"{report['ops']:,} puts in {report['elapsed_seconds']:.0f} s "
      f"({report['throughput_ops_per_second']:,.0f}/s, p99 {report['latency_ms']['all']['p99']:.1f} ms"
      f"{f', {errors} errors' if errors else ''}).")
EOF
    echo
    echo "| node | RSS empty | RSS after the load | RSS after the restart | data directory | RSS / raw bytes | (RSS − empty) / raw |"
    echo "|---|---|---|---|---|---|---|"
    for id in 1 2 3; do
      printf '| %s | %s MiB | %s MiB | %s MiB | %s MiB | %s× | %s× |\n' "$id" "${rss_empty[$id]}" \
        "${rss_loaded[$id]}" "${rss_restarted[$id]}" "${data[$id]}" \
        "$(awk -v r="${rss_loaded[$id]}" -v b="$raw_mib" 'BEGIN { printf "%.2f", r / b }')" \
        "$(awk -v r="${rss_loaded[$id]}" -v e="${rss_empty[$id]}" -v b="$raw_mib" \
          'BEGIN { printf "%.2f", (r - e) / b }')"
    done
    echo
    echo "Raw bytes (keys + values): $raw_mib MiB. Goal: RSS ≤ 2× raw."
    echo
    echo "Restart: all three nodes stopped with SIGTERM and started again; the first linearizable"
    echo "read of the last key loaded was served **${restart} s** after the first process started"
    echo "(polled every 50 ms with \`kvctl get\`). Goal: under 5 s with 1M keys."
    echo
    local knobs=""
    [ "$KEYS" = 1000000 ] || knobs="BENCH_SCALE_KEYS=$KEYS "
    echo "Reproduce: \`${knobs}make bench-scale\`"
  } >"$body"
  write_section bench-scale "$body"
}

main "$@"
