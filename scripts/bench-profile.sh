#!/usr/bin/env bash
# make bench-profile: where the machine's CPU goes while raftkv and etcd each take puts from 128
# closed-loop clients (the put cell of make bench-etcd whose goal is not met), in one run.
#
# For each system in turn (raftkv, then etcd; the other one is idle but running) it starts
# `kvctl bench` (puts, 256 B values), and after a warm-up samples the whole machine with
# `perf record -a` (cpu-clock, so idle time is sampled too) for BENCH_SECONDS. From the samples it
# writes the bench-profile section of docs/benchmarks.md:
#   - puts/s and p99 of each system over the whole run;
#   - the machine's CPU by process (leader, followers, the bench client, the kernel's idle task,
#     the rest) as a share of both cores, and as CPU-ms per 1,000 puts;
#   - the leader's CPU by thread (tokio workers, the storage thread) and its hottest functions,
#     self time, for both systems.
# Installs Debian's linux-perf when perf is missing (and etcd-server, as make bench-etcd does).
#
# Environment (defaults in brackets): BENCH_SECONDS of sampling [10], BENCH_CLIENTS [128],
# BENCH_VALUE_SIZE [256], BENCH_CONNECTIONS [8], BENCH_DIR, BENCH_PORT_BASE, ETCD_PORT_BASE.
set -euo pipefail

# shellcheck disable=SC1091  # sourced from this script's own directory
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

SAMPLE_SECONDS="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-128}"
VALUE_SIZE="${BENCH_VALUE_SIZE:-256}"
WARMUP_SECONDS=3
RESULTS="$BENCH_DIR/results"

# The pid of raftkv's leader, from `kvctl status`.
raftkv_leader_pid() {
  local id
  id=$("$KVCTL" --endpoints "$(raftkv_endpoints)" --json status \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader_id"])') \
    || die "kvctl status failed"
  [ -n "${RAFTKV_PIDS[id]:-}" ] || die "no raftkv leader (leader id '$id')"
  echo "${RAFTKV_PIDS[id]}"
}

# The pid of etcd's leader: the member whose metrics say etcd_server_is_leader 1.
etcd_leader_pid() {
  local i
  for i in 1 2 3; do
    if python3 - "http://127.0.0.1:$((ETCD_PORT_BASE + i))/metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
sys.exit(0 if "etcd_server_is_leader 1" in text else 1)
PY
    then
      echo "${ETCD_PIDS[i]}"
      return 0
    fi
  done
  die "no etcd member says it is the leader"
}

# Profiles TARGET ($1) under load: the bench JSON, the perf data and the roles of the pids.
profile_target() {
  local target=$1 leader pid roles="$RESULTS/$1.roles" bench_pid
  log "loading $KEYS keys into $target"
  bench_load "$target" "$VALUE_SIZE" >/dev/null
  if [ "$target" = raftkv ]; then leader=$(raftkv_leader_pid); else leader=$(etcd_leader_pid); fi
  # The other system's members idle meanwhile; the report counts them with the rest of the machine.
  local mine=("${RAFTKV_PIDS[@]}") others=("${ETCD_PIDS[@]}")
  [ "$target" = raftkv ] || { mine=("${ETCD_PIDS[@]}"); others=("${RAFTKV_PIDS[@]}"); }
  : >"$roles"
  for pid in "${mine[@]}"; do
    if [ "$pid" = "$leader" ]; then
      echo "$pid $target-leader" >>"$roles"
    else
      echo "$pid $target-follower" >>"$roles"
    fi
  done
  for pid in "${others[@]}"; do echo "$pid idle-cluster" >>"$roles"; done
  log "$target: puts from $CLIENTS clients; perf samples the machine for ${SAMPLE_SECONDS}s"
  bench "$target" --value-size "$VALUE_SIZE" --clients "$CLIENTS" --read-ratio 0 \
    --duration "$((WARMUP_SECONDS + SAMPLE_SECONDS + 2))s" >"$RESULTS/$target.json" &
  bench_pid=$!
  sleep "$WARMUP_SECONDS"
  # The bench client is kvctl; its pid is the one bench() started under this shell.
  pgrep -f -- "--target $target" | while read -r pid; do echo "$pid bench-client"; done >>"$roles"
  perf record -q -a -F 997 -o "$RESULTS/$target.perf" -- sleep "$SAMPLE_SECONDS" 2>/dev/null \
    || die "perf record failed"
  wait "$bench_pid" || die "kvctl bench against $target failed"
}

main() {
  if ! command -v perf >/dev/null 2>&1; then
    log "installing linux-perf (Debian) with apt"
    { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; } \
      || die "cannot install linux-perf"
  fi
  bench_init
  bench_build
  mkdir -p "$RESULTS"
  local machine
  machine=$(machine_description)
  log "machine: $machine"
  raftkv_start
  etcd_start
  wait_target raftkv
  wait_target etcd
  profile_target raftkv
  profile_target etcd
  bench_cleanup
  bench_drop_data

  local body="$BENCH_DIR/section.md"
  python3 "$ROOT/scripts/bench-profile-report.py" --results "$RESULTS" --machine "$machine" \
    --seconds "$SAMPLE_SECONDS" --clients "$CLIENTS" --value-size "$VALUE_SIZE" \
    --connections "$CONNECTIONS" >"$body"
  write_section bench-profile "$body"
}

main "$@"
