//! The hook under the real runc: containers that get their GPUs from the spec and from an
//! NVIDIA-style prestart hook, blocked or started as the devices they will really have say.

use crate::common::*;
use std::path::Path;

struct Run {
    out: std::process::Output,
    id: String,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn report(&self) -> Option<serde_json::Value> {
        read_report(&self.state, &self.id)
    }
}

/// Build a bundle, let `edit` shape its spec (our hook is added last), run it.
fn run(name: &str, config_toml: &str, edit: impl FnOnce(&mut serde_json::Value, &Path)) -> Run {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut spec = base_spec(dir.path(), &["true"]);
    edit(&mut spec, dir.path());
    let state = dir.path().join("state");
    let config = dir.path().join("config.toml");
    // These tests judge devices and policy; the probe (which needs a libcuda) has tests/it/probe.rs.
    let config_toml = if config_toml.contains("probe") {
        config_toml.to_string()
    } else {
        format!("probe = \"never\"\n{config_toml}")
    };
    std::fs::write(&config, config_toml).unwrap();
    add_our_hook(
        &mut spec,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--host-profile",
            h100_profile().to_str().unwrap(),
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

fn explicit(nodes: &[(&str, u32, u32)], allow: bool) -> impl FnOnce(&mut serde_json::Value, &Path) {
    let nodes: Vec<(String, u32, u32)> = nodes
        .iter()
        .map(|(p, a, b)| (p.to_string(), *a, *b))
        .collect();
    move |spec, _| {
        let n: Vec<(&str, u32, u32)> = nodes.iter().map(|(p, a, b)| (p.as_str(), *a, *b)).collect();
        spec["linux"]["devices"] = nvidia_devices(&n);
        if allow {
            allow_nvidia_cgroup(spec);
        }
    }
}

#[test]
fn explicit_devices_all_present_starts() {
    let r = run("explicit-ok", "", explicit(ALL_NODES, true));
    assert!(r.out.status.success(), "{}", r.stderr());
    let rep = r.report().expect("a GPU start leaves a report");
    assert_eq!(rep["verdict"], "allow");
    assert_eq!(rep["request"]["kind"], "spec-devices");
    assert!(finding_ids(&rep).is_empty(), "{rep}");
}

#[test]
fn explicit_devices_without_uvm_is_blocked_with_a_standalone_first_line() {
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let r = run("explicit-nouvm", "", explicit(&nodes, true));
    assert!(!r.out.status.success());
    let err = r.stderr();
    // What the user of `runc run` reads: runc's own prefix, then our stderr folded into one line
    // with literal \n. The first line stands alone: it names the container, the node and the error.
    let (call, code) =
        cuda_preflight::knowledge::device_error(cuda_preflight::knowledge::NodeClass::Uvm, false);
    let name = cuda_preflight::knowledge::driver_error(code).unwrap().name;
    let first = format!(
        "stderr: cuda-preflight: blocked container {}: /dev/nvidia-uvm is missing from linux.devices of config.json: CUDA would fail with {code} {name}\\n",
        r.id
    );
    assert!(
        err.contains(&first),
        "runc said:\n{err}\nexpected:\n{first}"
    );
    assert!(err.contains(&format!("{call} fails without it")), "{err}");
    assert!(
        err.contains(&format!("full report: cuda-preflight report {}", r.id)),
        "{err}"
    );
    let rep = r.report().unwrap();
    assert_eq!(rep["verdict"], "block");
    assert_eq!(finding_ids(&rep), vec!["device-node-missing"]);
}

#[test]
fn explicit_devices_denied_by_the_device_cgroup_is_blocked() {
    // runc's default spec denies every device; only /dev/nvidia* major 195 is allowed here.
    let r = run("explicit-denied", "", |spec, _| {
        spec["linux"]["devices"] = nvidia_devices(ALL_NODES);
        spec["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"allow": true, "type": "c", "major": 195, "access": "rwm"}));
    });
    assert!(!r.out.status.success());
    assert!(
        r.stderr()
            .contains("/dev/nvidia-uvm (char 238:0) is present but the device cgroup"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        finding_ids(&r.report().unwrap()),
        vec!["device-cgroup-denied"]
    );
}

#[test]
fn warn_mode_lets_a_broken_container_start_and_records_it() {
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidiactl")
        .collect();
    let r = run("warn-mode", "mode = \"warn\"\n", explicit(&nodes, true));
    assert!(r.out.status.success(), "{}", r.stderr());
    let rep = r.report().unwrap();
    assert_eq!(rep["verdict"], "warn");
    assert_eq!(rep["mode"], "warn");
    assert_eq!(finding_ids(&rep), vec!["device-node-missing"]);
}

#[test]
fn injected_by_nvidia_hook_all_nodes_starts() {
    let r = run("hook-ok", "", |spec, dir| {
        set_env(spec, "NVIDIA_VISIBLE_DEVICES=all");
        add_standin_nvidia_hook(spec, dir, ALL_NODES, true);
    });
    assert!(r.out.status.success(), "{}", r.stderr());
    let rep = r.report().unwrap();
    assert_eq!(rep["request"]["kind"], "injected-by-hook");
    assert_eq!(rep["verdict"], "allow", "{rep}");
}

#[test]
fn injected_by_nvidia_hook_without_uvm_is_blocked_naming_it() {
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let r = run("hook-nouvm", "", |spec, dir| {
        set_env(spec, "NVIDIA_VISIBLE_DEVICES=all");
        add_standin_nvidia_hook(spec, dir, &nodes, true);
    });
    assert!(!r.out.status.success());
    let err = r.stderr();
    assert!(
        err.contains(&format!("cuda-preflight: blocked container {}: /dev/nvidia-uvm is missing from the container's /dev", r.id)),
        "{err}"
    );
    assert_eq!(
        finding_ids(&r.report().unwrap()),
        vec!["device-node-missing"]
    );
}

#[test]
fn injected_nodes_without_device_cgroup_rules_are_judged_from_the_cgroup() {
    // The nodes are there, but nothing allowed them in the container's device cgroup.
    let r = run("hook-nocg", "", |spec, dir| {
        set_env(spec, "NVIDIA_VISIBLE_DEVICES=all");
        add_standin_nvidia_hook(spec, dir, ALL_NODES, false);
    });
    let rep = r.report().unwrap();
    let ids = all_finding_ids(&rep);
    if ids.contains(&"device-cgroup-skipped".to_string()) {
        // cgroup v2: the rules are an eBPF program we cannot read; the start goes on and says so.
        assert!(r.out.status.success(), "{}", r.stderr());
    } else {
        assert!(!r.out.status.success());
        assert_eq!(finding_ids(&rep), vec!["device-cgroup-denied"; 3]);
        assert!(r.stderr().contains("devices.list"), "{}", r.stderr());
    }
}

#[test]
fn visible_devices_without_an_nvidia_hook_starts_with_a_warning_recorded() {
    let r = run("env-only", "", |spec, _| {
        set_env(spec, "NVIDIA_VISIBLE_DEVICES=all")
    });
    assert!(r.out.status.success(), "{}", r.stderr());
    let rep = r.report().unwrap();
    assert_eq!(rep["verdict"], "warn");
    assert_eq!(finding_ids(&rep), vec!["gpu-env-without-runtime"]);
}

#[test]
fn container_without_gpu_is_untouched() {
    let r = run("no-gpu", "mode = \"enforce\"\n", |_, _| {});
    assert!(r.out.status.success(), "{}", r.stderr());
    assert!(
        r.report().is_none(),
        "no report for a container that asks for no GPU"
    );
    assert!(!r.state.exists(), "the fast path writes nothing");
}

#[test]
#[allow(unsafe_code)]
fn a_hung_fact_source_is_cut_at_the_deadline_as_on_timeout_says() {
    for (on_timeout, should_start) in [("block", false), ("allow", true)] {
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(dir.path());
        let mut spec = base_spec(dir.path(), &["true"]);
        spec["linux"]["devices"] = nvidia_devices(ALL_NODES);
        allow_nvidia_cgroup(&mut spec);
        // A FIFO nobody writes: opening it never returns, like a host profile on a dead NFS mount.
        let fifo = dir.path().join("profile.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!("deadline_ms = 300\non_timeout = \"{on_timeout}\"\n"),
        )
        .unwrap();
        add_our_hook(
            &mut spec,
            &[
                "--config",
                config.to_str().unwrap(),
                "--host-profile",
                fifo.to_str().unwrap(),
            ],
        );
        write_spec(dir.path(), &spec);
        let t = std::time::Instant::now();
        let out = runc_run(dir.path(), &unique_id("deadline"));
        let took = t.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
        assert_eq!(out.status.success(), should_start, "{on_timeout}: {err}");
        if !should_start {
            assert!(
                err.contains("the hook's deadline of 300 ms passed (on_timeout = block)"),
                "{err}"
            );
        }
    }
}

#[test]
fn image_with_an_sm80_only_library_is_blocked_on_an_h100_with_209() {
    // The library is the image's (in its rootfs, in a directory the loader searches); the hook
    // reads it through /proc/<pid>/root as the container will see it.
    let lib = sm80_only();
    let r = run("kernels-sm80", "", |spec, dir| {
        let to = dir.join("rootfs/usr/lib/x86_64-linux-gnu/libk80.so");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap();
        explicit(ALL_NODES, true)(spec, dir);
    });
    assert!(!r.out.status.success(), "{}", r.stderr());
    let err = r.stderr();
    assert!(err.contains("kernel-image-missing"), "{err}");
    assert!(err.contains("209 CUDA_ERROR_NO_BINARY_FOR_GPU"), "{err}");
    assert!(
        err.contains("/usr/lib/x86_64-linux-gnu/libk80.so: none of its GPU modules"),
        "{err}"
    );
    let rep = r.report().unwrap();
    assert_eq!(rep["verdict"], "block");
    assert_eq!(finding_ids(&rep), vec!["kernel-image-missing"], "{rep}");
    assert_eq!(rep["binaries"]["stats"]["cuda_files"], 1, "{rep}");
    // Scanned, not served from a cache (the state dir is new): the entry is written for the
    // next container of this image (hits are asserted in tests/it/binaries.rs).
    assert_eq!(rep["binaries"]["stats"]["cache_misses"], 1, "{rep}");
    assert_eq!(
        std::fs::read_dir(r.state.join("scan-cache"))
            .unwrap()
            .count(),
        1
    );
}
