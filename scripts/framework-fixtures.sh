#!/usr/bin/env bash
# Real framework libraries for tests/frameworks.rs (issue 21), cut out of their public wheels on
# PyPI with HTTP Range requests (scripts/wheel-member.py: each member checked against the wheel's
# RECORD), then checked here against the sha256 pinned below. Idempotent: each set goes into a
# versioned directory under the shared download cache, marked complete with a stamp; a second run
# touches no network. Layout: $CACHE/frameworks/<wheel>-<version>/<member path>.
#
# What each is for, with what it carries (read with `cuda-preflight scan`, compared with the
# issue's cuobjdump inventory):
#   vllm-0.13.0 (wheel 475 MB; members 577 MB unpacked, ~237 MB fetched):
#     vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so   374 MB  sass sm_80 + ptx compute_80 ISA 8.8 (CUDA
#                                                         12.9): the seed's library; on sm_120 it
#                                                         loads only by JIT, which needs driver >= 575
#     vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so   195 MB  sass sm_90a only (FlashAttention 3)
#     vllm/_flashmla_C.abi3.so                   6.7 MB  sass sm_90a, sm_100a only
#     vllm/_flashmla_extension_C.abi3.so         1.0 MB  sass sm_90a, sm_100a only
#   nvidia-cusparselt-cu12-0.6.2 (torch 2.6.0's pin; wheel 150 MB):
#     cusparselt/lib/libcusparseLt.so.0          213 MB  sass sm_80..sm_90a, ptx compute_52 ISA 8.5
#                                                         (the only image a T4 could use: JIT needs
#                                                         CUDA 12.5, driver >= 555)
#   torch-2.6.0 (cu124, the PyPI default; wheel 767 MB):
#     torch/lib/libtorch_cuda.so                 903 MB  sass sm_50..sm_90a, no PTX: the framework
#                                                         core, nothing for sm_120 (209)
#     torch/lib/libtorch_cuda_linalg.so           96 MB  sass sm_50..sm_90, no PTX (opt-in linalg)
# libtorch_cuda.so is the largest: it is the smallest real core library that fails on a GPU
# (vLLM's _C carries sm_52..sm_120a and loads everywhere it runs).
#
# Needs python3 and sha256sum. About 1.3 GB in the cache; ~1 min on a fast link.
set -euo pipefail

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=https://files.pythonhosted.org/packages

fetch() { # fetch DIR URL "SHA256 MEMBER"...
    local dir="$1" url="$2"; shift 2
    if [[ -f "$dir/.complete" ]]; then
        return 0
    fi
    local members=() sums=()
    for m in "$@"; do
        members+=("${m#* }")
        sums+=("$m")
    done
    echo "framework-fixtures.sh: fetching ${members[*]} from ${url##*/} into $dir" >&2
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    python3 "$HERE/wheel-member.py" "$url" "$dir.partial" "${members[@]}"
    (cd "$dir.partial" && printf '%s\n' "${sums[@]}" | sed 's/ /  /' | sha256sum --quiet -c -) || {
        echo "framework-fixtures.sh: sha256 mismatch in $dir.partial (pinned above)" >&2
        exit 1
    }
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
}

F="$CACHE/frameworks"
mkdir -p "$F"
fetch "$F/vllm-0.13.0" \
    "$PY/46/ae/36f87f514811c1389ff1a16e4e5b0b55f25ce782eb0eff2d7eaa92ff7deb/vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl" \
    "c7601c0fc20914222a0acc222906c506ec194e32fb44c3cd26a5b16b68a8fdb4 vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" \
    "4a3e2e49914634fc43ee130cd0ba8c6ff3b37a29f72d9818c3075c4dff075cf7 vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so" \
    "b933a0a5d5b6859036762987b1c8b04c305f640b2e02bed1751805700175c342 vllm/_flashmla_C.abi3.so" \
    "71c814c13e3b5c096c3f85b66c3d34fd2dad40190ac7613ef297139d8d691474 vllm/_flashmla_extension_C.abi3.so"
fetch "$F/cusparselt-cu12-0.6.2" \
    "$PY/78/a8/bcbb63b53a4b1234feeafb65544ee55495e1bb37ec31b999b963cbccfd1d/nvidia_cusparselt_cu12-0.6.2-py3-none-manylinux2014_x86_64.whl" \
    "42385f413fe87ce1c844b13890f920b66873dbd36030a3b0fd2c143d722f6879 cusparselt/lib/libcusparseLt.so.0"
fetch "$F/torch-2.6.0" \
    "$PY/78/a9/97cbbc97002fff0de394a2da2cdfa859481fdca36996d7bd845d50aa9d8d/torch-2.6.0-cp311-cp311-manylinux1_x86_64.whl" \
    "136a5e4be2aee6e17a38179aeff229f4e0d87c2e43d8ca58e87183df4be73667 torch/lib/libtorch_cuda.so" \
    "83bb6c7010aad5464a62f39304f24632d096d2ce678f3ee08b03a33d1968d9c8 torch/lib/libtorch_cuda_linalg.so"

# BENCH=1: the rest of a vLLM-on-torch tree for scripts/bench-frameworks.sh (about 1.8 GB more):
# vLLM's core _C (sass sm_52..sm_120a) and MoE ops, torch's CPU and Python libraries, cuBLAS 12.4
# (torch 2.6.0's pin).
if [[ "${BENCH:-0}" = 1 ]]; then
    fetch "$F/bench/vllm-0.13.0" \
        "$PY/46/ae/36f87f514811c1389ff1a16e4e5b0b55f25ce782eb0eff2d7eaa92ff7deb/vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl" \
        "b3c752751b6392606bfd2753ed388626d7f1d3d0c4a776a014d2c92280b02bba vllm/_C.abi3.so" \
        "75ba999f25d02f10fe32897cb91aabd96fb71694c9e4a1034695667892d66b8c vllm/_moe_C.abi3.so"
    fetch "$F/bench/torch-2.6.0" \
        "$PY/78/a9/97cbbc97002fff0de394a2da2cdfa859481fdca36996d7bd845d50aa9d8d/torch-2.6.0-cp311-cp311-manylinux1_x86_64.whl" \
        "6a356e5505acb5c4babd7a20c7b470d879cac278f5357b58311af3e65b976d45 torch/lib/libtorch_cpu.so" \
        "99caf7bd0183e53103a28a0d27d6c54e8be338dcf71e4444e51b1c9bf529ef11 torch/lib/libc10_cuda.so" \
        "9e8b46af9a5b5f1bf3200f2aabc3376597f1fb4787a179428e8c91f7253af78d torch/lib/libc10.so" \
        "a5d97e6bd79ef3bed0d038f9847c89441b85f886d8ccce7e5ec96fa344f0381c torch/lib/libtorch.so" \
        "fa1892ad47f909e9ea54f5a6ae653a3a669b1edadfbeb3056baf1d8b031401b0 torch/lib/libtorch_python.so"
    fetch "$F/bench/cublas-cu12-12.4.5.8" \
        "$PY/ae/71/1c91302526c45ab494c23f61c7a84aa568b8c1f9d196efa5993957faf906/nvidia_cublas_cu12-12.4.5.8-py3-none-manylinux2014_x86_64.whl" \
        "4cc45526449a95d3985389785e985b7832460ea3db178bc9e9963be2111fbee8 nvidia/cublas/lib/libcublas.so.12" \
        "44a813aa2da08830f9083f81d0eb73f1ae4052a4d9b0b0de480a8f6cd9eb3078 nvidia/cublas/lib/libcublasLt.so.12" \
        "7c2a58dc54154208392301d0fe3d53a120e4c1ebeab9e80ce91fe9948baeadc9 nvidia/cublas/lib/libnvblas.so.12"
fi
