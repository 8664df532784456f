#!/usr/bin/env bash
# protoc for build scripts that look for it through $PROTOC (etcd-client's, behind kvctl's `etcd`
# feature). .cargo/config.toml points PROTOC here. There is no system protoc on this project's
# machines; the binary shipped inside the `protoc-bin-vendored-*` crate (raftkv-proto's build
# dependency, so cargo has already downloaded it) is used instead, the same one proto/build.rs runs.
set -euo pipefail

case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch_64 ;;
  i?86) arch=x86_32 ;;
  ppc64le) arch=ppcle_64 ;;
  s390x) arch=s390_64 ;;
  *) echo "protoc.sh: no vendored protoc for $(uname -m); set PROTOC to a protoc binary" >&2; exit 1 ;;
esac
case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  *) echo "protoc.sh: no vendored protoc for $(uname -s); set PROTOC to a protoc binary" >&2; exit 1 ;;
esac

registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
found=""
# The highest version wins if several are unpacked (sort -V on the crate directory names).
while IFS= read -r candidate; do
  [ -x "$candidate" ] && found="$candidate"
done < <(compgen -G "$registry/*/protoc-bin-vendored-$os-$arch-*/bin/protoc" | sort -V)

if [ -z "$found" ]; then
  echo "protoc.sh: no protoc-bin-vendored-$os-$arch crate under $registry (run cargo fetch)," \
    "or set PROTOC to a protoc binary" >&2
  exit 1
fi
exec "$found" "$@"
