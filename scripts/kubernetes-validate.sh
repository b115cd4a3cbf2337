#!/usr/bin/env bash
# Validate Kubernetes manifests against the official schemas with kubernetes-validate (PyPI; it
# ships the JSON schemas of each Kubernetes release, so it works offline), installed once into
# the shared download cache. With no argument it only installs (scripts/test.sh does that).
#   scripts/kubernetes-validate.sh packaging/kubernetes/*.yaml
set -euo pipefail

CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
dir="$CACHE/kubernetes-validate-1.37.0"
if [[ ! -f "$dir/.complete" ]]; then
    echo "kubernetes-validate.sh: installing kubernetes-validate into $dir" >&2
    rm -rf "$dir.partial"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-cache-dir --only-binary=:all: --target "$dir.partial" kubernetes-validate==1.37.0
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
fi
[[ $# -eq 0 ]] && exit 0
# --strict: a misspelt or misplaced key is an error, not ignored.
PYTHONPATH="$dir" exec python3 -m kubernetes_validate --strict -k "${KUBERNETES_VERSION:-1.37.0}" "$@"
