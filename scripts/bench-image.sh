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
"${P[@]}" save --format oci-dir --compress -o "$W/oci" localhost/bench:1 2>/dev/null

measure() { # measure LABEL CMD...: wall seconds and peak RSS of the command (children included)
    local label="$1"; shift
    local out
    out=$( { /usr/bin/time -f '%e %M' "$@" >/dev/null 2>/dev/null; } 2>&1 | tail -1)
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
