#!/usr/bin/env bash
# Time `check --rootfs` with the image load checks on a PyTorch-sized environment: torch and
# every nvidia-* / cuda-toolkit wheel it pulls in (`pip install --target`, 5.3 GB installed, once,
# into the download cache at $CACHE/bench/torch-VERSION), under site-packages of a rootfs with Debian 13's loader, libc and libstdc++
# and an ld.so.cache (from scripts/load-fixtures.sh). Cold: a fresh state directory (no scan
# cache) each run; warm: the same state directory again (a second container of the image). Page
# cache warm in both. A benchmark input, not a test.
#
#   scripts/bench-load.sh [RUNS]            default 5 cold + 5 warm
#   TORCH_VERSION=2.15.0                    the torch pinned (2.15.0 on 2026-11-23: a 539 MB
#                                           wheel, CUDA 13.2 via cuda-toolkit[...], cuDNN,
#                                           cuSPARSELt, NCCL, NVSHMEM wheels)
#   BENCH_SITE=DIR                          use an existing pip --target tree instead
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
RUNS="${1:-5}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
PIP="${PIP:-python3 -m pip}"
FX="$CACHE/load-fixtures/v1"

scripts/load-fixtures.sh >/dev/null
if [[ -z "${BENCH_SITE:-}" ]]; then
    # Shared with the other benchmarks' torch environment.
    BENCH_SITE="$CACHE/bench/torch-$TORCH_VERSION"
    if [[ ! -f "$BENCH_SITE/.complete" ]]; then
        echo "bench-load.sh: installing torch==$TORCH_VERSION and its CUDA wheels into $BENCH_SITE (~3 GB)" >&2
        rm -rf "$BENCH_SITE.partial"
        $PIP install --quiet --disable-pip-version-check --root-user-action=ignore --no-cache-dir \
            --only-binary=:all: --target "$BENCH_SITE.partial" "torch==$TORCH_VERSION"
        rm -rf "$BENCH_SITE"
        mv "$BENCH_SITE.partial" "$BENCH_SITE"
        touch "$BENCH_SITE/.complete"
    fi
fi
[[ -d "$BENCH_SITE" ]] || { echo "bench-load.sh: no $BENCH_SITE" >&2; exit 2; }

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cuda-preflight"

# The rootfs, rebuilt when the site tree changes (hard links: no extra disk where possible).
WORK="${BENCH_LOAD_DIR:-/var/tmp/cuda-preflight-bench-load}"
R="$WORK/rootfs"
KEY="$(stat -c '%d:%i:%Y' "$BENCH_SITE")"
if [[ "$(cat "$WORK/.complete" 2>/dev/null)" != "$KEY" ]]; then
    rm -rf "$WORK"
    mkdir -p "$R/usr/lib" "$R/usr/lib64" "$R/usr/bin" "$R/usr/sbin" "$R/etc" "$WORK/host"
    for d in lib lib64 bin sbin; do ln -s "usr/$d" "$R/$d"; done
    for p in libc6 libstdc++6 libgcc-s1; do cp -a "$FX/deb/trixie/$p/root/." "$R/"; done
    echo 'include /etc/ld.so.conf.d/*.conf' >"$R/etc/ld.so.conf"
    SP="$R/usr/local/lib/python3.12/site-packages"
    mkdir -p "$(dirname "$SP")"
    cp -al "$BENCH_SITE" "$SP" 2>/dev/null || cp -a "$BENCH_SITE" "$SP"
    rm -f "$SP/.complete"
    ldconfig -r "$R"
    echo "$KEY" >"$WORK/.complete"
fi

STATE="$WORK/state"
run() { # → "wall_ms binaries_ms load_ms cuda_files consumers"
    local t0 t1 out
    t0=$(date +%s%N)
    out=$("$BIN" check --json --rootfs "$R" --host-profile examples/hosts/h100-580.json \
        --host-root "$WORK/host" --state-dir "$STATE" || true)
    t1=$(date +%s%N)
    python3 -c '
import json, sys
d = json.loads(sys.argv[1]); wall = (int(sys.argv[3]) - int(sys.argv[2])) / 1e6
b = d.get("binaries", {}).get("stats", {}); l = d.get("load") or {}
ls = l if isinstance(l, dict) else {}
print("%.2f %s %s %s %s" % (wall, b.get("elapsed_ms", "-"), ls.get("elapsed_ms", "-"),
      b.get("cuda_files", "-"), len(l.get("runtimes_in_use", [])) if isinstance(l, dict) else "-"))
' "$out" "$t0" "$t1"
}
summary() { # NAME FILE
    python3 - "$1" "$2" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
def col(i):
    v = [float(r[i]) for r in rows if r[i] != "-"]
    return f"{statistics.median(v):9.1f} {min(v):9.1f} {max(v):9.1f}" if v else f"{'-':>9} {'-':>9} {'-':>9}"
print(f"{sys.argv[1]:<5} {len(rows):>4} | {col(0)} | {col(1)} | {col(2)} | {rows[-1][3]:>10} {rows[-1][4]:>9}")
PY
}
find "$R" -type f -name '*.so*' -exec cat {} + >/dev/null 2>&1 || true # page cache warm
echo "rootfs: $R ($(find "$R" -type f | wc -l) files, $(du -sm "$R" | cut -f1) MB), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %4s | %-29s | %-29s | %-29s | %10s %9s\n' "" runs "whole check ms (med min max)" \
    "binaries.stats.elapsed_ms" "load.elapsed_ms" cuda_files runtimes
cold=$(mktemp); warm=$(mktemp)
for _ in $(seq "$RUNS"); do rm -rf "$STATE"; run >>"$cold"; done
for _ in $(seq "$RUNS"); do run >>"$warm"; done
summary cold "$cold"
summary warm "$warm"
rm -f "$cold" "$warm"
