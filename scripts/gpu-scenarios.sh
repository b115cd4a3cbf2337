#!/usr/bin/env bash
# The GPU scenario matrix and benchmarks, for the real-GPU machine, in one call.
#
#   scripts/gpu-scenarios.sh kit    here (no GPU needed): build the release binary and cuprobe,
#                                   and gather runc (+ libseccomp) into target/gpu-kit/
#   scripts/gpu-scenarios.sh run    on the GPU machine, with target/gpu-kit carried along:
#                                   runc containers with the host's driver libraries and a chosen
#                                   set of NVIDIA device nodes / cgroup rules, cuda-preflight as
#                                   their createRuntime hook (audit mode, so each starts anyway),
#                                   cuprobe inside reporting what the driver really returns;
#                                   then the timings; the image-binaries walk
#                                   (scripts/gpu-walk.sh) first. Prints predicted vs actual,
#                                   tables last; full logs under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/gpu-kit

case "${1:-}" in
kit)
  cargo build --release --locked
  mkdir -p "$kit/lib"
  cp target/release/cuda-preflight "$kit/"
  gcc -O2 -Wall -o "$kit/cuprobe" tests/gpu/cuprobe.c -ldl
  cp "$(command -v runc)" "$kit/runc"
  cp "$(ldconfig -p | awk '/libseccomp.so.2 /{print $NF; exit}')" "$kit/lib/"
  cp "$(command -v busybox)" "$kit/busybox"
  ls -la "$kit"
  ;;
run)
  [ -x "$kit/cuda-preflight" ] || { echo "no $kit: run 'scripts/gpu-scenarios.sh kit' first and carry $kit" >&2; exit 2; }
  out="${OUT:-/tmp/cuda-preflight-gpu}"; mkdir -p "$out"
  # The image-binaries walk against real launches and a real PyTorch install (needs nvcc there).
  if command -v nvcc >/dev/null; then
    BIN="$PWD/$kit/cuda-preflight" scripts/gpu-walk.sh "$out/walk" 2>&1 | tee "$out/walk.txt"
  fi
  python3 tests/gpu/scenarios.py "$kit" 2>&1 | tee "$out/scenarios.txt"
  ;;
*)
  echo "usage: $0 kit|run" >&2
  exit 2
  ;;
esac
