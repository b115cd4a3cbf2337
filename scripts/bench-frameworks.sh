#!/usr/bin/env bash
# Time `check --rootfs` on a vLLM-on-torch tree of real framework libraries (issue 21: the
# framework classification must not slow the check), cold (no scan cache) and warm (a second
# check of the same image: the cache in the state dir), page cache warm in both. The rootfs
# (built once, hard links, no extra disk), 3.2 GB of real libraries:
#   site-packages/vllm            vLLM 0.13.0's _C, _moe_C, _flashmla_C, _flashmla_extension_C,
#                                 vllm_flash_attn/_vllm_fa2_C, _vllm_fa3_C
#   site-packages/torch/lib       torch 2.6.0's libtorch_cuda, libtorch_cuda_linalg, libtorch_cpu,
#                                 libtorch, libtorch_python, libc10, libc10_cuda
#   site-packages/cusparselt/lib  cuSPARSELt 0.6.2
#   site-packages/nvidia/cublas   cuBLAS 12.4.5.8
#   site-packages/{torch,vllm}    a synthetic Python tree each: 600 directories x 20 .py files,
#                                 include/ with 5000 headers (skipped by the walk)
#   usr/lib/x86_64-linux-gnu      this machine's (non-CUDA libraries to reject)
# Needs `BENCH=1 scripts/framework-fixtures.sh`.
# Usage: scripts/bench-frameworks.sh [COLD_RUNS] [WARM_RUNS]; BASELINE_BIN=/path/to/an/older/
# cuda-preflight also times that binary, interleaved run by run, on the same tree.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
COLD="${1:-5}"
WARM="${2:-20}"
F="$CACHE/frameworks"
[[ -f "$F/bench/cublas-cu12-12.4.5.8/.complete" ]] || { echo "missing fixtures: run BENCH=1 scripts/framework-fixtures.sh" >&2; exit 2; }
cargo build --release --quiet
BINS=("$PWD/target/release/cuda-preflight")
[[ -n "${BASELINE_BIN:-}" ]] && BINS+=("$BASELINE_BIN")

WORK="${BENCH_FRAMEWORKS_DIR:-/var/tmp/cuda-preflight-bench-frameworks}"
R="$WORK/rootfs"
SP="$R/usr/local/lib/python3.12/site-packages"
if [[ ! -f "$WORK/.complete" ]]; then
    rm -rf "$WORK"
    mkdir -p "$R/usr/lib" "$SP" "$WORK/host"
    ln_or_cp() { mkdir -p "$(dirname "$2")"; ln "$1" "$2" 2>/dev/null || cp -p "$1" "$2"; }
    cp -al /usr/lib/x86_64-linux-gnu "$R/usr/lib/" 2>/dev/null || cp -a /usr/lib/x86_64-linux-gnu "$R/usr/lib/"
    for set in vllm-0.13.0 cusparselt-cu12-0.6.2 torch-2.6.0 bench/vllm-0.13.0 bench/torch-2.6.0 bench/cublas-cu12-12.4.5.8; do
        (cd "$F/$set" && find . -type f ! -name .complete) | while read -r f; do
            ln_or_cp "$F/$set/$f" "$SP/$f"
        done
    done
    python3 - "$SP/torch" "$SP/vllm" <<'PY'
import os, sys
for t in sys.argv[1:]:
    for d in range(600):
        p = os.path.join(t, f"m{d // 30}", f"sub{d}")
        os.makedirs(p, exist_ok=True)
        for f in range(20):
            open(os.path.join(p, f"f{f}.py"), "w").write("x = 1\n")
    os.makedirs(os.path.join(t, "include"), exist_ok=True)
    for f in range(5000):
        open(os.path.join(t, "include", f"h{f}.h"), "w").write("\n")
PY
    touch "$WORK/.complete"
fi

run() { # BIN PROFILE STATE → "walk_ms wall_ms files_examined cuda_files hits"
    local t0 t1 out
    t0=$(date +%s%N)
    out=$("$1" check --json --rootfs "$R" --host-profile "examples/hosts/$2.json" \
        --host-root "$WORK/host" --state-dir "$3" || true)
    t1=$(date +%s%N)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["binaries"]["stats"]; print("%.2f %.2f %d %d %d" % (s["elapsed_ms"], (int(sys.argv[3])-int(sys.argv[2]))/1e6, s["files_examined"], s["cuda_files"], s["cache_hits"]))' "$out" "$t0" "$t1"
}
summary() { # NAME FILE
    python3 - "$1" "$2" <<'PY'
import sys, statistics
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
walk = sorted(r[0] for r in rows); wall = sorted(r[1] for r in rows)
last = rows[-1]
print(f"{sys.argv[1]:<52} runs={len(rows):<3} walk+scan ms median {statistics.median(walk):7.2f} ({walk[0]:.2f}-{walk[-1]:.2f}) | "
      f"whole check ms median {statistics.median(wall):7.2f} ({wall[0]:.2f}-{wall[-1]:.2f}) | files_examined={int(last[2])} cuda_files={int(last[3])} hits={int(last[4])}")
PY
}
find "$R" -type f -name '*.so*' -exec cat {} + >/dev/null 2>&1 || true # page cache warm
echo "rootfs: $R ($(find "$R" -type f | wc -l) files, $(du -sh --apparent-size "$SP" | cut -f1) in site-packages), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
TMP=$(mktemp -d)
for profile in h100-580 rtx5090-570; do
    for i in "${!BINS[@]}"; do : >"$TMP/cold-$i" ; : >"$TMP/warm-$i"; done
    for _ in $(seq "$COLD"); do
        for i in "${!BINS[@]}"; do rm -rf "$WORK/state-$i"; run "${BINS[$i]}" "$profile" "$WORK/state-$i" >>"$TMP/cold-$i"; done
    done
    for _ in $(seq "$WARM"); do
        for i in "${!BINS[@]}"; do run "${BINS[$i]}" "$profile" "$WORK/state-$i" >>"$TMP/warm-$i"; done
    done
    for i in "${!BINS[@]}"; do
        summary "$profile cold ${BINS[$i]#$PWD/}" "$TMP/cold-$i"
        summary "$profile warm ${BINS[$i]#$PWD/}" "$TMP/warm-$i"
    done
done
rm -rf "$TMP"
