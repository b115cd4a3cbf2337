#!/usr/bin/env bash
# On the GPU machine: the image-binaries walk against what the driver really does, and its cost
# on a real PyTorch install. Needs nvcc, python3 with torch there, and a cuda-preflight binary
# of this branch (BIN=...; default target/release/cuda-preflight).
#   scripts/gpu-walk.sh OUTDIR
# 1. Three nvcc-built libraries (sm_80 SASS only; compute_80 PTX only; sm_90 SASS), each loaded
#    by a small program through the CUDA runtime: the error the launch gives, next to what
#    `check --bundle` predicts for a rootfs holding the library.
# 2. `check --bundle` over a rootfs that is this machine's / (its site-packages: torch, CuPy,
#    JAX), NVML as the host, cold and warm scan cache: verdict, kernel findings, walk figures.
#    torch itself runs a kernel as the ground truth for "allow".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$here/target/release/cuda-preflight}"
out="$1"; mkdir -p "$out"; cd "$out"
devices='"devices": [{"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
  {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
  {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]'
bundle() { # bundle DIR ROOTFS
    mkdir -p "$1"; rm -f "$1/rootfs"; ln -s "$2" "$1/rootfs"
    printf '{"ociVersion": "1.0.2", "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/", "env": ["PATH=/usr/bin"]},\n "root": {"path": "rootfs"}, "linux": {%s}}\n' "$devices" >"$1/config.json"
}
cat >k.cu <<'CU'
#include <cstdio>
__global__ void add(float *a, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += 1; }
extern "C" int launch() { float *d; cudaMalloc(&d, 4); add<<<1, 1>>>(d, 1); int e = cudaDeviceSynchronize();
  if (!e) e = cudaGetLastError(); return e; }
CU
cat >main.cpp <<'CPP'
#include <cstdio>
extern "C" int launch();
int main() { printf("%d\n", launch()); return 0; }
CPP
cat >kernels.py <<'PY'
import json, sys
d = json.load(sys.stdin)
k = [f"{f['id']}:{(f.get('predicted') or {}).get('code')}" for f in d["findings"] if f["id"].startswith("kernel")]
print(" ".join(k) or "none")
PY
printf '%-10s %-26s %-8s %s\n' lib gencode actual predicted
for spec in "k80 arch=compute_80,code=sm_80" "ptx80 arch=compute_80,code=compute_80" "k90 arch=compute_90,code=sm_90"; do
    set -- $spec
    # The library carries the CUDA runtime (nvcc links it statically): main needs nothing else.
    nvcc -shared -Xcompiler -fPIC -gencode "$2" -o "lib$1.so" k.cu
    g++ -o "run$1" main.cpp -L. -l"$1" -Wl,-rpath,'$ORIGIN'
    actual=$("./run$1" || echo "exit$?")
    mkdir -p "root$1/usr/lib/x86_64-linux-gnu"; cp "lib$1.so" "root$1/usr/lib/x86_64-linux-gnu/"
    bundle "b$1" "$PWD/root$1"
    pred=$("$BIN" check --json --bundle "b$1" --state-dir "$PWD/state" | python3 "$PWD/kernels.py" || true)
    printf '%-10s %-26s %-8s %s\n' "lib$1.so" "$2" "$actual" "$pred"
done
python3 -c 'import torch; x = torch.ones(4, device="cuda"); print("torch kernel ran:", (x + 1).sum().item(), torch.__version__)' || echo "torch: no kernel run"
bundle bhost /
# "Cold" means no scan cache with the page cache warm (the issue's protocol): one run with a
# throwaway state directory first reads every file once.
"$BIN" check --json --bundle bhost --state-dir "$PWD/state-warmup" >/dev/null 2>&1 || true
rm -rf statehost state-warmup
for run in cold warm warm; do
    /usr/bin/time -f "$run wall %e s maxrss %M KiB" "$BIN" check --json --bundle bhost --state-dir "$PWD/statehost" >"check-$run.json" || true
    python3 - "check-$run.json" "$run" <<'PY'
import json, sys, collections
d = json.load(open(sys.argv[1])); b = d["binaries"]
print(sys.argv[2], "verdict", d["verdict"], "stats", json.dumps(b["stats"]), "stopped", b.get("stopped"))
c = collections.Counter(f["id"] for f in d["findings"] if f["id"].startswith("kernel"))
print("  kernel findings:", dict(c))
for f in d["findings"]:
    if f["id"] in ("kernel-image-missing", "kernel-binary-unreadable", "kernels-scan-incomplete"):
        print("  ", f["id"], f["evidence"][:300])
PY
done

# 3. Image load checks (issue 14) on the same real install: what `check` predicts each framework
#    loads (`load.runtimes_in_use`) against the libcudart really mapped into a Python process
#    that imported the framework and ran a kernel (/proc/self/maps); and the load findings (a
#    healthy install must have none of image-library-missing / image-symbol-version-missing).
cat >loaded.py <<'PY'
import json, os, sys
fw = sys.argv[1]
try:
    if fw == "torch":
        import torch; torch.ones(1, device="cuda").sum().item(); extra = torch.version.cuda
    elif fw == "cupy":
        import cupy; cupy.ones(1).sum().item(); extra = cupy.cuda.runtime.runtimeGetVersion()
    elif fw == "jax":
        import jax, jax.numpy as jnp; jnp.ones(1).block_until_ready(); extra = str(jax.devices())
    maps = open("/proc/self/maps").read().splitlines()
    libs = sorted({os.path.realpath(l.split()[-1]) for l in maps if "libcudart" in l})
    print(json.dumps({"framework": fw, "cudart": libs, "extra": str(extra)}))
except Exception as e:
    print(json.dumps({"framework": fw, "error": f"{type(e).__name__}: {e}"[:200]}))
PY
python3 - check-warm.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); l = d.get("load") or {}
print("load: consumers", l.get("consumers"), "objects", l.get("objects"), "elapsed_ms", l.get("elapsed_ms"))
for r in l.get("runtimes_in_use", []):
    print("  runtime", r["version"], r["path"], "via", r["via"], "by", ",".join(r["packages"]) or r["loaded_by"][:2])
for f in l.get("frameworks", []):
    print("  framework", f["name"], f["version"], "built for", f["built_for_cuda"], "loads", f["runtime"], f["runtime_version"])
for f in d["findings"]:
    if f["id"].startswith("image-") or f["id"].startswith("toolchain-") or f["id"].startswith("cuda-"):
        print("  finding", f["id"], f["severity"], f["evidence"][:400])
PY
printf '%-8s %-72s %-72s %s\n' framework predicted actual agree >load-table.txt
for fw in torch cupy jax; do
    actual=$(python3 loaded.py "$fw" 2>/dev/null | tail -1)
    python3 - check-warm.json "$actual" >>load-table.txt <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1])); a = json.loads(sys.argv[2] or "{}")
fw = a.get("framework", "?")
pred = sorted({os.path.realpath(r["path"]) for r in (d.get("load") or {}).get("runtimes_in_use", [])
               if any(p == fw or p.startswith(fw + "_") for p in r["packages"])})
act = a.get("cudart", a.get("error", "not run"))
agree = "yes" if isinstance(act, list) and set(act) <= set(pred) and act else ("n/a" if not pred and not act else "NO")
print(f"{fw:<8} {','.join(pred) or '-':<72} {(','.join(act) if isinstance(act, list) else act) or '-':<72} {agree}")
PY
done
cat load-table.txt

# 4. JIT toolchains (issue 14 part 4) of the same install: the CUDA version check reads from each
#    ptxas file against what that ptxas prints when run (NVIDIA's tool, run here as ground truth
#    only), and the predicted `toolchain-gpu-unsupported` for this H100 and for the RTX 5070 Ti
#    profile (sm_120) against ptxas really assembling a one-instruction PTX for that GPU.
printf '.version 7.0\n.target sm_50\n.address_size 64\n.visible .entry k() { ret; }\n' >tiny.ptx
"$BIN" check --json --bundle bhost --state-dir "$PWD/statehost" \
    --host-profile "$here/examples/hosts/rtx5070ti-570.json" >check-sm120.json 2>/dev/null || true
printf '%-64s %-8s %-8s %-6s %-9s %-6s %-9s %s\n' ptxas read ran sm_90 predicted sm_120 predicted used_for >toolchain-table.txt
python3 - check-warm.json check-sm120.json <<'PY' >toolchains.tsv
import json, sys
warm, b = (json.load(open(p)) for p in sys.argv[1:3])
def flagged(d, path):
    return any(f["id"] == "toolchain-gpu-unsupported" and path in f["evidence"] for f in d["findings"])
for t in (warm.get("toolchains") or {}).get("toolchains", []):
    if t["kind"] != "ptxas":
        continue
    print("\t".join([t["path"], str(t.get("cuda")), "fail" if flagged(warm, t["path"]) else "ok",
                     "fail" if flagged(b, t["path"]) else "ok", json.dumps(t.get("used_for"))]))
PY
while IFS=$'\t' read -r path read p90 p120 used; do
    ran=$("$path" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p' | tail -1)
    a90=$("$path" --gpu-name sm_90 tiny.ptx -o /dev/null >/dev/null 2>&1 && echo ok || echo fail)
    a120=$("$path" --gpu-name sm_120 tiny.ptx -o /dev/null >/dev/null 2>&1 && echo ok || echo fail)
    printf '%-64s %-8s %-8s %-6s %-9s %-6s %-9s %s\n' "$path" "$read" "${ran:-?}" "$a90" "$p90" "$a120" "$p120" "$used" >>toolchain-table.txt
done <toolchains.tsv
cat toolchain-table.txt
