#!/usr/bin/env bash
# Real packages for tests/it/image_load.rs (issue 14, "image load checks"), into the shared
# download cache. Idempotent: each package is fetched once into a versioned directory, unpacked
# there, and marked complete with a stamp; a second run touches no network.
#
# Layout ($CACHE = ${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}):
#   $CACHE/load-fixtures/v1/deb/<suite>/<package>/{VERSION,*.deb,root/...,.complete}
#   $CACHE/load-fixtures/v1/wheel/<name>-<version>/{nvidia/...,.complete}
#
# What each package is for, with the version and .deb/.whl size measured on 2026-11-23:
#
#   Debian 13 trixie (deb.debian.org):
#     libc6                   2.41-12+deb13u4                2,846,580 B  loader, libc (GLIBC_2.41)
#     libstdc++6              14.2.0-19                         713,628 B  defines up to GLIBCXX_3.4.33
#     libgcc-s1               14.2.0-19                          72,772 B
#     libcudart12 (non-free)  12.4.127~12.4.1-2                 176,216 B  libcudart.so.12 in
#                                                                           /usr/lib/x86_64-linux-gnu
#     libstdgpu-cuda0d        1.3.0+git20220507.32e0517-3        23,116 B  the consumer: a real C++
#       (contrib)               library, DT_NEEDED libcudart.so.12 + libstdc++.so.6, needs GLIBCXX_3.4.32
#     libhwloc-contrib-plugins 2.12.0-3                          13,028 B  hwloc_cuda.so: a real C
#       (contrib)               plugin, DT_NEEDED libcudart.so.12, needs GLIBC_2.38
#   Debian 12 bookworm (deb.debian.org), the "old" image:
#     libc6                   2.36-9+deb12u14                2,759,320 B  GLIBC up to 2.36
#     libstdc++6              12.2.0-14+deb12u1                 612,604 B  GLIBCXX up to 3.4.30
#     libgcc-s1               12.2.0-14+deb12u1                  49,856 B
#   PyPI (NVIDIA's runtime wheels), the pip-installed runtimes:
#     nvidia-cuda-runtime-cu12 12.9.79   3.5 MB  nvidia/cuda_runtime/lib/libcudart.so.12 (12.9)
#     nvidia-cuda-runtime-cu11 11.8.89   0.9 MB  nvidia/cuda_runtime/lib/libcudart.so.11.0 (11.8)
#
# Total about 11 MB. Why these: a CUDA-using library with a real DT_NEEDED on libcudart is rare
# among small wheels. Measured and rejected (no DT_NEEDED on any CUDA library: they dlopen it or
# link cudart statically): jax-cuda12-plugin 0.12.0.1 (8.9 MB), nvidia-nvimgcodec-cu12, cucim-cu12,
# nvidia-nvcomp-cu12, nvidia-cudnn-frontend, cuquantum-python-cu12, rmm-cu12, numba-cuda,
# nvidia-nvjpeg2k/nvtiff/cupti-cu12; cuda-cccl needs libnvrtc/libnvJitLink with no RPATH;
# bitsandbytes 0.50.2 (43 MB) has RUNPATH /usr/local/cuda-12.x and needs cuBLAS (~600 MB);
# torchvision needs libtorch; cupy-cuda12x is 135 MB; torch ~800 MB. Debian contrib has real
# consumers linked against libcudart.so.12 that are a few KB, built with GCC 14, so the same
# consumer loads on trixie's libstdc++ and fails on bookworm's — the GLIBCXX case for real.
# The RPATH/RUNPATH-to-wheel cases (an extension module at the top of site-packages with
# `$ORIGIN/nvidia/cuda_runtime/lib`, flash-attn's layout) are small libraries the tests build
# with cc against the wheels' real libcudart, as is the dlopen probe the image's loader runs.
# The cu11 wheel's runtime (soname libcudart.so.11.0) is 11.8.89.
#
# A .deb is the suite's current version when first fetched (a point release drops the old one
# from the pool), recorded in its VERSION file; the tests rely only on what the suites fix (GCC
# 14 vs 12, glibc 2.41 vs 2.36, CUDA 12.4 in trixie). The wheels are pinned.
#
# Prints where everything is. Needs curl, xz, dpkg-deb and pip.
set -euo pipefail

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
BASE="$CACHE/load-fixtures/v1"
PIP="${PIP:-python3 -m pip}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

mkdir -p "$BASE/deb" "$BASE/wheel"
# Packages indexes (~100 MB unpacked) live only for this run.
IDX="$(mktemp -d)"
trap 'rm -rf "$IDX"' EXIT

# index SUITE COMPONENT: the Packages index, fetched once per run when a package is missing.
index() {
    local f="$IDX/Packages-$1-$2"
    if [[ ! -s "$f" ]]; then
        curl -fsS -m 120 "$MIRROR/dists/$1/$2/binary-amd64/Packages.xz" | xz -d >"$f.partial"
        mv "$f.partial" "$f"
    fi
    echo "$f"
}

# deb SUITE COMPONENT PACKAGE: download the suite's current .deb and unpack it under root/.
deb() {
    local suite="$1" comp="$2" pkg="$3" dir="$BASE/deb/$1/$3"
    if [[ -f "$dir/.complete" ]]; then
        return 0
    fi
    local idx fields
    idx="$(index "$suite" "$comp")"
    fields="$(awk -v RS= -v FS='\n' -v p="Package: $pkg" '
        $1 == p { v=""; f="";
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^Version: /) v = substr($i, 10);
                if ($i ~ /^Filename: /) f = substr($i, 11);
            }
            print v, f; exit }' "$idx")"
    [[ -n "$fields" ]] || { echo "load-fixtures.sh: $pkg not in $suite/$comp" >&2; exit 1; }
    local version="${fields%% *}" file="${fields#* }"
    echo "load-fixtures.sh: fetching $suite $pkg $version" >&2
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial/root"
    curl -fsS -m 300 -o "$dir.partial/$(basename "$file")" "$MIRROR/$file"
    dpkg-deb -x "$dir.partial/$(basename "$file")" "$dir.partial/root"
    echo "$version" >"$dir.partial/VERSION"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
}

wheel() { # wheel DIR PIP-ARGS...
    local dir="$1"; shift
    if [[ -f "$dir/.complete" ]]; then
        return 0
    fi
    echo "load-fixtures.sh: installing $* into $dir" >&2
    rm -rf "$dir.partial"
    $PIP install --quiet --disable-pip-version-check --root-user-action=ignore --no-cache-dir \
        --only-binary=:all: --no-deps --target "$dir.partial" "$@"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
}

for p in libc6 libstdc++6 libgcc-s1; do
    deb trixie main "$p"
    deb bookworm main "$p"
done
deb trixie non-free libcudart12
deb trixie contrib libstdgpu-cuda0d
deb trixie contrib libhwloc-contrib-plugins
wheel "$BASE/wheel/cuda-runtime-cu12-12.9.79" nvidia-cuda-runtime-cu12==12.9.79
wheel "$BASE/wheel/cuda-runtime-cu11-11.8.89" nvidia-cuda-runtime-cu11==11.8.89

# The tests build small consumers and a dlopen probe with the host's C compiler.
command -v cc >/dev/null || echo "load-fixtures.sh: warning: no cc on PATH; tests/it/image_load.rs needs one" >&2

for d in "$BASE"/deb/*/*/; do
    printf '%-10s %-26s %-30s %s\n' "$(basename "$(dirname "$d")")" "$(basename "$d")" \
        "$(cat "$d/VERSION")" "${d}root"
done
for d in "$BASE"/wheel/*/; do
    printf '%-10s %-26s %-30s %s\n' pypi "$(basename "$d")" "" "$d"
done
