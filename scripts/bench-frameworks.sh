#!/usr/bin/env bash
# Time `check --rootfs` on a vLLM-on-torch tree of real framework libraries (issue 21: the
# framework classification must not slow the check), cold (no scan cache) and warm (a second
# check of the same image: the cache in the state dir), page cache warm in both. The rootfs
# (built once, hard links, no extra disk), 5.3 GB of real libraries: everything
# scripts/framework-fixtures.sh fetches with BENCH=1, laid out as pip installs it —
#   site-packages/vllm            vLLM 0.13.0's _C, _moe_C, _flashmla_C, _flashmla_extension_C,
#                                 vllm_flash_attn/_vllm_fa2_C, _vllm_fa3_C
#   site-packages/torch/lib       torch 2.6.0's libtorch_cuda, libtorch_cuda_linalg, libtorch_cpu,
#                                 libtorch, libtorch_python, libc10, libc10_cuda
#   site-packages/cusparselt/lib  cuSPARSELt 0.6.2
#   site-packages/nvidia/*/lib    the NVIDIA wheels torch 2.6.0 pins: cuBLAS, cuDNN, NCCL,
#                                 cuSPARSE, cuFFT, cuRAND, cuSOLVER, nvJitLink, cudart, CUPTI
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
[[ -f "$F/bench/cuda-cupti-cu12-12.4.127/.complete" ]] || { echo "missing fixtures: run BENCH=1 scripts/framework-fixtures.sh" >&2; exit 2; }
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
    for set in $(cd "$F" && find . -name .complete -printf '%h\n' | sort); do
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

run() { # BIN PROFILE STATE → "walk_ms wall_ms cpu_ms files_examined cuda_files hits"
    # CPU time (user + sys, getrusage of the child) next to wall time: on a machine shared with
    # other builds the wall time mostly measures the queue for a core.
    python3 - "$1" "$R" "examples/hosts/$2.json" "$WORK/host" "$3" <<'PY'
import json, resource, subprocess, sys, time
b, r, prof, host, state = sys.argv[1:]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
out = subprocess.run([b, "check", "--json", "--rootfs", r, "--host-profile", prof,
                      "--host-root", host, "--state-dir", state], capture_output=True).stdout
t1 = time.perf_counter()
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
s = json.loads(out)["binaries"]["stats"]
print("%.2f %.2f %.2f %d %d %d" % (s["elapsed_ms"], (t1 - t0) * 1000, cpu,
      s["files_examined"], s["cuda_files"], s["cache_hits"]))
PY
}
summary() { # NAME FILE
    python3 - "$1" "$2" <<'PY'
import sys, statistics
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
walk = sorted(r[0] for r in rows); wall = sorted(r[1] for r in rows); cpu = sorted(r[2] for r in rows)
last = rows[-1]
print(f"{sys.argv[1]:<48} n={len(rows):<3} walk+scan ms med {statistics.median(walk):6.1f} ({walk[0]:.1f}-{walk[-1]:.1f}) | "
      f"check wall ms med {statistics.median(wall):6.1f} ({wall[0]:.1f}-{wall[-1]:.1f}) | cpu ms med {statistics.median(cpu):5.1f} ({cpu[0]:.1f}-{cpu[-1]:.1f}) | "
      f"files={int(last[3])} cuda={int(last[4])} hits={int(last[5])}")
PY
}
TMP=$(mktemp -d)
find "$R" -type f -name '*.so*' -exec cat {} + >/dev/null 2>&1 || true # page cache warm
echo "rootfs: $R ($(find "$R" -type f | wc -l) files, $(du -sh --apparent-size "$SP" | cut -f1) in site-packages), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
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
