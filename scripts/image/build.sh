#!/usr/bin/env bash
# Builds the local node image: a Debian 13 (trixie) root file system holding what Hetzner's
# `debian-13` image holds (systemd, cloud-init, openssh-server) plus, unless NODE_PACKAGES is
# empty, the packages the node's user data installs, so a local node's first boot takes seconds
# instead of a download of every package. local/image.ts calls it and caches the result by the
# hash of these scripts and of the package lists; run it by hand only to debug a build.
#
# usage: build.sh TARGET_DIR BASE_PACKAGES NODE_PACKAGES   (lists comma-separated)
# KEEP_DEBS=1 keeps the packages apt downloaded for NODE_PACKAGES in TARGET_DIR/var/cache/apt/archives
# (a test serves them as the apt repository of a node booted from the base image).
set -euo pipefail

target=$1
base_packages=$2
node_packages=$3
here=$(cd "$(dirname "$0")" && pwd)
mirror=${MADBASE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${MADBASE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: run as root" >&2
  exit 1
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "build-image: mmdebstrap is missing: bash scripts/setup-debian.sh installs it" >&2
  exit 1
fi

include=$base_packages
if [ -n "$node_packages" ]; then include="$include,$node_packages"; fi
skip=()
if [ "${KEEP_DEBS:-0}" = 1 ]; then skip=(--skip=cleanup/apt/cache); fi

partial="$target.partial"
rm -rf "$partial"
# The hooks run as `sh -c CMD exec ROOT`: "$1" is the root being built.
# shellcheck disable=SC2016
mmdebstrap --variant=apt --mode=root --format=directory "${skip[@]}" \
  --include="$include" \
  --essential-hook="sh $here/essential-hook.sh \"\$1\"" \
  --customize-hook="sh $here/customize-hook.sh \"\$1\"" \
  trixie "$partial" \
  "deb $mirror trixie main" \
  "deb $mirror trixie-updates main" \
  "deb $security trixie-security main"
rm -rf "$target"
mv "$partial" "$target"
echo "build-image: $target ($(du -sh "$target" | cut -f1))"
