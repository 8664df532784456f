# Everyday commands. `make test` is the one CI runs (through .ci/run) and the README shows.
.PHONY: run build test lint fmt purity fault sim-replay bench-storage bench-etcd bench-scale bench-tls bench-profile bench-ab image container-e2e crd chart e2e-kind

CARGO ?= cargo

# A local 3-node cluster on 127.0.0.1 (client ports 7001-7003), data in ./raftkv-data.
# Runs in the foreground until Ctrl-C; started again, it resumes on the same data.
run:
	$(CARGO) build --bin kvnode --bin kvctl
	./target/debug/kvctl local up

build:
	$(CARGO) build --workspace

# All tests: unit, property, the seeded Raft simulation and the planted-bug runs. With
# cargo-nextest (installed on this project's machines), tests of different executables run side
# by side (.config/nextest.toml keeps apart what must be), then the doc tests, which nextest does
# not run; without it, cargo test runs everything, one executable after another.
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "make test: cargo nextest run --workspace, then the doc tests"; \
		$(CARGO) nextest run --workspace && $(CARGO) test --workspace --doc; \
	else \
		echo "make test: cargo-nextest is not installed; cargo test --workspace"; \
		$(CARGO) test --workspace; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-core-purity.sh
	scripts/check-module-cycles.py

fmt:
	$(CARGO) fmt --all

purity:
	scripts/check-core-purity.sh

# Appends/s and fsyncs/s of the write-ahead log for batch sizes 1, 16 and 256.
bench-storage:
	$(CARGO) bench -p raftkv-node --bench storage_wal

# raftkv vs etcd side by side (3 + 3 members on 127.0.0.1, the same kvctl bench against both);
# writes its section of docs/benchmarks.md. About 12 min; BENCH_SECONDS=8 per cell by default
# (see the script's header for the other knobs). Installs Debian's etcd-server when missing.
bench-etcd:
	scripts/bench-etcd.sh

# RSS per node with 1M keys x 256 B, and restart-to-serving time; writes its section of
# docs/benchmarks.md. BENCH_SCALE_KEYS=20000 for a quick try.
bench-scale:
	scripts/bench-scale.sh

# Put/s at 128 clients with TLS on both ports vs without, alternating in one run (docs/benchmarks.md).
bench-tls:
	scripts/bench-tls.sh

# The fault-injection suite alone, e.g. make fault FAULT_SEEDS=20 FAULT_SECONDS=60
# (FAULT_SEED=n replays one seed's nemesis schedule; FAULT_KEEP_HISTORY=1 keeps the histories).
fault:
	$(CARGO) test -p raftkv-node --test fault_suite --test fault_planted -- --nocapture

# Replays one simulation seed with full output: make sim-replay SEED=1234
sim-replay:
	SIM_SEED=$(SEED) $(CARGO) test -p raftkv-raft --test simulation -- --nocapture

# Where the CPU goes with puts from 128 clients, raftkv and etcd in one run (perf record -a): by
# process, the leader's threads, layers and hottest functions; writes its section of
# docs/benchmarks.md. About 2 min; installs Debian's linux-perf when perf is missing.
bench-profile:
	scripts/bench-profile.sh

# One change's effect in one run: an earlier build's kvnode/kvctl (BEFORE=DIR) against this tree's
# release build, alternating, puts from 128 clients by default (see the script's header).
bench-ab:
	scripts/bench-ab.sh "$(BEFORE)"

# The images raftkv/kvnode:dev and raftkv/kv-operator:dev (IMAGE=..., OPERATOR_IMAGE=...): from
# source where the Rust image can be pulled, else from release binaries built here on a base made
# offline. Says which path it took and prints each image's size.
IMAGE ?= raftkv/kvnode:dev
OPERATOR_IMAGE ?= raftkv/kv-operator:dev
image:
	scripts/build-image.sh --tag $(IMAGE)
	scripts/build-image.sh --target operator --tag $(OPERATOR_IMAGE)

# The container end-to-end test alone (3 kvnode containers under faults; needs a Docker engine).
container-e2e:
	$(CARGO) test -p raftkv-node --test container_e2e -- --nocapture

# The operator's CRD, generated from operator/src/crd.rs (a test fails when the committed one is stale).
crd:
	$(CARGO) run -q -p raftkv-operator --bin crdgen > charts/raftkv/crds/kvclusters.raftkv.dev.yaml

# Chart checks: helm lint, kubernetes-validate of the chart and of `kv-operator render`, example
# KvClusters against the CRD schema, the e2e workflow's schema. Installs helm into .tools/ and the
# validators into .venv/ when missing.
chart:
	scripts/install-helm.sh
	test -x .venv/bin/check-jsonschema || (python3 -m venv .venv && .venv/bin/pip install -q kubernetes-validate check-jsonschema)
	scripts/check-chart.sh

# The kind end-to-end test (needs docker, kind, kubectl, helm; not runnable on this project's machines).
e2e-kind:
	scripts/e2e-kind.sh
