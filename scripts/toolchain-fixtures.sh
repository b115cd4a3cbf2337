#!/usr/bin/env bash
# Real JIT toolchains for tests/it/toolchains.rs, cut out of NVIDIA's and Triton's wheels on PyPI.
# A Triton wheel is 155-285 MB; only its ptxas (~30 MB) and triton/__init__.py are fetched, with
# HTTP Range requests on the zip (scripts/wheel-member.py, stdlib only, every member checked
# against the wheel's RECORD sha256). Idempotent: each set goes into a versioned directory under
# the shared download cache, marked complete with a stamp.
#
#   toolchains/triton-3.0.0/triton/backends/nvidia/bin/ptxas          CUDA 12.4.99: no sm_100/sm_120
#   toolchains/triton-3.3.0/triton/backends/nvidia/bin/ptxas          CUDA 12.4.99, below sm_100
#   toolchains/triton-3.3.0/triton/backends/nvidia/bin/ptxas-blackwell CUDA 12.8.61, sm_100 and newer
#   toolchains/triton-3.5.1/triton/backends/nvidia/bin/ptxas          CUDA 12.8.93
#   toolchains/nvrtc-cu12-12.4.127/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 CUDA 12.4.127 (60 MB; 24 MB wheel)
#
# The CUDA versions above were read from the files ("Cuda compilation tools, release …").
set -euo pipefail

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=https://files.pythonhosted.org/packages

fetch() { # fetch DIR URL MEMBER...
    local dir="$1" url="$2"; shift 2
    if [[ -f "$dir/.complete" ]]; then
        return 0
    fi
    echo "toolchain-fixtures.sh: fetching $* from ${url##*/} into $dir" >&2
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    python3 "$HERE/wheel-member.py" "$url" "$dir.partial" "$@"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
}

T=toolchains
mkdir -p "$CACHE/$T"
fetch "$CACHE/$T/triton-3.0.0" \
    "$PY/33/3e/a2f59384587eff6aeb7d37b6780de7fedd2214935e27520430ca9f5b7975/triton-3.0.0-1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl" \
    triton/__init__.py triton/backends/nvidia/bin/ptxas
fetch "$CACHE/$T/triton-3.3.0" \
    "$PY/3c/c5/4874a81131cc9e934d88377fbc9d24319ae1fb540f3333b4e9c696ebc607/triton-3.3.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" \
    triton/__init__.py triton/backends/nvidia/bin/ptxas triton/backends/nvidia/bin/ptxas-blackwell
fetch "$CACHE/$T/triton-3.5.1" \
    "$PY/b0/72/ec90c3519eaf168f22cb1757ad412f3a2add4782ad3a92861c9ad135d886/triton-3.5.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" \
    triton/__init__.py triton/backends/nvidia/bin/ptxas
fetch "$CACHE/$T/nvrtc-cu12-12.4.127" \
    "$PY/2c/14/91ae57cd4db3f9ef7aa99f4019cfa8d54cb4caa7e00975df6467e9725a9f/nvidia_cuda_nvrtc_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl" \
    nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.4 \
    nvidia_cuda_nvrtc_cu12-12.4.127.dist-info/METADATA
