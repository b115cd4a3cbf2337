//! The CDI start paths with NVIDIA's own runtime and hooks (tests/it/common/nvidia.rs): real
//! `nvidia-container-runtime` 1.20 in `cdi` mode and real `nvidia-cdi-hook` (`create-symlinks`,
//! `enable-cuda-compat`, `update-ldcache`, …) in front of the real runc, Podman and dockerd, a
//! `mknod`-made GPU and a test-double driver. The workload is tests/double/cuinit.c: it loads
//! `libcuda.so.1` by soname and calls `cuInit`, as every CUDA program does first.
//!
//! On these paths `libcuda.so.1` and its loader cache entry exist only after NVIDIA's
//! `createContainer` hooks ran. Shown here: a healthy GPU container starts and its own `cuInit`
//! succeeds; a spec without `/dev/nvidia-uvm` is blocked naming it; a container without a GPU
//! starts; an unmet `NVIDIA_REQUIRE_*` does not block where nothing in NVIDIA's chain checks it.

use crate::common::nvidia::{self, toolkit};
use crate::common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SHIM: &str = env!("CARGO_BIN_EXE_cuda-preflight-runtime");

/// What the start gave.
struct Started {
    created: bool,
    /// The runtime's stderr on `create` (where a hook's block message is).
    create_err: String,
    /// The workload's output.
    out: String,
    report: Option<Value>,
    /// `config.json` after the runtimes edited it.
    spec: Value,
}

/// A bundle running `args` in a glibc rootfs, with NVIDIA_VISIBLE_DEVICES when `gpu`.
fn bundle(dir: &Path, args: &[&str], env: &[&str]) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    nvidia::glibc_rootfs(&b);
    let mut spec = base_spec(&b, args);
    spec["root"]["readonly"] = json!(false);
    for e in env {
        set_env(&mut spec, e);
    }
    write_spec(&b, &spec);
    b
}

/// `runtime create`, then runc `start`, wait for the workload to exit, `delete`. Both runtimes
/// share one runc state root.
fn create_and_run(runtime: &[&Path], dir: &Path, bundle: &Path, state: &Path, id: &str) -> Started {
    let runc = require_tool("runc");
    let root = dir.join("runc-root");
    let out_path = dir.join(format!("{id}.out"));
    let err_path = dir.join(format!("{id}.err"));
    // The container inherits create's stdio: files, not pipes, so create returns at once.
    let st = Command::new("timeout")
        .args(["-k", "5", "60"])
        .args(runtime)
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    let mut out = String::new();
    if st.success() {
        let s = Command::new(&runc)
            .arg("--root")
            .arg(&root)
            .args(["start", id])
            .output()
            .unwrap();
        assert!(
            s.status.success(),
            "start: {}",
            String::from_utf8_lossy(&s.stderr)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let s = Command::new(&runc)
                .arg("--root")
                .arg(&root)
                .args(["state", id])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&s.stdout).contains("\"stopped\"") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id} did not exit");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        out = std::fs::read_to_string(&out_path).unwrap();
    }
    let _ = Command::new(&runc)
        .arg("--root")
        .arg(&root)
        .args(["delete", "-f", id])
        .output();
    Started {
        created: st.success(),
        create_err: std::fs::read_to_string(&err_path).unwrap(),
        out,
        report: read_report(state, id),
        spec: serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap(),
    }
}

/// Order of the two runtimes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Chain {
    /// `nvidia-container-runtime` → `cuda-preflight-runtime` → runc: NVIDIA's `runtimes` list
    /// names our shim, which sees the spec with NVIDIA's CDI hooks already in it.
    ShimBehindNvidia,
    /// `cuda-preflight-runtime` → `nvidia-container-runtime` → runc: our hook goes in before
    /// NVIDIA's runtime appends its CDI hooks.
    ShimInFront,
}

struct Host {
    dir: tempfile::TempDir,
    state: PathBuf,
    runtime: Vec<PathBuf>,
}

/// The fake GPU host, the CDI spec (with or without uvm), our config (`config_toml` appended)
/// and the runtime chain.
fn host(chain: Chain, uvm: bool, config_toml: &str, profile: &Path) -> Host {
    let t = toolkit();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    nvidia::fake_gpu_host(d);
    let specs = d.join("cdi");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("nvidia.json"),
        nvidia::cdi_spec(d, "", uvm).to_string(),
    )
    .unwrap();
    let state = d.join("state");
    let ours = d.join("cuda-preflight.toml");
    let hook = Path::new(SHIM).with_file_name("cuda-preflight");
    // NVIDIA's runtime under its own name (the shim reads its mode only then), with its
    // config file in the environment, as a host's would be.
    std::fs::create_dir_all(d.join("nvbin")).unwrap();
    let nv = d.join("nvbin/nvidia-container-runtime");
    let next = match chain {
        Chain::ShimBehindNvidia => require_tool("runc"),
        Chain::ShimInFront => nv.clone(),
    };
    std::fs::write(
        &ours,
        format!(
            "state_dir = \"{}\"\nhost_profile = \"{}\"\nruntime = \"{}\"\nhook_binary = \"{}\"\n{config_toml}\n",
            state.display(),
            profile.display(),
            next.display(),
            hook.display()
        ),
    )
    .unwrap();
    let nv_conf = d.join("nvidia-runtime.toml");
    let shim = d.join("shim.sh");
    nvidia::wrapper(
        &shim,
        &[("NVIDIA_CTK_CONFIG_FILE_PATH", &nv_conf)],
        &[Path::new(SHIM)],
        &["--cuda-preflight-config", ours.to_str().unwrap()],
    );
    match chain {
        // Started by the test: a wrapper gives it its config file, as a host's environment would.
        Chain::ShimBehindNvidia => nvidia::wrapper(
            &nv,
            &[("NVIDIA_CTK_CONFIG_FILE_PATH", &nv_conf)],
            &[&t.runtime],
            &[],
        ),
        // Started by the shim: NVIDIA's own binary under its name (the shim chains only through
        // that, never through a wrapper script, which may set its own config path); the shim's
        // environment (shim.sh) names the config file.
        Chain::ShimInFront => std::os::unix::fs::symlink(&t.runtime, &nv).unwrap(),
    }
    let runtime = match chain {
        Chain::ShimBehindNvidia => {
            nvidia::runtime_config(&nv_conf, &specs, &shim);
            vec![nv]
        }
        Chain::ShimInFront => {
            nvidia::runtime_config(&nv_conf, &specs, &require_tool("runc"));
            vec![shim]
        }
    };
    Host {
        dir,
        state,
        runtime,
    }
}

impl Host {
    fn run(&self, env: &[&str]) -> Started {
        self.run_with(&["/bin/cuinit"], env, |_| {})
    }

    /// Run `args` in a fresh bundle whose rootfs `prepare` adds to.
    fn run_with(&self, args: &[&str], env: &[&str], prepare: impl Fn(&Path)) -> Started {
        let id = unique_id("cdi");
        let work = self.dir.path().join(&id);
        std::fs::create_dir_all(&work).unwrap();
        let b = bundle(&work, args, env);
        prepare(&b.join("rootfs"));
        let rt: Vec<&Path> = self.runtime.iter().map(PathBuf::as_path).collect();
        create_and_run(&rt, &work, &b, &self.state, &id)
    }
}

fn hook_args(spec: &Value, stage: &str) -> Vec<Vec<String>> {
    spec["hooks"][stage]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|h| {
                    h["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn behind_nvidia_runtime_a_healthy_gpu_container_starts_and_its_cuinit_succeeds() {
    let h = host(Chain::ShimBehindNvidia, true, "", &h100_profile());
    let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(s.created, "{}", s.create_err);
    assert_eq!(s.out.trim(), "cuInit=0", "the workload's own cuInit");
    // Ours last in createContainer, after NVIDIA's five CDI hooks.
    let cc = hook_args(&s.spec, "createContainer");
    assert_eq!(cc.len(), 6, "{cc:?}");
    assert!(cc[..5].iter().all(|a| a[0] == "nvidia-cdi-hook"), "{cc:?}");
    assert_eq!(
        cc[5][..4],
        ["cuda-preflight", "hook", "--stage", "createContainer"]
    );
    assert!(s.spec["hooks"]["createRuntime"].is_null());
    let rep = s.report.expect("the hook's report");
    assert_ne!(rep["verdict"], "block", "{rep}");
    let ids = all_finding_ids(&rep);
    assert!(!ids.iter().any(|i| i == "probe-libcuda-missing"), "{ids:?}");
    // The driver file NVIDIA mounted is not taken for a library of the image.
    assert!(!ids.iter().any(|i| i == "image-driver-library"), "{ids:?}");
}

/// The shim as Docker's default runtime, nvidia-container-runtime (cdi mode) next: the shim hands
/// it a copy of its config naming the shim in `runtimes`, so it runs again behind it and places
/// the hook after NVIDIA's CDI hooks.
#[test]
fn in_front_of_nvidia_runtime_the_shim_chains_itself_behind_it() {
    let h = host(Chain::ShimInFront, true, "", &h100_profile());
    let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(s.created, "{}", s.create_err);
    assert_eq!(s.out.trim(), "cuInit=0");
    let cc = hook_args(&s.spec, "createContainer");
    assert_eq!(cc.len(), 6, "{cc:?}");
    assert!(cc[..5].iter().all(|a| a[0] == "nvidia-cdi-hook"), "{cc:?}");
    assert_eq!(
        cc[5][..4],
        ["cuda-preflight", "hook", "--stage", "createContainer"]
    );
    // The settings file reached the second shim, and through it the hook.
    assert!(cc[5].contains(&"--config".to_string()), "{cc:?}");
    assert!(
        s.spec["hooks"]["createRuntime"].is_null(),
        "{}",
        s.spec["hooks"]
    );
    let rep = s.report.expect("the hook's report");
    assert_ne!(rep["verdict"], "block", "{rep}");
    // The copy of NVIDIA's config: its settings kept, `runtimes` naming the shim.
    let copy = std::fs::read_dir(&h.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("nvidia-container-runtime-")
        })
        .expect("the chained config in the state directory");
    let t: toml::Table = std::fs::read_to_string(copy).unwrap().parse().unwrap();
    assert_eq!(t["nvidia-container-runtime"]["mode"].as_str(), Some("cdi"));
    assert_eq!(
        t["nvidia-container-runtime"]["runtimes"][0].as_str(),
        Some(SHIM)
    );
    assert!(t["nvidia-container-runtime"]["modes"]["cdi"]["spec-dirs"].is_array());
}

#[test]
fn in_front_of_nvidia_runtime_unchained_the_probe_waits_for_nvidias_hooks_instead_of_blocking() {
    // probe = auto: before this change the createRuntime probe blocked every healthy CDI start
    // with probe-libcuda-missing (measured on the H100).
    let h = host(
        Chain::ShimInFront,
        true,
        "chain_nvidia_runtime = false",
        &h100_profile(),
    );
    let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(s.created, "{}", s.create_err);
    assert_eq!(s.out.trim(), "cuInit=0");
    // Ours in createRuntime; NVIDIA's runtime appended its hooks at createContainer after.
    let cr = hook_args(&s.spec, "createRuntime");
    assert_eq!(cr.len(), 1);
    assert_eq!(cr[0][..2], ["cuda-preflight", "hook"]);
    assert_eq!(hook_args(&s.spec, "createContainer").len(), 5);
    let rep = s.report.expect("the hook's report");
    assert_eq!(rep["verdict"], "allow", "{rep}");
    let skipped = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "probe-skipped")
        .unwrap_or_else(|| panic!("{rep}"));
    let ev = skipped["evidence"].as_str().unwrap();
    assert!(ev.contains("not run at createRuntime"), "{ev}");
    assert!(ev.contains("create-symlinks"), "{ev}");
}

#[test]
fn a_spec_without_uvm_is_blocked_naming_it_on_both_chains() {
    for chain in [Chain::ShimBehindNvidia, Chain::ShimInFront] {
        let h = host(chain, false, "", &h100_profile());
        let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all"]);
        assert!(!s.created, "{chain:?}: started");
        assert!(
            s.create_err
                .contains("cuda-preflight: blocked container cdi-"),
            "{chain:?}: {}",
            s.create_err
        );
        assert!(
            s.create_err.contains("/dev/nvidia-uvm is missing"),
            "{chain:?}: {}",
            s.create_err
        );
        let rep = s.report.expect("report");
        assert_eq!(finding_ids(&rep), vec!["device-node-missing"], "{chain:?}");
    }
}

#[test]
fn a_container_without_a_gpu_starts_unjudged() {
    let h = host(Chain::ShimBehindNvidia, true, "", &h100_profile());
    let s = h.run(&[]);
    assert!(s.created, "{}", s.create_err);
    // No GPU, so no libcuda.so.1: the workload's dlopen fails, and nobody stopped it.
    assert!(s.out.starts_with("dlopen: libcuda.so.1"), "{}", s.out);
    assert!(s.report.is_none(), "the fast path writes no report");
    // Nothing NVIDIA's in the spec: ours at createRuntime.
    assert_eq!(hook_args(&s.spec, "createRuntime").len(), 1);
}

/// A legacy CUDA 12.4 image (CUDA_VERSION only) on an A100 with driver 535 (CUDA 12.2) through
/// NVIDIA's runtime in cdi mode: nothing in that chain evaluates requirements (the runtime's
/// CDI modifier never does; toolkit issue 1470), so it starts and works (minor-version
/// compatibility); the legacy hook would have refused it with "unsatisfied condition: cuda>=12.4".
#[test]
fn an_unmet_requirement_does_not_block_where_nothing_enforces_it() {
    // The A100 profile with the majors the fake nodes have (the shipped one has uvm at 236).
    let profiles = tempfile::tempdir().unwrap();
    let a100 = profiles.path().join("a100-535.json");
    let mut p: Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/hosts/a100-535.json")).unwrap(),
    )
    .unwrap();
    p["device_majors"]["nvidia-uvm"] = json!(238);
    std::fs::write(&a100, p.to_string()).unwrap();
    for chain in [Chain::ShimBehindNvidia, Chain::ShimInFront] {
        let h = host(chain, true, "", &a100);
        let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.4.1"]);
        assert!(s.created, "{chain:?}: {}", s.create_err);
        assert_eq!(s.out.trim(), "cuInit=0", "{chain:?}");
        let rep = s.report.expect("report");
        let f = rep["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "require-not-enforced")
            .unwrap_or_else(|| panic!("{chain:?}: {rep}"));
        assert_eq!(f["severity"], "info");
        let ev = f["evidence"].as_str().unwrap();
        assert!(
            ev.contains("the legacy NVIDIA runtime would refuse this start"),
            "{ev}"
        );
        assert!(ev.contains("unsatisfied condition: cuda>=12.4"), "{ev}");
    }
    // The host's own policy: blocked, and the message says whose rule it is.
    let h = host(
        Chain::ShimBehindNvidia,
        true,
        "enforce_requirements = true",
        &a100,
    );
    let s = h.run(&["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.4.1"]);
    assert!(!s.created);
    assert!(
        s.create_err.contains("require-unsatisfied"),
        "{}",
        s.create_err
    );
    assert!(
        s.create_err.contains("this host's policy"),
        "{}",
        s.create_err
    );
}

/// A CDI spec file in Podman's spec directory (Podman 4.3 reads only /etc/cdi and
/// /var/run/cdi): device names unique to this test, removed when dropped.
struct GlobalCdiSpec(PathBuf);

impl Drop for GlobalCdiSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Real Podman, `--device nvidia.com/gpu=…` with NVIDIA's real CDI hooks, and our shipped
/// hooks-directory entry (`hooks/oci-hooks.d`, at createContainer).
fn podman_run(uvm: bool, gpu: bool) -> (Option<i32>, String, String, Option<Value>) {
    require_tool("podman");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    nvidia::fake_gpu_host(d);
    let prefix = format!("{}-", unique_id("cp"));
    std::fs::create_dir_all("/var/run/cdi").unwrap();
    let spec_file = GlobalCdiSpec(PathBuf::from(format!(
        "/var/run/cdi/{prefix}cuda-preflight-test.json"
    )));
    std::fs::write(&spec_file.0, nvidia::cdi_spec(d, &prefix, uvm).to_string()).unwrap();
    let hooks = d.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let state = d.join("state");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "probe = \"never\"\nstate_dir = \"{}\"\nhost_profile = \"{}\"\n",
            state.display(),
            h100_profile().display()
        ),
    )
    .unwrap();
    let mut ours: Value = serde_json::from_slice(
        &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
    )
    .unwrap();
    ours["hook"]["path"] = BIN.into();
    ours["hook"]["args"]
        .as_array_mut()
        .unwrap()
        .extend([json!("--config"), json!(config)]);
    std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
    let rootfs = nvidia::glibc_rootfs(d);
    let name = unique_id("podman-cdi");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", "podman"])
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
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--name",
            &name,
        ]);
    if gpu {
        cmd.args(["--device", &format!("nvidia.com/gpu={prefix}all")]);
    }
    let out = cmd
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("/bin/cuinit")
        .output()
        .unwrap();
    let report = std::fs::read_dir(state.join("reports"))
        .ok()
        .and_then(|rd| {
            let p = rd.filter_map(|e| e.ok()).map(|e| e.path()).next()?;
            Some(serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap())
        });
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    )
}

#[test]
fn podman_cdi_healthy_starts_missing_uvm_is_blocked_no_gpu_starts() {
    let (code, out, err, rep) = podman_run(true, true);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "cuInit=0");
    let rep = rep.expect("report");
    assert_ne!(rep["verdict"], "block", "{rep}");
    assert!(
        !all_finding_ids(&rep)
            .iter()
            .any(|i| i == "image-driver-library"),
        "{rep}"
    );

    let (code, _, err, rep) = podman_run(false, true);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("stderr: cuda-preflight: blocked container ")
            && err.contains("/dev/nvidia-uvm is missing"),
        "{err}"
    );
    assert_eq!(
        finding_ids(&rep.expect("report")),
        vec!["device-node-missing"]
    );

    // No GPU asked for: it starts; its own dlopen finds no libcuda (exit 2 from cuinit.c).
    let (code, out, err, rep) = podman_run(true, false);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.starts_with("dlopen: libcuda.so.1"), "{out}");
    assert!(rep.is_none());
}

/// Real dockerd (tests/it/common/dockerd.rs) with `--runtime nvidia`: NVIDIA's runtime in `cdi`
/// mode turns NVIDIA_VISIBLE_DEVICES=all into the CDI device `nvidia.com/gpu=all`, then execs our
/// shim (its `runtimes` list), which places the hook after NVIDIA's CDI hooks, then runc.
#[test]
fn docker_nvidia_runtime_cdi_mode_healthy_starts_missing_uvm_is_blocked_no_gpu_starts() {
    let t = toolkit();
    let mut daemon = crate::common::dockerd::Dockerd::new();
    let d = daemon.dir().to_path_buf();
    nvidia::fake_gpu_host(&d);
    let state = d.join("state");
    let ours = d.join("cuda-preflight.toml");
    std::fs::write(
        &ours,
        format!(
            "probe = \"never\"\nstate_dir = \"{}\"\nhost_profile = \"{}\"\nruntime = \"{}\"\nhook_binary = \"{}\"\n",
            state.display(),
            h100_profile().display(),
            require_tool("runc").display(),
            Path::new(SHIM).with_file_name("cuda-preflight").display()
        ),
    )
    .unwrap();
    let shim = d.join("shim.sh");
    nvidia::wrapper(
        &shim,
        &[],
        &[Path::new(SHIM)],
        &["--cuda-preflight-config", ours.to_str().unwrap()],
    );
    let mut runtimes = Vec::new();
    for (name, uvm) in [("nvidia", true), ("nvidia-nouvm", false)] {
        let specs = d.join(format!("cdi-{name}"));
        std::fs::create_dir_all(&specs).unwrap();
        std::fs::write(
            specs.join("nvidia.json"),
            nvidia::cdi_spec(&d, "", uvm).to_string(),
        )
        .unwrap();
        let conf = d.join(format!("{name}.toml"));
        nvidia::runtime_config(&conf, &specs, &shim);
        let wrapper = d.join(format!("{name}.sh"));
        nvidia::wrapper(
            &wrapper,
            &[("NVIDIA_CTK_CONFIG_FILE_PATH", &conf)],
            &[&t.runtime],
            &[],
        );
        runtimes.push((name, json!({"path": wrapper})));
    }
    daemon.write_daemon_json(&runtimes, None);
    daemon.start(None);
    let rootfs = nvidia::glibc_rootfs(&d.join("image"));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    let image = "cuda-preflight-test/cdi:1";
    let import = daemon.docker(&["import", "-", image], Some(&tar.stdout));
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let run = |runtime: &str, gpu: bool| {
        let mut args = vec!["run", "--rm", "--network", "none", "--runtime", runtime];
        if gpu {
            args.extend(["-e", "NVIDIA_VISIBLE_DEVICES=all"]);
        }
        args.extend([image, "/bin/cuinit"]);
        let o = daemon.docker(&args, None);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let reports = || -> Vec<Value> {
        std::fs::read_dir(state.join("reports"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };

    let (code, out, err) = run("nvidia", true);
    assert_eq!(
        code,
        Some(0),
        "{err}\ndockerd log: {}",
        std::fs::read_to_string(daemon.log()).unwrap_or_default()
    );
    assert_eq!(out.trim(), "cuInit=0");
    let reps = reports();
    assert_eq!(reps.len(), 1);
    assert_ne!(reps[0]["verdict"], "block", "{}", reps[0]);

    let (code, _, err) = run("nvidia-nouvm", true);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cuda-preflight: blocked container")
            && err.contains("/dev/nvidia-uvm is missing"),
        "{err}"
    );

    // No GPU asked for: it starts; its own dlopen finds no libcuda (exit 2 from cuinit.c).
    let (code, out, err) = run("nvidia", false);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.starts_with("dlopen: libcuda.so.1"), "{out}");
    assert_eq!(
        reports().len(),
        2,
        "no report for the container without a GPU"
    );
}

/// A compat `libcuda.so.<version>` as the cuda-compat package ships it: the test-double driver
/// with a `.note.cuda.fwd_compatibility` note (name "NVIDIA Corporation" padded to 4 bytes, JSON
/// description) and the `libcuda.so.1` link. `objcopy`: the note added by
/// `objcopy --add-section`, which leaves the section aligned to 1 byte (see below); otherwise
/// assembled into the library in a section aligned to 4, as a linker lays out notes.
fn compat_library(root: &Path, version: &str, note_json: &str, objcopy: bool) {
    let dir = root.join("usr/local/cuda/compat");
    std::fs::create_dir_all(&dir).unwrap();
    let name = b"NVIDIA Corporation\0";
    let mut note = Vec::new();
    note.extend_from_slice(&(name.len() as u32).to_le_bytes());
    note.extend_from_slice(&(note_json.len() as u32).to_le_bytes());
    note.extend_from_slice(&1u32.to_le_bytes());
    note.extend_from_slice(name);
    while note.len() % 4 != 0 {
        note.push(0);
    }
    note.extend_from_slice(note_json.as_bytes());
    let work = root.join("..");
    let lib = dir.join(format!("libcuda.so.{version}"));
    if objcopy {
        let note_file = work.join("note.bin");
        std::fs::write(&note_file, &note).unwrap();
        std::fs::copy(nvidia::double_libcuda(), &lib).unwrap();
        let st = Command::new("objcopy")
            .arg(format!(
                "--add-section=.note.cuda.fwd_compatibility={}",
                note_file.display()
            ))
            .arg(&lib)
            .status()
            .expect("objcopy (binutils, with gcc)");
        assert!(st.success());
    } else {
        let bytes: Vec<String> = note.iter().map(|b| b.to_string()).collect();
        let asm = work.join("note.s");
        std::fs::write(
            &asm,
            format!(
                ".section .note.cuda.fwd_compatibility,\"a\",@note\n.p2align 2\n.byte {}\n\
                 .section .note.GNU-stack,\"\",@progbits\n",
                bytes.join(",")
            ),
        )
        .unwrap();
        let st = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(&lib)
            .arg(repo().join("tests/double/libcuda.c"))
            .arg(&asm)
            .status()
            .expect("gcc");
        assert!(st.success());
    }
    std::os::unix::fs::symlink(format!("libcuda.so.{version}"), dir.join("libcuda.so.1")).unwrap();
}

/// NVIDIA's real `enable-cuda-compat` (host driver 580.159.04, from the spec) against a compat
/// libcuda 590.44.01 whose note lists branch 580 or not: what our hook predicted at createRuntime
/// (the shim in front) is what the hook then wrote into the container's ld.so.conf.d. The third
/// case is a note in a section aligned to 1 byte: the toolkit pads the note's name to the
/// section's alignment (1 after `objcopy --add-section`), reads a description one byte short,
/// fails on its JSON and falls back to comparing majors (580 < 590: used) — and so does our
/// reader.
#[test]
fn enable_cuda_compat_is_predicted_as_nvidias_hook_decides() {
    let h = host(
        Chain::ShimInFront,
        true,
        "probe = \"never\"\nchain_nvidia_runtime = false",
        &h100_profile(),
    );
    for (branches, objcopy, used) in [
        ("[535, 550, 570, 575, 580, 590]", false, true),
        ("[535, 550, 570]", false, false),
        ("[535, 550, 570]", true, true),
    ] {
        let json = format!(
            r#"{{"Format": 1, "CUDA Version": "13.1", "Driver": {branches}, "Device": [9, 10]}}"#
        );
        let s = h.run_with(
            &[
                "sh",
                "-c",
                "cat /etc/ld.so.conf.d/00-compat-*.conf 2>/dev/null || echo none",
            ],
            &["NVIDIA_VISIBLE_DEVICES=all"],
            |root| compat_library(root, "590.44.01", &json, objcopy),
        );
        assert!(s.created, "{}", s.create_err);
        let actual = s.out.trim() == "/usr/local/cuda/compat";
        assert!(actual || s.out.trim() == "none", "{}", s.out);
        assert_eq!(
            actual, used,
            "NVIDIA's hook, note {branches} objcopy {objcopy}: {}",
            s.out
        );
        let rep = s.report.expect("report");
        let f = rep["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "forward-compat-cdi")
            .unwrap_or_else(|| panic!("{rep}"));
        let ev = f["evidence"].as_str().unwrap();
        assert_eq!(
            ev.contains("will put"),
            used,
            "predicted, note {branches} objcopy {objcopy}: {ev}"
        );
    }
}
