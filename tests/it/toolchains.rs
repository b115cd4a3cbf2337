//! JIT toolchains against real files: Triton's bundled ptxas and NVIDIA's NVRTC, cut out of
//! their wheels by `scripts/toolchain-fixtures.sh`, placed in fixture rootfs directories and
//! judged by the real binary (`check --rootfs --host-profile --json`) on Blackwell and Hopper
//! profiles. The ground truth is NVIDIA's own tools: each fetched ptxas (and NVRTC, through
//! Python's ctypes) is run here against the GPU name the rule predicts for, and must fail
//! exactly where a finding says it will, with the message the finding quotes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::{BIN, cache, h100_profile, repo};
use cuda_preflight::knowledge::cuda::Version;
use cuda_preflight::rules::toolchains::{NVRTC_BAD_ARCH, ptxas_bad_arch, triton_gpu_name};
use serde_json::Value;

const SP: &str = "usr/local/lib/python3.11/site-packages";

fn fixture(rel: &str) -> PathBuf {
    let p = cache().join("toolchains").join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/toolchain-fixtures.sh first",
        p.display()
    );
    p
}

/// Put a fixture file at `rel` inside `root`: a hard link where the cache shares the file
/// system, else a copy (30-60 MB).
fn place(root: &Path, rel: &str, src: &Path) {
    let dst = root.join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    if std::fs::hard_link(src, &dst).is_err() {
        std::fs::copy(src, &dst).unwrap();
    }
}

/// A rootfs with Triton `version`'s files from the cache in its site-packages.
fn triton_rootfs(dir: &Path, version: &str) -> PathBuf {
    let root = dir.join("rootfs");
    let base = cache().join("toolchains").join(format!("triton-{version}"));
    for rel in [
        "triton/__init__.py",
        "triton/backends/nvidia/bin/ptxas",
        "triton/backends/nvidia/bin/ptxas-blackwell",
    ] {
        if base.join(rel).is_file() || !rel.ends_with("blackwell") {
            place(
                &root,
                &format!("{SP}/{rel}"),
                &fixture(&format!("triton-{version}/{rel}")),
            );
        }
    }
    root
}

fn nvrtc_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for name in ["libnvrtc.so.12", "libnvrtc-builtins.so.12.4"] {
        place(
            &root,
            &format!("{SP}/nvidia/cuda_nvrtc/lib/{name}"),
            &fixture(&format!("nvrtc-cu12-12.4.127/nvidia/cuda_nvrtc/lib/{name}")),
        );
    }
    root
}

fn rtx5070ti() -> PathBuf {
    repo().join("examples/hosts/rtx5070ti-570.json")
}

/// A B200 host (compute capability 10.0) on the H100's driver.
fn b200(dir: &Path) -> PathBuf {
    let p = dir.join("b200-580.json");
    std::fs::write(
        &p,
        r#"{"driver_version": "580.159.04", "cuda_driver_version": "13.0",
            "device_majors": {"nvidia": 195, "nvidia-uvm": 238, "nvidia-caps": 241},
            "gpus": [{"index": 0, "uuid": "GPU-b200", "name": "NVIDIA B200",
                      "compute_capability": "10.0", "brand": "datacenter", "nvml_brand": "nvidia",
                      "memory_total_mib": 183359, "memory_free_mib": 182000, "mig": false}]}"#,
    )
    .unwrap();
    p
}

/// `check --rootfs ROOT --host-profile P --json`, with an empty host root and config; the
/// toolchain findings and the `toolchains` facts.
fn check(dir: &Path, root: &Path, profile: &Path) -> (Vec<Value>, Value) {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    std::fs::create_dir_all(dir.join("host")).unwrap();
    let o = Command::new("timeout")
        .args(["-k", "5", "60", BIN, "check", "--json", "--rootfs"])
        .arg(root)
        .arg("--host-profile")
        .arg(profile)
        .arg("--config")
        .arg(&cfg)
        .arg("--host-root")
        .arg(dir.join("host"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let findings = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("toolchain-"))
        .cloned()
        .collect();
    (findings, doc["toolchains"].clone())
}

fn ids(findings: &[Value]) -> Vec<&str> {
    findings.iter().map(|f| f["id"].as_str().unwrap()).collect()
}

#[test]
fn versions_are_read_from_the_real_files_without_reading_them_whole() {
    let cases = [
        ("triton-3.0.0/triton/backends/nvidia/bin/ptxas", "12.4.99"),
        ("triton-3.3.0/triton/backends/nvidia/bin/ptxas", "12.4.99"),
        (
            "triton-3.3.0/triton/backends/nvidia/bin/ptxas-blackwell",
            "12.8.61",
        ),
        ("triton-3.5.1/triton/backends/nvidia/bin/ptxas", "12.8.93"),
        (
            "nvrtc-cu12-12.4.127/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
            "12.4.127",
        ),
    ];
    let mut paths: Vec<(PathBuf, &str)> = cases.iter().map(|(r, v)| (fixture(r), *v)).collect();
    let nvcc_ptxas = cache().join("cuda-tools/13.5.37/nvidia/cu13/bin/ptxas");
    if nvcc_ptxas.is_file() {
        paths.push((nvcc_ptxas, "13.5.37"));
    }
    for (p, want) in paths {
        let f = std::fs::File::open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        let t = Instant::now();
        let (v, read) = cuda_preflight::facts::toolchains::scan_file(&f, len).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "{}: CUDA {} in {ms:.1} ms, {read} of {len} bytes read",
            p.display(),
            v.as_ref().map(|v| v.to_string()).unwrap_or_default()
        );
        assert_eq!(v, Version::parse(want), "{}", p.display());
        // Only .rodata is scanned, and only up to the banner.
        assert!(read < len / 4, "{}: read {read} of {len}", p.display());
    }
}

#[test]
fn old_triton_on_blackwell_is_a_finding_and_nowhere_else() {
    let d = tempfile::tempdir().unwrap();
    let root = triton_rootfs(d.path(), "3.0.0");
    let (f, facts) = check(d.path(), &root, &rtx5070ti());
    assert_eq!(ids(&f), ["toolchain-gpu-unsupported"], "{f:#?}");
    assert_eq!(
        f[0]["predicted"]["message"],
        "ptxas fatal   : Value 'sm_120' is not defined for option 'gpu-name'"
    );
    let ev = f[0]["evidence"].as_str().unwrap();
    for part in [
        "Triton 3.0.0",
        "CUDA 12.4.99",
        "12.8",
        "RTX 5070 Ti",
        "triton/backends/nvidia/bin/ptxas",
    ] {
        assert!(ev.contains(part), "{part}: {ev}");
    }
    assert_eq!(facts["toolchains"][0]["version_source"], "banner");

    let (f, _) = check(d.path(), &root, &b200(d.path()));
    assert_eq!(ids(&f), ["toolchain-gpu-unsupported"], "{f:#?}");
    assert!(
        f[0]["predicted"]["message"]
            .as_str()
            .unwrap()
            .contains("'sm_100'")
    );

    let (f, _) = check(d.path(), &root, &h100_profile());
    assert!(f.is_empty(), "old Triton knows the H100: {f:#?}");
}

#[test]
fn new_triton_on_blackwell_is_no_finding() {
    for version in ["3.5.1", "3.3.0"] {
        let d = tempfile::tempdir().unwrap();
        let root = triton_rootfs(d.path(), version);
        for profile in [rtx5070ti(), b200(d.path()), h100_profile()] {
            let (f, facts) = check(d.path(), &root, &profile);
            assert!(
                f.is_empty(),
                "Triton {version} on {}: {f:#?}",
                profile.display()
            );
            assert!(!facts["toolchains"].as_array().unwrap().is_empty());
        }
    }
}

#[test]
fn old_nvrtc_on_blackwell() {
    let d = tempfile::tempdir().unwrap();
    let root = nvrtc_rootfs(d.path());
    let (f, facts) = check(d.path(), &root, &rtx5070ti());
    assert_eq!(ids(&f), ["toolchain-gpu-unsupported"], "{f:#?}");
    assert_eq!(f[0]["predicted"]["message"], NVRTC_BAD_ARCH);
    assert_eq!(facts["toolchains"][0]["cuda"], "12.4.127");
    let (f, _) = check(d.path(), &root, &h100_profile());
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
#[allow(unsafe_code)]
fn hostile_toolchain_paths_neither_escape_nor_hang() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    // A real ptxas outside the rootfs, where an absolute link inside points.
    let outside = d.path().join("outside");
    place(
        &outside,
        "ptxas",
        &fixture("triton-3.0.0/triton/backends/nvidia/bin/ptxas"),
    );
    let bin = root.join(SP).join("triton/backends/nvidia/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(outside.join("ptxas"), bin.join("ptxas")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", bin.join("ptxas-blackwell")).unwrap();
    let fifo = root.join(SP).join("triton/third_party/cuda/bin/ptxas");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that mkfifo only reads.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let cuda_bin = root.join("usr/local/cuda-12.4/bin");
    std::fs::create_dir_all(&cuda_bin).unwrap();
    std::os::unix::fs::symlink("ptxas", cuda_bin.join("ptxas")).unwrap();
    let lib = root.join("usr/local/cuda-12.4/lib64");
    std::fs::create_dir_all(&lib).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../etc/shadow",
        lib.join("libnvrtc.so.12"),
    )
    .unwrap();

    let t = Instant::now();
    let (f, facts) = check(d.path(), &root, &rtx5070ti());
    assert!(t.elapsed().as_secs() < 30);
    let all = facts.to_string();
    assert!(
        !all.contains("12.4.99"),
        "read the ptxas outside the rootfs: {all}"
    );
    // The FIFO is found and refused unopened: its version is unknown, said as skipped.
    assert_eq!(ids(&f), ["toolchain-version-skipped"], "{f:#?} {all}");
    assert!(
        f[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("not a regular file")
    );
}

/// Ask NVIDIA's tools themselves: a finding exactly where the real ptxas / NVRTC refuses the
/// GPU, with the message it prints.
#[test]
fn ground_truth_real_ptxas_and_nvrtc_agree_with_the_rule() {
    let d = tempfile::tempdir().unwrap();
    let ptx = d.path().join("k.ptx");
    std::fs::write(
        &ptx,
        ".version 7.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\tret;\n}\n",
    )
    .unwrap();
    let profiles: Vec<(PathBuf, &str)> = vec![
        (rtx5070ti(), "12.0"),
        (b200(d.path()), "10.0"),
        (h100_profile(), "9.0"),
    ];
    let mut checked = 0;
    for (triton, file) in [
        ("3.0.0", "ptxas"),
        ("3.3.0", "ptxas"),
        ("3.3.0", "ptxas-blackwell"),
        ("3.5.1", "ptxas"),
    ] {
        let ptxas = fixture(&format!(
            "triton-{triton}/triton/backends/nvidia/bin/{file}"
        ));
        let dir = d.path().join(format!("{triton}-{file}"));
        let root = triton_rootfs(&dir, triton);
        for (profile, cc) in &profiles {
            let major: u32 = cc.split('.').next().unwrap().parse().unwrap();
            // Triton 3.3 runs ptxas-blackwell for sm_100 and newer, ptxas below.
            if triton == "3.3.0" && (file == "ptxas-blackwell") != (major >= 10) {
                continue;
            }
            let name = triton_gpu_name(Some(triton), &Version::parse(cc).unwrap());
            let o = Command::new(&ptxas)
                .arg(format!("--gpu-name={name}"))
                .arg(&ptx)
                .arg("-o")
                .arg(dir.join("k.cubin"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            let (f, _) = check(&dir, &root, profile);
            let predicted = f.iter().any(|f| f["id"] == "toolchain-gpu-unsupported");
            assert_eq!(
                predicted,
                !o.status.success(),
                "Triton {triton} {file} --gpu-name={name}: ptxas said {stderr:?}, findings {f:#?}"
            );
            if predicted {
                assert!(stderr.contains(&ptxas_bad_arch(&name)), "{stderr}");
                assert_eq!(f[0]["predicted"]["message"], ptxas_bad_arch(&name));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 9);

    // NVRTC 12.4 through its C API: sm_120 refused with the quoted log line, sm_90 compiled.
    let lib = fixture("nvrtc-cu12-12.4.127/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    let script = r#"
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), b'extern "C" __global__ void k() {}', b"k.cu", 0, None, None) == 0
opts = (ctypes.c_char_p * 1)(("--gpu-architecture=" + sys.argv[2]).encode())
rc = lib.nvrtcCompileProgram(prog, 1, opts)
n = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
buf = ctypes.create_string_buffer(n.value)
lib.nvrtcGetProgramLog(prog, buf)
print(rc, buf.value.decode(errors="replace").strip())
"#;
    let root = nvrtc_rootfs(&d.path().join("nvrtc"));
    for (profile, cc) in &profiles {
        let sm = format!("sm_{}", cc.replace('.', ""));
        let o = Command::new("python3")
            .args(["-c", script])
            .arg(&lib)
            .arg(&sm)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let (f, _) = check(&d.path().join("nvrtc"), &root, profile);
        let predicted = f.iter().any(|f| f["id"] == "toolchain-gpu-unsupported");
        assert_eq!(
            predicted,
            out.split_whitespace().next() != Some("0"),
            "{sm}: nvrtc said {out:?}; {f:#?}"
        );
        if predicted {
            assert!(out.contains(NVRTC_BAD_ARCH), "{out}");
        }
    }
}
