//! The NRI plugin on a real Kubernetes node stack: containerd 2.3 (CRI + NRI v0.12.0, CDI on)
//! from `CUDA_PREFLIGHT_K8S_NODE` (default `../shared/k8s-node`), started and stopped here without
//! a registry, driven by the real crictl; GPUs as a CDI spec whose device nodes are made with
//! mknod (nvidia 195:0, nvidiactl 195:255, nvidia-uvm 238:0, the majors of the H100 profile), the
//! test-double libcuda (tests/double/libcuda.c) mounted as the driver library, and NVIDIA's real
//! `nvidia-cdi-hook` (`CUDA_PREFLIGHT_NVIDIA_TOOLKIT`, default `../shared/nvidia-toolkit`) as the
//! CDI createContainer hooks. Missing parts fail the test with what to install.
//!
//! The hook the plugin adds runs with `probe = "always"`; at the createContainer stage it skips
//! the probe and says so until the probe is made correct there (issue 19); the double's answer
//! file (/etc/cuda-double.conf, a version marker) is mounted for that day.

use crate::common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn shared_dir(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("..").join("shared").join(default));
    assert!(
        p.is_dir(),
        "{var} ({}) is not a directory: point {var} at the {default} bundle",
        p.display()
    );
    p
}

/// The node's binaries, unpacked (and checked against their SHA256SUMS) once per test run.
fn node_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let k8s = shared_dir("CUDA_PREFLIGHT_K8S_NODE", "k8s-node");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("k8s-node-bin");
        let st = Command::new(k8s.join("unpack.sh"))
            .arg(&out)
            .stderr(Stdio::null())
            .status()
            .expect("unpack.sh (needs xz: scripts/test.sh installs it)");
        assert!(st.success(), "{}/unpack.sh failed", k8s.display());
        out
    })
}

/// NVIDIA's `nvidia-cdi-hook`, decompressed once.
fn cdi_hook() -> &'static PathBuf {
    static HOOK: OnceLock<PathBuf> = OnceLock::new();
    HOOK.get_or_init(|| {
        let tk = shared_dir("CUDA_PREFLIGHT_NVIDIA_TOOLKIT", "nvidia-toolkit");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nvidia-cdi-hook");
        let xz = Command::new("xz")
            .arg("-dc")
            .arg(tk.join("nvidia-cdi-hook.xz"))
            .output()
            .expect("xz");
        assert!(xz.status.success(), "cannot decompress nvidia-cdi-hook.xz");
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, &xz.stdout).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

const DRIVER: &str = "580.159.04";

/// The plugin binary (and so the hook it adds): this build's, or `CUDA_PREFLIGHT_NRI_BIN` (a
/// release build, for BENCHMARKS.md).
fn plugin_bin() -> String {
    std::env::var("CUDA_PREFLIGHT_NRI_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A containerd node with NRI and CDI, its own directory, stopped on drop.
struct Node {
    env: HashMap<String, String>,
    sock: String,
    bin: PathBuf,
}

impl Node {
    fn start() -> Node {
        let k8s = shared_dir("CUDA_PREFLIGHT_K8S_NODE", "k8s-node");
        let bin = node_bin().clone();
        let out = Command::new(k8s.join("start-node.sh"))
            .arg(&bin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start-node.sh failed (needs runc, gcc, busybox-static: scripts/test.sh):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sock = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let env_file = Path::new(&sock).parent().unwrap().join("node.env");
        let env = std::fs::read_to_string(env_file)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Node { env, sock, bin }
    }

    fn var(&self, k: &str) -> &str {
        &self.env[k]
    }

    fn crictl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("crictl"))
            .arg("--config")
            .arg(self.var("CRICTL_CONFIG"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Restart containerd in the same directory (its containers and images stay).
    #[allow(unsafe_code)]
    fn restart_containerd(&self) {
        let dir = self.var("NODE_DIR");
        let pid: i32 = std::fs::read_to_string(Path::new(dir).join("containerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let k8s = shared_dir("CUDA_PREFLIGHT_K8S_NODE", "k8s-node");
        let out = Command::new(k8s.join("start-node.sh"))
            .arg(&self.bin)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let k8s = shared_dir("CUDA_PREFLIGHT_K8S_NODE", "k8s-node");
        let _ = Command::new(k8s.join("stop-node.sh"))
            .arg(&self.sock)
            .stderr(Stdio::null())
            .status();
    }
}

/// `cuda-preflight nri` as a child process, killed on drop.
struct Plugin {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Plugin {
    fn start(config: &Path, socket: &str, port: u16, log: &Path) -> Plugin {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(plugin_bin())
            .args(["nri", "--config"])
            .arg(config)
            .args([
                "--nri-socket",
                socket,
                "--nri-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let p = Plugin {
            child,
            port,
            log: log.to_path_buf(),
        };
        p.wait_registered();
        p
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        let code = s.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = s
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (code, body)
    }

    fn wait_registered(&self) {
        let t = Instant::now();
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = write!(c, "GET /healthz HTTP/1.1\r\n\r\n");
                let mut s = String::new();
                let _ = c.read_to_string(&mut s);
                if s.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the plugin did not register in 20 s:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A metric's value by its full name with labels, as the plugin serves it.
    fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The GPU world of one test: device nodes, the double driver, the CDI spec in the node's CDI
/// directory, the config the plugin and the hook share.
struct Gpu {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
}

#[allow(unsafe_code)]
fn gpu_setup(node: &Node, name: &str) -> Gpu {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("dev")).unwrap();
    for (n, major, minor) in [
        ("nvidia0", 195, 0),
        ("nvidiactl", 195, 255),
        ("nvidia-uvm", 238, 0),
    ] {
        let p = std::ffi::CString::new(d.join("dev").join(n).to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mknod only reads.
        let r = unsafe {
            libc::mknod(
                p.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(r, 0, "mknod {n}: {}", std::io::Error::last_os_error());
    }
    let lib = d.join(format!("libcuda.so.{DRIVER}"));
    let conf = d.join("cuda-double.conf");
    std::fs::write(&conf, "version=13000\n").unwrap();
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(repo().join("tests/double/libcuda.c"))
        .status()
        .expect("gcc (scripts/test.sh installs build tools)");
    assert!(st.success());
    let dev = |p: &str, major: u32, minor: u32| {
        format!(
            "{{path: /dev/{p}, hostPath: {}/dev/{p}, type: c, major: {major}, minor: {minor}, fileMode: 438, permissions: rwm}}",
            d.display()
        )
    };
    let hook = cdi_hook().display().to_string();
    let libdir = "/usr/lib/x86_64-linux-gnu";
    // Device "0" has every node a CUDA context needs; "nouvm" lacks /dev/nvidia-uvm.
    let spec = format!(
        "cdiVersion: 0.5.0
kind: nvidia.com/{name}
devices:
  - name: \"0\"
    containerEdits:
      deviceNodes:
        - {n0}
        - {ctl}
        - {uvm}
  - name: nouvm
    containerEdits:
      deviceNodes:
        - {n0}
        - {ctl}
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
  mounts:
    - {{hostPath: {lib}, containerPath: {libdir}/libcuda.so.{DRIVER}, options: [ro, nosuid, nodev, bind]}}
    - {{hostPath: {conf}, containerPath: /etc/cuda-double.conf, options: [ro, nosuid, nodev, bind]}}
  hooks:
    - {{hookName: createContainer, path: {hook}, args: [nvidia-cdi-hook, create-symlinks, --link, 'libcuda.so.{DRIVER}::{libdir}/libcuda.so.1']}}
    - {{hookName: createContainer, path: {hook}, args: [nvidia-cdi-hook, update-ldcache, --folder, {libdir}]}}
",
        n0 = dev("nvidia0", 195, 0),
        ctl = dev("nvidiactl", 195, 255),
        uvm = dev("nvidia-uvm", 238, 0),
        lib = lib.display(),
        conf = conf.display(),
    );
    std::fs::write(
        Path::new(node.var("CDI_DIR")).join(format!("{name}.yaml")),
        spec,
    )
    .unwrap();
    let state = d.join("state");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "probe = \"always\"\nstate_dir = \"{}\"\nhost_profile = \"{}\"\nnri_socket = \"{}\"\n",
            state.display(),
            h100_profile().display(),
            node.var("NRI_SOCKET")
        ),
    )
    .unwrap();
    Gpu { dir, config, state }
}

/// A host-network pod (no CNI here); its id and its config file (crictl create wants both).
fn pod(node: &Node, dir: &Path, name: &str) -> (String, PathBuf) {
    let p = dir.join(format!("pod-{name}.json"));
    std::fs::write(
        &p,
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "linux": {"cgroup_parent": format!("/{name}"),
                      "security_context": {"namespace_options": {"network": 2}}},
            "log_directory": dir.join("logs").join(name),
        })
        .to_string(),
    )
    .unwrap();
    let out = node.crictl(&["runp", p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), p)
}

/// `crictl create` of a busybox container; `cdi` its CDI device, if any. Returns the output.
fn create(
    node: &Node,
    dir: &Path,
    pod: &(String, PathBuf),
    name: &str,
    cdi: Option<&str>,
    cmd: &str,
) -> Output {
    let mut c = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": "localhost/busybox:1.35"},
        "command": ["sh", "-c", cmd],
        "log_path": format!("{name}.log"),
    });
    if let Some(d) = cdi {
        c["CDI_devices"] = serde_json::json!([{"name": d}]);
    }
    let p = dir.join(format!("ctr-{name}.json"));
    std::fs::write(&p, c.to_string()).unwrap();
    node.crictl(&[
        "create",
        &pod.0,
        p.to_str().unwrap(),
        pod.1.to_str().unwrap(),
    ])
}

fn id_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: crictl create failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The container's OCI spec as containerd stored it at creation (CDI and NRI adjustments
/// applied): what runc gets as `config.json` when the task starts.
fn spec_of(node: &Node, id: &str) -> serde_json::Value {
    let out = node.crictl(&["inspect", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["info"]["runtimeSpec"].clone()
}

fn create_container_hooks(spec: &serde_json::Value) -> Vec<String> {
    spec["hooks"]["createContainer"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    h["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait for a started container to exit; its exit code and log.
fn wait_exit(node: &Node, id: &str) -> (i64, String) {
    let t = Instant::now();
    loop {
        let out = node.crictl(&["inspect", id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["status"]["state"] == "CONTAINER_EXITED" {
            let logs = node.crictl(&["logs", id]);
            return (
                v["status"]["exitCode"].as_i64().unwrap_or(-1),
                String::from_utf8_lossy(&logs.stdout).to_string()
                    + &String::from_utf8_lossy(&logs.stderr),
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "container {id} did not exit: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const GPU_CMD: &str = "ls -l /dev/nvidia-uvm /dev/nvidiactl /usr/lib/x86_64-linux-gnu/libcuda.so.1";

#[test]
fn nri_plugin_on_a_real_containerd() {
    let node = Node::start();
    let kind = unique_id("nri-gpu");
    let gpu = gpu_setup(&node, &kind);
    let d = gpu.dir.path();
    let log = d.join("plugin.log");
    let port = free_port();
    let mut plugin = Plugin::start(&gpu.config, node.var("NRI_SOCKET"), port, &log);
    let pod_id = pod(&node, d, &unique_id("nri-pod"));
    let pod_id = &pod_id;
    let dev0 = format!("nvidia.com/{kind}=0");
    let nouvm = format!("nvidia.com/{kind}=nouvm");

    // 1. A healthy GPU container is created and runs; our hook is the last createContainer hook,
    //    after NVIDIA's, and ran inside it: its report (not the plugin's) exists.
    let id = id_of(
        &create(&node, d, pod_id, "healthy", Some(&dev0), GPU_CMD),
        "healthy",
    );
    let hooks = create_container_hooks(&spec_of(&node, &id));
    assert_eq!(hooks.len(), 3, "{hooks:?}");
    assert!(
        hooks[0].starts_with("nvidia-cdi-hook create-symlinks"),
        "{hooks:?}"
    );
    assert!(
        hooks[1].starts_with("nvidia-cdi-hook update-ldcache"),
        "{hooks:?}"
    );
    assert_eq!(
        hooks[2],
        format!(
            "{} hook --stage createContainer --config {}",
            plugin_bin(),
            gpu.config.display()
        )
    );
    let st = node.crictl(&["start", &id]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (code, logs) = wait_exit(&node, &id);
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains(&format!("libcuda.so.1 -> libcuda.so.{DRIVER}")),
        "NVIDIA's hook ran: {logs}"
    );
    let rep = read_report(&gpu.state, &id).expect("a report for the GPU container");
    assert!(
        rep["bundle"]
            .as_str()
            .unwrap()
            .contains("io.containerd.runtime.v2.task"),
        "the hook (run by runc from the task's bundle) wrote the last report: {rep}"
    );
    assert_ne!(rep["verdict"], "block", "{rep}");
    // The probe ran at the createContainer stage, inside the container, after NVIDIA's hooks
    // made libcuda.so.1: the double's cuInit answered.
    assert_eq!(rep["probe"]["result"], "finished", "{rep}");
    let calls = rep["probe"]["outcome"]["calls"]
        .as_array()
        .expect("probe calls");
    assert!(
        calls
            .iter()
            .any(|c| c["call"] == "cuInit" && c["code"] == 0),
        "{rep}"
    );

    // 2. A GPU container whose CDI device lacks /dev/nvidia-uvm fails creation with our message
    //    in crictl's error, and no container is left.
    let out = create(&node, d, pod_id, "nouvm", Some(&nouvm), GPU_CMD);
    assert!(!out.status.success(), "created without /dev/nvidia-uvm");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to get NRI adjustment for container"),
        "{err}"
    );
    assert!(
        err.contains("cuda-preflight: blocked container")
            && err.contains("/dev/nvidia-uvm is missing from linux.devices of config.json: CUDA would fail with 999 CUDA_ERROR_UNKNOWN"),
        "{err}"
    );
    assert!(err.contains("device-node-missing"), "{err}");
    let left = node.crictl(&["ps", "-a", "-q", "--name", "^nouvm$"]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "a blocked container was left"
    );
    let reports: Vec<_> = std::fs::read_dir(gpu.state.join("reports"))
        .unwrap()
        .collect();
    assert_eq!(reports.len(), 2, "the block left its report");

    // 3. A container that asks for no GPU is untouched: no hook, no report.
    let plain = id_of(&create(&node, d, pod_id, "plain", None, "true"), "plain");
    assert!(create_container_hooks(&spec_of(&node, &plain)).is_empty());
    assert!(read_report(&gpu.state, &plain).is_none());
    assert_eq!(
        plugin.metric("cuda_preflight_nri_create_container_total{outcome=\"not-gpu\"}"),
        1.0
    );
    assert_eq!(
        plugin.metric("cuda_preflight_nri_create_container_total{outcome=\"block\"}"),
        1.0
    );

    // `doctor` sees the plugin registered (the config names the node's NRI socket).
    // (doctor itself fails here: this machine has no NVIDIA driver.)
    assert_eq!(doctor_nri(&gpu.config).0, "ok");

    // 4. The plugin killed: nothing is blocked wrongly (GPU and plain containers are created,
    //    unchecked); restarted, it registers again, finds the container created while it was
    //    away (Synchronize) and judges it from its spec, and checks new containers again.
    plugin.kill();
    let (status, _) = doctor_nri(&gpu.config);
    assert_eq!(
        status, "warn",
        "a dead plugin's state is not taken for a registered one"
    );
    let away = id_of(
        &create(&node, d, pod_id, "away", Some(&dev0), GPU_CMD),
        "created while away",
    );
    id_of(
        &create(&node, d, pod_id, "plain-away", None, "true"),
        "plain while away",
    );
    let away_nouvm = create(&node, d, pod_id, "nouvm-away", Some(&nouvm), GPU_CMD);
    assert!(
        away_nouvm.status.success(),
        "no plugin, no check: the runtime creates it"
    );
    let plugin = Plugin::start(&gpu.config, node.var("NRI_SOCKET"), port, &log);
    assert_eq!(
        plugin.metric("cuda_preflight_nri_unchecked_gpu_containers"),
        2.0
    );
    // The runtime lists the containers that have not exited: the two created while away (the
    // healthy one has run to its end).
    assert_eq!(
        plugin.metric("cuda_preflight_nri_synchronized_containers{gpu=\"true\"}"),
        2.0
    );
    let rep = read_report(&gpu.state, &away)
        .expect("the container created while away was judged at Synchronize");
    assert!(rep["bundle"].as_str().unwrap().starts_with("nri:"), "{rep}");
    assert_eq!(rep["verdict"], "allow", "{rep}");
    let nouvm_away = id_of(&away_nouvm, "nouvm while away");
    let rep = read_report(&gpu.state, &nouvm_away).expect("judged at Synchronize");
    assert_eq!(
        rep["verdict"], "block",
        "recorded as what it would have met: {rep}"
    );
    let after = id_of(
        &create(&node, d, pod_id, "after", Some(&dev0), GPU_CMD),
        "after restart",
    );
    assert_eq!(create_container_hooks(&spec_of(&node, &after)).len(), 3);
    assert!(
        !create(&node, d, pod_id, "nouvm-after", Some(&nouvm), GPU_CMD)
            .status
            .success()
    );
    let all = node.crictl(&["ps", "-a", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).lines().count(),
        6,
        "every container is still there"
    );

    // 5. The runtime restarts: the plugin reconnects by itself and checks again.
    node.restart_containerd();
    plugin.wait_registered();
    assert_eq!(plugin.metric("cuda_preflight_nri_registrations_total"), 2.0);
    assert!(
        !create(&node, d, pod_id, "nouvm-restarted", Some(&nouvm), GPU_CMD)
            .status
            .success()
    );

    // 6. What the plugin adds to a GPU container's creation: crictl create, with and without
    //    the plugin, and the plugin's own time; printed for BENCHMARKS.md.
    let n: usize = std::env::var("CUDA_PREFLIGHT_NRI_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Interleaved (one create with the plugin, one without, n times) so that the machine's
    // load and the node's growing container count weigh on both alike.
    let mut plugin = plugin;
    let (mut with, mut without, mut judge, mut first, mut first_judge) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let time_create = |tag: String| {
        let t = Instant::now();
        id_of(&create(&node, d, pod_id, &tag, Some(&dev0), "true"), &tag);
        t.elapsed().as_secs_f64() * 1000.0
    };
    for i in 0..n {
        let (s0, c0) = (
            plugin.metric("cuda_preflight_nri_judge_seconds_sum"),
            plugin.metric("cuda_preflight_nri_judge_seconds_count"),
        );
        with.push(time_create(format!("bench-with-{i}")));
        let (s1, c1) = (
            plugin.metric("cuda_preflight_nri_judge_seconds_sum"),
            plugin.metric("cuda_preflight_nri_judge_seconds_count"),
        );
        assert_eq!(c1 - c0, 1.0, "the plugin judged the create");
        judge.push((s1 - s0) * 1000.0);
        plugin.kill();
        without.push(time_create(format!("bench-without-{i}")));
        plugin = Plugin::start(&gpu.config, node.var("NRI_SOCKET"), port, &log);
        // The first create after a registration, apart: not the steady state.
        let s0 = plugin.metric("cuda_preflight_nri_judge_seconds_sum");
        first.push(time_create(format!("bench-first-{i}")));
        first_judge.push((plugin.metric("cuda_preflight_nri_judge_seconds_sum") - s0) * 1000.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (with, without, judge_ms, first) = (
        median(&mut with),
        median(&mut without),
        median(&mut judge),
        median(&mut first),
    );
    let first_judge = median(&mut first_judge);
    println!(
        "nri-latency: crictl create of a GPU container, median of {n} interleaved: {with:.1} ms with \
         the plugin, {without:.1} ms without; the plugin's own time per GPU create (median): \
         {judge_ms:.2} ms; the first create after a registration: {first:.1} ms (the plugin's own time {first_judge:.2} ms)"
    );
    assert!(
        judge_ms < 1200.0,
        "the judgement must stay far inside NRI's 2 s"
    );
}

/// `doctor --json`'s `engine-nri` check: its status, and doctor's exit code.
fn doctor_nri(config: &Path) -> (String, i32) {
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "engine-nri")
        .unwrap_or_else(|| panic!("no engine-nri check: {v}"));
    (
        c["status"].as_str().unwrap().to_string(),
        out.status.code().unwrap_or(-1),
    )
}
