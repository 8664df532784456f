#!/usr/bin/env bash
# Makes the runtime base image of the raftkv images offline, from Debian's packages, for machines
# that cannot pull from a container registry (ours: no registry, but Debian's mirror works).
#
#   scripts/make-base-image.sh [TAG]     # default raftkv/base-cc:bookworm; --force rebuilds
#
# The image holds what a Rust binary linked against glibc needs and nothing else: libc6 and
# libgcc-s1 unpacked by `mmdebstrap --variant=extract` (no dpkg, no apt, no shell), plus the
# files distroless' cc image has that a non-root process expects: /etc/passwd and /etc/group
# with root and nonroot (65532), and a world-writable /tmp. The Dockerfile uses it through
# --build-arg RUNTIME_BASE=<TAG> in place of gcr.io/distroless/cc-debian12:nonroot.
#
# Needs root (or fakeroot-less unshare support), mmdebstrap and a Docker engine.
# MMDEBSTRAP_MIRROR overrides the mirror (default: mmdebstrap's, i.e. the machine's apt setup).
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then
  force=1
  shift
fi
tag="${1:-raftkv/base-cc:bookworm}"
suite=bookworm

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already exists (--force to rebuild)"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The customize hook runs on the host with the unpacked tree as $1 (the extract variant has no
# shell inside to chroot into). Docs, man pages and apt's leftovers are of no use in a container.
# shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's shell, not this one
hook='set -e
root="$1"
printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" >"$root/etc/passwd"
printf "root:x:0:\nnonroot:x:65532:\n" >"$root/etc/group"
mkdir -p "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/var/lib/apt" "$root/var/cache/apt" "$root/var/log"/*'

packages=libc6,libgcc-s1
args=(--quiet --variant=extract "--include=$packages" "--customize-hook=$hook" "$suite" "$work/rootfs.tar")
if [ -n "${MMDEBSTRAP_MIRROR:-}" ]; then
  args+=("$MMDEBSTRAP_MIRROR")
fi
mmdebstrap "${args[@]}"

docker import \
  --message "raftkv runtime base: Debian $suite libc6 + libgcc-s1 (mmdebstrap --variant=extract)" \
  "$work/rootfs.tar" "$tag" >/dev/null
size="$(docker image inspect --format '{{.Size}}' "$tag")"
echo "base image $tag: $((size / 1000 / 1000)) MB"
