#!/usr/bin/env bash
# Builds the node image (the Dockerfile's runtime stage with kvnode and kvctl) or, with
# `--target operator`, the operator image (kv-operator); `make image` builds both.
#
#   scripts/build-image.sh [--target node|operator] [--tag TAG] [--from-host DIR]
#
# Two paths, and it says which one it took:
# - from source: when the Rust image (RUST_IMAGE) and the runtime base (the Dockerfile's default)
#   are present or can be pulled, `docker build --target node`, exactly as the README shows;
# - from the host: otherwise (no registry), the runtime base is made offline from Debian's
#   packages (scripts/make-base-image.sh), the binaries are built here with
#   `cargo build --release`, stripped, handed to Docker as an image made by `docker import`, and
#   the Dockerfile's `node-host` (or `operator-host`) target puts them on the same runtime stage.
#   Nothing is pulled. `--from-host DIR` takes the binaries from DIR instead of building them (the
#   container tests use it with the binaries cargo built for them).
# Then it runs `--version` in the image and prints the image's user and size.
set -euo pipefail
cd "$(dirname "$0")/.."

target=node
tag=""
from_host=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --from-host) from_host="$2"; shift 2 ;;
    *) echo "usage: $0 [--target node|operator] [--tag TAG] [--from-host DIR]" >&2; exit 2 ;;
  esac
done
case "$target" in
  node) bins=(kvnode kvctl); tag="${tag:-raftkv/kvnode:dev}" ;;
  operator) bins=(kv-operator); tag="${tag:-raftkv/kv-operator:dev}" ;;
  *) echo "--target is node or operator, not $target" >&2; exit 2 ;;
esac
rust_image="${RUST_IMAGE:-rust:1.95-slim-bookworm}"
# Must match the Dockerfile's default RUNTIME_BASE: the source path uses that default.
registry_base="gcr.io/distroless/cc-debian12:nonroot"
offline_base="${OFFLINE_BASE:-raftkv/base-cc:bookworm}"

have_image() {
  docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1
}

started=$SECONDS
if [ -z "$from_host" ] && have_image "$rust_image" && have_image "$registry_base"; then
  echo "==> path: from source (docker build --target $target; $rust_image is available)"
  # --force-rm: a failed RUN step leaves no stopped container behind (the classic builder would).
  docker build --force-rm --target "$target" --build-arg "RUST_IMAGE=$rust_image" -t "$tag" .
else
  if [ -z "$from_host" ]; then
    echo "==> path: from the host ($rust_image cannot be pulled here): cargo build --release," \
      "then the Dockerfile's $target-host target on an offline base"
    bin_flags=()
    for bin in "${bins[@]}"; do bin_flags+=(--bin "$bin"); done
    cargo build --release --locked "${bin_flags[@]}"
    from_host=target/release
  else
    echo "==> path: from the host, binaries from $from_host (Dockerfile target $target-host)"
  fi
  scripts/make-base-image.sh "$offline_base"

  work="$(mktemp -d)"
  bin_image="raftkv/$target-host-binaries:$$"
  cleanup() {
    rm -rf "$work"
    docker image rm "$bin_image" >/dev/null 2>&1 || true
  }
  trap cleanup EXIT
  mkdir -p "$work/root/usr/local/bin" "$work/context"
  for bin in "${bins[@]}"; do
    strip -o "$work/root/usr/local/bin/$bin" "$from_host/$bin"
    chmod 0755 "$work/root/usr/local/bin/$bin"
  done
  tar -C "$work/root" --owner=0 --group=0 --numeric-owner -cf - usr | docker import - "$bin_image" >/dev/null
  # The -host targets take nothing from the build context: an empty one keeps the upload at zero.
  docker build --target "$target-host" \
    --build-arg "RUNTIME_BASE=$offline_base" \
    --build-arg "HOST_BINARIES=$bin_image" \
    -f Dockerfile -t "$tag" "$work/context"
fi

version="$(docker run --rm "$tag" --version)"
user="$(docker image inspect --format '{{.Config.User}}' "$tag")"
size="$(docker image inspect --format '{{.Size}}' "$tag")"
echo "==> $tag: $version, user $user, size $((size / 1000 / 1000)) MB ($size bytes), built in $((SECONDS - started))s"
