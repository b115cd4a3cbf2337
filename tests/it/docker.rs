//! The runtime shim under the real Docker daemon (Debian's `docker.io`, 20.10): `daemon.json`
//! names the freshly built `cuda-preflight-runtime` as the default runtime. One daemon, with its
//! own containerd, data root, exec root and socket, serves every case in sequence and is stopped
//! at the end (also when a case fails). `docker run --gpus all` takes Docker's own GPU path: a
//! stand-in `nvidia-container-runtime-hook` on dockerd's `PATH` is what Docker looks for, and
//! Docker adds it as a prestart hook.

// The message names a 64-hex id by its first 12 characters, as `docker ps` does.
use cuda_preflight::output::message::short_id;

use crate::common::dockerd::Dockerd;
use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_cuda-preflight-runtime");
const IMAGE: &str = "cuda-preflight-test/busybox:1";

/// The private daemon (tests/it/common/dockerd.rs), with what these cases ask of it.
struct Daemon(Dockerd);

impl std::ops::Deref for Daemon {
    type Target = Dockerd;
    fn deref(&self) -> &Dockerd {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Dockerd {
        &mut self.0
    }
}

impl Daemon {
    /// `docker run --rm --cidfile … ARGS`; returns the output and the container id.
    fn run(&self, name: &str, args: &[&str]) -> (Output, String) {
        let cidfile = self.path(&format!("{name}.cid"));
        let mut all = vec!["run", "--rm", "--cidfile", cidfile.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.docker(&all, None);
        let id = std::fs::read_to_string(&cidfile).unwrap_or_default();
        (out, id.trim().to_string())
    }

    fn report(&self, id: &str) -> Option<Value> {
        read_report(&self.path("state"), id)
    }

    /// The spec the runtime got, as the stand-in NVIDIA hook saved it at prestart.
    fn spec_seen(&self, id: &str) -> Value {
        let p = self.path(&format!("specs/{id}.json"));
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    /// `daemon.json`: each of `runtimes` (name, config) is the shim judging under that config; the
    /// first is the default runtime.
    fn write_runtimes(&self, runtimes: &[(&str, &Path)]) {
        let entries: Vec<(&str, Value)> = runtimes
            .iter()
            .map(|(name, config)| {
                (
                    *name,
                    json!({"path": SHIM, "runtimeArgs": [format!("--cuda-preflight-config={}", config.display())]}),
                )
            })
            .collect();
        self.write_daemon_json(&entries, Some(runtimes[0].0));
    }
}

/// A stand-in for `nvidia-container-runtime-hook prestart`: it saves the spec it sees (to show
/// the hook order the runtime got), then creates the NVIDIA nodes in the container's mount
/// namespace and allows them in its v1 device cgroup, as the real one does — except the node
/// named by the container's `STANDIN_LEAVE_OUT`, which is how a case asks for a defect.
fn standin_hook(dir: &Path) {
    let bin = dir.join("nvidia-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    let nsenter = require_tool("nsenter");
    let script = format!(
        r#"#!/bin/bash
set -eu
read -r id pid rootfs visible leave < <(python3 -c '
import json, os, shutil, sys
s = json.load(sys.stdin)
shutil.copy(os.path.join(s["bundle"], "config.json"), "{specs}/" + s["id"] + ".json")
c = json.load(open(os.path.join(s["bundle"], "config.json")))
env = dict(v.split("=", 1) for v in c["process"].get("env", []) if "=" in v)
print(s["id"], s["pid"], os.path.join(s["bundle"], c["root"]["path"]),
      env.get("NVIDIA_VISIBLE_DEVICES") or "-", env.get("STANDIN_LEAVE_OUT") or "-")')
case "$visible" in -|void|none) exit 0;; esac
for n in "/dev/nvidiactl 195 255" "/dev/nvidia-uvm 238 0" "/dev/nvidia0 195 0"; do
  set -- $n
  [ "$1" = "$leave" ] && continue
  {nsenter} -t "$pid" -m mknod -m 666 "$rootfs$1" c "$2" "$3"
done
cg=$(sed -n 's/^[0-9]*:devices:\(.*\)$/\1/p' /proc/$pid/cgroup)
if [ -n "$cg" ] && [ -w "/sys/fs/cgroup/devices$cg/devices.allow" ]; then
  echo 'c 195:* rwm' > "/sys/fs/cgroup/devices$cg/devices.allow"
  echo 'c 238:* rwm' > "/sys/fs/cgroup/devices$cg/devices.allow"
fi
"#,
        specs = dir.join("specs").display(),
        nsenter = nsenter.display()
    );
    let path = bin.join("nvidia-container-runtime-hook");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn start() -> Daemon {
    let mut daemon = Daemon(Dockerd::new());
    let d = &daemon.dir().to_path_buf();
    standin_hook(d);
    std::fs::write(
        d.join("config.toml"),
        format!(
            "probe = \"never\"\nhost_profile = \"{}\"\nstate_dir = \"{}\"\n",
            h100_profile().display(),
            d.join("state").display()
        ),
    )
    .unwrap();
    daemon.write_runtimes(&[("cuda-preflight", &d.join("config.toml"))]);
    // dockerd finds nvidia-container-runtime-hook on its own PATH at start-up, and only then
    // accepts --gpus.
    daemon.start(Some(&d.join("nvidia-bin")));
    // The image: a busybox rootfs, imported.
    let rootfs = busybox_rootfs(&d.join("image"));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let import = daemon.docker(&["import", "-", IMAGE], Some(&tar.stdout));
    assert!(
        import.status.success(),
        "docker import failed: {}",
        text(&import.stderr)
    );
    daemon
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn docker_with_the_runtime_shim() {
    let mut daemon = start();

    // No GPU: starts, the container's own exit code comes back, the hook takes its fast path
    // (no report).
    let (out, id) = daemon.run("plain", &[IMAGE, "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert!(!id.is_empty());
    assert!(daemon.report(&id).is_none());

    // --gpus all, every node injected: starts. Our hook ran after Docker's NVIDIA prestart hook:
    // had it run before, the nodes would have been missing and the start blocked.
    let (out, id) = daemon.run(
        "healthy",
        &[
            "--gpus",
            "all",
            IMAGE,
            "ls",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = daemon.report(&id).expect("our hook ran and wrote a report");
    assert_eq!(report["verdict"], "allow", "{report:#}");
    assert_eq!(report["request"]["kind"], "injected-by-hook", "{report:#}");
    let spec = daemon.spec_seen(&id);
    let prestart = spec["hooks"]["prestart"].as_array().unwrap();
    assert!(
        prestart
            .iter()
            .any(|h| h["args"] == json!(["nvidia-container-runtime-hook", "prestart"])),
        "Docker's --gpus path added the NVIDIA hook: {spec:#}"
    );
    let ours: Vec<&Value> = spec["hooks"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s.as_array().unwrap())
        .filter(|h| h["args"].get(1) == Some(&json!("hook")))
        .collect();
    assert_eq!(ours.len(), 1, "our hook once: {spec:#}");
    assert_eq!(
        spec["hooks"]["createRuntime"].as_array().unwrap().last(),
        Some(ours[0]),
        "ours last in createRuntime, which runc runs after every prestart hook"
    );
    assert_eq!(
        ours[0]["path"],
        json!(
            Path::new(SHIM)
                .with_file_name("cuda-preflight")
                .to_str()
                .unwrap()
        )
    );

    // --gpus all, /dev/nvidia-uvm left out by the NVIDIA hook: blocked, and `docker run` says why.
    let (out, id) = daemon.run(
        "defect",
        &[
            "--gpus",
            "all",
            "-e",
            "STANDIN_LEAVE_OUT=/dev/nvidia-uvm",
            IMAGE,
            "true",
        ],
    );
    let err = text(&out.stderr);
    eprintln!("blocked start, as the user sees it:\n{err}");
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "stderr: cuda-preflight: blocked container {}: /dev/nvidia-uvm is missing from the container's /dev: CUDA would fail with 999 CUDA_ERROR_UNKNOWN",
            short_id(&id)
        )),
        "{err}"
    );
    assert!(err.contains("x device-node-missing:"), "{err}");
    assert!(
        err.contains(&format!(
            "full report: cuda-preflight report {}",
            short_id(&id)
        )),
        "{err}"
    );
    let report = daemon.report(&id).unwrap();
    assert_eq!(report["verdict"], "block");
    assert_eq!(finding_ids(&report), ["device-node-missing"]);

    // An unsatisfiable NVIDIA_REQUIRE_CUDA: the shim blocks before the real runtime runs (the
    // NVIDIA hook never sees the container), and `docker run` says why, in our words.
    let (out, id) = daemon.run(
        "require",
        &[
            "--gpus",
            "all",
            "-e",
            "NVIDIA_REQUIRE_CUDA=cuda>=99.0",
            IMAGE,
            "true",
        ],
    );
    let err = text(&out.stderr);
    eprintln!("blocked by the shim, as the user sees it:\n{err}");
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "OCI runtime create failed: cuda-preflight: blocked container {}: ",
            short_id(&id)
        )),
        "{err}"
    );
    assert!(err.contains("x require-unsatisfied:"), "{err}");
    assert!(!err.contains("error running hook"), "no hook ran: {err}");
    assert!(
        !daemon.path(&format!("specs/{id}.json")).exists(),
        "the NVIDIA hook did not run"
    );
    let report = daemon.report(&id).unwrap();
    assert_eq!(report["verdict"], "block");
    assert_eq!(finding_ids(&report), ["require-unsatisfied"]);

    // NVIDIA_VISIBLE_DEVICES without --gpus: no GPU is given, so a warning, never a block.
    let (out, id) = daemon.run(
        "env-only",
        &["-e", "NVIDIA_VISIBLE_DEVICES=all", IMAGE, "true"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = daemon.report(&id).unwrap();
    assert_eq!(report["verdict"], "warn", "{report:#}");
    assert_eq!(finding_ids(&report), ["gpu-env-without-runtime"]);

    // A runtime added to daemon.json and picked up by a SIGHUP reload, with a config of its own
    // (mode = warn): the same defect starts, and the report says it was judged under that config.
    let d = &daemon.dir().to_path_buf();
    let warn_config = d.join("warn.toml");
    std::fs::write(
        &warn_config,
        format!(
            "mode = \"warn\"\nprobe = \"never\"\nhost_profile = \"{}\"\nstate_dir = \"{}\"\n",
            h100_profile().display(),
            d.join("state").display()
        ),
    )
    .unwrap();
    let config = d.join("config.toml");
    daemon.write_runtimes(&[
        ("cuda-preflight", &config),
        ("cuda-preflight-warn", &warn_config),
    ]);
    daemon.reload(
        |daemon| {
            text(
                &daemon
                    .docker(&["info", "--format", "{{json .Runtimes}}"], None)
                    .stdout,
            )
            .contains("cuda-preflight-warn")
        },
        "the reloaded runtime",
    );
    let (out, id) = daemon.run(
        "reloaded",
        &[
            "--runtime",
            "cuda-preflight-warn",
            "--gpus",
            "all",
            "-e",
            "STANDIN_LEAVE_OUT=/dev/nvidia-uvm",
            IMAGE,
            "true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = daemon.report(&id).unwrap();
    assert_eq!(
        (&report["verdict"], &report["mode"]),
        (&json!("warn"), &json!("warn")),
        "{report:#}"
    );
    assert_eq!(finding_ids(&report), ["device-node-missing"]);
}
