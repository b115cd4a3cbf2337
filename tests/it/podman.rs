//! Real Podman with a hooks directory holding the project's `hooks/oci-hooks.d` entry (its path
//! pointed at the built binary), next to a stand-in for NVIDIA's prestart hook.

use crate::common::*;
use std::process::Command;

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(nvidia_nodes: &[(&str, u32, u32)], config_toml: &str) -> Podman {
        Podman::with_cgroup(nvidia_nodes, config_toml, true)
    }

    /// `cgroup_allow`: whether the stand-in also allows the nodes in the device cgroup (v1).
    fn with_cgroup(
        nvidia_nodes: &[(&str, u32, u32)],
        config_toml: &str,
        cgroup_allow: bool,
    ) -> Podman {
        require_tool("podman");
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("config.toml");
        // The probe needs a libcuda in the image; it has its own tests (tests/it/probe.rs).
        std::fs::write(&config, format!("probe = \"never\"\n{config_toml}")).unwrap();
        // Our entry, as shipped, with the binary and its settings pointed at this test.
        let mut ours: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
        )
        .unwrap();
        ours["hook"]["path"] = BIN.into();
        // The shipped argv (its --stage must match its stage), then this test's settings.
        let shipped = ours["hook"]["args"].as_array().unwrap().clone();
        assert_eq!(ours["stages"], serde_json::json!(["createContainer"]));
        let mut args = serde_json::json!([
            "--config",
            config,
            "--state-dir",
            state,
            "--host-profile",
            h100_profile()
        ]);
        ours["hook"]["args"] = serde_json::Value::Array(
            shipped
                .into_iter()
                .chain(args.as_array_mut().unwrap().drain(..))
                .collect(),
        );
        std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
        let standin = standin_nvidia_hook(dir.path(), nvidia_nodes, cgroup_allow);
        let nvidia = serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": standin, "args": ["nvidia-container-runtime-hook", "prestart"]},
            "when": {"always": true},
            "stages": ["prestart"]
        });
        std::fs::write(hooks.join("oci-nvidia-hook.json"), nvidia.to_string()).unwrap();
        busybox_rootfs(dir.path());
        Podman { dir }
    }

    fn run(&self, env: &[&str]) -> (bool, String, Option<serde_json::Value>) {
        let d = self.dir.path();
        let name = unique_id("podman");
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "120", "podman"])
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--runtime",
                "runc",
            ])
            .arg("--hooks-dir")
            .arg(d.join("hooks.d"))
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                "--name",
                &name,
            ]);
        for e in env {
            cmd.args(["-e", e]);
        }
        cmd.arg("--rootfs").arg(d.join("rootfs")).arg("true");
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Podman names the OCI container by its own id; find the one report written, if any.
        let report = std::fs::read_dir(d.join("state/reports"))
            .ok()
            .and_then(|rd| {
                let mut reps: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                reps.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
                reps.last().map(|p| {
                    serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()
                })
            });
        if let Some(r) = &report {
            let _ = std::fs::remove_file(
                d.join("state/reports")
                    .join(format!("{}.json", r["container_id"].as_str().unwrap())),
            );
        }
        (out.status.success(), err, report)
    }
}

#[test]
fn podman_gpu_container_with_all_nodes_starts() {
    let p = Podman::new(ALL_NODES, "");
    let (ok, err, rep) = p.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(ok, "{err}");
    let rep = rep.expect("report");
    assert_eq!(rep["request"]["kind"], "injected-by-hook");
    assert_eq!(rep["verdict"], "allow", "{rep}");
}

#[test]
fn podman_gpu_container_missing_uvm_is_blocked_and_the_user_reads_why() {
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let p = Podman::new(&nodes, "");
    let (ok, err, rep) = p.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    // As the user sees it (README.md quotes it): `cargo test --test it podman:: -- --nocapture`.
    eprintln!("{err}");
    assert!(!ok);
    // What `podman run` prints: its own prefix, runc's, then our first line.
    assert!(
        err.starts_with("Error: OCI runtime error: runc: runc create failed:"),
        "{err}"
    );
    assert!(
        err.contains("stderr: cuda-preflight: blocked container "),
        "{err}"
    );
    assert!(
        err.contains(
            ": /dev/nvidia-uvm is missing from the container's /dev: CUDA would fail with "
        ),
        "{err}"
    );
    let rep = rep.expect("report");
    assert_eq!(rep["verdict"], "block");
}

#[test]
fn podman_plain_container_is_untouched() {
    let p = Podman::new(ALL_NODES, "");
    let (ok, err, rep) = p.run(&[]);
    assert!(ok, "{err}");
    assert!(
        rep.is_none(),
        "no report for a container that asks for no GPU"
    );
}

/// At createContainer the hook reads the device cgroup from its own cgroup (runc has put `runc
/// init`, and its hooks, into the container's): nodes the legacy hook made but the cgroup v1
/// device list does not allow are blocked. On cgroup v2 the rules are an eBPF program nothing
/// can read back: the start goes on and the report says so.
#[test]
fn podman_legacy_nodes_the_device_cgroup_denies_are_judged_at_create_container() {
    let p = Podman::with_cgroup(ALL_NODES, "", false);
    let (ok, err, rep) = p.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    let rep = rep.expect("report");
    if all_finding_ids(&rep).contains(&"device-cgroup-skipped".to_string()) {
        assert!(ok, "{err}");
    } else {
        assert!(!ok, "started");
        assert!(
            finding_ids(&rep).contains(&"device-cgroup-denied".to_string()),
            "{rep}\n{err}"
        );
        assert!(err.contains("devices.list"), "{err}");
    }
}
