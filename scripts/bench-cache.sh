#!/usr/bin/env bash
# The hook's time for a GPU container of a real framework image, served from the image facts
# cache, against a container that asks for no GPU — interleaved in one run, so machine noise hits
# both alike — and the first start of the image (no cache) with the page cache warm and cold.
#
# The image: two overlay layers as an engine lays them out — a base of Debian 13's loader, libc
# and libstdc++ with an ld.so.cache (scripts/load-fixtures.sh), and torch with every wheel it
# pulls in (`pip install --target`, the environment scripts/bench-load.sh installs: torch 2.15.0,
# ~5.3 GB, ~24,000 files) under site-packages. Each start is a new container: a fresh overlay
# mount (its own empty writable layer) over the same layer directories, a bundle with the NVIDIA
# devices in its spec (CDI-style), probe off, and the hook run as a runtime runs it: a new
# process, the OCI state on stdin with the pid of a process in the rootfs' mount namespace.
# Needs root (overlay mounts; drop_caches for the cold run).
#
#   scripts/bench-cache.sh [RUNS]           default 30 interleaved pairs
#   BENCH_SITE=DIR                          an existing pip --target tree instead
#   BENCH_COLD=0                            skip the page-cache-cold first start
#   BIN=PATH                                a built binary (default: build the release one)
#   BASELINE=PATH                           another build (e.g. main's) timed on the same hits,
#                                           interleaved with BIN's: a before/after of one run
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
RUNS="${1:-30}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
FX="$CACHE/load-fixtures/v1"
BENCH_SITE="${BENCH_SITE:-$CACHE/bench/torch-$TORCH_VERSION}"
[[ -f "$BENCH_SITE/.complete" || -n "${BENCH_SITE_ANY:-}" ]] || {
    echo "bench-cache.sh: no $BENCH_SITE: run scripts/bench-load.sh once (it installs torch there)" >&2
    exit 2
}
[[ $EUID -eq 0 ]] || { echo "bench-cache.sh: needs root (overlay mounts)" >&2; exit 2; }
scripts/load-fixtures.sh >/dev/null
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cuda-preflight"
fi

WORK="${BENCH_CACHE_DIR:-/var/tmp/cuda-preflight-bench-cache}"
KEY="$(stat -c '%d:%i:%Y' "$BENCH_SITE")"
if [[ "$(cat "$WORK/.complete" 2>/dev/null)" != "$KEY" ]]; then
    rm -rf "$WORK"
    B="$WORK/layers/base"
    mkdir -p "$B/usr/lib" "$B/usr/lib64" "$B/usr/bin" "$B/usr/sbin" "$B/etc" "$WORK/host"
    for d in lib lib64 bin sbin; do ln -s "usr/$d" "$B/$d"; done
    for p in libc6 libstdc++6 libgcc-s1; do cp -a "$FX/deb/trixie/$p/root/." "$B/"; done
    echo 'include /etc/ld.so.conf.d/*.conf' >"$B/etc/ld.so.conf"
    ldconfig -r "$B"
    SP="$WORK/layers/torch/usr/local/lib/python3.12/site-packages"
    mkdir -p "$(dirname "$SP")"
    cp -al "$BENCH_SITE" "$SP" 2>/dev/null || cp -a "$BENCH_SITE" "$SP"
    rm -f "$SP/.complete"
    echo "$KEY" >"$WORK/.complete"
fi
echo "image: $(find "$WORK/layers" -type f | wc -l) files, $(du -sm "$WORK/layers" | cut -f1) MB in 2 layers; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$BIN" "$WORK" "$RUNS" "${BENCH_COLD:-1}" "$PWD/examples/hosts/h100-580.json" "${BASELINE:-}" <<'PY'
import json, os, resource, shutil, statistics, subprocess, sys, time
binary, work, runs, cold, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
baseline = sys.argv[6] or None
layers = f"{work}/layers/torch:{work}/layers/base"
state = f"{work}/state"
conf = f"{work}/config.toml"
open(conf, "w").write('probe = "never"\n')
# The container's process: the hook reads /proc/<pid>/root and /proc/<pid>/mountinfo. A process
# of this mount namespace sees the overlay mounts at their paths, as runc's init does before
# pivot_root.
holder = subprocess.Popen(["sleep", "100000"])
n = 0

def container(gpu):
    global n
    n += 1
    c = f"{work}/containers/c{n}"
    for d in ("upper", "work", "merged"):
        os.makedirs(f"{c}/{d}", exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={layers},upperdir={c}/upper,workdir={c}/work", f"{c}/merged"], check=True)
    spec = {"ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["python3"], "cwd": "/",
                        "env": ["PATH=/usr/local/bin:/usr/bin:/bin", f"HOSTNAME=c{n}"]},
            "root": {"path": f"{c}/merged"}}
    if gpu:
        spec["linux"] = {"devices": [{"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                                     {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                                     {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}],
                         "resources": {"devices": [{"allow": False, "access": "rwm"},
                                                   {"allow": True, "type": "c", "major": 195, "access": "rwm"},
                                                   {"allow": True, "type": "c", "major": 238, "access": "rwm"}]}}
    json.dump(spec, open(f"{c}/config.json", "w"))
    return c

def remove(c):
    subprocess.run(["umount", f"{c}/merged"], check=True)
    shutil.rmtree(c)

def hook(c, binary=binary):
    st = json.dumps({"ociVersion": "1.0.2", "id": os.path.basename(c), "status": "creating",
                     "pid": holder.pid, "bundle": c}).encode()
    global last_cpu
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([binary, "hook", "--config", conf, "--host-profile", profile,
                    "--host-root", f"{work}/host", "--state-dir", state],
                   input=st, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ms = (time.perf_counter() - t) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time (user + system) of the hook process: steadier than wall time on a busy machine.
    last_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    rep = f"{state}/reports/{os.path.basename(c)}.json"
    r = json.load(open(rep)) if os.path.exists(rep) else {}
    return ms, r

def first(label, drop, binary=binary, keep=False):
    if not keep:
        shutil.rmtree(state, ignore_errors=True)
    c = container(True)
    if drop:
        subprocess.run(["sync"]); open("/proc/sys/vm/drop_caches", "w").write("3\n")
    ms, r = hook(c, binary)
    b = r.get("binaries", {})
    print(f"first start, {label:<16} hook {ms:8.1f} ms | walk {b.get('stats', {}).get('elapsed_ms', 0):7.1f} ms, "
          f"load checks {(r.get('load') or {}).get('elapsed_ms', 0):6.1f} ms | cache: {b.get('image_cache', {}).get('result')} | "
          f"{b.get('stats', {}).get('files_examined')} libraries examined, {b.get('stats', {}).get('cuda_files')} with GPU code, verdict {r.get('verdict')}")
    remove(c)

try:
    if cold:
        first("page cache cold", True)
    first("page cache warm", False)
    if baseline:
        # The baseline's own entry (the key covers the binary): its later starts are hits too.
        first("baseline, warm", False, baseline, keep=True)
    # The state directory now holds the image's entry: every later GPU container is a hit.
    gpu, plain, base = [], [], []
    cpu = {True: [], False: [], "baseline": []}
    results, base_results, phases = set(), set(), []
    kinds = [True, False] + (["baseline"] if baseline else [])
    for i in range(runs):
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            c = container(bool(kind))
            if kind == "baseline":
                ms, r = hook(c, baseline)
                base.append(ms)
                cpu[kind].append(last_cpu)
                base_results.add(r.get("binaries", {}).get("image_cache", {}).get("result"))
                remove(c)
                continue
            ms, r = hook(c)
            cpu[kind].append(last_cpu)
            if kind:
                gpu.append(ms)
                results.add(r.get("binaries", {}).get("image_cache", {}).get("result"))
                hit_ms = (r.get("binaries", {}).get("image_cache") or {}).get("ms")
                # Where a hit's time goes: the report's phases, and what the hook's clock does
                # not see (process start, report write, exit): wall minus duration_ms.
                p = dict(r.get("phases_ms") or {})
                p["lookup+read"] = hit_ms or 0
                p["in the hook"] = r.get("duration_ms") or 0
                p["outside the hook's clock"] = ms - p["in the hook"]
                phases.append(p)
            else:
                plain.append(ms)
            remove(c)
    def s(v):
        v = sorted(v)
        return f"median {statistics.median(v):6.2f} ms  p90 {v[int(0.9 * (len(v) - 1))]:6.2f}  min {v[0]:6.2f}  max {v[-1]:6.2f}"
    last = "-" if hit_ms is None else f"{hit_ms:.2f} ms"
    print(f"GPU container, later start ({len(gpu)}): {s(gpu)}   cache results {sorted(map(str, results))}, last lookup+read {last}")
    print(f"container asking no GPU    ({len(plain)}): {s(plain)}")
    if baseline:
        print(f"GPU container, BASELINE    ({len(base)}): {s(base)}   cache results {sorted(map(str, base_results))}")
        print(f"baseline ratio of medians: {statistics.median(base) / statistics.median(plain):.2f}x")
    print(f"ratio of medians: {statistics.median(gpu) / statistics.median(plain):.2f}x (target <= 3x)")
    names = list(dict.fromkeys(k for p in phases for k in p))
    print("a hit, median ms per phase: " + ", ".join(
        f"{k} {statistics.median(p.get(k, 0) for p in phases):.2f}" for k in names))
    print(f"CPU time (user+sys) medians: GPU hit {statistics.median(cpu[True]):.2f} ms, no GPU {statistics.median(cpu[False]):.2f} ms, "
          f"ratio {statistics.median(cpu[True]) / statistics.median(cpu[False]):.2f}x"
          + (f"; baseline GPU hit {statistics.median(cpu['baseline']):.2f} ms, ratio "
             f"{statistics.median(cpu['baseline']) / statistics.median(cpu[False]):.2f}x" if baseline else ""))
finally:
    holder.kill()
PY
