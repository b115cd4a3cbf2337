#!/usr/bin/env bash
# Install NVIDIA's CUDA toolchain and a few small real CUDA libraries from NVIDIA's Python
# wheels into the shared download cache, for tests/it/fatbin_vs_cuobjdump.rs. Idempotent: each
# package set is installed once, into a versioned directory, and marked complete with a stamp.
#
#   cuda-tools/13.5.37/nvidia/cu13/bin/{nvcc,ptxas,fatbinary,nvlink,cuobjdump}
#   cuda-libs/nvjpeg-13.3.2.43/nvidia/cu13/lib/libnvjpeg.so.13      (CUDA 13, ~4 MB wheel)
#   cuda-libs/nvjpeg-cu12-12.4.0.76/nvidia/nvjpeg/lib/libnvjpeg.so.12 (CUDA 12, ~5 MB wheel)
#   cuda-libs/nvjpeg-cu11-11.9.0.86/nvidia/nvjpeg/lib/libnvjpeg.so.11 (CUDA 11, ~3 MB wheel;
#       carries sm_35 images that cuobjdump 13 refuses to list)
#
# nvjpeg was picked by measured wheel size: curand/nvrtc/cufft wheels are 58-90 MB each.
# With BENCH=1 it also installs nvidia-cublas (libcublasLt.so.13, ~550 MB) for
# scripts/bench-scan.sh; tests never need it.
set -euo pipefail

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
PIP="${PIP:-python3 -m pip}"

install() { # install DIR PIP-ARGS...
    local dir="$1"; shift
    if [[ -f "$dir/.complete" ]]; then
        return 0
    fi
    echo "cuda-tools.sh: installing $* into $dir" >&2
    rm -rf "$dir.partial"
    $PIP install --quiet --disable-pip-version-check --root-user-action=ignore --no-cache-dir --only-binary=:all: --target "$dir.partial" "$@"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
}

mkdir -p "$CACHE/cuda-tools" "$CACHE/cuda-libs"
install "$CACHE/cuda-tools/13.5.37" nvidia-cuda-nvcc==13.5.37 nvidia-cuda-cuobjdump==13.5.37
install "$CACHE/cuda-libs/nvjpeg-13.3.2.43" --no-deps nvidia-nvjpeg==13.3.2.43
install "$CACHE/cuda-libs/nvjpeg-cu12-12.4.0.76" --no-deps nvidia-nvjpeg-cu12==12.4.0.76
install "$CACHE/cuda-libs/nvjpeg-cu11-11.9.0.86" --no-deps nvidia-nvjpeg-cu11==11.9.0.86
if [[ "${BENCH:-0}" == 1 ]]; then
    install "$CACHE/cuda-libs/cublas-13.10.0.20" --no-deps nvidia-cublas==13.10.0.20
fi

# nvcc needs a host compiler; say so here rather than in a confusing test failure.
command -v g++ >/dev/null || echo "cuda-tools.sh: warning: no g++ on PATH; nvcc cannot compile fixtures" >&2
"$CACHE/cuda-tools/13.5.37/nvidia/cu13/bin/nvcc" --version | tail -1
