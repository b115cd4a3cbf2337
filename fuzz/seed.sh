#!/usr/bin/env bash
# Seed corpus for `cargo fuzz run fatbin`: small real inputs from the fixture cache that
# tests/fatbin_vs_cuobjdump.rs builds (run the tests first).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/fatbin
cache="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
find "$cache/fixtures" -type f \( -name '*.fatbin' -o -name '*.cubin' -o -name '*.ptx' -o -name '*.o' \) -size -64k |
    while read -r f; do cp "$f" "corpus/fatbin/$(basename "$(dirname "$f")")-$(basename "$f")"; done
ls corpus/fatbin | wc -l
