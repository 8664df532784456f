#!/usr/bin/env bash
# Shared by scripts/bench-etcd.sh and scripts/bench-scale.sh (sourced, not run): release builds,
# a 3-node raftkv cluster of kvnode processes on 127.0.0.1, the machine's description (cores, the
# disk's fsync latency), cleanup of everything started (also on Ctrl-C), and writing one marked
# section of docs/benchmarks.md.
#
# Variables the caller may set before sourcing: BENCH_DIR (data and results; default
# target/bench-data, on the repository's disk rather than a tmpfs, so fsync is real),
# BENCH_PORT_BASE (raftkv clients on BASE+1.., peers on BASE+101..; default 27000) and
# BENCH_PROFILE (release, the default, with the etcd target; or debug, for the CI smoke run),
# BENCH_KVNODE and BENCH_KVCTL (below).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/target/bench-data}"
BENCH_PORT_BASE="${BENCH_PORT_BASE:-27000}"
BENCH_PROFILE="${BENCH_PROFILE:-release}"
# BENCH_KVNODE / BENCH_KVCTL run other binaries than the ones built here (a before/after
# comparison against a saved build); the build still runs.
KVNODE="${BENCH_KVNODE:-$ROOT/target/$BENCH_PROFILE/kvnode}"
KVCTL="${BENCH_KVCTL:-$ROOT/target/$BENCH_PROFILE/kvctl}"
DOC="$ROOT/docs/benchmarks.md"
# Process ids of everything started here, stopped by bench_cleanup.
BENCH_PIDS=()
# Process ids of the raftkv nodes, by node id (1..3).
RAFTKV_PIDS=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Stops every process this script started: SIGTERM, then SIGKILL after 10 s.
bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

# Installs the cleanup on exit and on Ctrl-C/SIGTERM, and makes BENCH_DIR fresh.
bench_init() {
  trap bench_cleanup EXIT
  trap 'log "interrupted"; exit 130' INT TERM
  rm -rf "$BENCH_DIR"
  mkdir -p "$BENCH_DIR"
}

# Removes the clusters' data directories after a finished run (1M keys take a few GB over three
# nodes); the logs and results stay in BENCH_DIR until the next run.
bench_drop_data() {
  rm -rf "$BENCH_DIR"/raftkv/node-*/ "$BENCH_DIR"/etcd/e*/
}

# Builds kvnode and kvctl: release with the etcd target, or debug (BENCH_PROFILE=debug). With
# BENCH_BUILD=0 it builds nothing and uses the binaries in target/ as they are: CI's smoke run
# right after the tests (a `cargo build --bin` there would unify features without the
# dev-dependencies and compile tokio, tonic and the workspace again for the same two binaries).
bench_build() {
  if [ "${BENCH_BUILD:-1}" = 0 ]; then
    [ -x "$KVNODE" ] && [ -x "$KVCTL" ] || die "BENCH_BUILD=0 but $KVNODE or $KVCTL is missing"
    log "using $KVNODE and $KVCTL as built (BENCH_BUILD=0)"
    return 0
  fi
  local flags=(--release --features raftkv-client/etcd)
  [ "$BENCH_PROFILE" = release ] || flags=()
  log "building kvnode and kvctl (cargo build ${flags[*]})"
  (cd "$ROOT" && cargo build "${flags[@]}" --bin kvnode --bin kvctl) || die "build failed"
}

# Whether nothing listens on 127.0.0.1:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the first base from $1 upwards (in steps of 200) whose ports BASE+1..3 and BASE+101..103
# are all free, so that a run does not collide with a cluster someone else left on the defaults.
free_port_base() {
  local base=$1 try id ok
  for try in $(seq 0 20); do
    ok=1
    for id in 1 2 3; do
      if ! port_free $((base + try * 200 + id)) || ! port_free $((base + try * 200 + 100 + id)); then
        ok=0
        break
      fi
    done
    if [ "$ok" = 1 ]; then
      echo $((base + try * 200))
      return 0
    fi
  done
  die "no free ports near $1; set BENCH_PORT_BASE or ETCD_PORT_BASE"
}

# The client endpoints of the raftkv cluster, comma-separated.
raftkv_endpoints() {
  local id list=()
  for id in 1 2 3; do list+=("127.0.0.1:$((BENCH_PORT_BASE + id))"); done
  (IFS=,; echo "${list[*]}")
}

# Starts raftkv node ID (1..3) with its data in BENCH_DIR/raftkv/node-ID; records its pid. With
# RAFTKV_TLS_DIR set (certificates from `kvctl certs --dir`), both ports use TLS.
raftkv_start_node() {
  local id=$1 peers="" i tls=()
  for i in 1 2 3; do peers+="${peers:+,}$i=127.0.0.1:$((BENCH_PORT_BASE + 100 + i))"; done
  local client="127.0.0.1:$((BENCH_PORT_BASE + id))" peer="127.0.0.1:$((BENCH_PORT_BASE + 100 + id))"
  if [ -n "${RAFTKV_TLS_DIR:-}" ]; then
    local d=$RAFTKV_TLS_DIR
    tls=(--peer-cert "$d/node-$id.crt" --peer-key "$d/node-$id.key" --peer-ca "$d/ca.crt"
      --client-cert "$d/node-$id.crt" --client-key "$d/node-$id.key")
  fi
  mkdir -p "$BENCH_DIR/raftkv"
  "$KVNODE" --id "$id" --listen-client "$client" --listen-peer "$peer" --peers "$peers" \
    --data-dir "$BENCH_DIR/raftkv/node-$id" --initial-cluster-size 3 "${tls[@]}" \
    --initial-cluster-token bench --log warn >>"$BENCH_DIR/raftkv/node-$id.log" 2>&1 &
  RAFTKV_PIDS[id]=$!
  BENCH_PIDS+=("$!")
}

# Starts the 3-node raftkv cluster on the first free ports from BENCH_PORT_BASE (which it updates).
raftkv_start() {
  local id
  BENCH_PORT_BASE=$(free_port_base "$BENCH_PORT_BASE")
  for id in 1 2 3; do raftkv_start_node "$id"; done
}

# Starts a fresh 3-node raftkv cluster (its data removed first) and waits until it serves a
# linearizable read; for scripts that measure each configuration on a new cluster.
raftkv_start_fresh() {
  rm -rf "$BENCH_DIR/raftkv"
  raftkv_start
  wait_serving "$(raftkv_endpoints)" 120 >/dev/null
}

# Stops raftkv node ID with SIGTERM and waits for it to exit.
raftkv_stop_node() {
  local pid=${RAFTKV_PIDS[$1]}
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=() p
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  BENCH_PIDS=("${kept[@]}")
}

# Waits (up to $2 seconds, default 120) until a linearizable read of KEY ($3) through ENDPOINTS
# ($1) returns it; without KEY, until a read of a missing key answers "not found" (a leader served
# it). Prints the seconds waited, measured from $4 (an EPOCHREALTIME; default: now).
wait_serving() {
  local endpoints=$1 limit=${2:-120} key=${3:-} start=${4:-$EPOCHREALTIME} rc want=0
  [ -n "$key" ] || { key="bench-ready-probe"; want=1; }
  while :; do
    rc=0
    "$KVCTL" --endpoints "$endpoints" --timeout 1s get "$key" >/dev/null 2>&1 || rc=$?
    # 0 found, 1 definite failure (not found, refused), 3 no answer in time.
    if [ "$rc" -eq "$want" ]; then break; fi
    if awk -v s="$start" -v n="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(n - s > l) }'; then
      die "no linearizable read served by $endpoints within ${limit}s"
    fi
    sleep 0.05
  done
  awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", n - s }'
}

# ----- etcd, the reference (make bench-etcd, make bench-profile) ------------------------------

# ETCD_PORT_BASE [22300]: etcd clients on BASE+1..3, peers on BASE+101..103.
ETCD_PORT_BASE="${ETCD_PORT_BASE:-22300}"
# Keys and connections of every kvctl bench run (`bench` below); callers may set them.
KEYS="${BENCH_KEYS:-1000}"
CONNECTIONS="${BENCH_CONNECTIONS:-8}"

# The client endpoints of the etcd cluster, comma-separated.
etcd_endpoints() {
  local i list=()
  for i in 1 2 3; do list+=("127.0.0.1:$((ETCD_PORT_BASE + i))"); done
  (IFS=,; echo "${list[*]}")
}

# Process ids of the etcd members, by member number (1..3); read by make bench-profile.
ETCD_PIDS=()

# Starts a 3-member etcd (Debian's etcd-server, installed with apt when missing) with its data in
# BENCH_DIR/etcd, on the first free ports from ETCD_PORT_BASE (which it updates).
etcd_start() {
  if ! command -v etcd >/dev/null 2>&1; then
    log "installing etcd-server (Debian) with apt"
    { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; } \
      || die "cannot install etcd-server"
  fi
  local i cluster=""
  ETCD_PORT_BASE=$(free_port_base "$ETCD_PORT_BASE")
  for i in 1 2 3; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_PORT_BASE + 100 + i))"
  done
  mkdir -p "$BENCH_DIR/etcd"
  for i in 1 2 3; do
    local client="http://127.0.0.1:$((ETCD_PORT_BASE + i))"
    local peer="http://127.0.0.1:$((ETCD_PORT_BASE + 100 + i))"
    etcd --name "e$i" --data-dir "$BENCH_DIR/etcd/e$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-token bench --initial-cluster-state new \
      --logger zap --log-level warn >>"$BENCH_DIR/etcd/e$i.log" 2>&1 &
    # shellcheck disable=SC2034  # read by scripts/bench-profile.sh
    ETCD_PIDS[i]=$!
    BENCH_PIDS+=("$!")
  done
}

# Runs one kvctl bench against TARGET ($1); the rest of the arguments are bench flags.
# Prints the JSON report on stdout.
bench() {
  local target=$1 endpoints
  shift
  if [ "$target" = raftkv ]; then endpoints=$(raftkv_endpoints); else endpoints=$(etcd_endpoints); fi
  "$KVCTL" --endpoints "$endpoints" --timeout 10s --json bench --target "$target" \
    --keys "$KEYS" --connections "$CONNECTIONS" "$@"
}

# Writes KEYS keys of SIZE ($2) bytes in key order into TARGET ($1) with CLIENTS ($3, default 32)
# clients, so that every later read finds its key. Prints the JSON report on stdout.
bench_load() {
  bench "$1" --value-size "$2" --key-order sequential --requests "$KEYS" --read-ratio 0 \
    --clients "${3:-32}"
}

# Waits until TARGET answers a linearizable read (up to 120 s).
wait_target() {
  local target=$1
  for _ in $(seq 240); do
    if bench "$target" --clients 1 --requests 1 --read-ratio 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$target did not serve a linearizable read within 120 s (logs in $BENCH_DIR)"
}

# Mean latency of a 4 KiB write + fdatasync, in ms, measured with dd's O_DSYNC in directory $1.
fsync_latency_ms() {
  local file="$1/fsync-probe" count=300 seconds
  seconds=$(dd if=/dev/zero of="$file" bs=4k count=$count oflag=dsync 2>&1 \
    | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) print $(i - 1) }')
  rm -f "$file"
  awk -v s="${seconds:-0}" -v n=$count 'BEGIN { printf "%.2f\n", s * 1000 / n }'
}

# One markdown paragraph describing this machine and this run.
machine_description() {
  local cpu mem fs
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 " on " $1 }')
  printf '%s, %s cores (%s), %s RAM, Linux %s; data on %s, 4 KiB write+fdatasync %s ms ' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "${cpu:-unknown CPU}" "$mem" "$(uname -r)" \
    "$fs" "$(fsync_latency_ms "$BENCH_DIR")"
  printf '(mean of 300, dd oflag=dsync); load average before the run %s; git %s%s.\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git -C "$ROOT" rev-parse --short HEAD)" \
    "$(git -C "$ROOT" diff --quiet HEAD -- . ':!docs' 2>/dev/null || echo ' (with uncommitted changes)')"
}

# Replaces the section NAME of docs/benchmarks.md (between its markers) with the contents of file
# $2; appends the section when the markers are missing. Other sections are left as they are.
write_section() {
  local name=$1 body=$2 begin end
  begin="<!-- $name:begin (generated by scripts/$name.sh; edits here are overwritten) -->"
  end="<!-- $name:end -->"
  python3 - "$DOC" "$begin" "$end" "$body" <<'EOF'
import sys
doc, begin, end, body = sys.argv[1:]
text = open(doc, encoding="utf-8").read()
section = begin + "\n" + open(body, encoding="utf-8").read().rstrip("\n") + "\n" + end
start = text.find(begin.split(" (")[0])
stop = text.find(end)
if start >= 0 and stop > start:
    text = text[:start] + section + text[stop + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w", encoding="utf-8").write(text)
EOF
  log "wrote the $name section of ${DOC#"$ROOT"/}"
}
