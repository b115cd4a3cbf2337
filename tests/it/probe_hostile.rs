//! The probe against a hostile `libcuda.so.1` (tests/double/hostile.c) in real runc containers:
//! image code that tries every way out of the probe the image→host-root review found (issue 19).
//! Each test asserts the attempt FAILED: the double records what it tried in a host directory the
//! container mounts at /probe-log, and the container's own process lists every process left in
//! its pid namespace once the hook has returned.

use crate::common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn build(name: &str, extra: &[&str]) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let st = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .args(extra)
        .arg(repo().join("tests/double/hostile.c"))
        .arg("-lpthread")
        .status()
        .expect("gcc (scripts/test.sh installs build tools)");
    assert!(st.success());
    out
}

fn hostile() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build("libcuda-hostile.so", &[]))
}

/// The same file as a `libgcc_s.so.1` for an image's LD_LIBRARY_PATH.
fn gcc_bait() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build("libgcc_s-bait.so.1", &["-DGCC_BAIT"]))
}

/// A host directory writable by any container user.
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    d
}

struct Setup<'a> {
    conf: &'a str,
    uid: u32,
    env: &'a [&'a str],
    config: &'a str,
    /// Device nodes' mode (runc creates them from linux.devices).
    node_mode: u32,
    pids_limit: Option<i64>,
    /// Shared between starts, for the cache tests.
    state: Option<&'a Path>,
    /// Put the bait libgcc_s.so.1 in the image at /opt/evil.
    bait: bool,
    /// Put a `libnvidia-ptxjitcompiler.so.1` whose marker is "from-ldlp" in the image at
    /// /opt/jit (found only through an LD_LIBRARY_PATH naming it).
    jit_lib: bool,
    /// `linux.seccomp` of the spec.
    seccomp: Option<Value>,
    /// A user namespace (container root = host uid 100000); the device nodes then come from a
    /// stand-in for NVIDIA's prestart hook, as runc cannot mknod in a user namespace.
    userns: bool,
    /// Install our hook at createContainer (`--stage createContainer`) instead of
    /// createRuntime, after a hook that saves the state runc hands to that stage.
    create_container: bool,
    /// A host file bind-mounted at /proc/uptime (as lxcfs does).
    proc_uptime: Option<&'a Path>,
    /// A prestart hook that mounts a tmpfs over the container's /proc/driver and writes a
    /// `params` file there, as NVIDIA's legacy hook (nvidia-container-cli) does over
    /// /proc/driver/nvidia.
    proc_tmpfs_hook: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            conf: "",
            uid: 0,
            env: &[],
            config: "probe = \"always\"\n",
            node_mode: 0o666,
            pids_limit: None,
            state: None,
            bait: false,
            jit_lib: false,
            seccomp: None,
            userns: false,
            create_container: false,
            proc_uptime: None,
            proc_tmpfs_hook: false,
        }
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    report: Value,
    escapes: String,
    /// What the double's cuModuleLoadData found as libnvidia-ptxjitcompiler.so.1 (`jitlib=1`).
    jit: String,
    wall: std::time::Duration,
    bundle: tempfile::TempDir,
    _log: tempfile::TempDir,
}

impl Run {
    /// Lines of escapes that worked.
    fn succeeded(&self) -> Vec<&str> {
        self.escapes
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some("ok"))
            .collect()
    }

    fn tried(&self, name: &str) -> bool {
        self.escapes
            .lines()
            .any(|l| l.split(' ').next() == Some(name))
    }

    fn info(&self, key: &str) -> Option<&str> {
        self.escapes
            .lines()
            .find_map(|l| l.strip_prefix(&format!("info {key}=")))
    }
}

/// One container start: busybox, read-only rootfs (runc's default spec), the hostile double
/// bind-mounted as the NVIDIA runtime would mount the driver, a host directory at /ro-target
/// listed in readonlyPaths, a file /secret listed in maskedPaths, our hook at createRuntime. The
/// container's process prints the name of every process in its pid namespace.
fn start(s: &Setup) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let log = open_dir();
    let ro_target = open_dir();
    let root = busybox_rootfs(dir.path());
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/cuda-double.conf"), s.conf).unwrap();
    std::fs::write(root.join("secret"), "SECRET\n").unwrap();
    if s.jit_lib {
        std::fs::create_dir_all(root.join("opt/jit")).unwrap();
        let src = dir.path().join("jit.c");
        std::fs::write(&src, "const char *marker = \"from-ldlp\";\n").unwrap();
        let st = std::process::Command::new("gcc")
            .args([
                "-shared",
                "-fPIC",
                "-Wl,-soname,libnvidia-ptxjitcompiler.so.1",
                "-o",
            ])
            .arg(root.join("opt/jit/libnvidia-ptxjitcompiler.so.1"))
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
    }
    if s.bait {
        std::fs::create_dir_all(root.join("opt/evil")).unwrap();
        std::fs::copy(gcc_bait(), root.join("opt/evil/libgcc_s.so.1")).unwrap();
    }
    let mut spec = base_spec(
        dir.path(),
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; cat /proc/[0-9]*/comm; echo; cat /proc/[0-9]*/cmdline",
        ],
    );
    assert_eq!(
        spec["root"]["readonly"], true,
        "runc's default spec changed"
    );
    spec["process"]["user"] = json!({"uid": s.uid, "gid": s.uid, "additionalGids": [44]});
    for kv in s.env {
        set_env(&mut spec, kv);
    }
    let mut devices = nvidia_devices(ALL_NODES);
    for d in devices.as_array_mut().unwrap() {
        d["fileMode"] = json!(s.node_mode);
        d["uid"] = json!(0);
        d["gid"] = json!(0);
    }
    spec["linux"]["devices"] = devices;
    allow_nvidia_cgroup(&mut spec);
    if let Some(sc) = &s.seccomp {
        spec["linux"]["seccomp"] = sc.clone();
    }
    if s.userns {
        // The container's root is host uid 100000: it must reach the bundle and own the rootfs.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        fn chown_tree(p: &Path) {
            std::os::unix::fs::lchown(p, Some(100000), Some(100000)).unwrap();
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(p).unwrap() {
                    chown_tree(&e.unwrap().path());
                }
            }
        }
        chown_tree(&root);
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        spec["linux"]["uidMappings"] = map.clone();
        spec["linux"]["gidMappings"] = map;
        // runc cannot mknod in a user namespace, nor can a hook as host root on its /dev tmpfs
        // (the owner is not mapped there): the nodes are made on the host and bind-mounted, as
        // runc itself does for linux.devices under a user namespace. The stand-in NVIDIA hook
        // (which makes no node here) marks the container as a GPU one, with NVIDIA_VISIBLE_DEVICES.
        spec["linux"]["devices"] = json!([]);
        let nodes = dir.path().join("devnodes");
        std::fs::create_dir_all(&nodes).unwrap();
        for (p, ma, mi) in ALL_NODES {
            let host = nodes.join(p.trim_start_matches("/dev/"));
            let st = std::process::Command::new("mknod")
                .args(["-m", "666"])
                .arg(&host)
                .args(["c", &ma.to_string(), &mi.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            spec["mounts"].as_array_mut().unwrap().push(json!({
                "destination": p, "type": "bind", "source": host, "options": ["bind"]
            }));
        }
        set_env(&mut spec, "NVIDIA_VISIBLE_DEVICES=all");
        add_standin_nvidia_hook(&mut spec, dir.path(), &[], true);
    }
    if let Some(limit) = s.pids_limit {
        spec["linux"]["resources"]["pids"] = json!({"limit": limit});
    }
    spec["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/secret"));
    spec["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/ro-target"));
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({
        "destination": "/usr/lib/libcuda.so.1", "type": "bind", "source": hostile(), "options": ["bind", "ro"]
    }));
    mounts.push(json!({
        "destination": "/probe-log", "type": "bind", "source": log.path(), "options": ["rbind", "rw"]
    }));
    mounts.push(json!({
        "destination": "/ro-target", "type": "bind", "source": ro_target.path(), "options": ["rbind", "rw"]
    }));
    if let Some(f) = s.proc_uptime {
        mounts.push(json!({
            "destination": "/proc/uptime", "type": "bind", "source": f, "options": ["bind", "ro"]
        }));
    }
    let state = s
        .state
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path().join("state"));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("probe_deadline_ms = 1500\n{}", s.config)).unwrap();
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
    if s.create_container {
        let ours = spec["hooks"]["createRuntime"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        let mut ours = ours;
        ours["args"]
            .as_array_mut()
            .unwrap()
            .extend([json!("--stage"), json!("createContainer")]);
        let save = format!("cat > {}/cc-state.json", dir.path().display());
        spec["hooks"]["createContainer"] = json!([
            {"path": "/bin/sh", "args": ["sh", "-c", save]},
            ours
        ]);
    }
    if s.proc_tmpfs_hook {
        let script = dir.path().join("proc-tmpfs-hook");
        std::fs::write(
            &script,
            format!(
                "#!/bin/bash\nset -eu\n\
                 read -r pid bundle < <(python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[\"pid\"], s[\"bundle\"])')\n\
                 {nsenter} -t \"$pid\" -m sh -c \"mount -t tmpfs -o size=64k,mode=755 tmpfs $bundle/rootfs/proc/driver && \
                 echo 'ModifyDeviceFiles: 0' > $bundle/rootfs/proc/driver/params\"\n",
                nsenter = require_tool("nsenter").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        spec["hooks"]["prestart"] = json!([{"path": script, "args": ["proc-tmpfs-hook"]}]);
    }
    write_spec(dir.path(), &spec);
    let id = unique_id("hostile");
    let t = std::time::Instant::now();
    let out = runc_run(dir.path(), &id);
    let wall = t.elapsed();
    let escapes = std::fs::read_to_string(log.path().join("escapes")).unwrap_or_default();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        report: read_report(&state, &id).unwrap_or(Value::Null),
        escapes,
        jit: std::fs::read_to_string(log.path().join("jit")).unwrap_or_default(),
        wall,
        bundle: dir,
        _log: log,
    }
}

/// Every attempt the double makes from cuInit.
const ATTEMPTS: &[&str] = &[
    "inherited-fds",
    "core-pattern",
    "sysrq-trigger",
    "rootfs-write",
    "readonly-path-write",
    "masked-read",
    "ptrace-parent",
    "signal-parent",
    "ptrace-any",
];

/// No process of the probe is left once the hook has returned: the container's process (started
/// after every hook) sees none in its pid namespace.
fn assert_nothing_left(r: &Run, linger: &str) {
    assert!(
        !r.stdout.contains(linger),
        "a daemon forked by image code outlived the probe:\n{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("probe-child"),
        "a probe process outlived the hook:\n{}",
        r.stdout
    );
}

fn escapes_fail_as(uid: u32) {
    let linger = format!("hl{uid}-{}", std::process::id() % 100000);
    let r = start(&Setup {
        conf: &format!("hostile=1\nlinger={linger}\nversion=4242\n"),
        uid,
        ..Setup::default()
    });
    eprintln!(
        "uid {uid}: what the hostile driver tried:\n{}\nreport: {}",
        r.escapes, r.report["probe"]
    );
    for a in ATTEMPTS {
        assert!(
            r.tried(a),
            "the double never tried {a}: {}\n{}",
            r.escapes,
            r.stderr
        );
    }
    assert_eq!(
        r.succeeded(),
        Vec::<&str>::new(),
        "escapes that worked:\n{}",
        r.escapes
    );
    // The probe still answered, from a working /proc/self, and the container still started.
    assert_eq!(r.info("proc-self"), Some("works"), "{}", r.escapes);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.report["probe"]["outcome"]["driver_version"], 4242,
        "{}",
        r.report
    );
    assert_nothing_left(&r, &linger);
}

#[test]
fn hostile_driver_escapes_fail_for_a_root_container() {
    escapes_fail_as(0);
}

#[test]
fn hostile_driver_escapes_fail_for_a_user_container() {
    escapes_fail_as(1000);
}

#[test]
fn image_ld_library_path_never_reaches_the_host_loader() {
    // Relative to the hook's working directory (runtimes start hooks in the bundle) and a host
    // directory by absolute path: both hold a libgcc_s.so.1 whose constructor marks the hook's
    // working directory if the host's loader maps it.
    let host_dir = open_dir();
    std::fs::copy(gcc_bait(), host_dir.path().join("libgcc_s.so.1")).unwrap();
    let ldlp = format!(
        "LD_LIBRARY_PATH=rootfs/opt/evil:{}",
        host_dir.path().display()
    );
    let env = [ldlp.as_str(), "LD_PRELOAD=rootfs/opt/evil/libgcc_s.so.1"];
    let r = start(&Setup {
        conf: "hostile=1\nversion=77\n",
        env: &env,
        bait: true,
        ..Setup::default()
    });
    assert!(
        !r.bundle.path().join("HOSTILE-HOST-LOADER").exists(),
        "the host loader ran image code as the hook: {}",
        std::fs::read_to_string(r.bundle.path().join("HOSTILE-HOST-LOADER")).unwrap_or_default()
    );
    assert!(
        !host_dir.path().join("HOSTILE-HOST-LOADER").exists(),
        "the host loader ran image code"
    );
    assert_eq!(
        r.report["probe"]["outcome"]["driver_version"], 77,
        "{}",
        r.report
    );
    // The image's LD_PRELOAD reaches nobody; its LD_LIBRARY_PATH is the container's to see.
    assert_eq!(r.info("LD_PRELOAD"), Some("(unset)"), "{}", r.escapes);
}

#[test]
fn the_containers_cuda_environment_reaches_the_driver_and_nothing_else_does() {
    let env = [
        "CUDA_VISIBLE_DEVICES=0",
        "CUDA_MODULE_LOADING=LAZY",
        "HOME=/root-of-image",
    ];
    let r = start(&Setup {
        conf: "hostile=1\n",
        env: &env,
        uid: 1000,
        ..Setup::default()
    });
    assert_eq!(r.info("CUDA_VISIBLE_DEVICES"), Some("0"), "{}", r.escapes);
    assert_eq!(r.info("CUDA_MODULE_LOADING"), Some("LAZY"), "{}", r.escapes);
    assert_eq!(r.info("LD_PRELOAD"), Some("(unset)"), "{}", r.escapes);
    assert_eq!(r.info("HOME"), Some("(unset)"), "{}", r.escapes);
}

fn assert_cut_at_the_deadline(r: &Run) {
    assert!(r.ok, "{}", r.stderr);
    let result = r.report["probe"]["result"].as_str().unwrap_or("");
    assert!(result == "timed-out" || result == "crashed", "{}", r.report);
    // probe_deadline_ms = 1500; runc's own work is well under a second here.
    assert!(
        r.wall < std::time::Duration::from_millis(4000),
        "{:?}",
        r.wall
    );
    assert!(
        r.report["duration_ms"].as_f64().unwrap() < 2500.0,
        "the hook ran past the probe's deadline: {}",
        r.report["duration_ms"]
    );
}

#[test]
fn closed_stdout_then_hang_ends_at_the_probe_deadline() {
    let linger = format!("hc-{}", std::process::id() % 100000);
    let r = start(&Setup {
        conf: &format!("linger={linger}\ncloseout=1\n"),
        ..Setup::default()
    });
    assert_cut_at_the_deadline(&r);
    assert_nothing_left(&r, &linger);
}

#[test]
fn huge_output_then_hang_ends_at_the_probe_deadline() {
    let r = start(&Setup {
        conf: "huge=1\n",
        ..Setup::default()
    });
    assert_cut_at_the_deadline(&r);
    assert_nothing_left(&r, "no-linger");
}

#[test]
fn a_forged_failure_cannot_block_a_healthy_container_of_another_image() {
    let state = tempfile::tempdir().unwrap();
    // The same driver library (the key's inputs alike); the first image forges an 803 answer.
    let forged = start(&Setup {
        conf: "forge=803\n",
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    assert!(forged.report.is_object(), "{}", forged.stderr);
    let healthy = start(&Setup {
        conf: "version=12345\n",
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    assert!(
        healthy.ok,
        "a forged answer blocked another image: {}",
        healthy.stderr
    );
    assert_eq!(
        healthy.report["probe"]["cached"], false,
        "{}",
        healthy.report
    );
    assert_eq!(
        healthy.report["probe"]["outcome"]["driver_version"], 12345,
        "{}",
        healthy.report
    );
}

#[test]
fn a_0660_nodes_container_does_not_poison_a_0666_one() {
    let state = tempfile::tempdir().unwrap();
    let denied = start(&Setup {
        conf: "devcheck=1\n",
        uid: 1000,
        node_mode: 0o660,
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    // The driver rightly sees no device it may open.
    assert!(!denied.ok, "{}", denied.report);
    assert_eq!(
        finding_ids(&denied.report),
        vec!["probe-init-failed"],
        "{}",
        denied.report
    );
    let open = start(&Setup {
        conf: "devcheck=1\n",
        uid: 1000,
        node_mode: 0o666,
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    assert!(
        open.ok,
        "the 0660 answer blocked a 0666 container: {}",
        open.stderr
    );
    assert_eq!(open.report["probe"]["cached"], false, "{}", open.report);
}

#[test]
fn a_pids_limit_within_the_probes_footprint_is_inconclusive_not_a_block() {
    let state = tempfile::tempdir().unwrap();
    let small = start(&Setup {
        conf: "threads=16\n",
        pids_limit: Some(8),
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    assert!(
        small.ok,
        "the probe's own footprint blocked the start: {}",
        small.stderr
    );
    assert_eq!(
        finding_ids(&small.report),
        vec!["probe-inconclusive"],
        "{}",
        small.report
    );
    // And that answer decides nothing for the next container of the image.
    let roomy = start(&Setup {
        conf: "threads=16\n",
        config: "probe = \"auto\"\n",
        state: Some(state.path()),
        ..Setup::default()
    });
    assert!(roomy.ok, "{}", roomy.stderr);
    assert_eq!(roomy.report["probe"]["cached"], false, "{}", roomy.report);
    assert_eq!(
        finding_ids(&roomy.report),
        Vec::<String>::new(),
        "{}",
        roomy.report
    );
}

#[test]
fn the_containers_seccomp_filter_binds_the_probe() {
    // Everything allowed but sysinfo, refused with a telling errno; the double calls it.
    let r = start(&Setup {
        conf: "hostile=1\nseccheck=1\n",
        seccomp: Some(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}]
        })),
        ..Setup::default()
    });
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.info("sysinfo"), Some("errno 77"), "{}", r.escapes);
    assert_eq!(
        r.report["probe"]["outcome"]["identity"]["seccomp"], 2,
        "{}",
        r.report
    );
    assert!(
        !all_finding_ids(&r.report).contains(&"probe-without-seccomp".to_string()),
        "{}",
        r.report
    );
    assert_eq!(r.succeeded(), Vec::<&str>::new(), "{}", r.escapes);
}

#[test]
fn at_create_container_the_probe_runs_inside_and_the_container_still_starts() {
    let r = start(&Setup {
        conf: "hostile=1\nversion=5150\n",
        uid: 1000,
        create_container: true,
        ..Setup::default()
    });
    assert!(r.ok, "{}", r.stderr);
    // runc hands createContainer hooks the pid runc init has in the container's pid namespace
    // (libcontainer: `s.Pid = unix.Getpid()`), not a host pid.
    let state: Value = serde_json::from_slice(
        &std::fs::read(r.bundle.path().join("cc-state.json"))
            .expect("state saved at createContainer"),
    )
    .unwrap();
    assert_eq!(state["pid"], 1, "{state}");
    assert_eq!(r.report["probe"]["result"], "finished", "{}", r.report);
    let outcome = &r.report["probe"]["outcome"];
    assert_eq!(outcome["driver_version"], 5150, "{}", r.report);
    let mut lines = r.stdout.lines();
    assert_eq!(
        outcome["identity"]["mnt_ns"],
        lines.next().unwrap(),
        "{}",
        r.report
    );
    assert_eq!(
        outcome["identity"]["pid_ns"],
        lines.next().unwrap(),
        "{}",
        r.report
    );
    assert_eq!(outcome["identity"]["uid"], 1000);
    assert_eq!(outcome["identity"]["cap_eff"], "0000000000000000");
    assert_eq!(r.succeeded(), Vec::<&str>::new(), "{}", r.escapes);
    assert_nothing_left(&r, "no-linger");
}

/// Real Podman: its own spec (its default seccomp profile from containers-common, capabilities,
/// masked and read-only paths), our hooks-directory entry as shipped, a stand-in for NVIDIA's
/// prestart hook creating the device nodes, the hostile double mounted as the driver.
#[test]
fn under_podman_the_probe_takes_the_containers_seccomp_profile_and_confinement() {
    require_tool("podman");
    let dir = tempfile::tempdir().unwrap();
    let log = open_dir();
    let hooks = dir.path().join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "probe = \"always\"\nprobe_deadline_ms = 3000\n").unwrap();
    let mut ours: Value = serde_json::from_slice(
        &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
    )
    .unwrap();
    ours["hook"]["path"] = BIN.into();
    ours["hook"]["args"] = json!([
        "cuda-preflight",
        "hook",
        "--config",
        config,
        "--state-dir",
        state,
        "--host-profile",
        h100_profile()
    ]);
    std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
    let standin = standin_nvidia_hook(dir.path(), ALL_NODES, true);
    let nvidia = json!({
        "version": "1.0.0",
        "hook": {"path": standin, "args": ["nvidia-container-runtime-hook", "prestart"]},
        "when": {"always": true},
        "stages": ["prestart"]
    });
    std::fs::write(hooks.join("oci-nvidia-hook.json"), nvidia.to_string()).unwrap();
    let root = busybox_rootfs(dir.path());
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/cuda-double.conf"),
        "hostile=1\nseccheck=1\nversion=6060\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/libcuda.so.1"), "").unwrap();
    let d = dir.path();
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "120", "podman"])
        .arg("--root")
        .arg(d.join("storage"))
        .arg("--runroot")
        .arg(d.join("runroot"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            "--runtime",
            "runc",
        ])
        .arg("--hooks-dir")
        .arg(&hooks)
        .args(["run", "--rm", "--network", "none", "--user", "1000:1000"])
        // This sandbox's own hard limits are below Podman's defaults (as in tests/it/podman.rs).
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args(["--name", &unique_id("podman-hostile")])
        .args(["-e", "NVIDIA_VISIBLE_DEVICES=all"])
        .arg("-v")
        .arg(format!("{}:/usr/lib/libcuda.so.1:ro", hostile().display()))
        .arg("-v")
        .arg(format!("{}:/probe-log", log.path().display()))
        .arg("--rootfs")
        .arg(&root)
        .arg("true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let escapes = std::fs::read_to_string(log.path().join("escapes")).unwrap_or_default();
    let report: Value = std::fs::read_dir(state.join("reports"))
        .expect("a report")
        .flatten()
        .next()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .expect("a report");
    eprintln!("podman: {escapes}\n{}", report["probe"]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(report["probe"]["result"], "finished", "{report}");
    let outcome = &report["probe"]["outcome"];
    assert_eq!(outcome["driver_version"], 6060, "{report}");
    assert_eq!(outcome["identity"]["seccomp"], 2, "{report}");
    assert_eq!(outcome["identity"]["uid"], 1000, "{report}");
    // Podman's profile allows sysinfo: the double's call went through the filter.
    assert_eq!(
        escapes
            .lines()
            .find_map(|l| l.strip_prefix("info sysinfo=")),
        Some("ok"),
        "{escapes}"
    );
    for a in [
        "inherited-fds",
        "core-pattern",
        "sysrq-trigger",
        "rootfs-write",
        "ptrace-any",
    ] {
        assert!(
            escapes.lines().any(|l| l.starts_with(&format!("{a} no"))),
            "{a}: {escapes}"
        );
    }
}

#[test]
fn a_companion_found_through_the_containers_ld_library_path_is_the_one_loaded() {
    // The JIT compiler library lives only in /opt/jit, named by the container's LD_LIBRARY_PATH;
    // the probe's own loader never reads that variable, so the probe loads it by path first and
    // the double's dlopen by soname finds it, as the workload's would.
    let r = start(&Setup {
        conf: "jitlib=1\n",
        env: &["LD_LIBRARY_PATH=/opt/jit"],
        jit_lib: true,
        ..Setup::default()
    });
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.jit, "from-ldlp", "{}", r.report);
    assert_eq!(finding_ids(&r.report), Vec::<String>::new(), "{}", r.report);
    // Without that variable the workload would not find it either: the canary says so.
    let r = start(&Setup {
        conf: "jitlib=1\n",
        jit_lib: true,
        ..Setup::default()
    });
    assert_eq!(
        finding_ids(&r.report),
        vec!["probe-jit-failed"],
        "{}",
        r.report
    );
}

#[test]
fn a_seccomp_filter_the_probe_cannot_reproduce_skips_the_probe_and_says_why() {
    // SCMP_ACT_NOTIFY hands the syscall to a listener process: no listener can stand in for it.
    let r = start(&Setup {
        conf: "hostile=1\n",
        seccomp: Some(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/nonexistent/seccomp-agent.sock",
            "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]
        })),
        ..Setup::default()
    });
    // The hook wrote its report whatever runc made of the listener afterwards.
    assert!(r.report.is_object(), "{}", r.stderr);
    assert!(r.report.get("probe").is_none(), "{}", r.report);
    let skipped = r.report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "probe-skipped")
        .unwrap_or_else(|| panic!("{}", r.report));
    assert_eq!(skipped["severity"], "info");
    assert!(
        skipped["evidence"]
            .as_str()
            .unwrap()
            .contains("SCMP_ACT_NOTIFY"),
        "{skipped}"
    );
    assert_eq!(r.escapes, "", "image code ran: {}", r.escapes);
    assert_eq!(finding_ids(&r.report), Vec::<String>::new(), "{}", r.report);
}

#[test]
fn in_a_user_namespaced_container_the_probe_is_confined_too() {
    let linger = format!("hu-{}", std::process::id() % 100000);
    let r = start(&Setup {
        conf: &format!("hostile=1\nlinger={linger}\nversion=7070\n"),
        userns: true,
        ..Setup::default()
    });
    eprintln!("userns: {}\n{}", r.escapes, r.report["probe"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.report["probe"]["outcome"]["driver_version"], 7070,
        "{}",
        r.report
    );
    for a in ATTEMPTS {
        assert!(r.tried(a), "the double never tried {a}: {}", r.escapes);
    }
    assert_eq!(
        r.succeeded(),
        Vec::<&str>::new(),
        "escapes that worked:\n{}",
        r.escapes
    );
    let mut lines = r.stdout.lines();
    let id = &r.report["probe"]["outcome"]["identity"];
    assert_eq!(id["mnt_ns"], lines.next().unwrap(), "{}", r.report);
    assert_eq!(id["pid_ns"], lines.next().unwrap(), "{}", r.report);
    assert_eq!(id["cap_eff"], "0000000000000000");
    assert_nothing_left(&r, &linger);
}

#[test]
fn what_the_container_mounts_below_its_proc_is_what_the_probe_reads_there() {
    // The probe mounts a procfs of its own pid namespace over the container's /proc; a file
    // the container has mounted below it (lxcfs does this for /proc/uptime, the legacy NVIDIA
    // hook a tmpfs over /proc/driver/nvidia) must still be there for the driver. Before, the
    // double read the kernel's own uptime here.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uptime");
    std::fs::write(&f, "4242.42 cuda-preflight-marker\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for uid in [0, 1000] {
        let r = start(&Setup {
            conf: "procfile=/proc/uptime\nversion=31\n",
            uid,
            proc_uptime: Some(&f),
            ..Setup::default()
        });
        assert!(r.ok, "{}", r.stderr);
        assert_eq!(
            r.report["probe"]["outcome"]["driver_version"], 31,
            "{}",
            r.report
        );
        assert_eq!(
            r.info("procfile"),
            Some("4242.42 cuda-preflight-marker"),
            "uid {uid}: {}",
            r.escapes
        );
    }
}

#[test]
fn a_tmpfs_a_hook_mounted_below_the_containers_proc_is_what_the_probe_reads_there() {
    // NVIDIA's legacy hook mounts a tmpfs over /proc/driver/nvidia in the container's mount
    // namespace and writes the driver's params there (ModifyDeviceFiles: 0); here a prestart
    // hook does the same over /proc/driver, before our createRuntime hook.
    let r = start(&Setup {
        conf: "procfile=/proc/driver/params\nversion=32\n",
        uid: 1000,
        proc_tmpfs_hook: true,
        ..Setup::default()
    });
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.report["probe"]["outcome"]["driver_version"], 32,
        "{}",
        r.report
    );
    assert_eq!(
        r.info("procfile"),
        Some("ModifyDeviceFiles: 0"),
        "{}",
        r.escapes
    );
}
