#!/usr/bin/env bash
# Seed corpus for `cargo fuzz run fatbin`: small real inputs from the fixture cache that
# tests/it/fatbin_vs_cuobjdump.rs builds (run the tests first).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/fatbin
cache="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"
[ -d "$cache/fixtures" ] && find "$cache/fixtures" -type f \( -name '*.fatbin' -o -name '*.cubin' -o -name '*.ptx' -o -name '*.o' \) -size -64k |
    while read -r f; do cp "$f" "corpus/fatbin/$(basename "$(dirname "$f")")-$(basename "$f")"; done
ls corpus/fatbin | wc -l

# Seeds for the other targets: real inputs from the repository (fixtures, examples, the runc
# spec the tests use) plus a few hand-written edge cases.
repo=..
seed() { mkdir -p "corpus/$1"; cp "$2" "corpus/$1/$(echo "${2#../}" | tr / _ | sed "s/^[._]*//")"; }
text() { mkdir -p "corpus/$1"; printf '%s' "$3" > "corpus/$1/$2"; }
for b in "$repo"/examples/bundles/*/config.json; do seed spec "$b"; done
for h in "$repo"/examples/hosts/*.json; do seed host_profile "$h"; done
seed ld_so_cache "$repo/tests/fixtures/h100-580/etc/ld.so.cache"
[ -f /etc/ld.so.cache ] && seed ld_so_cache /etc/ld.so.cache
seed nvrm_version "$repo/tests/fixtures/h100-580/proc/driver/nvidia/version"
seed proc_devices "$repo/tests/fixtures/h100-580/proc/devices"
seed proc_devices /proc/devices
seed config "$repo/packaging/config.toml"
text state runc '{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":4242,"bundle":"/b","annotations":{"a":"b"}}'
text state crun '{"ociVersion":"1.0.0","id":"c2","status":"created","pid":7,"bundle":"/b","root":"/run/crun"}'
text state legacy '{"ociVersion":"1.0.0-rc1","id":"c3","status":"created","pid":7,"bundlePath":"/b"}'
text state paused '{"ociVersion":"1.2.0","id":"c4","status":"paused","bundle":"/b"}'
text requirements cuda12 'NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 brand=nvidia,driver>=535,driver<536'
text requirements legacy $'CUDA_VERSION=11.8.0\nNVIDIA_DISABLE_REQUIRE=false'
text requirements bad $'NVIDIA_REQUIRE_ARCH=arch>=8.0,foo~1 ==3 driver>=abc brand<tesla\nNVIDIA_REQUIRE_X=,, ,'
text version_json cuda124 '{"cuda":{"name":"CUDA SDK","version":"12.4.1"},"cuda_cudart":{"name":"CUDA Runtime (cudart)","version":"12.4.127"}}'
text version_json bad '{"cuda":{"version":"12.x"}}'
text devices_list v1 $'a *:* rwm\nc 195:* rwm\nc 238:0 rw\nb 8:0 r\n'
text cdi json $'\x00{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/nvidia0"}]}}],"containerEdits":{"deviceNodes":[{"path":"/dev/nvidiactl"}],"mounts":[{"hostPath":"/usr/lib/libcuda.so.1","containerPath":"/usr/lib/libcuda.so.1"}]}}'
text cdi yaml $'\x01cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: 0\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n- name: all\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n      hostPath: /dev/nvidia0\ncontainerEdits:\n  deviceNodes:\n  - path: /dev/nvidia-uvm\n  mounts:\n  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05\n    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05\n'
# Small real shared objects: program headers, DT_NEEDED/RUNPATH, version needs and definitions.
for l in /lib/x86_64-linux-gnu/libdl.so.2 /lib/x86_64-linux-gnu/libpthread.so.0 /lib/x86_64-linux-gnu/librt.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1; do
    [ -f "$l" ] && seed elf_dynamic "$l"
done
text toolchain_banner ptxas124 $'\x00Cuda compilation tools, release %d.%d, V%d.%d.%d\x00Cuda compilation tools, release 12.4, V12.4.99\x00'
text toolchain_banner nvrtc $'Cuda compilation tools, release 12.4, V12.4.127\nBuild cuda_12.4.r12.4/compiler.34043715_0'
text toolchain_banner bad $'Cuda compilation tools, release 12.4.1.2.3.4.5.6.7.8.9, V99999999999999999999.1'
if command -v runc >/dev/null; then
    t=$(mktemp -d); runc spec --bundle "$t"; seed spec "$t/config.json"; rm -rf "$t"
fi
for d in corpus/*; do echo "$d: $(ls "$d" | wc -l)"; done
