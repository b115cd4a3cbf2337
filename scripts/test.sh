#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian machine (runc,
# Podman, Docker, a static busybox for container rootfs, nsenter), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v runc >/dev/null || need+=(runc)
command -v podman >/dev/null || need+=(podman)
# tests/it/docker.rs and tests/it/image.rs start their own dockerd and containerd (the harness in
# tests/it/common/dockerd.rs: nothing here starts or configures one); /usr/local/bin may hold a newer
# client alone, so look for the daemon.
command -v dockerd >/dev/null || need+=(docker.io)
command -v nsenter >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# tests/it/nri.rs: xz unpacks the node stack's binaries and NVIDIA's hook; gcc + libc6-dev build the
# node's pause image and the test-double libcuda.
command -v xz >/dev/null || need+=(xz-utils)
command -v gcc >/dev/null || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
# tests/it/fleet.rs: a real OCI registry (distribution 2.8), skopeo to push images to it, openssl
# for the webhook's certificate, curl, and xz for the control plane's binaries. The control plane
# itself (kube-apiserver, etcd, scheduler, controller-manager, nfd-master) comes from
# CUDA_PREFLIGHT_K8S_CONTROL (default ../shared/k8s-control): nothing here downloads it.
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# The rootfs has no libc: the busybox copied into it must be the static one.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# tests/it/nvidia_cdi.rs unpacks NVIDIA's toolkit binaries (.xz) and builds its test-double driver.
command -v xz >/dev/null || need+=(xz-utils)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# NVIDIA's toolchain and libraries for the fatbin tests, into the shared download cache.
if [ -x scripts/cuda-tools.sh ]; then
  scripts/cuda-tools.sh
fi
scripts/toolchain-fixtures.sh  # Triton's ptxas and NVRTC cut out of their wheels (tests/it/toolchains.rs, ~11 s)
scripts/load-fixtures.sh >/dev/null  # Debian packages and runtime wheels for tests/it/image_load.rs (11 MB, ~5 s)
scripts/framework-fixtures.sh  # vLLM, torch and cuSPARSELt libraries cut out of their wheels for tests/it/frameworks.rs (1.3 GB, ~1 min)

# The Kubernetes schema validator (tests/it/kubernetes.rs), into the shared download cache (~1 min).
scripts/kubernetes-validate.sh

# cargo-deb for tests/it/deb_install.rs, once into the shared cache when missing (69 crates, 3 min).
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
export PATH="$CACHE/cargo-tools/bin:$PATH"
if ! command -v cargo-deb >/dev/null; then
  echo "scripts/test.sh: installing cargo-deb into $CACHE/cargo-tools" >&2
  cargo install --locked --quiet --root "$CACHE/cargo-tools" cargo-deb@3.8.0
fi

# NVIDIA's container toolkit built from its source (nvidia-container-runtime, nvidia-cdi-hook as
# .xz with SHA256SUMS) for tests/it/nvidia_cdi.rs: one variable names it; this workplace keeps it
# next to the repository. A test that cannot find it fails.
export CUDA_PREFLIGHT_NVIDIA_TOOLKIT="${CUDA_PREFLIGHT_NVIDIA_TOOLKIT:-$(cd .. && pwd)/shared/nvidia-toolkit}"
echo "scripts/test.sh: NVIDIA container toolkit from $CUDA_PREFLIGHT_NVIDIA_TOOLKIT (CUDA_PREFLIGHT_NVIDIA_TOOLKIT)" >&2
# tests/it/nri.rs runs a real containerd + NRI + crictl (CUDA_PREFLIGHT_K8S_NODE; unset: ../shared/k8s-node
# from the repository root) with NVIDIA's nvidia-cdi-hook (the toolkit above).
echo "scripts/test.sh: Kubernetes node stack: ${CUDA_PREFLIGHT_K8S_NODE:-$PWD/../shared/k8s-node}" >&2

cargo test --locked "$@"

# Opt-in: the .rpm build and check. Installing cargo-generate-rpm compiles 219 crates (14 min on
# a loaded 2-core machine), too long for every run.
if [ "${CUDA_PREFLIGHT_RPM:-0}" = 1 ]; then
  PROFILE=dev NO_BUILD=1 scripts/package-rpm.sh
fi
