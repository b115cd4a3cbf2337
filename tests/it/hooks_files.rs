//! The registration files in hooks/: each parses, and each names the installed binaries and the
//! hook's argv the same way (`/usr/bin/cuda-preflight hook --stage createContainer`, after
//! NVIDIA's CDI hooks: docs/design.md, "Which stage on which path").

use crate::common::repo;
use serde_json::{Value, json};

fn json_file(p: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join(p)).unwrap()).unwrap()
}

#[test]
fn every_engine_names_the_same_hook() {
    let podman = json_file("hooks/oci-hooks.d/cuda-preflight.json");
    assert_eq!(podman["hook"]["path"], "/usr/bin/cuda-preflight");
    assert_eq!(
        podman["hook"]["args"],
        json!(["cuda-preflight", "hook", "--stage", "createContainer"])
    );
    assert_eq!(podman["stages"], json!(["createContainer"]));

    let cdi = json_file("hooks/cdi/nvidia-containerEdits-hook.json");
    assert_eq!(
        cdi["containerEdits"]["hooks"],
        json!([{"hookName": "createContainer", "path": "/usr/bin/cuda-preflight",
                "args": ["cuda-preflight", "hook", "--stage", "createContainer"]}])
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
    let containerd = crate::common::require_tool("containerd");
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

/// The packaged default config is all comments: it means exactly the built-in defaults, and every
/// key it mentions is one the program knows (uncommented, each parses).
#[test]
fn packaged_config_is_the_defaults() {
    use cuda_preflight::config::Config;
    let text = std::fs::read_to_string(repo().join("packaging/config.toml")).unwrap();
    assert_eq!(Config::parse(&text).unwrap(), Config::default());
    let mut table = String::new();
    let mut parsed = 0;
    for line in text.lines() {
        let Some(l) = line.strip_prefix("# ") else {
            continue;
        };
        let key = l.split_whitespace().next().unwrap_or("");
        if l.contains(" = ")
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
        {
            let setting = l.split(" # ").next().unwrap().trim();
            if key.contains('-') {
                table.push_str(&format!("{setting}\n"));
            } else {
                Config::parse(setting).unwrap_or_else(|e| panic!("{setting}: {e}"));
                parsed += 1;
            }
        } else if l.trim() == "[severity]" || l.starts_with("[severity]") {
            table.push_str("[severity]\n");
        }
    }
    Config::parse(&table).unwrap_or_else(|e| panic!("{table}: {e}"));
    // Every setting the program has is documented here (the severity table aside).
    let keys = serde_json::to_value(Config::default())
        .unwrap()
        .as_object()
        .unwrap()
        .len()
        - 1;
    assert_eq!(
        parsed, keys,
        "every key of Config is in packaging/config.toml, and each was tried"
    );
}
