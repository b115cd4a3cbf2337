//! `cuda-preflight install|uninstall` on real files: keys survive, a backup is kept, a second
//! install changes nothing, uninstall gives the file back.

use crate::common::BIN;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn cli(verb: &str, engine: &str, dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([verb, engine, "--bin-dir", "/opt/cp"])
        .arg("--daemon-json")
        .arg(dir.join("daemon.json"))
        .arg("--hooks-dir")
        .arg(dir.join("hooks.d"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn docker_daemon_json_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("daemon.json");
    let original = json!({"log-driver": "journald", "default-runtime": "nvidia",
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
        "x-future": {"n": [1, 2]}});
    std::fs::write(&path, serde_json::to_vec(&original).unwrap()).unwrap();

    let dry = cli("install", "docker", d.path(), &["--dry-run"]);
    assert!(
        dry.contains("\"path\": \"/opt/cp/cuda-preflight-runtime\""),
        "{dry}"
    );
    assert_eq!(read(&path), original, "--dry-run changes nothing");

    cli("install", "docker", d.path(), &[]);
    let installed = read(&path);
    let mut want = original.clone();
    want["default-runtime"] = json!("cuda-preflight");
    want["runtimes"]["cuda-preflight"] = json!({"path": "/opt/cp/cuda-preflight-runtime"});
    assert_eq!(installed, want);
    assert_eq!(
        read(&d.path().join("daemon.json.cuda-preflight.bak")),
        original
    );

    let again = cli("install", "docker", d.path(), &[]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(
        read(&d.path().join("daemon.json.cuda-preflight.bak")),
        original,
        "backup kept"
    );

    cli("uninstall", "docker", d.path(), &[]);
    assert_eq!(read(&path), original);
}

#[test]
fn docker_install_creates_a_missing_daemon_json() {
    let d = tempfile::tempdir().unwrap();
    cli("install", "docker", d.path(), &[]);
    assert_eq!(
        read(&d.path().join("daemon.json")),
        json!({"runtimes": {"cuda-preflight": {"path": "/opt/cp/cuda-preflight-runtime"}},
               "default-runtime": "cuda-preflight"})
    );
    assert!(!d.path().join("daemon.json.cuda-preflight.bak").exists());
}

#[test]
fn podman_hooks_dir_entry() {
    let d = tempfile::tempdir().unwrap();
    let entry = d.path().join("hooks.d/cuda-preflight.json");
    cli("install", "podman", d.path(), &[]);
    assert_eq!(read(&entry)["hook"]["path"], "/opt/cp/cuda-preflight");
    cli("uninstall", "podman", d.path(), &[]);
    assert!(!entry.exists());
}

#[test]
fn containerd_prints_its_snippet() {
    let d = tempfile::tempdir().unwrap();
    let out = cli("install", "containerd", d.path(), &[]);
    assert!(
        out.contains("BinaryName = \"/opt/cp/cuda-preflight-runtime\""),
        "{out}"
    );
    assert!(out.starts_with("# not applied"), "{out}");
}
