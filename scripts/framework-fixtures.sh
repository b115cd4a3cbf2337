#!/usr/bin/env bash
# Real framework libraries for tests/it/frameworks.rs (issue 21), cut out of their public wheels on
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
#   nvidia-nccl-cu12-2.21.5 (torch 2.6.0's pin; wheel 188 MB):
#     nvidia/nccl/lib/libnccl.so.2               252 MB  sass sm_50..sm_90, no PTX: nothing for
#                                                         sm_120, launched only by multi-GPU
#                                                         collectives
# libtorch_cuda.so is the largest: it is the smallest real core library that fails on a GPU
# (vLLM's _C carries sm_52..sm_120a and loads everywhere it runs).
#
# Needs python3 and sha256sum. About 1.6 GB in the cache; ~1 min on a fast link.
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
fetch "$F/nccl-cu12-2.21.5" \
    "$PY/df/99/12cd266d6233f47d00daf3a72739872bdc10267d0383508b0b9c84a18bb6/nvidia_nccl_cu12-2.21.5-py3-none-manylinux2014_x86_64.whl" \
    "78df2f31f6db8142ec546a1e5a31cb066f7892d12d2f665b448f8069a08ef807 nvidia/nccl/lib/libnccl.so.2"

# BENCH=1: the rest of a vLLM-on-torch tree for scripts/bench-frameworks.sh (about 3.7 GB more):
# vLLM's core _C (sass sm_52..sm_120a) and MoE ops, torch's CPU and Python libraries, and the
# NVIDIA wheels torch 2.6.0 pins (cuBLAS 12.4.5.8, cuDNN 9.1.0.70, cuSPARSE, cuFFT, cuRAND,
# cuSOLVER, nvJitLink, the CUDA 12.4 runtime, CUPTI), so the tree is a whole install.
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
    fetch "$F/bench/cudnn-cu12-9.1.0.70" \
        "$PY/9f/fd/713452cd72343f682b1c7b9321e23829f00b842ceaedcda96e742ea0b0b3/nvidia_cudnn_cu12-9.1.0.70-py3-none-manylinux2014_x86_64.whl" \
        "74a4c495a26d5104150241e84a10842442c024c129cdc274ad8b6a7a8794980e nvidia/cudnn/lib/libcudnn.so.9" \
        "be8174726a8d152bcf6e136b2d1f81763876deb1d2b7329bbc7d2a52635b0202 nvidia/cudnn/lib/libcudnn_adv.so.9" \
        "3f8c3b8f7c994be7fb1ce60bd567a2b49e169891d3515cc1e59533e9703b6f2c nvidia/cudnn/lib/libcudnn_cnn.so.9" \
        "ee54836e8a3d0480f2ab54118770a97cb7f02f1f428d5a5d0471c6b89b90cfcc nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9" \
        "519ff41513a3a8155f430f085acc58a5f85dc16c865b8287d5482409507ee2c0 nvidia/cudnn/lib/libcudnn_engines_runtime_compiled.so.9" \
        "8fd845207c7477700e56a0395a4a746a0dc6181358535080240819bb67f1a138 nvidia/cudnn/lib/libcudnn_graph.so.9" \
        "94fab98c15040558c3c80f2c1a2f5fda9baa72afc39a88bdcc82185f49d241c3 nvidia/cudnn/lib/libcudnn_heuristic.so.9" \
        "242b9dba953ae2e4878d66032624135a9118a1616ca24588ed586d4bcc475c69 nvidia/cudnn/lib/libcudnn_ops.so.9"
    fetch "$F/bench/cusparse-cu12-12.3.1.170" \
        "$PY/db/f7/97a9ea26ed4bbbfc2d470994b8b4f338ef663be97b8f677519ac195e113d/nvidia_cusparse_cu12-12.3.1.170-py3-none-manylinux2014_x86_64.whl" \
        "cb4288c965453a8020653c0fd92cdfcd12bb5a646843d663e9d4e5f520f8915c nvidia/cusparse/lib/libcusparse.so.12"
    fetch "$F/bench/cufft-cu12-11.2.1.3" \
        "$PY/27/94/3266821f65b92b3138631e9c8e7fe1fb513804ac934485a8d05776e1dd43/nvidia_cufft_cu12-11.2.1.3-py3-none-manylinux2014_x86_64.whl" \
        "f3921c4133925242459ebfdbf7901db4ebfae6bbcfff9dc5ce53b1ff13fb42ff nvidia/cufft/lib/libcufft.so.11" \
        "2307a5acfccc9b40f989384038218cfead564cd43633701d30c893047e744f44 nvidia/cufft/lib/libcufftw.so.11"
    fetch "$F/bench/curand-cu12-10.3.5.147" \
        "$PY/8a/6d/44ad094874c6f1b9c654f8ed939590bdc408349f137f9b98a3a23ccec411/nvidia_curand_cu12-10.3.5.147-py3-none-manylinux2014_x86_64.whl" \
        "dab8074b610b82a863a42eceda788e9b08364b545bab948509306b48c46018cf nvidia/curand/lib/libcurand.so.10"
    fetch "$F/bench/cusolver-cu12-11.6.1.9" \
        "$PY/3a/e1/5b9089a4b2a4790dfdea8b3a006052cfecff58139d5a4e34cb1a51df8d6f/nvidia_cusolver_cu12-11.6.1.9-py3-none-manylinux2014_x86_64.whl" \
        "b320ec4c2861b35f927221dacbc947aab804509902487be466701278d6e50ad6 nvidia/cusolver/lib/libcusolver.so.11" \
        "47662749a295f771b92abe8d99dcd5f151953d56069a19f43977b97868ec21eb nvidia/cusolver/lib/libcusolverMg.so.11"
    fetch "$F/bench/nvjitlink-cu12-12.4.127" \
        "$PY/ff/ff/847841bacfbefc97a00036e0fce5a0f086b640756dc38caea5e1bb002655/nvidia_nvjitlink_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl" \
        "cbd1488bbef82b8d64c2dd51a9b6aef3f6b0bc3a7a80a9821be48d1c07f700e7 nvidia/nvjitlink/lib/libnvJitLink.so.12"
    fetch "$F/bench/cuda-runtime-cu12-12.4.127" \
        "$PY/ea/27/1795d86fe88ef397885f2e580ac37628ed058a92ed2c39dc8eac3adf0619/nvidia_cuda_runtime_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl" \
        "8774224f5b11a73b15d074a3fcce7327322c5c4cfdfd924d6a826779eec968fe nvidia/cuda_runtime/lib/libcudart.so.12"
    fetch "$F/bench/cuda-cupti-cu12-12.4.127" \
        "$PY/67/42/f4f60238e8194a3106d06a058d494b18e006c10bb2b915655bd9f6ea4cb1/nvidia_cuda_cupti_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl" \
        "7024c007bfd436abe853bcca3021e4925726335186af76ad666668664b1d00a3 nvidia/cuda_cupti/lib/libcheckpoint.so" \
        "fb2a7c5b15c84df9505dd47e553fe46f3121a57d30391fca24179d202f73f3f7 nvidia/cuda_cupti/lib/libcupti.so.12" \
        "b59b26b1d35d02293c8dd8956aba3757c1466b71732c6687aba412c50d950b69 nvidia/cuda_cupti/lib/libnvperf_host.so" \
        "ced37734a9dfffd5f2128832b878f2380713bea6019fa944d29b317a33d3798c nvidia/cuda_cupti/lib/libnvperf_target.so" \
        "6436346c418bcf2fa9037c9f16d73a8dfbe8f82bbcbd6c1409061ab4626b6f44 nvidia/cuda_cupti/lib/libpcsamplingutil.so"
fi
