#!/usr/bin/env bash
# Build the .rpm (cargo-generate-rpm, metadata in Cargo.toml) and check it with rpm itself: the
# file list (the same files as the .deb), the config file marked %config(noreplace), the docs;
# then install it into a throwaway root (rpm --root, never this machine's own), run the
# installed binary, edit the config, erase the package and check what is left (only the edited
# config, saved as .rpmsave, as rpm does for a changed config file).
#   scripts/package-rpm.sh               release build (slow: LTO)
#   PROFILE=dev scripts/package-rpm.sh   reuse the debug build (quick check of the packaging)
# cargo-generate-rpm is installed once into the shared download cache when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
CACHE="${CUDA_PREFLIGHT_CACHE:-/var/tmp/cuda-preflight-cache}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

tools="$CACHE/cargo-tools"
export PATH="$tools/bin:$PATH"
if ! command -v cargo-generate-rpm >/dev/null; then
  echo "package-rpm: installing cargo-generate-rpm into $tools" >&2
  cargo install --locked --quiet --root "$tools" cargo-generate-rpm@0.21.1
fi
if ! command -v rpm >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null
fi

if [ "${NO_BUILD:-0}" = 1 ]; then
  : # the caller built the binaries (scripts/test.sh, after cargo test)
elif [ "$profile" = release ]; then
  cargo build --locked --release --bins
else
  cargo build --locked --profile "$profile" --bins
fi
out=target/generate-rpm
rm -rf "$out"
# A debug build's binaries are large and zstd at the default level is slow on them: no
# compression there, the release package keeps the default.
compress=zstd
[ "$profile" = release ] || compress=none
cargo generate-rpm --profile "$profile" --payload-compress "$compress" >/dev/null
rpmfile=$(ls "$out"/cuda-preflight-*.rpm)

fail() { echo "package-rpm: $*" >&2; exit 1; }
want="/etc/cuda-preflight/config.toml
/usr/bin/cuda-preflight
/usr/bin/cuda-preflight-runtime
/usr/share/containers/oci/hooks.d/cuda-preflight.json
/usr/share/cuda-preflight/hooks/cdi/nvidia-containerEdits-hook.json
/usr/share/cuda-preflight/hooks/containerd/config.toml
/usr/share/cuda-preflight/hooks/docker/daemon.json
/usr/share/doc/cuda-preflight/LICENSE-APACHE
/usr/share/doc/cuda-preflight/LICENSE-MIT
/usr/share/doc/cuda-preflight/README.md
/usr/share/doc/cuda-preflight/hooks.md"
got=$(rpm -qlp "$rpmfile" 2>/dev/null | sort)
if [ "$got" != "$want" ]; then
  diff <(echo "$want") <(echo "$got") >&2 || true
  fail "unexpected file list"
fi
# FILEFLAGS: c = %config, n = noreplace, d = %doc.
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" 2>/dev/null | sort)
echo "$flags" | grep -qx '/etc/cuda-preflight/config.toml cn' || fail "config flags: $flags"
[ "$(echo "$flags" | grep -c ' d$')" = 4 ] || fail "doc flags: $flags"
[ "$(echo "$flags" | grep -c ' $')" = 6 ] || fail "plain files: $flags"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Debian's rpm keeps its database in ~/.rpmdb: name one inside the root.
r() { rpm --root "$root" --dbpath /var/lib/rpm "$@"; }
r --initdb
# --nodeps: the throwaway root holds no libc package, only what this test puts there.
r -i --nodeps "$rpmfile"
r -q cuda-preflight >/dev/null || fail "not installed"
"$root/usr/bin/cuda-preflight" explain 304 | grep -q CUDA_ERROR_OPERATING_SYSTEM
"$root/usr/bin/cuda-preflight" check --config "$root/etc/cuda-preflight/config.toml" \
  --bundle examples/bundles/cdi-no-uvm --host-profile examples/hosts/h100-580.json >/dev/null && rc=0 || rc=$?
[ "$rc" = 1 ] || fail "check with the packaged config exited $rc, want 1 (block)"
echo 'mode = "warn"' >> "$root/etc/cuda-preflight/config.toml"
r -e cuda-preflight
left=$(cd "$root" && find . -path ./var -prune -o ! -type d -print | sort)
[ "$left" = ./etc/cuda-preflight/config.toml.rpmsave ] || fail "left behind after erase: $left"
echo "package-rpm: $rpmfile ok"
