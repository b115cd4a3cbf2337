#!/usr/bin/env bash
# Run every fuzz target for a fixed time each (seconds: first argument, default 90), one after
# another (the CI machine is shared), then minimise each corpus. Logs go to fuzz/logs/<target>.log;
# the last "#N DONE"/"stat::" lines are what RELIABILITY.md records. A second round continues
# from the corpus; SUFFIX=.2 keeps its log apart (logs/<target>.2.log).
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-90}
shift || true
targets=${*:-$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v cuda-preflight-fuzz)}
mkdir -p logs
# The committed corpora (minimised, compressed to keep the repository small) are the start.
[ -d corpus ] || { [ -f corpora.tar.xz ] && tar -xJf corpora.tar.xz; }
for t in $targets; do
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 >"logs/$t${SUFFIX:-}.log" 2>&1
    rc=$?
    cargo +nightly fuzz cmin -O "$t" "corpus/$t" >"logs/cmin-$t.log" 2>&1
    echo "$t: rc=$rc $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t${SUFFIX:-}.log" | tail -1)"
done
# Refresh the committed archive: tar -cJf corpora.tar.xz corpus
