#!/usr/bin/env bash
# CI's smoke run of `kvctl bench` against a real 3-node cluster (debug builds, a few seconds):
# it must finish with sane JSON (requests succeeded, percentiles in order) and a well-formed SVG
# plot. It checks that the tool works, never how fast anything is.
#
# Environment: BENCH_SMOKE_SECONDS [5], BENCH_PROFILE [debug], BENCH_BUILD [1; CI: 0, the tests'
# binaries as they are], BENCH_DIR, BENCH_PORT_BASE [27500].
set -euo pipefail

export BENCH_PROFILE="${BENCH_PROFILE:-debug}"
export BENCH_PORT_BASE="${BENCH_PORT_BASE:-27500}"
export BENCH_DIR="${BENCH_DIR:-$(dirname "${BASH_SOURCE[0]}")/../target/bench-smoke}"
# shellcheck disable=SC1091  # sourced from this script's own directory
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

main() {
  bench_init
  bench_build
  raftkv_start
  local endpoints
  endpoints=$(raftkv_endpoints)
  log "cluster serving after $(wait_serving "$endpoints")s"
  "$KVCTL" --endpoints "$endpoints" --json bench --clients 8 --connections 2 \
    --duration "${BENCH_SMOKE_SECONDS:-5}s" --read-ratio 0.5 --plot "$BENCH_DIR/smoke.svg" \
    >"$BENCH_DIR/smoke.json" || die "kvctl bench failed: $(cat "$BENCH_DIR/smoke.json")"
  bench_cleanup
  bench_drop_data
  python3 - "$BENCH_DIR/smoke.json" "$BENCH_DIR/smoke.svg" <<'PY'
import json, sys
import xml.etree.ElementTree as ET

report = json.load(open(sys.argv[1]))
assert report["ops"] > 0, report
assert report["throughput_ops_per_second"] > 0, report
for op in ("all", "read", "write"):
    latency = report["latency_ms"][op]
    figures = [latency[q] for q in ("p50", "p90", "p99", "p999", "max")]
    assert figures[0] > 0 and figures == sorted(figures), (op, figures)
root = ET.parse(sys.argv[2]).getroot()
assert root.tag.endswith("svg"), root.tag
print(f"bench smoke: {report['ops']} ops, {report['errors']['total']} errors, "
      f"p50 {report['latency_ms']['all']['p50']:.2f} ms (debug build; not a measurement)")
PY
  log "bench smoke passed"
}

main "$@"
