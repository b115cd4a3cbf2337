#!/usr/bin/env bash
# Time the image-binaries walk + scan of `check --bundle` on a PyTorch-shaped rootfs, cold (no
# scan cache) and warm (a second container of the same image: the cache in the state dir), page
# cache warm in both. The rootfs (built once, hard links, no extra disk):
#   usr/lib/x86_64-linux-gnu        this machine's (~1100 entries, non-CUDA libraries to reject)
#   site-packages/nvidia/cu13/lib   libcublasLt.so.13 (552 MB, 5666 entries), libcublas.so.13,
#                                   libnvblas.so.13, libnvjpeg.so.13
#   site-packages/nvidia/nvjpeg/lib libnvjpeg.so.11, libnvjpeg.so.12
#   site-packages/torch             a synthetic Python tree: 600 directories x 20 .py files, and
#                                   include/ with 5000 headers (skipped by the walk)
# Needs `BENCH=1 scripts/cuda-tools.sh`. Usage: scripts/bench-walk.sh [COLD_RUNS] [WARM_RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
COLD="${1:-5}"
WARM="${2:-20}"
LIBS="$CACHE/cuda-libs"
CUBLAS="$LIBS/cublas-13.10.0.20/nvidia/cu13/lib"
[[ -f "$CUBLAS/libcublasLt.so.13" ]] || { echo "missing cuBLAS: run BENCH=1 scripts/cuda-tools.sh" >&2; exit 2; }
cargo build --release --quiet
BIN="$PWD/target/release/cuda-preflight"

WORK="${BENCH_WALK_DIR:-/var/tmp/cuda-preflight-bench-walk}"
B="$WORK/bundle"
R="$B/rootfs"
SP="$R/usr/local/lib/python3.12/site-packages"
if [[ ! -f "$WORK/.complete" ]]; then
    rm -rf "$WORK"
    mkdir -p "$R/usr/lib" "$SP/nvidia/cu13/lib" "$SP/nvidia/nvjpeg/lib" "$WORK/host"
    # Hard links where the cache is on the same file system; copies otherwise.
    ln_or_cp() { ln "$1" "$2" 2>/dev/null || cp -p "$1" "$2"; }
    cp -al /usr/lib/x86_64-linux-gnu "$R/usr/lib/" 2>/dev/null || cp -a /usr/lib/x86_64-linux-gnu "$R/usr/lib/"
    for f in libcublasLt.so.13 libcublas.so.13 libnvblas.so.13; do ln_or_cp "$CUBLAS/$f" "$SP/nvidia/cu13/lib/$f"; done
    ln_or_cp "$LIBS/nvjpeg-13.3.2.43/nvidia/cu13/lib/libnvjpeg.so.13" "$SP/nvidia/cu13/lib/libnvjpeg.so.13"
    ln_or_cp "$LIBS/nvjpeg-cu12-12.4.0.76/nvidia/nvjpeg/lib/libnvjpeg.so.12" "$SP/nvidia/nvjpeg/lib/libnvjpeg.so.12"
    ln_or_cp "$LIBS/nvjpeg-cu11-11.9.0.86/nvidia/nvjpeg/lib/libnvjpeg.so.11" "$SP/nvidia/nvjpeg/lib/libnvjpeg.so.11"
    python3 - "$SP/torch" <<'PY'
import os, sys
t = sys.argv[1]
for d in range(600):
    p = os.path.join(t, f"m{d // 30}", f"sub{d}")
    os.makedirs(p, exist_ok=True)
    for f in range(20):
        open(os.path.join(p, f"f{f}.py"), "w").write("x = 1\n")
os.makedirs(os.path.join(t, "include"), exist_ok=True)
for f in range(5000):
    open(os.path.join(t, "include", f"h{f}.h"), "w").write("\n")
os.makedirs(os.path.join(t, "lib"), exist_ok=True)
PY
    cat > "$B/config.json" <<'JSON'
{"ociVersion": "1.0.2",
 "process": {"user": {"uid": 0, "gid": 0}, "args": ["python3"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"]},
 "root": {"path": "rootfs"},
 "linux": {"devices": [{"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                       {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                       {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}],
           "resources": {"devices": [{"allow": false, "access": "rwm"},
                                     {"allow": true, "type": "c", "major": 195, "access": "rwm"},
                                     {"allow": true, "type": "c", "major": 238, "access": "rwm"}]}}}
JSON
    touch "$WORK/.complete"
fi

STATE="$WORK/state"
run() { # → "elapsed_ms wall_ms hits misses files_examined cuda_files bytes_read"
    local t0 t1 out
    t0=$(date +%s%N)
    out=$("$BIN" check --json --bundle "$B" --host-profile examples/hosts/h100-580.json \
        --host-root "$WORK/host" --state-dir "$STATE" || true)
    t1=$(date +%s%N)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["binaries"]["stats"]; print("%.2f %.2f %d %d %d %d %d" % (s["elapsed_ms"], (int(sys.argv[3])-int(sys.argv[2]))/1e6, s["cache_hits"], s["cache_misses"], s["files_examined"], s["cuda_files"], s["bytes_read"]))' "$out" "$t0" "$t1"
}
summary() { # NAME FILE
    python3 - "$1" "$2" <<'PY'
import sys, statistics
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
walk = sorted(r[0] for r in rows); wall = sorted(r[1] for r in rows)
last = rows[-1]
print(f"{sys.argv[1]:<5} runs={len(rows):<3} walk+scan ms: median {statistics.median(walk):7.2f} min {walk[0]:7.2f} max {walk[-1]:7.2f} | "
      f"whole check ms: median {statistics.median(wall):7.2f} | hits={int(last[2])} misses={int(last[3])} "
      f"files_examined={int(last[4])} cuda_files={int(last[5])} bytes_read={int(last[6])}")
PY
}
find "$R" -type f -name '*.so*' -exec cat {} + >/dev/null 2>&1 || true # page cache warm
echo "rootfs: $R ($(find "$R" -type f | wc -l) files), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
cold=$(mktemp); warm=$(mktemp)
for _ in $(seq "$COLD"); do rm -rf "$STATE"; run >>"$cold"; done
for _ in $(seq "$WARM"); do run >>"$warm"; done
summary cold "$cold"
summary warm "$warm"
rm -f "$cold" "$warm"
