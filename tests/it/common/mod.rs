//! Real containers for the integration tests: busybox bundles run by the real `runc`, the real
//! `cuda-preflight` binary as their createRuntime hook, and a stand-in for NVIDIA's prestart hook.
//! The tools come from the project's test command (`scripts/test.sh`); a missing one fails the
//! test with that hint instead of skipping it.
#![allow(dead_code)]

pub mod dockerd;
pub mod nvidia;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_cuda-preflight");

pub fn require_tool(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/test.sh, which installs what the tests need");
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The H100 host profile shipped in examples/ (device majors 195 / 238 / 241).
pub fn h100_profile() -> PathBuf {
    repo().join("examples/hosts/h100-580.json")
}

/// A fresh busybox rootfs.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = require_tool("busybox");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// A runc spec (from `runc spec`, so it is exactly what this runc expects) running `args`.
pub fn base_spec(dir: &Path, args: &[&str]) -> Value {
    let runc = require_tool("runc");
    let out = Command::new(&runc)
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    spec["process"]["args"] = json!(args);
    spec["process"]["terminal"] = json!(false);
    spec
}

pub fn nvidia_devices(nodes: &[(&str, u32, u32)]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|(p, ma, mi)| json!({"path": p, "type": "c", "major": ma, "minor": mi}))
            .collect(),
    )
}

pub const ALL_NODES: &[(&str, u32, u32)] = &[
    ("/dev/nvidiactl", 195, 255),
    ("/dev/nvidia-uvm", 238, 0),
    ("/dev/nvidia0", 195, 0),
];

pub fn allow_nvidia_cgroup(spec: &mut Value) {
    let rules = spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap();
    for major in [195, 238] {
        rules.push(json!({"allow": true, "type": "c", "major": major, "access": "rwm"}));
    }
}

pub fn set_env(spec: &mut Value, kv: &str) {
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!(kv));
}

/// Our hook in createRuntime, with its settings given on its command line as a hooks-directory
/// entry would.
pub fn add_our_hook(spec: &mut Value, extra: &[&str]) {
    let mut args = vec!["cuda-preflight".to_string(), "hook".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let hooks = spec
        .as_object_mut()
        .unwrap()
        .entry("hooks")
        .or_insert(json!({}));
    hooks
        .as_object_mut()
        .unwrap()
        .entry("createRuntime")
        .or_insert(json!([]))
        .as_array_mut()
        .unwrap()
        .push(json!({
            "path": BIN, "args": args
        }));
}

/// A stand-in for `nvidia-container-runtime-hook prestart`: like the real one it creates the
/// NVIDIA device nodes inside the container's mount namespace (and allows them in a cgroup v1
/// device cgroup), not in config.json. `nodes` are what it injects.
pub fn add_standin_nvidia_hook(
    spec: &mut Value,
    dir: &Path,
    nodes: &[(&str, u32, u32)],
    cgroup_allow: bool,
) {
    let script = standin_nvidia_hook(dir, nodes, cgroup_allow);
    let hooks = spec
        .as_object_mut()
        .unwrap()
        .entry("hooks")
        .or_insert(json!({}));
    hooks
        .as_object_mut()
        .unwrap()
        .entry("prestart")
        .or_insert(json!([]))
        .as_array_mut()
        .unwrap()
        .push(json!({
            "path": script, "args": ["nvidia-container-runtime-hook", "prestart"]
        }));
}

/// Write the stand-in NVIDIA hook script; its file name is the real hook's, which is how
/// cuda-preflight recognises an NVIDIA hook in a spec.
pub fn standin_nvidia_hook(dir: &Path, nodes: &[(&str, u32, u32)], cgroup_allow: bool) -> PathBuf {
    let bindir = dir.join("nvidia-bin");
    std::fs::create_dir_all(&bindir).unwrap();
    let script = bindir.join("nvidia-container-runtime-hook");
    let nsenter = require_tool("nsenter");
    // The state and config.json are read with python3: the root path may be absolute (Podman)
    // or relative to the bundle (runc), as the spec allows.
    let mut body = String::from("#!/bin/bash\nset -eu\n");
    body.push_str(
        "read -r pid rootfs < <(python3 -c 'import json,os,sys; s=json.load(sys.stdin); \
         c=json.load(open(os.path.join(s[\"bundle\"],\"config.json\"))); \
         e=[v.split(\"=\",1)[1] for v in c[\"process\"].get(\"env\",[]) if v.startswith(\"NVIDIA_VISIBLE_DEVICES=\")]; \
         print(s[\"pid\"], os.path.join(s[\"bundle\"], c[\"root\"][\"path\"]), (e or [\"\"])[-1] or \"-\")')\n",
    );
    // Like the real hook: nothing to do for a container that asks for no GPU.
    body = body.replace("read -r pid rootfs <", "read -r pid rootfs visible <");
    body.push_str("case \"$visible\" in -|void|none) exit 0;; esac\n");
    for (p, ma, mi) in nodes {
        body.push_str(&format!(
            "{} -t \"$pid\" -m mknod -m 666 \"$rootfs{p}\" c {ma} {mi}\n",
            nsenter.display()
        ));
    }
    if cgroup_allow {
        body.push_str(
            "cg=$(sed -n 's/^[0-9]*:devices:\\(.*\\)$/\\1/p' /proc/$pid/cgroup)\n\
             if [ -n \"$cg\" ] && [ -w \"/sys/fs/cgroup/devices$cg/devices.allow\" ]; then\n\
               echo 'c 195:* rwm' > \"/sys/fs/cgroup/devices$cg/devices.allow\"\n\
               echo 'c 238:* rwm' > \"/sys/fs/cgroup/devices$cg/devices.allow\"\n\
             fi\n",
        );
    }
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

pub fn write_spec(dir: &Path, spec: &Value) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
}

/// `runc run` the bundle in the foreground, with a runc state root of its own; killed after 60 s
/// so a hung start fails the test instead of hanging it.
pub fn runc_run(dir: &Path, id: &str) -> Output {
    let runc = require_tool("runc");
    let out = Command::new("timeout")
        .args(["-k", "5", "60"])
        .arg(&runc)
        .arg("--root")
        .arg(dir.join("runc-root"))
        .args(["run", "--bundle"])
        .arg(dir)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new(&runc)
        .arg("--root")
        .arg(dir.join("runc-root"))
        .args(["delete", "-f", id])
        .output();
    out
}

/// A name no other test of this process or another one is using: the pid tells processes apart,
/// a counter the tests of this one (all modules run in one process, on several threads).
pub fn unique_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

pub fn read_report(state_dir: &Path, id: &str) -> Option<Value> {
    let p = state_dir.join("reports").join(format!("{id}.json"));
    std::fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("report is whole JSON"))
}

/// Ids of the findings that judge (warn or block); info findings say what was not checked.
pub fn finding_ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn all_finding_ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// The download cache of `scripts/cuda-tools.sh` (NVIDIA's toolchain and library wheels).
pub fn cache() -> PathBuf {
    std::env::var_os("CUDA_PREFLIGHT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/cuda-preflight-cache".into())
}

pub fn lib(rel: &str) -> PathBuf {
    let p = cache().join("cuda-libs").join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/cuda-tools.sh first",
        p.display()
    );
    p
}

const KERNEL: &str = "__global__ void add(float *a, const float *b, int n) {\n\
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += b[i]; }\n";

/// A shared library built by nvcc 13.5 from one kernel with `gencode` (cached by recipe).
pub fn nvcc_so(name: &str, gencode: &str) -> PathBuf {
    let key = format!(
        "{:016x}",
        format!("{name}|{gencode}|{KERNEL}")
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64)
                .wrapping_mul(0x100000001b3))
    );
    let dir = cache()
        .join("fixtures/13.5.37")
        .join(format!("{name}-{key}"));
    let out = dir.join(name);
    if out.is_file() {
        return out;
    }
    let nvcc = cache().join("cuda-tools/13.5.37/nvidia/cu13/bin/nvcc");
    assert!(
        nvcc.is_file(),
        "{} is missing: run scripts/cuda-tools.sh first",
        nvcc.display()
    );
    // Tests run on threads of one process: the pid alone does not tell their builds apart.
    let tmp = dir.with_file_name(format!(
        ".{name}-{key}.tmp{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("k.cu"), KERNEL).unwrap();
    let o = Command::new(&nvcc)
        .args(["-shared", "-Xcompiler", "-fPIC", "-gencode", gencode, "-o"])
        .arg(tmp.join(name))
        .arg(tmp.join("k.cu"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nvcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Another test process may have won the race: either copy is the same recipe.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    out
}

/// sm_80 SASS only: loads on compute capability 8.x, 209 on 9.0.
pub fn sm80_only() -> PathBuf {
    nvcc_so("libk80.so", "arch=compute_80,code=sm_80")
}
