#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian machine (runc,
# Podman, Docker, a static busybox for container rootfs, nsenter), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v runc >/dev/null || need+=(runc)
command -v podman >/dev/null || need+=(podman)
# tests/docker.rs starts its own dockerd and containerd; /usr/local/bin may hold a newer client
# alone, so look for the daemon.
command -v dockerd >/dev/null || need+=(docker.io)
command -v nsenter >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# The rootfs has no libc: the busybox copied into it must be the static one.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# NVIDIA's toolchain and libraries for the fatbin tests, into the shared download cache.
if [ -x scripts/cuda-tools.sh ]; then
  scripts/cuda-tools.sh
fi

cargo test --locked "$@"
