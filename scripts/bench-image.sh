#!/usr/bin/env bash
# Time and peak memory of `check --image` on a large image against the naive baseline of
# unpacking the same image with tar. The image: busybox, NVIDIA's cuBLAS 13 wheel
# (libcublasLt.so.13 is 552 MB) and the CUDA 13.5 compiler wheels (322 MB, mostly files the
# rules do not read: nvcc, headers, nvvm) under a Python site-packages, as pip lays them out in a
# PyTorch image. One layer, imported into a Podman store of its own, then read as:
#   containers-storage:  (our check runs `podman image save` itself) vs `podman save | tar -x`
#   docker-archive:FILE  vs `tar -x` of the archive, then of its layer
#   oci:DIR (gzip layer) vs `tar -xzf` of the layer blob
# Page cache warm (the files were just written); nothing is dropped, other jobs share the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
BENCH=1 scripts/cuda-tools.sh >/dev/null
cargo build --release --bin cuda-preflight >/dev/null 2>&1
BIN="$PWD/target/release/cuda-preflight"

W="$(mktemp -d /var/tmp/cuda-preflight-bench.XXXXXX)"
trap 'rm -rf "$W"' EXIT
SP="$W/rootfs/usr/local/lib/python3.12/site-packages"
mkdir -p "$W/rootfs/bin" "$SP"
cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
cp -a "$CACHE/cuda-libs/cublas-13.10.0.20/." "$SP/"
cp -a "$CACHE/cuda-tools/13.5.37/." "$SP/"
rm -f "$SP/.complete"
tar -C "$W/rootfs" -cf "$W/layer.tar" .
echo "image: $(du -sh "$W/rootfs" | cut -f1) in $(find "$W/rootfs" -type f | wc -l) files;" \
     "kept by the filter: $(find "$W/rootfs" -type f \( -name 'lib*.so*' -o -path '*-packages/*.so*' \) -print0 | du -ch --files0-from=- | tail -1 | cut -f1)"

P=(podman --root "$W/store" --runroot "$W/run" --storage-driver vfs --events-backend none)
"${P[@]}" import --change 'ENV CUDA_VERSION=13.5.0' "$W/layer.tar" localhost/bench:1 >/dev/null
"${P[@]}" save --format docker-archive -o "$W/docker.tar" localhost/bench:1 2>/dev/null
# Podman 4.3 compresses only docker-dir output: the gzip OCI layout is written here.
python3 - "$W/layer.tar" "$W/oci" <<'PY'
import gzip, hashlib, json, os, shutil, sys
layer, out = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest(); open(os.path.join(blobs, d), "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
raw = hashlib.sha256()
tmp = os.path.join(out, "layer.gz")
with open(layer, "rb") as f, gzip.open(tmp, "wb", compresslevel=1) as g:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        raw.update(chunk); g.write(chunk)
h = hashlib.sha256()
with open(tmp, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
size = os.path.getsize(tmp); os.rename(tmp, os.path.join(blobs, h.hexdigest()))
l = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + h.hexdigest(), "size": size}
c = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["CUDA_VERSION=13.5.0"]},
                    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + raw.hexdigest()]}}).encode())
m = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": dict(c, mediaType="application/vnd.oci.image.config.v1+json"), "layers": [l]}).encode())
json.dump({"schemaVersion": 2, "manifests": [dict(m, mediaType="application/vnd.oci.image.manifest.v1+json")]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion": "1.0.0"}')
PY

measure() { # measure LABEL CMD...: wall seconds and peak RSS of the command (children included)
    local label="$1"; shift
    local out
    /usr/bin/time -o "$W/time" -f '%e %M' "$@" >/dev/null 2>&1 || true
    out=$(tail -1 "$W/time")
    printf '%-62s %7.2f s %8.1f MB\n' "$label" "${out% *}" "$(echo "${out#* } / 1024" | bc -l)"
}
fresh() { rm -rf "$W/x"; mkdir -p "$W/x"; }
host=(--host-profile examples/hosts/h100-580.json)

fresh; measure "check --image containers-storage: (podman save inside)" \
    "$BIN" check --image containers-storage:localhost/bench:1 --storage-root "$W/store" \
    --storage-runroot "$W/run" --storage-driver vfs "${host[@]}"
fresh; measure "baseline: podman save | tar -x" \
    bash -c "$(printf '%q ' "${P[@]}") save localhost/bench:1 2>/dev/null | tar -x -C $W/x"
fresh; measure "check --image docker-archive:FILE" "$BIN" check --image "docker-archive:$W/docker.tar" "${host[@]}"
fresh; measure "baseline: tar -x archive, then tar -x its layer" \
    bash -c "tar -xf $W/docker.tar -C $W/x && mkdir $W/x/rootfs && for l in \$(python3 -c 'import json,sys; print(*json.load(open(sys.argv[1]))[0][\"Layers\"])' $W/x/manifest.json); do tar -xf $W/x/\$l -C $W/x/rootfs; done"
fresh; measure "check --image oci:DIR (gzip layer)" "$BIN" check --image "oci:$W/oci" "${host[@]}"
fresh; measure "baseline: tar -xzf the layer blob" \
    bash -c "for b in \$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+\"/index.json\"))[\"manifests\"][0][\"digest\"].split(\":\")[1]; print(*[l[\"digest\"].split(\":\")[1] for l in json.load(open(sys.argv[1]+\"/blobs/sha256/\"+m))[\"layers\"]])' $W/oci); do tar -xzf $W/oci/blobs/sha256/\$b -C $W/x; done"
