//! Load through Podman: 50 GPU containers started at once by `podman run` with the hooks
//! directory (our shipped entry plus a stand-in NVIDIA hook, as tests/it/podman.rs sets up), half of
//! them given a stand-in that leaves out /dev/nvidia-uvm. Every verdict must be right and every
//! report whole; the hook's own time to verdict (duration_ms of the reports) is printed as
//! p50/p99 for BENCHMARKS.md.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const N: usize = 50;

/// A hooks directory with our entry and a stand-in NVIDIA hook that injects `nodes`.
fn hooks_dir(
    top: &Path,
    name: &str,
    nodes: &[(&str, u32, u32)],
    state: &Path,
    config: &Path,
) -> PathBuf {
    let base = top.join(name);
    let hooks = base.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let mut ours: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
    )
    .unwrap();
    ours["hook"]["path"] = BIN.into();
    ours["hook"]["args"] = serde_json::json!([
        "cuda-preflight",
        "hook",
        "--config",
        config,
        "--state-dir",
        state,
        "--host-profile",
        h100_profile()
    ]);
    std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
    let standin = standin_nvidia_hook(&base, nodes, true);
    let nvidia = serde_json::json!({
        "version": "1.0.0",
        "hook": {"path": standin, "args": ["nvidia-container-runtime-hook", "prestart"]},
        "when": {"always": true},
        "stages": ["prestart"]
    });
    std::fs::write(hooks.join("oci-nvidia-hook.json"), nvidia.to_string()).unwrap();
    hooks
}

#[test]
fn fifty_concurrent_podman_gpu_starts_all_judged_right() {
    require_tool("podman");
    let top = tempfile::tempdir().unwrap();
    let d = top.path();
    let state = d.join("state");
    let config = d.join("config.toml");
    // The probe has its own tests (tests/it/probe.rs); here the static path under load.
    std::fs::write(&config, "probe = \"never\"\n").unwrap();
    let missing_uvm: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let good = hooks_dir(d, "good", ALL_NODES, &state, &config);
    let bad = hooks_dir(d, "bad", &missing_uvm, &state, &config);
    let rootfs = busybox_rootfs(d);
    let t = std::time::Instant::now();
    let results: Vec<(usize, bool, bool, String, PathBuf)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let defective = i % 2 == 1;
                let hooks = if defective { &bad } else { &good };
                let rootfs = &rootfs;
                s.spawn(move || {
                    let cidfile = d.join(format!("cid{i}"));
                    let out = Command::new("timeout")
                        .args(["-k", "5", "170", "podman"])
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
                        .arg(hooks)
                        .args(["run", "--rm", "--network", "none"])
                        .args([
                            "--ulimit",
                            "nofile=1024:1024",
                            "--ulimit",
                            "nproc=4096:4096",
                        ])
                        .arg("--cidfile")
                        .arg(&cidfile)
                        .args(["--name", &unique_id(&format!("pl{i}"))])
                        .args(["-e", "NVIDIA_VISIBLE_DEVICES=all"])
                        .arg("--rootfs")
                        .arg(rootfs)
                        .arg("true")
                        .output()
                        .unwrap();
                    (
                        i,
                        defective,
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                        cidfile,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed();
    let mut latencies = Vec::new();
    for (i, defective, started, err, cidfile) in &results {
        assert_eq!(
            *started, !defective,
            "run {i}: defective={defective}: {err}"
        );
        if *defective {
            assert!(
                err.contains("cuda-preflight: blocked container"),
                "run {i}: {err}"
            );
        }
        // Podman names the OCI container by its id, which --cidfile gives us.
        let cid = std::fs::read_to_string(cidfile).unwrap();
        let rep = read_report(&state, cid.trim()).unwrap_or_else(|| panic!("run {i}: no report"));
        let want = if *defective { "block" } else { "allow" };
        assert_eq!(rep["verdict"], want, "run {i}: {rep}");
        assert_eq!(rep["request"]["kind"], "injected-by-hook");
        latencies.push(rep["duration_ms"].as_f64().unwrap());
    }
    let names: Vec<String> = std::fs::read_dir(state.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.') || !n.ends_with(".json"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "podman load: {N} concurrent podman runs in {:.1} s; hook time to verdict p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        wall.as_secs_f64(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
