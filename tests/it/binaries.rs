//! The image's CUDA binaries judged by `check --bundle`: real NVIDIA libraries (from NVIDIA's
//! wheels) and nvcc-built ones placed where images keep them, against the example host
//! profiles; the scan cache; hostile rootfs trees.
//!
//! Needs `scripts/cuda-tools.sh` to have run (nvcc and the nvjpeg wheels); without it these
//! tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, lib, nvcc_so, sm80_only};

const SITE: &str = "usr/local/lib/python3.12/site-packages";

const NVJPEG11: &str = "nvjpeg-cu11-11.9.0.86/nvidia/nvjpeg/lib/libnvjpeg.so.11";
const NVJPEG12: &str = "nvjpeg-cu12-12.4.0.76/nvidia/nvjpeg/lib/libnvjpeg.so.12";
const NVJPEG13: &str = "nvjpeg-13.3.2.43/nvidia/cu13/lib/libnvjpeg.so.13";

/// PTX only, at nvcc 13.5's ISA 9.5: newer than a CUDA 13.0 driver knows (222).
fn ptx95_only() -> PathBuf {
    nvcc_so("libptx95.so", "arch=compute_80,code=compute_80")
}

fn place(root: &Path, rel: &str, from: &Path) {
    let to = root.join(rel);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    // cp -p: the mtime is part of the cache key; a copy must keep it, as image layers do.
    let st = Command::new("cp")
        .arg("-p")
        .arg(from)
        .arg(&to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A GPU bundle (devices in the spec, allowed by its device cgroup) around `rootfs`.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        std::fs::create_dir_all(dir.path().join("host")).unwrap();
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/",
                        "env": ["PATH=/usr/bin:/bin"]},
            "root": {"path": "rootfs"},
            "linux": {
                "devices": [
                    {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                    {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                    {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}
                ],
                "resources": {"devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 195, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 238, "access": "rwm"}
                ]}
            }
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        Bundle { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `check --json` against the example host profiles named (`h100-580`, …); the host root
    /// is an empty directory, so only the bundle and the profiles decide.
    fn check(&self, profiles: &[&str], config: &str) -> (i32, Value) {
        let cfg = self.dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "60", BIN, "check", "--json", "--bundle"])
            .arg(self.dir.path())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--host-root")
            .arg(self.dir.path().join("host"));
        for p in profiles {
            cmd.arg("--host-profile").arg(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/hosts/{p}.json")),
            );
        }
        let o = cmd.output().unwrap();
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code().unwrap_or(-1), doc)
    }
}

/// Findings with `id` whose evidence names `path`: `(severity, predicted code)`.
fn about(findings: &Value, id: &str, path: &str) -> Vec<(String, Option<i64>)> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id && f["evidence"].as_str().unwrap().contains(path))
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["predicted"]["code"].as_i64(),
            )
        })
        .collect()
}

fn ids(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn host<'a>(doc: &'a Value, profile: &str) -> &'a Value {
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["profile"].as_str().unwrap().contains(profile))
        .unwrap()
}

#[test]
fn sm80_only_library_is_blocked_on_h100_and_loads_on_a100() {
    let b = Bundle::new();
    let path = format!("{SITE}/torch/lib/libk80.so");
    place(&b.root(), &path, &sm80_only());
    let (code, doc) = b.check(&["h100-580", "a100-535"], "");
    assert_eq!(code, 1, "{doc:#}");
    let h100 = &host(&doc, "h100-580")["findings"];
    assert_eq!(
        about(h100, "kernel-image-missing", &format!("/{path}")),
        vec![("block".to_string(), Some(209))],
        "{h100:#}"
    );
    assert_eq!(host(&doc, "h100-580")["verdict"], "block");
    let a100 = host(&doc, "a100-535");
    assert!(
        !ids(&a100["findings"])
            .iter()
            .any(|i| i.starts_with("kernel-")),
        "{a100:#}"
    );
    // (The A100 profile's nvidia-uvm major differs from this spec's: its verdict is a device
    // block, not ours.)
    assert_eq!(doc["binaries"]["stats"]["cuda_files"], 1, "{doc:#}");
}

#[test]
fn ptx_too_new_for_the_driver_is_222_and_old_ptx_is_a_jit_warning() {
    let b = Bundle::new();
    place(
        &b.root(),
        "usr/local/cuda-13.5/targets/x86_64-linux/lib/libptx95.so",
        &ptx95_only(),
    );
    // libnvjpeg.so.11 (CUDA 11.9): SASS up to sm_90 and compute_90 PTX at ISA 7.8, so a
    // Blackwell GPU (12.0) runs it only through the JIT.
    place(
        &b.root(),
        &format!("{SITE}/nvidia/nvjpeg/lib/libnvjpeg.so.11"),
        &lib(NVJPEG11),
    );
    let (code, doc) = b.check(&["h100-580", "rtx5070ti-570"], "");
    assert_eq!(code, 1, "{doc:#}");
    let h100 = &host(&doc, "h100-580")["findings"];
    assert_eq!(
        about(h100, "kernel-image-missing", "libptx95.so"),
        vec![("block".to_string(), Some(222))],
        "{h100:#}"
    );
    assert!(about(h100, "kernel-ptx-jit-only", "libnvjpeg.so.11").is_empty());
    let rtx = &host(&doc, "rtx5070ti-570")["findings"];
    assert_eq!(
        about(rtx, "kernel-ptx-jit-only", "libnvjpeg.so.11"),
        vec![("warn".to_string(), None)],
        "{rtx:#}"
    );
    assert!(about(rtx, "kernel-image-missing", "libnvjpeg.so.11").is_empty());
}

#[test]
fn real_nvidia_libraries_load_and_a_second_check_is_served_from_the_cache() {
    let b = Bundle::new();
    place(
        &b.root(),
        &format!("{SITE}/nvidia/nvjpeg/lib/libnvjpeg.so.12"),
        &lib(NVJPEG12),
    );
    place(
        &b.root(),
        &format!("{SITE}/nvidia/cu13/lib/libnvjpeg.so.13"),
        &lib(NVJPEG13),
    );
    place(
        &b.root(),
        "usr/lib/x86_64-linux-gnu/libk80.so",
        &sm80_only(),
    );
    let (code, cold) = b.check(&["h100-580"], "");
    assert_eq!(code, 1, "{cold:#}");
    let stats = &cold["binaries"]["stats"];
    assert_eq!(stats["cuda_files"], 3, "{cold:#}");
    assert_eq!(
        (stats["cache_hits"].as_u64(), stats["cache_misses"].as_u64()),
        (Some(0), Some(3))
    );
    let blocked: Vec<String> = cold["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "kernel-image-missing")
        .map(|f| {
            f["evidence"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        blocked,
        vec!["/usr/lib/x86_64-linux-gnu/libk80.so"],
        "{cold:#}"
    );
    let entries = std::fs::read_dir(b.state().join("scan-cache"))
        .unwrap()
        .count();
    assert_eq!(entries, 3);

    let (code, warm) = b.check(&["h100-580"], "");
    assert_eq!(code, 1);
    let stats = &warm["binaries"]["stats"];
    assert_eq!(
        (stats["cache_hits"].as_u64(), stats["cache_misses"].as_u64()),
        (Some(3), Some(0)),
        "{warm:#}"
    );
    // Served from the cache, the verdict is the same.
    assert_eq!(cold["findings"], warm["findings"]);
    // The headers were read again for the key, the fatbins not: far fewer bytes.
    assert!(
        stats["bytes_read"].as_u64().unwrap()
            < cold["binaries"]["stats"]["bytes_read"].as_u64().unwrap(),
        "{warm:#}"
    );

    // A corrupt cache entry is a miss, rewritten; never a crash or a wrong verdict.
    for e in std::fs::read_dir(b.state().join("scan-cache")).unwrap() {
        std::fs::write(e.unwrap().path(), b"{\"v\":1,\"key\":").unwrap();
    }
    let (code, again) = b.check(&["h100-580"], "");
    assert_eq!(code, 1);
    assert_eq!(again["binaries"]["stats"]["cache_misses"], 3, "{again:#}");
    assert_eq!(cold["findings"], again["findings"]);
}

#[test]
#[allow(unsafe_code)]
fn hostile_rootfs_is_walked_in_bounded_time_without_escaping() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    place(outside.path(), "libescaped.so", &sm80_only());
    let b = Bundle::new();
    let r = b.root();
    let lib = r.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    symlink("libloop2.so", lib.join("libloop1.so")).unwrap();
    symlink("libloop1.so", lib.join("libloop2.so")).unwrap();
    symlink(
        outside.path().join("libescaped.so"),
        lib.join("libout.so.1"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("usr/local/cuda-evil")).unwrap();
    symlink(outside.path(), r.join("usr/local/cuda-evil/lib64")).unwrap();
    std::fs::create_dir_all(r.join(SITE).join("torch/lib")).unwrap();
    symlink("..", r.join(SITE).join("torch/lib/up")).unwrap();
    for fifo in [lib.join("libcuda.so.1"), lib.join("libfifo.so")] {
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    // A 4 GiB sparse file with a real library's ELF header: its section table lies in the hole.
    let head = std::fs::read(sm80_only()).unwrap();
    let f = std::fs::File::create(lib.join("libhuge.so")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &head[..64], 0).unwrap();
    f.set_len(4 << 30).unwrap();
    // A directory we may not be able to list (root with CAP_DAC_OVERRIDE still can).
    let locked = r.join(SITE).join("nvidia/locked/lib");
    std::fs::create_dir_all(&locked).unwrap();
    place(
        &r,
        &format!("{SITE}/nvidia/locked/lib/libk80.so"),
        &sm80_only(),
    );
    std::fs::set_permissions(
        r.join(SITE).join("nvidia/locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let locked_readable = std::fs::read_dir(r.join(SITE).join("nvidia/locked")).is_ok();

    let started = Instant::now();
    let (code, doc) = b.check(&["h100-580"], "");
    let took = started.elapsed();
    std::fs::set_permissions(
        r.join(SITE).join("nvidia/locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
    let evidence: Vec<String> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["evidence"].as_str().unwrap().to_string())
        .collect();
    let all = evidence.join("\n");
    // The link out names a library outside the rootfs: judging it would mean we read it.
    assert!(
        about(&doc["findings"], "kernel-image-missing", "libout.so.1").is_empty(),
        "left the rootfs: {all}"
    );
    assert!(!all.contains("libescaped"), "left the rootfs: {all}");
    assert!(
        !all.contains(&outside.path().display().to_string()),
        "{all}"
    );
    let incomplete: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "kernels-scan-incomplete")
        .collect();
    assert_eq!(incomplete.len(), 1, "{doc:#}");
    assert_eq!(incomplete[0]["severity"], "info");
    let ev = incomplete[0]["evidence"].as_str().unwrap();
    assert!(ev.contains("libfifo.so (FIFO)"), "{ev}");
    assert!(ev.contains("libcuda.so.1 (FIFO)"), "{ev}");
    assert!(ev.contains("libloop1.so"), "{ev}");
    assert!(ev.contains("libout.so.1"), "{ev}");
    let stats = &doc["binaries"]["stats"];
    // The sparse file was examined (header and a read in the hole) and rejected.
    assert!(
        doc["binaries"]["stats"]["bytes_read"].as_u64().unwrap() < 1 << 20,
        "{stats}"
    );
    if locked_readable {
        assert_eq!(code, 1, "{doc:#}");
        assert_eq!(stats["cuda_files"], 1, "{doc:#}");
    } else {
        assert!(ev.contains("nvidia/locked"), "{ev}");
        assert_eq!(code, 0, "{doc:#}");
    }
}

#[test]
fn a_small_budget_stops_the_walk_and_says_so() {
    let b = Bundle::new();
    for i in 0..4 {
        place(&b.root(), &format!("usr/lib/libk{i}.so"), &sm80_only());
    }
    let (_, doc) = b.check(&["h100-580"], "scan_max_files = 2\n");
    let f: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "kernels-scan-incomplete")
        .collect();
    assert_eq!(f.len(), 1, "{doc:#}");
    let ev = f[0]["evidence"].as_str().unwrap();
    assert!(ev.contains("file budget of 2 (scan_max_files)"), "{ev}");
    assert_eq!(doc["binaries"]["stats"]["files_examined"], 2);
    assert_eq!(
        doc["binaries"]["stopped"],
        "file budget of 2 (scan_max_files)"
    );
}
