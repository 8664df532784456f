#!/usr/bin/env bash
# make bench-etcd: raftkv and etcd side by side, same machine, same tool, same run.
#
# Starts a 3-node raftkv (kvnode) and a 3-member etcd (Debian's etcd-server, installed with apt
# when missing) on 127.0.0.1, both fsyncing their logs (etcd's default, raftkv always), and runs
# `kvctl bench` against each in turn, cell by cell, over the matrix: puts, linearizable gets and
# LEASE (raftkv) / serializable (etcd) gets; 1, 8, 32, 128, 512 closed-loop clients on at most
# BENCH_CONNECTIONS connections; 256 B and 4 KiB values. Then it writes the bench-etcd section of
# docs/benchmarks.md (table, ratios, goals, machine, command) with a plot per workload of both
# latency distributions (docs/bench/*.svg), and stops everything it started, also on Ctrl-C.
#
# Environment (defaults in brackets): BENCH_SECONDS per cell [8; the default matrix is 60 cells,
# about 12 min], BENCH_CLIENTS ["1 8 32 128 512"], BENCH_VALUE_SIZES ["256 4096"],
# BENCH_KEYS [1000], BENCH_CONNECTIONS [8], BENCH_PLOT_CLIENTS [128: cells drawn as SVG],
# BENCH_NOTE (a sentence put at the top of the section), BENCH_DIR, BENCH_PORT_BASE [27000],
# ETCD_PORT_BASE [22300].
set -euo pipefail

# shellcheck disable=SC1091  # sourced from this script's own directory
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

SECONDS_PER_CELL="${BENCH_SECONDS:-8}"
CLIENTS="${BENCH_CLIENTS:-1 8 32 128 512}"
VALUE_SIZES="${BENCH_VALUE_SIZES:-256 4096}"
PLOT_CLIENTS="${BENCH_PLOT_CLIENTS:-128}"
WORKLOADS="put get-linearizable get-lease"
PLOT_DIR="$ROOT/docs/bench"
RESULTS="$BENCH_DIR/results"

main() {
  bench_init
  bench_build
  mkdir -p "$RESULTS" "$PLOT_DIR"
  rm -f "$PLOT_DIR"/etcd-*.svg
  local machine
  machine=$(machine_description)
  log "machine: $machine"

  raftkv_start
  etcd_start
  log "started raftkv on $(raftkv_endpoints) and etcd on $(etcd_endpoints)"
  wait_target raftkv
  wait_target etcd
  log "etcd $(etcd --version | awk '/etcd Version/ { print $3 }'), both clusters serving"

  local size target workload clients flags plot name
  for size in $VALUE_SIZES; do
    for target in raftkv etcd; do
      log "loading $KEYS keys of $size B into $target"
      bench_load "$target" "$size" >"$RESULTS/load-$target-$size.json"
    done
    for workload in $WORKLOADS; do
      case $workload in
        put) flags=(--read-ratio 0) ;;
        get-linearizable) flags=(--read-ratio 1 --consistency linearizable) ;;
        get-lease) flags=(--read-ratio 1 --consistency lease) ;;
      esac
      for clients in $CLIENTS; do
        # Each cell runs raftkv then etcd back to back, so drifting background load on a shared
        # machine hits both sides of a ratio alike.
        for target in raftkv etcd; do
          name="$workload-$size-$clients-$target"
          plot=()
          # One plot per workload: etcd's run draws raftkv's saved spectrum beside its own.
          if [ "$target" = etcd ] && [ "$clients" = "$PLOT_CLIENTS" ] && [ "$size" = 256 ] \
            && [ -s "$RESULTS/$workload-$size-$clients-raftkv.json" ]; then
            plot=(--plot "$PLOT_DIR/etcd-$workload-$size-$clients.svg"
              --plot-with "$RESULTS/$workload-$size-$clients-raftkv.json")
          fi
          log "$name (${SECONDS_PER_CELL}s)"
          bench "$target" --value-size "$size" --clients "$clients" \
            --duration "${SECONDS_PER_CELL}s" "${flags[@]}" "${plot[@]}" >"$RESULTS/$name.json" \
            || log "$name failed (exit $?); its cell will say so"
        done
      done
    done
  done
  bench_cleanup
  bench_drop_data

  local body="$BENCH_DIR/section.md"
  python3 "$ROOT/scripts/bench-etcd-report.py" --results "$RESULTS" --plots "$PLOT_DIR" \
    --doc-dir "$ROOT/docs" --machine "$machine" --seconds "$SECONDS_PER_CELL" --keys "$KEYS" \
    --connections "$CONNECTIONS" --clients "$CLIENTS" --sizes "$VALUE_SIZES" \
    --workloads "$WORKLOADS" --note "${BENCH_NOTE:-}" >"$body"
  write_section bench-etcd "$body"
}

main "$@"
