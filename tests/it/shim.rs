//! The real `cuda-preflight-runtime` binary in front of a recording stand-in runtime: argv and
//! exit code pass through untouched, and only `create` edits the bundle.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_cuda-preflight-runtime");
const HOOK: &str = env!("CARGO_BIN_EXE_cuda-preflight");

/// A runtime that records its argv (one per line) and exits 7.
fn fake_runtime(dir: &Path) -> PathBuf {
    let rt = dir.join("fake-runc");
    std::fs::write(
        &rt,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {}/argv\necho out; echo err >&2\nexit 7\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
    rt
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let rt = fake_runtime(d.path());
    let config = d.path().join("config.toml");
    std::fs::write(
        &config,
        format!("runtime = \"{}\"\nhook_binary = \"{HOOK}\"\n", rt.display()),
    )
    .unwrap();
    std::fs::create_dir(d.path().join("bundle")).unwrap();
    std::fs::write(
        d.path().join("bundle/config.json"),
        r#"{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},"x-unknown":{"kept":[1,2]}}"#,
    )
    .unwrap();
    (d, config)
}

fn shim(dir: &Path, config: &Path, args: &[&str]) -> (std::process::Output, Vec<String>) {
    let out = Command::new(SHIM)
        .arg(format!("--cuda-preflight-config={}", config.display()))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    // The stand-in runtime writes next to the config, whatever the working directory.
    let argv = std::fs::read_to_string(config.parent().unwrap().join("argv")).unwrap_or_default();
    (out, argv.lines().map(String::from).collect())
}

fn spec(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("bundle/config.json")).unwrap()).unwrap()
}

#[test]
fn passthrough_commands_reach_the_runtime_untouched() {
    let (d, config) = setup();
    let before = spec(d.path());
    let args = ["--root", "/run/x", "state", "--weird arg", "id1"];
    let (out, argv) = shim(d.path(), &config, &args);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(argv, args);
    assert_eq!(spec(d.path()), before);
}

#[test]
fn create_adds_the_hook_once_then_execs() {
    let (d, config) = setup();
    let bundle = d.path().join("bundle");
    let args = [
        "--log",
        "/l.json",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "id1",
    ];
    for _ in 0..2 {
        let (out, argv) = shim(d.path(), &config, &args);
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        assert_eq!(out.stderr, b"err\n", "the shim itself says nothing");
        assert_eq!(argv, args);
    }
    let s = spec(d.path());
    assert_eq!(
        s["hooks"],
        json!({"createRuntime": [{"path": HOOK,
            "args": ["cuda-preflight", "hook", "--config", config.to_str().unwrap()]}]})
    );
    assert_eq!(s["x-unknown"], json!({"kept": [1, 2]}));
}

#[test]
fn create_without_bundle_flag_edits_the_current_directory() {
    let (d, config) = setup();
    let bundle = d.path().join("bundle");
    let (out, argv) = shim(&bundle, &config, &["create", "id1"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(argv, ["create", "id1"]);
    assert_eq!(spec(d.path())["hooks"]["createRuntime"][0]["path"], HOOK);
}

#[test]
fn shim_failures_are_loud_or_allowed_as_configured() {
    let (d, config) = setup();
    // A missing hook binary: on_error = allow starts the container unchecked, with a reason.
    let text = std::fs::read_to_string(&config).unwrap();
    let missing = text.replace(HOOK, "/nonexistent/cuda-preflight");
    std::fs::write(&config, &missing).unwrap();
    let bundle = d.path().join("bundle");
    let create = ["create", "-b", bundle.to_str().unwrap(), "id1"];
    let (out, argv) = shim(d.path(), &config, &create);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(argv, create);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container not checked (on_error = allow): hook binary /nonexistent/cuda-preflight does not exist"), "{err}");
    // on_error = block: the runtime is never run.
    std::fs::remove_file(d.path().join("argv")).unwrap();
    std::fs::write(&config, format!("{missing}on_error = \"block\"\n")).unwrap();
    let (out, argv) = shim(d.path(), &config, &create);
    assert_eq!(out.status.code(), Some(1));
    assert!(argv.is_empty());
    // A broken config stops every command, naming the file.
    std::fs::write(&config, "runtime = \n").unwrap();
    let (out, _) = shim(d.path(), &config, &["state", "id1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("cuda-preflight-runtime: ") && err.contains("config.toml"),
        "{err}"
    );
}

#[test]
fn early_block_never_runs_the_runtime_and_logs_for_containerd() {
    let (d, config) = setup();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hosts/h100-580.json");
    let state = d.path().join("state");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}host_profile = \"{}\"\nstate_dir = \"{}\"\n",
            profile.display(),
            state.display()
        ),
    )
    .unwrap();
    let spec = json!({"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>=99.0"]},
        // Docker's --gpus (before 29.2) puts NVIDIA's legacy prestart hook in the spec: that
        // hook refuses an unmet requirement, so the shim may refuse it first, with its message.
        "hooks": {"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook",
                                "args": ["nvidia-container-runtime-hook", "prestart"]}]}});
    let bundle = d.path().join("bundle");
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let log = d.path().join("log.json");
    let args = [
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "c1",
    ];
    let (out, argv) = shim(d.path(), &config, &args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(argv.is_empty(), "the runtime never ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("cuda-preflight: blocked container c1: NVIDIA_REQUIRE_CUDA=\"cuda>=99.0\""),
        "{err}"
    );
    let line: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], err.trim_end());
    let report: Value =
        serde_json::from_slice(&std::fs::read(state.join("reports/c1.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "block");
    // A block is decided under the enforce mode only: the report's mode says so.
    assert_eq!(report["mode"], "enforce");
    assert_eq!(
        spec,
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(bundle.join("config.json")).unwrap()
        )
        .unwrap(),
        "spec untouched"
    );

    // The same container with a satisfiable requirement goes on to the runtime.
    let ok = spec.to_string().replace("cuda>=99.0", "cuda>=12.0");
    std::fs::write(bundle.join("config.json"), ok).unwrap();
    let (out, argv) = shim(d.path(), &config, &args);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(argv, args);

    // The unmet requirement with the devices given explicitly (--device): nothing in NVIDIA's
    // toolkit checks it on that path, so the shim does not refuse it either.
    let mut explicit = spec.clone();
    explicit.as_object_mut().unwrap().remove("hooks");
    explicit["linux"] =
        json!({"devices": [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]});
    std::fs::write(bundle.join("config.json"), explicit.to_string()).unwrap();
    let (out, argv) = shim(d.path(), &config, &args);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(argv, args);
}

/// The shim's no-GPU path stays the spec's parse: no host facts are read for a container that
/// asks for no GPU. A host profile that does not exist would be read (and said) by any early
/// check that went further; a GPU container shows that it is.
#[test]
fn a_create_without_a_gpu_reads_no_host_facts() {
    let (d, config) = setup();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}host_profile = \"/nonexistent/profile.json\"\nenforce_requirements = true\n"
        ),
    )
    .unwrap();
    let bundle = d.path().join("bundle");
    let create = ["create", "-b", bundle.to_str().unwrap(), "id1"];
    let (out, argv) = shim(d.path(), &config, &create);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(argv, create);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "err\n",
        "the shim itself says nothing"
    );
    // The variable alone under runc: no GPU either.
    let env_only = json!({"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["NVIDIA_VISIBLE_DEVICES=all"]}});
    std::fs::write(bundle.join("config.json"), env_only.to_string()).unwrap();
    let (out, _) = shim(d.path(), &config, &create);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // A GPU container: the early check reads the profile, and says it could not.
    let gpu = json!({"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"devices": [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]}});
    std::fs::write(bundle.join("config.json"), gpu.to_string()).unwrap();
    let (out, argv) = shim(d.path(), &config, &create);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(argv, create);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("early check skipped") && err.contains("/nonexistent/profile.json"),
        "{err}"
    );
}
