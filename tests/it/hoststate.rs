//! Host-state rules under the real runc, against fixture host roots (`--host-root`): a GPU
//! container whose `linux.cgroupsPath` is in systemd form starts with a `/dev/char` warning on a
//! host without the links; a driver library of another version than the kernel module blocks.
//!
//! runc here runs with its cgroupfs driver, which takes a systemd-form `cgroupsPath` as a plain
//! relative cgroup name; the hook judges the form the engine wrote, so the start is real.

use crate::common::*;
use std::path::Path;

/// A fixture host: the NVIDIA nodes of `ALL_NODES`, with `/dev/char` links if `links`.
#[allow(unsafe_code)]
fn fixture_host(dir: &Path, links: bool) -> std::path::PathBuf {
    let root = dir.join("host");
    std::fs::create_dir_all(root.join("dev/char")).unwrap();
    for (p, ma, mi) in ALL_NODES {
        let node = root.join(p.trim_start_matches('/'));
        let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        assert_eq!(
            // SAFETY: a NUL-terminated path that mknod only reads.
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(*ma, *mi)) },
            0,
            "mknod {}",
            node.display()
        );
        if links {
            std::os::unix::fs::symlink(
                format!("..{}", p.trim_start_matches("/dev")),
                root.join(format!("dev/char/{ma}:{mi}")),
            )
            .unwrap();
        }
    }
    root
}

struct Run {
    out: std::process::Output,
    id: String,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A busybox container with the NVIDIA nodes in `linux.devices`, our hook reading host facts
/// under the fixture host `edit` builds, run by runc.
fn run(name: &str, edit: impl FnOnce(&mut serde_json::Value, &Path) -> std::path::PathBuf) -> Run {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut spec = base_spec(dir.path(), &["true"]);
    spec["linux"]["devices"] = nvidia_devices(ALL_NODES);
    allow_nvidia_cgroup(&mut spec);
    let host = edit(&mut spec, dir.path());
    let state = dir.path().join("state");
    let config = dir.path().join("config.toml");
    // Host-state rules only; the probe (which needs a libcuda in the image) has tests/it/probe.rs.
    std::fs::write(&config, "probe = \"never\"\n").unwrap();
    add_our_hook(
        &mut spec,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--host-profile",
            h100_profile().to_str().unwrap(),
            "--host-root",
            host.to_str().unwrap(),
        ],
    );
    write_spec(dir.path(), &spec);
    let id = unique_id(name);
    let out = runc_run(dir.path(), &id);
    Run {
        out,
        id,
        state,
        _dir: dir,
    }
}

fn systemd_cgroup(spec: &mut serde_json::Value, name: &str) {
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("system.slice:cuda-preflight:{name}"));
}

#[test]
fn systemd_cgroup_without_dev_char_links_starts_with_a_warning() {
    let r = run("devchar-missing", |spec, dir| {
        systemd_cgroup(spec, "devchar-missing");
        fixture_host(dir, false)
    });
    let err = String::from_utf8_lossy(&r.out.stderr);
    assert!(r.out.status.success(), "{err}");
    let rep = read_report(&r.state, &r.id).expect("a GPU start leaves a report");
    assert_eq!(rep["verdict"], "warn", "{rep}");
    assert_eq!(finding_ids(&rep), vec!["dev-char-link-missing"], "{rep}");
    let f = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "dev-char-link-missing")
        .unwrap();
    assert_eq!(
        f["predicted"]["message"],
        "Failed to initialize NVML: Unknown Error"
    );
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("/dev/char/195:0 is missing"),
        "{f}"
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("nvidia-ctk system create-dev-char-symlinks --create-all")
    );
    // runc shows a hook's stderr only when the hook fails: a warning lives in the report.
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("will lose GPU access at the next `systemctl daemon-reload`"),
        "{f}"
    );
}

#[test]
fn systemd_cgroup_with_dev_char_links_starts_clean() {
    let r = run("devchar-ok", |spec, dir| {
        systemd_cgroup(spec, "devchar-ok");
        fixture_host(dir, true)
    });
    assert!(
        r.out.status.success(),
        "{}",
        String::from_utf8_lossy(&r.out.stderr)
    );
    let rep = read_report(&r.state, &r.id).unwrap();
    assert!(finding_ids(&rep).is_empty(), "{rep}");
    assert!(
        !all_finding_ids(&rep).contains(&"dev-char-links-skipped".to_string()),
        "{rep}"
    );
}

#[test]
fn cgroupfs_path_is_not_judged_for_links() {
    let r = run("devchar-cgroupfs", |_, dir| fixture_host(dir, false));
    assert!(r.out.status.success());
    let rep = read_report(&r.state, &r.id).unwrap();
    assert!(finding_ids(&rep).is_empty(), "{rep}");
}

/// The kernel module is 580.95.05, the libcuda bind-mounted into the container 580.159.04: the
/// state after a driver upgrade without reboot.
#[test]
fn driver_library_of_another_version_than_the_module_blocks() {
    let r = run("lib-mismatch", |spec, dir| {
        let host = fixture_host(dir, true);
        let nvrm = host.join("proc/driver/nvidia");
        std::fs::create_dir_all(&nvrm).unwrap();
        std::fs::write(
            nvrm.join("version"),
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n",
        )
        .unwrap();
        let lib = host.join("usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"\x7fELF\x02").unwrap();
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/usr/lib/libcuda.so.580.159.04", "type": "bind",
                "source": lib, "options": ["ro", "bind"]
            }));
        host
    });
    let err = String::from_utf8_lossy(&r.out.stderr);
    assert!(!r.out.status.success(), "{err}");
    assert!(
        err.contains("803 CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"),
        "{err}"
    );
    let rep = read_report(&r.state, &r.id).unwrap();
    assert_eq!(rep["verdict"], "block");
    assert_eq!(
        finding_ids(&rep),
        vec!["driver-library-version-mismatch"],
        "{rep}"
    );
}
