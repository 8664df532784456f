# Everyday commands. `make test` is the one CI runs (through .ci/run) and the README shows.
.PHONY: build test lint fmt purity sim-replay bench-storage

CARGO ?= cargo

build:
	$(CARGO) build --workspace

# All tests: unit, property, the seeded Raft simulation and the planted-bug runs.
test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-core-purity.sh

fmt:
	$(CARGO) fmt --all

purity:
	scripts/check-core-purity.sh

# Replays one simulation seed with full output: make sim-replay SEED=1234
sim-replay:
	SIM_SEED=$(SEED) $(CARGO) test -p raftkv-raft --test simulation -- --nocapture
