//! The registration files in hooks/: each parses, and each names the installed binaries and the
//! hook's argv the same way (`/usr/bin/cuda-preflight hook` at createRuntime).

mod common;

use common::repo;
use serde_json::{Value, json};

fn json_file(p: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join(p)).unwrap()).unwrap()
}

#[test]
fn every_engine_names_the_same_hook() {
    let podman = json_file("hooks/oci-hooks.d/cuda-preflight.json");
    assert_eq!(podman["hook"]["path"], "/usr/bin/cuda-preflight");
    assert_eq!(podman["hook"]["args"], json!(["cuda-preflight", "hook"]));
    assert_eq!(podman["stages"], json!(["createRuntime"]));

    let cdi = json_file("hooks/cdi/nvidia-containerEdits-hook.json");
    assert_eq!(
        cdi["containerEdits"]["hooks"],
        json!([{"hookName": "createRuntime", "path": "/usr/bin/cuda-preflight",
                "args": ["cuda-preflight", "hook"]}])
    );

    let docker = json_file("hooks/docker/daemon.json");
    assert_eq!(
        docker["runtimes"]["cuda-preflight"]["path"],
        "/usr/bin/cuda-preflight-runtime"
    );
    assert_eq!(docker["default-runtime"], "cuda-preflight");
}

/// containerd itself reads the snippet (`config dump` merges it over its defaults).
#[test]
fn containerd_accepts_its_snippet() {
    let containerd = common::require_tool("containerd");
    let out = std::process::Command::new(containerd)
        .arg("--config")
        .arg(repo().join("hooks/containerd/config.toml"))
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    let table = dump
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cuda-preflight.options]")
        .nth(1)
        .expect("the runtime's options table");
    assert!(
        table
            .trim_start()
            .starts_with("BinaryName = \"/usr/bin/cuda-preflight-runtime\""),
        "{table}"
    );
}
