//! NVIDIA's real container toolkit for the engine tests: `nvidia-container-runtime` and
//! `nvidia-cdi-hook` built from NVIDIA's source, found through `CUDA_PREFLIGHT_NVIDIA_TOOLKIT`
//! (a directory of the `.xz` binaries and their `SHA256SUMS`; unset: `../shared/nvidia-toolkit`
//! next to the repository, this workplace's copy). They are checked against `SHA256SUMS` and
//! unpacked once into the download cache. Without a GPU, a CDI spec names device nodes made with
//! `mknod` (the real majors, no driver behind them) and a test-double driver directory
//! (tests/double/libcuda.c as `libcuda.so.580.159.04`, soname `libcuda.so.1`), so every NVIDIA
//! hook runs for real: `create-symlinks` makes `libcuda.so.1`, `update-ldcache` runs ldconfig in
//! the container.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::{cache, repo, require_tool};

/// The driver version the double is named for: the H100's (`examples/hosts/h100-580.json`).
pub const DRIVER: &str = "580.159.04";

pub struct Toolkit {
    pub runtime: PathBuf,
    pub cdi_hook: PathBuf,
}

/// The toolkit, unpacked (once per test process; a second process finds the files in place).
/// Fails the test, never skips it, when the toolkit cannot be had.
pub fn toolkit() -> &'static Toolkit {
    static T: OnceLock<Toolkit> = OnceLock::new();
    T.get_or_init(|| {
        let src = std::env::var_os("CUDA_PREFLIGHT_NVIDIA_TOOLKIT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("../shared/nvidia-toolkit"));
        eprintln!(
            "NVIDIA container toolkit: {} (CUDA_PREFLIGHT_NVIDIA_TOOLKIT{})",
            src.display(),
            if std::env::var_os("CUDA_PREFLIGHT_NVIDIA_TOOLKIT").is_some() {
                ""
            } else {
                " unset: this workplace's ../shared/nvidia-toolkit"
            }
        );
        let sums = std::fs::read(src.join("SHA256SUMS")).unwrap_or_else(|e| {
            panic!(
                "{}/SHA256SUMS: {e}: set CUDA_PREFLIGHT_NVIDIA_TOOLKIT to a directory of NVIDIA's \
                 toolkit binaries (nvidia-container-runtime.xz, nvidia-cdi-hook.xz, SHA256SUMS)",
                src.display()
            )
        });
        let check = Command::new(require_tool("sha256sum"))
            .args(["--quiet", "-c", "SHA256SUMS"])
            .current_dir(&src)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: SHA256SUMS does not match: {}",
            src.display(),
            String::from_utf8_lossy(&check.stdout)
        );
        // One directory per set of sums: a new toolkit never mixes with an old one.
        let tag: String = {
            let out = Command::new(require_tool("sha256sum"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(&sums)?;
                    c.wait_with_output()
                })
                .unwrap();
            String::from_utf8_lossy(&out.stdout)[..16].to_string()
        };
        let dir = cache().join("nvidia-toolkit").join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["nvidia-container-runtime", "nvidia-cdi-hook"] {
            let out = dir.join(name);
            if out.exists() {
                continue;
            }
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            let st = Command::new(require_tool("xz"))
                .arg("-dc")
                .arg(src.join(format!("{name}.xz")))
                .stdout(std::fs::File::create(&tmp).unwrap())
                .status()
                .unwrap();
            assert!(st.success(), "xz -dc {name}.xz");
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            std::fs::rename(&tmp, &out).unwrap();
        }
        eprintln!("NVIDIA container toolkit unpacked in {}", dir.display());
        Toolkit {
            runtime: dir.join("nvidia-container-runtime"),
            cdi_hook: dir.join("nvidia-cdi-hook"),
        }
    })
}

fn gcc(out: &Path, args: &[&str], src: &str) {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let st = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(repo().join(src))
        .status()
        .expect("gcc (scripts/test.sh installs build tools)");
    assert!(st.success(), "gcc {src}");
    std::fs::rename(&tmp, out).unwrap();
}

/// The test-double driver library, built with the driver's soname.
pub fn double_libcuda() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libcuda-double-soname.so");
        gcc(
            &out,
            &["-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1"],
            "tests/double/libcuda.c",
        );
        out
    })
}

/// tests/double/cuinit.c, linked against this host's glibc.
pub fn cuinit() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuinit");
        gcc(&out, &["-O2"], "tests/double/cuinit.c");
        out
    })
}

/// A rootfs with busybox, this host's glibc and loader (so ldconfig's cache and dlopen work as
/// in a real image) and `/bin/cuinit`.
pub fn glibc_rootfs(dir: &Path) -> PathBuf {
    let root = super::busybox_rootfs(dir);
    for d in ["lib/x86_64-linux-gnu", "lib64", "etc", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libc.so.6",
        root.join("lib/x86_64-linux-gnu/libc.so.6"),
    )
    .unwrap();
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::copy(cuinit(), root.join("bin/cuinit")).unwrap();
    root
}

/// The host side of a CDI GPU without a GPU: `dir/dev/*` made with mknod (majors 195 and 238, as
/// on the H100) and `dir/driver/lib64/libcuda.so.<DRIVER>` (the double).
#[allow(unsafe_code)]
pub fn fake_gpu_host(dir: &Path) {
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    for (name, major, minor) in [
        ("nvidia0", 195, 0),
        ("nvidiactl", 195, 255),
        ("nvidia-uvm", 238, 0),
        ("nvidia-uvm-tools", 238, 1),
    ] {
        let path = std::ffi::CString::new(dev.join(name).to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mknod only reads.
        let rc = unsafe {
            libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(rc, 0, "mknod {name}: {}", std::io::Error::last_os_error());
    }
    let lib = dir.join("driver/lib64");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(double_libcuda(), lib.join(format!("libcuda.so.{DRIVER}"))).unwrap();
}

/// A CDI spec as `nvidia-ctk cdi generate` writes it (the H100's, abridged to libcuda), its
/// device nodes and driver file on `fake_gpu_host(dir)`, its hooks NVIDIA's real
/// `nvidia-cdi-hook`. Devices `<prefix>0` and `<prefix>all`; without `uvm`, no `/dev/nvidia-uvm`.
pub fn cdi_spec(dir: &Path, prefix: &str, uvm: bool) -> Value {
    let dev = |n: &str| dir.join("dev").join(n).display().to_string();
    let hook = |args: &[&str]| {
        let mut a = vec!["nvidia-cdi-hook"];
        a.extend_from_slice(args);
        json!({"hookName": "createContainer", "path": toolkit().cdi_hook, "args": a,
               "env": ["NVIDIA_CTK_DEBUG=false"]})
    };
    let gpu = json!({"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": dev("nvidia0"),
        "major": 195, "minor": 0, "fileMode": 438, "permissions": "rwm"}]});
    let mut nodes = vec![
        json!({"path": "/dev/nvidia-uvm", "hostPath": dev("nvidia-uvm"), "major": 238, "minor": 0, "fileMode": 438, "permissions": "rwm"}),
        json!({"path": "/dev/nvidia-uvm-tools", "hostPath": dev("nvidia-uvm-tools"), "major": 238, "minor": 1, "fileMode": 438, "permissions": "rwm"}),
        json!({"path": "/dev/nvidiactl", "hostPath": dev("nvidiactl"), "major": 195, "minor": 255, "fileMode": 438, "permissions": "rwm"}),
    ];
    if !uvm {
        nodes.retain(|n| !n["path"].as_str().unwrap().contains("uvm"));
    }
    let lib = format!("libcuda.so.{DRIVER}");
    json!({
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": format!("{prefix}0"), "containerEdits": gpu},
            {"name": format!("{prefix}all"), "containerEdits": gpu},
        ],
        "containerEdits": {
            "env": ["NVIDIA_CTK_LIBCUDA_DIR=/usr/local/nvidia/lib64", "NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": nodes,
            "hooks": [
                hook(&["create-symlinks",
                       "--link", &format!("{lib}::/usr/local/nvidia/lib64/libcuda.so.1"),
                       "--link", "libcuda.so.1::/usr/local/nvidia/lib64/libcuda.so"]),
                hook(&["enable-cuda-compat", &format!("--host-driver-version={DRIVER}")]),
                hook(&["update-ldcache", "--folder", "/usr/local/nvidia/lib64"]),
                hook(&["disable-device-node-modification"]),
                hook(&["update-application-profile"]),
            ],
            "mounts": [{
                "hostPath": dir.join("driver/lib64").join(&lib),
                "containerPath": format!("/usr/local/nvidia/lib64/{lib}"),
                "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"]
            }]
        }
    })
}

/// `nvidia-container-runtime`'s config file: `cdi` mode, CDI specs from `spec_dir`, then
/// `next` (runc, or cuda-preflight-runtime chained behind it).
pub fn runtime_config(path: &Path, spec_dir: &Path, next: &Path) {
    std::fs::write(
        path,
        format!(
            "[nvidia-container-runtime]\nmode = \"cdi\"\nruntimes = [\"{}\"]\nlog-level = \"info\"\n\
             [nvidia-container-runtime.modes.cdi]\ndefault-kind = \"nvidia.com/gpu\"\n\
             annotation-prefixes = [\"cdi.k8s.io/\"]\nspec-dirs = [\"{}\"]\n",
            next.display(),
            spec_dir.display()
        ),
    )
    .unwrap();
}

/// An executable script at `path` that execs `argv` followed by its own arguments, with `env`
/// set where the caller's environment does not set it already: how a runtime entry names a
/// binary with arguments or a settings file (dockerd writes the same kind of wrapper for
/// `runtimeArgs`).
pub fn wrapper(path: &Path, env: &[(&str, &Path)], argv: &[&Path], extra: &[&str]) {
    let mut s = String::from("#!/bin/sh\n");
    for (k, v) in env {
        s.push_str(&format!(": \"${{{k}:={}}}\"; export {k}\n", v.display()));
    }
    s.push_str("exec");
    for a in argv {
        s.push_str(&format!(" '{}'", a.display()));
    }
    for a in extra {
        s.push_str(&format!(" '{a}'"));
    }
    s.push_str(" \"$@\"\n");
    std::fs::write(path, s).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}
