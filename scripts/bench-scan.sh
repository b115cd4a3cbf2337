#!/usr/bin/env bash
# Time `cuda-preflight scan` against `cuobjdump --list-elf` on one big library, side by side:
# wall time and peak RSS from /usr/bin/time -v, best of N runs each (page cache warm after the
# first). Default input: libcublasLt.so.13 from nvidia-cublas 13.10.0.20 (~550 MB), installed by
# `BENCH=1 scripts/cuda-tools.sh`. Usage: scripts/bench-scan.sh [LIBRARY] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
LIB="${1:-$CACHE/cuda-libs/cublas-13.10.0.20/nvidia/cu13/lib/libcublasLt.so.13}"
RUNS="${2:-3}"
CUOBJDUMP="$CACHE/cuda-tools/13.5.37/nvidia/cu13/bin/cuobjdump"
[[ -f "$LIB" ]] || { echo "missing $LIB: run BENCH=1 scripts/cuda-tools.sh" >&2; exit 2; }
[[ -x "$CUOBJDUMP" ]] || { echo "missing cuobjdump: run scripts/cuda-tools.sh" >&2; exit 2; }
cargo build --release --quiet
SCAN=target/release/cuda-preflight

measure() { # measure NAME CMD... → "NAME wall_s peak_kib" (best wall of $RUNS)
    local name="$1"; shift
    local best_wall="" best_rss=""
    for _ in $(seq "$RUNS"); do
        local log; log=$(mktemp)
        /usr/bin/time -v "$@" >/dev/null 2>"$log" || true
        local wall rss
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$log")
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
        rm -f "$log"
        if [[ -z "$best_wall" ]] || awk "BEGIN{exit !($wall < $best_wall)}"; then best_wall=$wall; best_rss=$rss; fi
    done
    printf '%-28s %10s s %12s KiB\n' "$name" "$best_wall" "$best_rss"
}

echo "input: $LIB ($(du -m "$LIB" | cut -f1) MB), $(nproc) CPUs, best of $RUNS"
cat "$LIB" >/dev/null # warm the page cache for both
measure "cuda-preflight scan" "$SCAN" scan "$LIB"
measure "cuda-preflight scan --json" "$SCAN" scan --json --gpu 9.0 --driver-cuda 13.0 "$LIB"
measure "cuobjdump --list-elf" "$CUOBJDUMP" --list-elf "$LIB"
# /usr/bin/time rounds to 10 ms; a mean over many runs resolves the scan.
n=20; t0=$(date +%s%N); for _ in $(seq $n); do "$SCAN" scan "$LIB" >/dev/null; done; t1=$(date +%s%N)
awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN{printf "%-28s %10.4f s (mean of %d)\n", "cuda-preflight scan", (b-a)/1e9/n, n}'
# Same inventory as cuobjdump --list-elf --list-ptx (kinds and arch names, in order).
"$SCAN" scan --json "$LIB" | python3 -c '
import json, sys
for e in json.load(sys.stdin)["files"][0]["entries"]:
    a = e["arch"][:-1] if e["kind"] == "sass" and e["arch"].endswith("f") else e["arch"]
    print({"sass": "ELF", "ptx": "PTX"}.get(e["kind"], "OTHER"), a)' >/tmp/bench-ours.$$
"$CUOBJDUMP" --list-elf --list-ptx "$LIB" | sed -n -E 's/^(ELF|PTX) file +[0-9]+: .*\.(sm_[0-9]+[af]?)\.(cubin|ptx)$/\1 \2/p' >/tmp/bench-theirs.$$
if cmp -s /tmp/bench-ours.$$ /tmp/bench-theirs.$$; then echo "inventory equals cuobjdump --list-elf --list-ptx ($(wc -l </tmp/bench-ours.$$) entries)"; else echo "INVENTORY DIFFERS from cuobjdump"; diff /tmp/bench-ours.$$ /tmp/bench-theirs.$$ | head; fi
rm -f /tmp/bench-ours.$$ /tmp/bench-theirs.$$
# Same counts, as a sanity check of what was timed.
ours=$("$SCAN" scan --json "$LIB" | python3 -c 'import json,sys; e=json.load(sys.stdin)["files"][0]["entries"]; print(sum(x["kind"]=="sass" for x in e), sum(x["kind"]=="ptx" for x in e))')
theirs_elf=$("$CUOBJDUMP" --list-elf "$LIB" | grep -c '^ELF file')
echo "entries: ours sass/ptx = $ours; cuobjdump --list-elf = $theirs_elf ELF"
