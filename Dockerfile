# raftkv container images: one file, one target per image (DESIGN §2, §6).
#
#   docker build --target node -t raftkv/kvnode:dev .   # from source: needs a container registry
#   make image                                         # takes whichever path works here
#
# Targets:
#   node       kvnode + kvctl, compiled from source in the `builder` stage.
#   node-host  the same runtime stage (`node-base`) with kvnode + kvctl compiled on the host and
#              handed in as an image (--build-arg HOST_BINARIES=<image>, see
#              scripts/build-image.sh). For machines that cannot pull the Rust image.
#   operator       kv-operator, compiled from source in the `builder` stage.
#   operator-host  the same with kv-operator compiled on the host (like node-host).
#
# Stage order matters. Docker's classic builder (no BuildKit) builds every stage up to the
# requested target, in file order. So every stage that `node-host` needs comes first and pulls
# nothing beyond RUNTIME_BASE, and the stages that need the Rust image come after it.
#
# Only classic-builder syntax: no `RUN --mount`, no heredocs.

# The runtime base: glibc and libgcc, a nonroot user 65532, no shell, no package manager.
# scripts/make-base-image.sh makes an equivalent image offline from Debian's packages.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG RUST_IMAGE=rust:1.95-slim-bookworm
# An image with kvnode and kvctl in /usr/local/bin/, for `node-host`. The default, the empty
# skeleton, lets a classic builder pass through `node-host` on its way to `node`.
ARG HOST_BINARIES=skeleton

# ---- skeleton: the directories the runtime needs, made without a shell ----------------------
FROM scratch AS skeleton
WORKDIR /usr/local/bin
WORKDIR /var/lib/raftkv

FROM ${HOST_BINARIES} AS host-binaries

# ---- node-base: the node's runtime stage, everything but the binaries -----------------------
FROM ${RUNTIME_BASE} AS node-base
# A named volume (or a PVC with fsGroup 65532) starts with this directory's owner, so the
# non-root node can write to it.
COPY --from=skeleton --chown=65532:65532 /var/lib/raftkv /var/lib/raftkv
USER 65532:65532
WORKDIR /var/lib/raftkv
# 7001 clients (Kv, Cluster, gRPC health), 7101 peers (Raft), 9100 metrics (--listen-metrics).
EXPOSE 7001 7101 9100
VOLUME ["/var/lib/raftkv"]
# kvnode is PID 1 and handles SIGTERM itself (a leader hands off first), so no init is needed:
# it starts no children to reap. The StatefulSet passes the flags as args, e.g.
#   --discovery dns:kv-headless.default.svc.cluster.local --initial-cluster-size 3
#   --initial-cluster-token <uid> --listen-client 0.0.0.0:7001 --listen-peer 0.0.0.0:7101
#   --listen-metrics 0.0.0.0:9100 --data-dir /var/lib/raftkv/data
ENTRYPOINT ["/usr/local/bin/kvnode"]
CMD ["--help"]

# ---- node-host: the runtime with binaries built on the host --------------------------------
FROM node-base AS node-host
COPY --from=host-binaries /usr/local/bin/ /usr/local/bin/

# ---- operator-base / operator-host: the operator's runtime, and with a host-built binary -----
FROM ${RUNTIME_BASE} AS operator-base
USER 65532:65532
# 8080: /metrics, /healthz, /readyz. The chart passes `run` and its flags as args.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kv-operator"]
CMD ["--help"]

FROM operator-base AS operator-host
COPY --from=host-binaries /usr/local/bin/ /usr/local/bin/

# ---- builder: compiles the workspace's binaries (needs the Rust image) ----------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Symbols are of no use in the image and make up most of a release binary's size.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# protoc comes from a crate (protoc-bin-vendored): no system package is needed.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY node node
COPY client client
COPY operator operator
RUN cargo build --release --locked --bin kvnode --bin kvctl --bin kv-operator \
 && mkdir -p /out/node /out/operator \
 && cp target/release/kvnode target/release/kvctl /out/node/ \
 && cp target/release/kv-operator /out/operator/

# ---- node: the runtime with binaries built from source --------------------------------------
FROM node-base AS node
COPY --from=builder /out/node/ /usr/local/bin/

# ---- operator: the operator's runtime with kv-operator built from source ---------------------
FROM operator-base AS operator
COPY --from=builder /out/operator/ /usr/local/bin/
