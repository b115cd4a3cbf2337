#!/usr/bin/env bash
# Build the .deb (cargo-deb, metadata in Cargo.toml) and check what it holds: the file list, the
# conffile, and that the packaged binaries run from an extracted copy. It does not `dpkg -i` on
# this machine: that would put our hook into the system-wide Podman hooks directory under every
# other test running here.
#   scripts/package-deb.sh            release build (slow: LTO)
#   PROFILE=dev scripts/package-deb.sh   reuse the debug build (quick check of the packaging)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
if [ "$profile" = release ]; then
  cargo build --locked --release --bins
else
  cargo build --locked --profile "$profile" --bins
fi
rm -rf target/debian
cargo deb --no-build --profile "$profile" --fast -o target/debian/ >/dev/null
deb=$(ls target/debian/cuda-preflight_*.deb)

want="./etc/cuda-preflight/config.toml
./usr/bin/cuda-preflight
./usr/bin/cuda-preflight-runtime
./usr/share/containers/oci/hooks.d/cuda-preflight.json
./usr/share/cuda-preflight/hooks/cdi/nvidia-containerEdits-hook.json
./usr/share/cuda-preflight/hooks/containerd/config.toml
./usr/share/cuda-preflight/hooks/docker/daemon.json
./usr/share/doc/cuda-preflight/README.md
./usr/share/doc/cuda-preflight/copyright
./usr/share/doc/cuda-preflight/hooks.md"
got=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -v '/$' | sort)
if [ "$got" != "$want" ]; then
  diff <(echo "$want") <(echo "$got") >&2 || true
  echo "package-deb: unexpected file list" >&2
  exit 1
fi
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[ "$conffiles" = /etc/cuda-preflight/config.toml ] || { echo "package-deb: conffiles: $conffiles" >&2; exit 1; }

x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
"$x/usr/bin/cuda-preflight" explain 304 | grep -q CUDA_ERROR_OPERATING_SYSTEM
# The packaged default config means the defaults: the hook accepts it.
"$x/usr/bin/cuda-preflight" check --config "$x/etc/cuda-preflight/config.toml" \
  --bundle examples/bundles/cdi-no-uvm --host-profile examples/hosts/h100-580.json >/dev/null && rc=0 || rc=$?
[ "$rc" = 1 ] || { echo "package-deb: check with the packaged config exited $rc, want 1 (block)" >&2; exit 1; }
# The shim names the hook installed next to it.
mkdir "$x/b" && echo '{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}}' > "$x/b/config.json"
printf 'runtime = "/bin/true"\n' > "$x/shim.toml"
"$x/usr/bin/cuda-preflight-runtime" --cuda-preflight-config "$x/shim.toml" create --bundle "$x/b" id1
grep -q "\"path\":\"$x/usr/bin/cuda-preflight\"" "$x/b/config.json"
echo "package-deb: $deb ok"
