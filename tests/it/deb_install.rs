//! The .deb, installed with `dpkg -i` on this machine and run by real Podman through the
//! installed hooks-directory entry, then removed and purged, with nothing left behind.
//!
//! Other tests run in parallel and a machine-wide /etc/cuda-preflight/config.toml or hooks.d
//! entry would reach them, so everything runs in a private mount namespace (`unshare -m`) where
//! /usr, /etc and /var/lib/dpkg are overlays whose upper layers live on a tmpfs of that
//! namespace: dpkg, Podman and the hook see a normal system, no other process sees a change, and
//! the upper layers show exactly what the package left.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The script run inside the namespace; the test's inputs come in the environment.
const INSIDE: &str = r#"
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$T/ovl" "$T/lower"
mount -t tmpfs tmpfs "$T/ovl"
for d in /usr /etc /var/lib/dpkg; do
  n=${d//\//_}
  mkdir -p "$T/lower/$n" "$T/ovl/$n/up" "$T/ovl/$n/work"
  # The real directory, bound aside: the lower layer, to compare with at the end.
  mount --bind "$d" "$T/lower/$n"
  mount -t overlay overlay -o "lowerdir=$T/lower/$n,upperdir=$T/ovl/$n/up,workdir=$T/ovl/$n/work" "$d"
done
count() { ls "$T/state/reports" 2>/dev/null | wc -l; }
pm() {
  timeout -k 5 120 podman --root "$T/storage" --runroot "$T/runroot" --storage-driver vfs \
    --cgroup-manager cgroupfs --events-backend none --runtime runc \
    --hooks-dir /usr/share/containers/oci/hooks.d --hooks-dir "$T/hooks-$1" \
    run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    "${@:2}" --rootfs "$T/rootfs" true
}

upper() { for n in _usr _etc; do (cd "$T/ovl/$n/up" && find . -mindepth 1 | sed "s|^\.|${n//_//}|"); done | sort; }

! dpkg -s cuda-preflight >/dev/null 2>&1 || fail "cuda-preflight is already installed here"
# Stand-ins for NVIDIA's prestart hook, one hooks directory each; the installed directory is
# named first, as Podman's default list has it.
for s in all no-uvm; do
  mkdir "$T/hooks-$s"
  printf '{"version":"1.0.0","hook":{"path":"%s","args":["nvidia-container-runtime-hook","prestart"]},"when":{"always":true},"stages":["prestart"]}' \
    "$T/$s/nvidia-bin/nvidia-container-runtime-hook" > "$T/hooks-$s/standin.json"
done

# Before the package: Podman writes its own lock files under /etc on a first run; what is in
# the upper layers now is the baseline to compare with after the purge.
pm all || fail "plain container did not start before the install"
before=$(upper)
dpkg --log="$T/dpkg.log" -i "$DEB" >/dev/null
[ -x /usr/bin/cuda-preflight ] && [ -f /usr/share/containers/oci/hooks.d/cuda-preflight.json ] ||
  fail "installed files missing"
# An admin's settings in the installed conffile: this test's host profile and state dir.
printf 'probe = "never"\nstate_dir = "%s"\nhost_profile = "%s"\n' "$T/state" "$PROFILE" \
  >> /etc/cuda-preflight/config.toml
pm all -e NVIDIA_VISIBLE_DEVICES=all || fail "healthy GPU container did not start"
[ "$(count)" = 1 ] || fail "healthy: $(count) reports, want 1"
pm all || fail "plain container did not start"
[ "$(count)" = 1 ] || fail "plain container got a report"
if pm no-uvm -e NVIDIA_VISIBLE_DEVICES=all 2>"$T/blocked.err"; then
  fail "GPU container without /dev/nvidia-uvm started"
fi
grep -q 'cuda-preflight: blocked container' "$T/blocked.err" || fail "no message: $(cat "$T/blocked.err")"
[ "$(count)" = 2 ] || fail "blocked: $(count) reports, want 2"

dpkg --log="$T/dpkg.log" -r cuda-preflight >/dev/null
[ -f /etc/cuda-preflight/config.toml ] || fail "remove dropped the conffile"
[ ! -e /usr/bin/cuda-preflight ] && [ ! -e /usr/share/containers/oci/hooks.d/cuda-preflight.json ] ||
  fail "remove left the binary or the hook"
# The hook went with the package: the same container starts now, and no report is written.
pm no-uvm -e NVIDIA_VISIBLE_DEVICES=all || fail "after remove: not started"
[ "$(count)" = 2 ] || fail "after remove: the hook still ran"
dpkg --log="$T/dpkg.log" --purge cuda-preflight >/dev/null
! dpkg -s cuda-preflight >/dev/null 2>&1 || fail "still known to dpkg after purge"

# Nothing left: the upper layers hold what they held before the install, and directories that
# exist below (copied up as dpkg passed through them); dpkg's status is byte for byte what it was.
left=""
for p in $(comm -13 <(echo "$before") <(upper)); do
  n=${p#/}; n=_${n%%/*}; r=${p#/*/}
  [ -d "$p" ] && [ -d "$T/lower/$n/$r" ] || left="$left $p"
done
[ -z "$left" ] || fail "left behind:$left"
cmp -s "$T/lower/_var_lib_dpkg/status" /var/lib/dpkg/status || fail "dpkg status changed"
! ls /var/lib/dpkg/info/cuda-preflight.* >/dev/null 2>&1 || fail "dpkg info files left"
echo "deb-install: ok"
"#;

/// `cargo deb` from the binaries this test run built (the profile they were built with), into `out`.
fn build_deb(out: &Path) -> PathBuf {
    let bin = Path::new(BIN);
    let profile_dir = bin.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        p => p,
    };
    // scripts/test.sh installs cargo-deb into the shared cache when it is missing.
    let path = format!(
        "{}:{}",
        cache().join("cargo-tools/bin").display(),
        std::env::var("PATH").unwrap()
    );
    let o = Command::new(env!("CARGO"))
        .current_dir(repo())
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
            profile,
            "-o",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cargo deb (scripts/test.sh installs cargo-deb): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb")
}

#[test]
fn deb_installs_runs_under_podman_and_purges_clean() {
    for t in ["podman", "runc", "dpkg", "unshare", "busybox"] {
        require_tool(t);
    }
    let t = tempfile::tempdir().unwrap();
    let deb = build_deb(&t.path().join("deb"));
    busybox_rootfs(t.path());
    let no_uvm: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    standin_nvidia_hook(&t.path().join("all"), ALL_NODES, true);
    standin_nvidia_hook(&t.path().join("no-uvm"), &no_uvm, true);

    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", INSIDE])
        .env("T", t.path())
        .env("DEB", &deb)
        .env("PROFILE", h100_profile())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("deb-install: ok"),
        "{text}"
    );

    // The reports the installed hook wrote, outside the namespace: one allow, one block.
    let mut verdicts: Vec<String> = std::fs::read_dir(t.path().join("state/reports"))
        .unwrap()
        .map(|e| {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            r["verdict"].as_str().unwrap().to_string()
        })
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, ["allow", "block"]);
}
