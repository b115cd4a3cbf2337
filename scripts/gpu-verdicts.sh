#!/usr/bin/env bash
# Record what the real driver says about each fixture (tests/data/h100-driver-13.0/driver.tsv).
# Run on the GPU machine (it needs nvcc, gcc and libcuda there; nothing from this repository but
# this script and scripts/gpu-verdicts/load.c). Builds cubins, fatbins and raw PTX with the local
# nvcc (raw PTX at several ISA versions by editing `.version`), loads each with
# cuModuleLoadData on GPU 0, and writes the fixtures plus driver.tsv into OUTDIR.
#   scripts/gpu-verdicts.sh OUTDIR [EXTRA_FILES...]
# Then copy OUTDIR into tests/data/<gpu>-driver-<version>/; tests/it/driver_verdicts.rs compares
# `scan`'s predictions with it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"; shift
mkdir -p "$out"
for f in "$@"; do cp "$f" "$out/"; done
cd "$out"
N=nvcc
echo '__global__ void add(float*a,const float*b,int n){int i=blockIdx.x*blockDim.x+threadIdx.x;if(i<n)a[i]+=b[i];}' >k.cu
for a in 75 80 86 90 90a 100a; do $N -cubin -arch=sm_$a -o c$a.cubin k.cu; done
for a in 80 90a 100; do
    $N -ptx -arch=compute_$a -o p$a.ptx k.cu
    for v in 8.5 9.0 9.1 9.5; do
        sed "s/^\.version .*/.version $v/" p$a.ptx >r$a-$v.ptx
        # nvcc refuses ISA versions newer than its own or too old for the target; skip those.
        $N -fatbin -arch=compute_$a -code=compute_$a -o f$a-$v.fatbin r$a-$v.ptx 2>/dev/null || true
    done
done
$N -fatbin -gencode 'arch=compute_80,code=[sm_80,compute_80]' -o s80p80.fatbin k.cu
$N -fatbin -gencode 'arch=compute_100f,code=[sm_100f,compute_100f]' -o f100f.fatbin k.cu
$N -fatbin -gencode arch=compute_90a,code=sm_90a -o s90a.fatbin k.cu
rm -f k.cu p*.ptx
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
gcc -O1 -o /tmp/gpu-verdicts-load "$here/gpu-verdicts/load.c" -I"$CUDA_HOME/include" -lcuda
/tmp/gpu-verdicts-load *.cubin *.fatbin *.ptx | tee driver.tsv
