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
#                                   the CDI chain: NVIDIA's nvidia-container-runtime (cdi mode)
#                                   with a spec nvidia-ctk generates there, its real CDI hooks,
#                                   then cuda-preflight-runtime and runc;
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
  gcc -O2 -Wall -o "$kit/cgjoin" tests/gpu/cgjoin.c
  cp "$(command -v runc)" "$kit/runc"
  cp "$(ldconfig -p | awk '/libseccomp.so.2 /{print $NF; exit}')" "$kit/lib/"
  cp "$(command -v busybox)" "$kit/busybox"
  cp target/release/cuda-preflight-runtime "$kit/"
  # NVIDIA's container toolkit for the CDI chain (tests/gpu/scenarios.py cdi_chain): one
  # variable names it; this workplace keeps it next to the repository.
  tk="${CUDA_PREFLIGHT_NVIDIA_TOOLKIT:-$(cd .. && pwd)/shared/nvidia-toolkit}"
  echo "NVIDIA container toolkit from $tk (CUDA_PREFLIGHT_NVIDIA_TOOLKIT)" >&2
  (cd "$tk" && sha256sum --quiet -c SHA256SUMS)
  # Carried compressed (5 MB, not 28: the kit travels within 64 MiB); scenarios.py unpacks them.
  rm -rf "$kit/nvidia"; mkdir -p "$kit/nvidia"
  for b in nvidia-container-runtime nvidia-cdi-hook nvidia-ctk; do
    cp "$tk/$b.xz" "$kit/nvidia/"
  done
  # The spec nvidia-ctk generated on the H100, as JSON: the fallback where generating fails.
  for y in "$tk"/cdi-*.yaml; do
    [ -e "$y" ] && python3 -c 'import json,sys,yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' "$y" > "$kit/nvidia/cdi-stored.json"
  done
  # Libraries with GPU code for the CUDA_*_PTX_JIT scenarios: a host .so carrying a committed
  # fatbin fixture as its .nv_fatbin (what the hook's walk reads), next to the raw fatbin (what
  # the workload hands cuModuleLoadData).
  mkdir -p "$kit/cdi-libs"
  echo 'int cpf_marker(void) { return 1; }' > "$kit/cdi-libs/m.c"
  gcc -shared -fPIC -o "$kit/cdi-libs/m.so" "$kit/cdi-libs/m.c"
  for pair in sass90a:s90a ptx80:f80-9.0; do
    name=${pair%%:*}; fx=tests/data/h100-driver-13.0/${pair##*:}.fatbin
    cp "$fx" "$kit/cdi-libs/$name.fatbin"
    objcopy --add-section .nv_fatbin="$fx" --set-section-flags .nv_fatbin=alloc,readonly \
      "$kit/cdi-libs/m.so" "$kit/cdi-libs/libcpf_$name.so" 2>/dev/null
  done
  ls -la "$kit" "$kit/nvidia" "$kit/cdi-libs"; du -sh "$kit"
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
