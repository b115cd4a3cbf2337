//! Golden tests: what people read — `doctor` (human and `--json`) on fixture hosts, `explain`,
//! `report` and the block message — compared byte for byte with the files in tests/golden/.
//! After a deliberate change of wording, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --test it golden::` and review the diff.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn golden(name: &str, actual: &str) {
    let p = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&p, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test --test it golden::",
            p.display()
        )
    });
    if want != actual {
        panic!(
            "{name} differs from tests/golden/{name} (UPDATE_GOLDEN=1 regenerates)\n--- want\n{want}\n--- got\n{actual}"
        );
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A host tree laid out like `/` of a healthy H100 host: driver loaded, modules, device nodes
/// with the majors of /proc/devices, /dev/char links, driver libraries, the toolkit, a CDI spec,
/// Docker and Podman running cuda-preflight.
pub struct FakeHost {
    pub dir: tempfile::TempDir,
}

impl FakeHost {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }
    fn write(&self, p: &str, body: &str) -> &Self {
        let p = self.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        self
    }
    fn link(&self, p: &str, target: &str) -> &Self {
        let p = self.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }
    fn mknod(&self, p: &str, major: u32, minor: u32) -> &Self {
        let p = self.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let st = Command::new(require_tool("mknod"))
            .arg(&p)
            .arg("c")
            .arg(major.to_string())
            .arg(minor.to_string())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mknod {}: the tests need CAP_MKNOD",
            p.display()
        );
        self
    }
    fn root(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

const ELF64: &str = "\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";

pub fn healthy_host() -> FakeHost {
    let h = FakeHost {
        dir: tempfile::tempdir().unwrap(),
    };
    let fixture = repo().join("tests/fixtures/h100-580");
    h.write(
        "/proc/devices",
        &std::fs::read_to_string(fixture.join("proc/devices")).unwrap(),
    )
    .write(
        "/proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U16-I1-N08-12-3)  Thu Oct  9 00:00:00 UTC 2025\n",
    )
    // The GPU's device minor (its /dev/nvidiaN), as on the H100.
    .write(
        "/proc/driver/nvidia/gpus/0000:1a:00.0/information",
        "Model: \t\t NVIDIA H100 80GB HBM3\nGPU UUID: \t GPU-2f6a8e1c-0000-4000-8000-000000000001\nDevice Minor: \t 0\n",
    )
    .write(
        "/proc/modules",
        "nvidia_uvm 1892352 0 - Live 0x0000000000000000 (POE)\nnvidia_modeset 1605632 0 - Live 0x0 (POE)\n\
         nvidia 10592256 2 nvidia_uvm,nvidia_modeset, Live 0x0 (POE)\next4 1060864 1 - Live 0x0\n",
    )
    .mknod("/dev/nvidiactl", 195, 255)
    .mknod("/dev/nvidia0", 195, 0)
    .mknod("/dev/nvidia-uvm", 238, 0)
    .mknod("/dev/nvidia-uvm-tools", 238, 1)
    .link("/dev/char/195:255", "../nvidiactl")
    .link("/dev/char/195:0", "../nvidia0")
    .link("/dev/char/238:0", "../nvidia-uvm")
    .link("/dev/char/238:1", "../nvidia-uvm-tools")
    // The start of a 64-bit ELF file is what the loader looks for.
    .write("/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04", ELF64)
    .link("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "libcuda.so.580.159.04")
    .write("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04", ELF64)
    .link("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "libnvidia-ml.so.580.159.04")
    .write("/usr/bin/nvidia-ctk", "")
    .write("/usr/bin/nvidia-container-runtime", "")
    .write("/usr/bin/nvidia-container-runtime-hook", "")
    .write(
        "/var/lib/dpkg/status",
        "Package: nvidia-container-toolkit\nStatus: install ok installed\nVersion: 1.17.8-1\n\n\
         Package: nvidia-container-toolkit-base\nStatus: install ok installed\nVersion: 1.17.8-1\n",
    )
    .write(
        "/etc/cdi/nvidia.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n\
         containerEdits:\n  deviceNodes:\n  - path: /dev/nvidiactl\n  - path: /dev/nvidia-uvm\n  mounts:\n\
         \x20 - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04\n    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04\n",
    )
    .write(
        "/etc/docker/daemon.json",
        r#"{"runtimes":{"cuda-preflight":{"path":"/usr/bin/cuda-preflight-runtime"}},"default-runtime":"cuda-preflight"}"#,
    )
    .write(
        "/etc/containers/oci/hooks.d/cuda-preflight.json",
        r#"{"version":"1.0.0","hook":{"path":"/usr/bin/cuda-preflight","args":["cuda-preflight","hook"]},"when":{"always":true},"stages":["createRuntime"]}"#,
    );
    h
}

/// The H100 of FACTS.md with what NVML adds: persistence, free memory, ECC.
fn h100_nvml_profile(dir: &Path, persistence: bool) -> PathBuf {
    let p = dir.join("profile.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"driver_version":"580.159.04","cuda_driver_version":"13.0",
            "device_majors":{{"nvidia":195,"nvidiactl":195,"nvidia-uvm":238,"nvidia-caps":241}},
            "gpus":[{{"index":0,"uuid":"GPU-2f6a8e1c-0000-4000-8000-000000000001","name":"NVIDIA H100 80GB HBM3",
            "compute_capability":"9.0","brand":"datacenter","nvml_brand":"nvidia","memory_total_mib":81559,
            "memory_free_mib":81079,"mig":false,"compute_mode":"default","persistence_mode":{persistence},
            "ecc_uncorrected":0}}]}}"#
        ),
    )
    .unwrap();
    p
}

fn empty_config(dir: &Path) -> String {
    let c = dir.join("config.toml");
    std::fs::write(&c, "").unwrap();
    c.display().to_string()
}

#[test]
fn doctor_on_a_healthy_host() {
    let h = healthy_host();
    let tmp = tempfile::tempdir().unwrap();
    let profile = h100_nvml_profile(tmp.path(), true);
    let cfg = empty_config(tmp.path());
    let args = [
        "doctor",
        "--config",
        &cfg,
        "--host-root",
        h.root(),
        "--host-profile",
        profile.to_str().unwrap(),
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    golden("doctor-healthy.txt", &out);
    let (code, out, _) = run(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 0);
    golden("doctor-healthy.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    for c in v["checks"].as_array().unwrap() {
        assert!(
            ["ok", "skip"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
    }
}

#[test]
fn doctor_finds_what_breaks_a_host() {
    // The healthy host, then broken the ways hosts break: libraries of another driver than the
    // module, nvidia_uvm not loaded and its node
    // gone, a stale /dev/char link, persistence off, the toolkit's CDI spec naming a library of
    // the previous driver, Docker without cuda-preflight.
    let h = healthy_host();
    h.write("/proc/modules", "nvidia 10592256 0 - Live 0x0 (POE)\n");
    std::fs::remove_file(h.path("/dev/nvidia-uvm")).unwrap();
    std::fs::remove_file(h.path("/dev/char/195:0")).unwrap();
    h.link("/dev/char/195:0", "../null");
    h.write(
        "/etc/cdi/nvidia.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n\
         containerEdits:\n  mounts:\n  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15\n    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15\n",
    );
    h.write("/etc/docker/daemon.json", r#"{"runtimes":{}}"#);
    // A driver upgrade without a reboot: new user-space libraries, the old module still loaded.
    std::fs::remove_file(h.path("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")).unwrap();
    h.write(
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.200.01",
        ELF64,
    )
    .link(
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        "libnvidia-ml.so.580.200.01",
    );
    let tmp = tempfile::tempdir().unwrap();
    let profile = h100_nvml_profile(tmp.path(), false);
    let cfg = empty_config(tmp.path());
    let (code, out, err) = run(&[
        "doctor",
        "--config",
        &cfg,
        "--host-root",
        h.root(),
        "--host-profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    golden("doctor-broken.txt", &out);
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line}"
        );
    }
}

#[test]
fn doctor_on_a_host_without_the_driver() {
    let h = FakeHost {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(h.path("/dev")).unwrap();
    h.write(
        "/proc/devices",
        "Character devices:\n  1 mem\n  4 tty\n\nBlock devices:\n  8 sd\n",
    )
    .write("/proc/modules", "ext4 1060864 1 - Live 0x0\n");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = empty_config(tmp.path());
    let args = ["doctor", "--config", &cfg, "--host-root", h.root()];
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.starts_with("✗ driver-loaded     no NVIDIA driver loaded"),
        "{out}"
    );
    golden("doctor-no-driver.txt", &out);
    let (code, out, _) = run(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 1);
    golden("doctor-no-driver.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["id"], "driver-loaded");
    assert_eq!(v["checks"][0]["status"], "fail");
}

#[test]
fn doctor_disk_space_and_bad_input() {
    let h = healthy_host();
    std::fs::create_dir_all(h.path("/var/lib/docker")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let profile = h100_nvml_profile(tmp.path(), true);
    // No filesystem has 2^40 MiB free: the directory must be reported as nearly full.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "min_free_disk_mib = 1099511627776\ndisk_paths = [\"/var/lib/docker\", \"/models\"]\n",
    )
    .unwrap();
    let (code, out, err) = run(&[
        "doctor",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        h.root(),
        "--host-profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "warnings only: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let disks: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "disk-space")
        .collect();
    assert_eq!(disks.len(), 2, "{out}");
    assert_eq!(disks[0]["status"], "warn", "{out}");
    assert!(
        disks[0]["detail"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{out}"
    );
    assert_eq!(disks[1]["status"], "skip", "{out}");
    // Bad input is exit 2.
    let (code, _, err) = run(&["doctor", "--host-profile", "/nonexistent/profile.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/profile.json"), "{err}");
}

#[test]
fn explain_golden() {
    let (code, out, _) = run(&["explain", "304"]);
    assert_eq!(code, 0);
    golden("explain-304.txt", &out);
    let (code, out, _) = run(&["explain", "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "--json"]);
    assert_eq!(code, 0);
    golden("explain-803.json", &out);
    let (code, out, _) = run(&["explain", "Driver/library version mismatch"]);
    assert_eq!(code, 0);
    golden("explain-nvml-mismatch.txt", &out);
    let mut all = String::new();
    for c in ["2", "46", "802"] {
        let (code, out, _) = run(&["explain", c]);
        assert_eq!(code, 0, "{c}");
        all.push_str(&out);
    }
    golden("explain-2-46-802.txt", &all);
}

const LONG_ID: &str = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";

fn hook(stdin: &[u8], extra: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .arg("hook")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn block_message_and_report_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("state");
    let sd = sd.to_str().unwrap();
    let cfg = empty_config(tmp.path());
    // A fixture host root: the log line then goes to stderr, after the message.
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("dev")).unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"{LONG_ID}","status":"creating","bundle":"{}"}}"#,
        repo().join("examples/bundles/cdi-no-uvm").display()
    );
    let profile = h100_profile().display().to_string();
    let (code, err) = hook(
        state.as_bytes(),
        &[
            "--config",
            &cfg,
            "--state-dir",
            sd,
            "--host-root",
            host.path().to_str().unwrap(),
            "--host-profile",
            &profile,
        ],
    );
    assert_eq!(code, 1, "{err}");
    let message: String = err
        .lines()
        .filter(|l| !l.starts_with("cuda-preflight: container="))
        .map(|l| format!("{l}\n"))
        .collect();
    golden("block-message.txt", &message);
    // The headline is one line (runc shows it folded into its own error); the rest fits 80.
    for line in message.lines().skip(1) {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
    assert!(message.starts_with("cuda-preflight: blocked container 3f2a1b4c5d6e: "));
    assert!(message.ends_with("  full report: cuda-preflight report 3f2a1b4c5d6e\n"));
    // The short id the message names finds the report.
    let (code, out, err) = run(&["report", "3f2a1b4c5d6e", "--state-dir", sd]);
    assert_eq!(code, 0, "{err}");
    let first_end = out.find('\n').unwrap();
    let (first, rest) = out.split_at(first_end);
    // The duration varies: keep the line up to it.
    let first = &first[..first.find(", ").unwrap()];
    golden("report.txt", &format!("{first}, … ms)\n{}", &rest[1..]));
    let (code, out, _) = run(&["report", LONG_ID, "--json", "--state-dir", sd]);
    assert_eq!(code, 0);
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["time"] = 0.into();
    v["duration_ms"] = 0.into();
    // Timings vary run to run; the rest of the walk's record is deterministic.
    if v["binaries"]["stats"].is_object() {
        v["binaries"]["stats"]["elapsed_ms"] = 0.into();
    }
    if v["binaries"]["image_cache"].is_object() {
        v["binaries"]["image_cache"]["ms"] = 0.into();
    }
    if v.get("load").is_some() {
        v["load"]["elapsed_ms"] = 0.into();
    }
    // The phases are fixed, their times are not.
    if let Some(p) = v["phases_ms"].as_object_mut() {
        for t in p.values_mut() {
            *t = 0.into();
        }
    }
    v["bundle"] = "<repo>/examples/bundles/cdi-no-uvm".into();
    golden(
        "report.json",
        &(serde_json::to_string_pretty(&v).unwrap() + "\n"),
    );
}

/// The host probe for real, without a GPU: the test-double libcuda (tests/double/libcuda.c) at a
/// host path, loaded by the real probe child with rootfs `/`. With no /etc/cuda-double.conf on
/// the host the double answers success.
#[test]
fn host_context_is_created_by_the_probe_child() {
    use cuda_preflight::facts::host::doctor::{HostProbe, host_probe};
    use cuda_preflight::rules::host::doctor::{Status, probe_check};
    assert!(
        !Path::new("/etc/cuda-double.conf").exists(),
        "the double would read the host's /etc/cuda-double.conf"
    );
    let lib = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libcuda-double-host.so");
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(repo().join("tests/double/libcuda.c"))
        .status()
        .expect("gcc (scripts/test.sh installs build tools)");
    assert!(st.success());
    let HostProbe::Ran { libcuda, result } =
        host_probe(&lib, Path::new(BIN), std::time::Duration::from_secs(10))
    else {
        panic!("not run");
    };
    let c = probe_check(&libcuda, &result);
    assert_eq!(c.status, Status::Ok, "{c:?} {result:?}");
    assert!(
        c.detail.starts_with("context created and destroyed in ")
            && c.detail.contains("cuInit")
            && c.detail.contains("cuCtxCreate"),
        "{c:?}"
    );
    // A library that is not one: the check fails and names it.
    let bogus = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libcuda-bogus.so");
    std::fs::write(&bogus, "not an ELF").unwrap();
    let HostProbe::Ran { libcuda, result } =
        host_probe(&bogus, Path::new(BIN), std::time::Duration::from_secs(10))
    else {
        panic!("not run");
    };
    let c = probe_check(&libcuda, &result);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.detail.contains("libcuda-bogus.so"), "{c:?}");
}
