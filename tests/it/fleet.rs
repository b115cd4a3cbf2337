//! The fleet end to end, on real components: a Kubernetes 1.36 control plane (etcd,
//! kube-apiserver, controller-manager, scheduler) and nfd-master from `CUDA_PREFLIGHT_K8S_CONTROL`
//! (default `../shared/k8s-control`), Debian's `docker-registry` (distribution 2.8), `skopeo` to
//! push images, `openssl` for the webhook's certificate, and our binary as `facts --publish`,
//! `check --attach` and `webhook`.
//!
//! Three fake GPU nodes (Node objects without a kubelet: an H100 on 580, an A100 on 535, an
//! RTX 5090 on 570) publish their NodeFeatures; nfd-master labels them. Images carry profiles as
//! OCI referrers. Then, through `kubectl`: a pod whose image no node runs is denied with the
//! reason per kind of node; one that some run is admitted with node affinity and bound by the real
//! scheduler to one of those; an image without a profile is admitted with a warning. Last, 1,000
//! more NodeFeatures and the webhook's latency per review (printed as `BENCH` lines).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const NS: &str = "node-feature-discovery";
const NODES: &[(&str, &str)] = &[
    ("gpu-h100", "h100-580"),
    ("gpu-a100", "a100-535"),
    ("gpu-rtx5090", "rtx5090-570"),
];

fn control_dir() -> PathBuf {
    let d = std::env::var_os("CUDA_PREFLIGHT_K8S_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/k8s-control"));
    assert!(
        d.join("start.sh").is_file(),
        "{}: no k8s-control (set CUDA_PREFLIGHT_K8S_CONTROL to the directory of start.sh)",
        d.display()
    );
    eprintln!("fleet: k8s control plane from {}", d.display());
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The control plane, the registry, nfd-master and the webhook; all stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    control: PathBuf,
    env: Vec<(String, String)>,
    children: Vec<Child>,
    registry: String,
}

impl Cluster {
    fn state(&self) -> PathBuf {
        self.dir.path().join("k8s")
    }

    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.cmd(self.state().join("bin/kubectl"))
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .unwrap()
    }

    fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = self
            .cmd(self.state().join("bin/kubectl"))
            .arg("--request-timeout=60s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    fn spawn(&mut self, name: &str, mut c: Command) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = c
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // stop.sh stops it too, should this process die first.
        std::fs::write(
            self.state().join(format!("run/{name}.pid")),
            child.id().to_string(),
        )
        .unwrap();
        self.children.push(child);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self
            .cmd(self.control.join("stop.sh"))
            .arg("--purge")
            .output();
    }
}

/// The control plane's binaries unpacked once into the download cache (`start.sh` would unpack
/// 500 MB into every state directory, ~45 s here), linked into the state's `bin/`.
fn link_binaries(control: &Path, bin: &Path) {
    let sums = std::fs::read(control.join("SHA256SUMS")).unwrap_or_default();
    let key = format!(
        "{:016x}",
        sums.iter()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64)
                .wrapping_mul(0x100000001b3))
    );
    let cached = cache().join("k8s-control-bin").join(key);
    std::fs::create_dir_all(&cached).unwrap();
    std::fs::create_dir_all(bin).unwrap();
    for e in std::fs::read_dir(control.join("bin")).unwrap() {
        let p = e.unwrap().path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".xz"))
        else {
            continue;
        };
        let out = cached.join(name);
        if !out.is_file() {
            let tmp = cached.join(format!(".{name}.{}", std::process::id()));
            let o = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "xz -dc '{}' > '{}' && chmod 755 '{}'",
                    p.display(),
                    tmp.display(),
                    tmp.display()
                ))
                .output()
                .unwrap();
            ok(&o, "xz");
            std::fs::rename(&tmp, &out).unwrap();
        }
        std::os::unix::fs::symlink(&out, bin.join(name)).unwrap();
    }
}

fn start_cluster() -> Cluster {
    let control = control_dir();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("k8s");
    link_binaries(&control, &state.join("bin"));
    let mut env: Vec<(String, String)> = vec![("K8S_STATE".into(), state.display().to_string())];
    for k in [
        "ETCD_PORT",
        "ETCD_PEER_PORT",
        "APISERVER_PORT",
        "SCHED_PORT",
        "KCM_PORT",
    ] {
        env.push((k.into(), free_port().to_string()));
    }
    env.push((
        "KUBECONFIG".into(),
        state.join("pki/admin.kubeconfig").display().to_string(),
    ));
    env.push((
        "PATH".into(),
        format!(
            "{}:{}",
            state.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    let mut c = Cluster {
        dir,
        control: control.clone(),
        env,
        children: Vec::new(),
        registry: String::new(),
    };
    let o = c.cmd(control.join("start.sh")).output().unwrap();
    ok(&o, "start.sh");
    // NFD's CRDs and namespace.
    ok(
        &c.kubectl(&[
            "apply",
            "-f",
            &control.join("nfd-api-crds.yaml").display().to_string(),
        ]),
        "NFD CRDs",
    );
    ok(
        &c.kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/nodefeatures.nfd.k8s-sigs.io",
        ]),
        "CRD established",
    );
    ok(&c.kubectl(&["create", "ns", NS]), "namespace");
    // Nodes without a kubelet: Ready with one GPU, the not-ready taint removed. The annotation
    // matters: nfd-master patches annotations with JSON Patch paths below
    // /metadata/annotations, which fail on a node that has none (a kubelet always writes some).
    for (node, _) in NODES {
        let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
            "labels": {"kubernetes.io/hostname": node},
            "annotations": {"cuda-preflight.test/fake": "no kubelet"}}});
        ok(
            &c.kubectl_stdin(&["create", "-f", "-"], &n.to_string()),
            "node",
        );
        let status = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Fake", "message": "no kubelet",
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"}}});
        ok(
            &c.kubectl(&[
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ]),
            "node status",
        );
        // The TaintNodesByCondition plugin may or may not have added it yet.
        let _ = c.kubectl(&["taint", "node", node, "node.kubernetes.io/not-ready-"]);
    }
    let mut nfd = c.cmd(state.join("bin/nfd-master"));
    nfd.args([
        "-kubeconfig",
        &state.join("pki/nfd.kubeconfig").display().to_string(),
        "-port",
        &free_port().to_string(),
    ])
    .env("NODE_NAME", NODES[0].0)
    .env("KUBERNETES_NAMESPACE", NS);
    c.spawn("nfd-master", nfd);
    c
}

fn start_registry(c: &mut Cluster) {
    let reg = require_tool("docker-registry");
    let port = free_port();
    let data = c.dir.path().join("registry");
    let config = c.dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(reg);
    cmd.arg("serve").arg(&config);
    c.spawn("oci-registry", cmd);
    c.registry = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "the registry", || {
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/v2/")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not ready after {limit:?}");
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI layout tagged `1`: one layer holding a CUDA toolkit's `version.json` (the version the
/// rules read without an image config), the config's environment as NVIDIA's images set it.
fn image_layout(dir: &Path, cuda: &str, extra_env: &str, files: &[(&str, Vec<u8>)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha256(data);
        std::fs::write(blobs.join(&d), data).unwrap();
        (format!("sha256:{d}"), data.len())
    };
    let mut b = tar::Builder::new(Vec::new());
    let mm: String = cuda.split('.').take(2).collect::<Vec<_>>().join(".");
    let vj = format!(r#"{{"cuda": {{"name": "CUDA SDK", "version": "{cuda}"}}}}"#);
    let mut h = tar::Header::new_gnu();
    h.set_size(vj.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(
        &mut h,
        format!("usr/local/cuda-{mm}/version.json"),
        vj.as_bytes(),
    )
    .unwrap();
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    let layer = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let (ld, ln) = put(&gz.finish().unwrap());
    let env = vec![
        "PATH=/bin".to_string(),
        format!("CUDA_VERSION={cuda}"),
        format!("NVIDIA_REQUIRE_CUDA=cuda>={mm}"),
        extra_env.to_string(),
    ];
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Env": env},
                        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]}});
    let (cd, cn) = put(config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln}]});
    let (md, mn) = put(manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
}

/// Build, push (skopeo) and, with `profile`, attach a profile (our `check --attach`).
fn push_image(
    c: &Cluster,
    name: &str,
    cuda: &str,
    files: &[(&str, Vec<u8>)],
    profile: bool,
) -> String {
    let layout = c.dir.path().join("images").join(name);
    image_layout(&layout, cuda, &format!("IMAGE={name}"), files);
    let r = format!("{}/fleet/{name}:1", c.registry);
    let o = Command::new(require_tool("skopeo"))
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{r}"))
        .output()
        .unwrap();
    ok(&o, "skopeo copy");
    if profile {
        let file = c.dir.path().join(format!("{name}.profile.json"));
        let o = Command::new(BIN)
            .args(["check", "--image"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg("--emit-profile")
            .arg(&file)
            .args(["--attach", &r, "--plain-http", &c.registry])
            .output()
            .unwrap();
        let out = ok(&o, "check --attach");
        assert!(out.starts_with("attached profile sha256:"), "{out}");
        let p: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(p["schema"], "cuda-preflight.image-profile/v1");
    }
    r
}

fn tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = format!(
        "set -e; cd '{}'; \
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=fleet-test-ca; \
         openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1; \
         printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext; \
         openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2 -extfile ext",
        dir.display()
    );
    ok(
        &Command::new("sh").arg("-c").arg(sh).output().unwrap(),
        "openssl",
    );
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

fn pod(name: &str, image: &str, gpu: bool) -> String {
    let res = if gpu {
        json!({"limits": {"nvidia.com/gpu": "1"}})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": image, "resources": res}]}})
    .to_string()
}

/// An AdmissionReview as the API server sends it, for the latency measurement.
fn review(image: &str) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "namespace": "default",
        "object": serde_json::from_str::<Value>(&pod("bench", image, true)).unwrap()}})
    .to_string()
}

/// `n` reviews over one connection (curl reuses it): each one's time in ms, and the last body.
fn post_reviews(ca: &Path, url: &str, body: &Path, n: usize) -> (Vec<f64>, String) {
    // Options apply to every URL of the command line: the same POST n times.
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--cacert"])
        .arg(ca)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n@@%{time_total} %{time_pretransfer}\n"]);
    for _ in 0..n {
        cmd.arg(url);
    }
    let o = cmd.output().unwrap();
    let out = ok(&o, "curl");
    let mut times = Vec::new();
    let mut last = String::new();
    for chunk in out.split("\n@@") {
        if let Some((t, rest)) = chunk.split_once('\n')
            && let Some((total, pre)) = t.split_once(' ')
            && let (Ok(total), Ok(pre)) = (total.parse::<f64>(), pre.parse::<f64>())
        {
            // The server's share: from the request's first byte to the response's last.
            times.push((total - pre) * 1000.0);
            if !rest.is_empty() {
                last = rest.to_string();
            }
        } else if !chunk.is_empty() {
            last = chunk.to_string();
        }
    }
    (times, last)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn fleet_end_to_end() {
    let mut c = start_cluster();
    start_registry(&mut c);

    // Node facts: each fake node publishes from its host profile; nfd-master labels the Nodes.
    for (node, host) in NODES {
        let o = c
            .cmd(BIN)
            .args(["facts", "--publish", "--node", node, "--host-profile"])
            .arg(repo().join(format!("examples/hosts/{host}.json")))
            .output()
            .unwrap();
        let out = ok(&o, "facts --publish");
        assert_eq!(
            out.trim(),
            format!("published NodeFeature {NS}/cuda-preflight-{node}")
        );
    }
    let want = [
        ("gpu-h100", "580159004", "90", "datacenter"),
        ("gpu-a100", "535104005", "80", "datacenter"),
        ("gpu-rtx5090", "570172008", "120", "geforce"),
    ];
    let mut labels = Value::Null;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let o = c.kubectl(&["get", "nodes", "-o", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        labels = json!(
            v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| (
                    n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    n["metadata"]["labels"].clone()
                ))
                .collect::<serde_json::Map<String, Value>>()
        );
        if want
            .iter()
            .all(|(n, d, _, _)| labels[n]["cuda-preflight.feature.node.kubernetes.io/driver"] == *d)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (n, driver, cc, brand) in want {
        let l = &labels[n];
        let p = "cuda-preflight.feature.node.kubernetes.io/";
        assert_eq!(
            l[format!("{p}driver")],
            driver,
            "{n}: {l:#}\n{}",
            c.log("nfd-master")
        );
        assert_eq!(l[format!("{p}cc.max")], cc, "{n}: {l:#}");
        assert_eq!(l[format!("{p}brand")], brand, "{n}: {l:#}");
        assert_eq!(l[format!("{p}sm.{cc}")], "true", "{n}: {l:#}");
    }

    // Images: CUDA 13.2 (driver 595 or newer: no node), 13.0 (580: the H100), 12.8 (570: the
    // H100 and the RTX 5090), and a 13.0 image without a profile.
    let none = push_image(&c, "cuda13.2", "13.2.0", &[], true);
    let h100 = push_image(&c, "cuda13.0", "13.0.0", &[], true);
    let two = push_image(&c, "cuda12.8", "12.8.0", &[], true);
    let bare = push_image(&c, "noprofile", "13.0.0", &[], false);
    // CUDA 12.8 whose library carries its kernels only as PTX of ISA 9.0 (CUDA 13.0).
    let lib = std::fs::read(isa90_library()).unwrap();
    let ptx90 = push_image(
        &c,
        "ptx90",
        "12.8.0",
        &[("usr/lib/x86_64-linux-gnu/libisa90.so", lib)],
        true,
    );

    // NFD's own client fetches the artifact and evaluates its spec (on this machine's features:
    // none of NFD's sources discovers a CUDA driver, so no rule matches here; docs/fleet.md).
    let o = c
        .cmd(c.state().join("bin/nfd"))
        .args([
            "compat",
            "validate-node",
            "--image",
            &h100,
            "--plain-http",
            "--output-json",
        ])
        .output()
        .unwrap();
    let out = ok(&o, "nfd compat validate-node");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rules: Vec<&Value> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|set| set["rules"].as_array().unwrap().iter())
        .collect();
    let sm90 = rules
        .iter()
        .find(|r| r["name"] == "sm_90 datacenter driver >= 580065006")
        .unwrap_or_else(|| panic!("{out}"));
    let exprs = sm90["matchedExpressions"].to_string();
    for want in [
        r#""feature":"cuda-preflight.gpu""#,
        r#""feature":"cuda-preflight.host""#,
        r#""Gt""#,
    ] {
        assert!(exprs.contains(want), "{want} in {exprs}");
    }

    // A profile attached to another image than the one judged is refused, nothing pushed.
    let o = Command::new(BIN)
        .args(["check", "--image"])
        .arg(format!(
            "oci:{}:1",
            c.dir.path().join("images/cuda13.0").display()
        ))
        .args(["--attach", &bare, "--plain-http", &c.registry])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{bare} is not the image judged")),
        "{err}"
    );

    // The webhook, registered as the API server's mutating webhook for pods.
    let tlsdir = c.dir.path().join("tls");
    std::fs::create_dir_all(&tlsdir).unwrap();
    let (ca, cert, key) = tls(&tlsdir);
    let port = free_port();
    let mut w = c.cmd(BIN);
    w.args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--plain-http", &c.registry]);
    c.spawn("webhook", w);
    let url = format!("https://127.0.0.1:{port}/mutate");
    wait_for(Duration::from_secs(30), "the webhook", || {
        Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&ca)
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let ca_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca).unwrap())
    };
    let config = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "cuda-preflight"},
        "webhooks": [{"name": "gpu-pods.cuda-preflight.dev",
            "clientConfig": {"url": url, "caBundle": ca_b64},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5, "reinvocationPolicy": "Never"}]});
    ok(
        &c.kubectl_stdin(&["apply", "-f", "-"], &config.to_string()),
        "webhook configuration",
    );
    // The API server's webhook configuration is read through an informer: wait until a review
    // reaches the webhook (a pod of an image without a profile: admitted with a warning).
    let mut bare_out = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) && bare_out.is_none() {
        let o = c.kubectl_stdin(&["create", "-f", "-"], &pod("bare", &bare, true));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if err.contains("no profile attached") {
            bare_out = Some((o, err));
        } else if o.status.success() {
            // No kubelet confirms a graceful deletion: force it.
            ok(
                &c.kubectl(&["delete", "pod", "bare", "--grace-period=0", "--force"]),
                "delete",
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let (o, err) = bare_out.unwrap_or_else(|| panic!("webhook never called\n{}", c.log("webhook")));
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("Warning: cuda-preflight: no profile attached to {bare} in its registry: admitted without a CUDA check")),
        "{err}"
    );

    // Out of the way: it may have been bound to any node, and each has one GPU.
    ok(
        &c.kubectl(&["delete", "pod", "bare", "--grace-period=0", "--force"]),
        "delete bare",
    );

    // No node runs it: denied, the reason per kind of node as kubectl shows it.
    let o = c.kubectl_stdin(&["create", "-f", "-"], &pod("fits-none", &none, true));
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("kubectl create (CUDA 13.2 image): {err}");
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("admission webhook \"gpu-pods.cuda-preflight.dev\" denied the request: cuda-preflight: no GPU node can run this pod: "),
        "{err}"
    );
    for kind in [
        "sm_90 datacenter nodes with driver 580.159.04 (1: gpu-h100)",
        "sm_80 datacenter nodes with driver 535.104.05 (1: gpu-a100)",
        "sm_120 geforce nodes with driver 570.172.08 (1: gpu-rtx5090)",
    ] {
        assert!(err.contains(kind), "{kind} in {err}");
    }
    assert!(err.contains("cuda>=13.2 fails: cuda is 13.0"), "{err}");
    assert!(err.contains("driver 595.45.04 or newer runs it"), "{err}");
    assert!(
        c.kubectl(&["get", "pod", "fits-none"]).status.code() != Some(0),
        "a denied pod exists"
    );

    // The H100 alone runs it: admitted with affinity and a warning; the scheduler binds it there.
    let o = c.kubectl_stdin(&["create", "-f", "-"], &pod("fits-h100", &h100, true));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("Warning: cuda-preflight: 1 of 3 GPU nodes can run this pod; node affinity added for them."),
        "{err}"
    );
    assert!(
        err.contains("sm_80 datacenter nodes with driver 535.104.05 (1: gpu-a100)"),
        "{err}"
    );
    let bound_to = |p: &str| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            let o = c.kubectl(&["get", "pod", p, "-o", "jsonpath={.spec.nodeName}"]);
            let n = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !n.is_empty() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "{p} not bound: {}",
            String::from_utf8_lossy(&c.kubectl(&["describe", "pod", p]).stdout)
        );
    };
    assert_eq!(bound_to("fits-h100"), "gpu-h100");
    // The 12.8 image: the H100 and the RTX 5090, not the A100. One GPU per node and the H100's
    // is taken: the scheduler binds it to the RTX 5090.
    let o = c.kubectl_stdin(&["create", "-f", "-"], &pod("fits-two", &two, true));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 of 3 GPU nodes can run this pod"), "{err}");
    assert_eq!(bound_to("fits-two"), "gpu-rtx5090");
    let o = c.kubectl(&["get", "pod", "fits-h100", "-o", "json"]);
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(terms.as_array().map(Vec::len), Some(1), "{terms:#}");
    assert!(
        terms
            .to_string()
            .contains("cuda-preflight.feature.node.kubernetes.io/sm.90"),
        "{terms:#}"
    );

    // The PTX case: the RTX 5090's 570 driver JITs PTX only up to ISA 8.7, the A100's 535 to
    // 8.2; the H100's 580 runs it (JIT). A server-side dry run: admission runs, nothing is stored.
    let o = c.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        &pod("ptx90", &ptx90, true),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("kubectl create (PTX ISA 9.0 image): {err}");
    assert!(o.status.success(), "{err}");
    assert!(err.contains("1 of 3 GPU nodes can run this pod"), "{err}");
    assert!(
        err.contains("sm_120 geforce nodes with driver 570.172.08 (1: gpu-rtx5090): ")
            && err.contains("kernel-image-missing: 222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
        "{err}"
    );
    assert!(
        err.contains("it carries ptx sm_80 (ISA 9.0); driver 580.65.06 or newer runs it"),
        "{err}"
    );
    assert!(
        err.contains("kernel-ptx-jit-only"),
        "the H100's JIT warning: {err}"
    );

    // A pod without GPUs is not looked at: no warning.
    let o = c.kubectl_stdin(&["create", "-f", "-"], &pod("cpu-only", &none, false));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && !err.contains("cuda-preflight"),
        "{err}"
    );

    // --- 1,000 more published nodes, and the webhook's time per review.
    let o = c
        .cmd(BIN)
        .args([
            "facts",
            "--publish",
            "--json",
            "--node",
            "template",
            "--host-profile",
        ])
        .arg(repo().join("examples/hosts/a100-535.json"))
        .output()
        .unwrap();
    let template: Value = serde_json::from_str(&ok(&o, "facts --publish --json")).unwrap();
    let drivers = [
        ("535.104.05", "12.2", "8.0", "datacenter"),
        ("550.127.05", "12.4", "8.0", "datacenter"),
        ("570.133.07", "12.8", "9.0", "datacenter"),
        ("575.57.08", "12.9", "12.0", "geforce"),
        ("580.95.05", "13.0", "9.0", "datacenter"),
        ("580.159.04", "13.0", "10.0", "datacenter"),
    ];
    let items: Vec<Value> = (0..1000)
        .map(|i| {
            let (d, cu, cc, brand) = drivers[i % drivers.len()];
            let mut o = template.clone();
            let name = format!("bench-{i:04}");
            o["metadata"]["name"] = json!(format!("cuda-preflight-{name}"));
            o["metadata"]["labels"]["nfd.node.kubernetes.io/node-name"] = json!(name);
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            let f = &mut o["spec"]["features"];
            f["attributes"]["cuda-preflight.host"]["elements"]["driver_version"] = json!(d);
            f["attributes"]["cuda-preflight.host"]["elements"]["cuda_driver_version"] = json!(cu);
            for g in f["instances"]["cuda-preflight.gpu"]["elements"]
                .as_array_mut()
                .unwrap()
            {
                g["attributes"]["compute_capability"] = json!(cc);
                g["attributes"]["brand"] = json!(brand);
            }
            o["spec"]["labels"] = json!({});
            o
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let t = Instant::now();
    ok(
        &c.kubectl_stdin(&["create", "-f", "-"], &list.to_string()),
        "1,000 NodeFeatures",
    );
    eprintln!(
        "BENCH fleet: 1000 NodeFeatures created in {:?}",
        t.elapsed()
    );
    let body = c.dir.path().join("review.json");
    std::fs::write(&body, review(&h100)).unwrap();
    // The webhook lists the NodeFeatures every 10 s.
    let t = Instant::now();
    loop {
        let (_, out) = post_reviews(&ca, &url, &body, 1);
        if out.contains("of 1004 GPU nodes") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "{out}\n{}",
            c.log("webhook")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (what, image) in [
        ("fits some (patch)", &h100),
        ("fits none (deny)", &none),
        ("no profile (allow)", &bare),
    ] {
        std::fs::write(&body, review(image)).unwrap();
        let (times, last) = post_reviews(&ca, &url, &body, 200);
        assert_eq!(times.len(), 200, "{last}");
        let (p50, p99, max) = (
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0),
        );
        eprintln!(
            "BENCH fleet webhook, 1004 published nodes, {what}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms per review (200 reviews, one TLS connection)"
        );
        // Well inside the API server's timeout (10 s at most, 5 s configured here).
        assert!(p99 < 1000.0, "{what}: p99 {p99} ms");
    }

    // As the API server sees it: its own histogram of our webhook's calls, over 20 server-side
    // dry runs of the pod that gets affinity (admission runs, nothing is stored).
    let metric = || -> (f64, f64) {
        let o = c.kubectl(&["get", "--raw", "/metrics"]);
        let text = ok(&o, "metrics");
        let get = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l.contains("gpu-pods.cuda-preflight.dev"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (
            get("apiserver_admission_webhook_admission_duration_seconds_sum"),
            get("apiserver_admission_webhook_admission_duration_seconds_count"),
        )
    };
    let (s0, n0) = metric();
    for i in 0..20 {
        let o = c.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &pod(&format!("dry-{i}"), &h100, true),
        );
        ok(&o, "dry run");
    }
    let (s1, n1) = metric();
    assert_eq!(
        n1 - n0,
        20.0,
        "the API server called the webhook once per dry run"
    );
    let mean = (s1 - s0) / (n1 - n0) * 1000.0;
    eprintln!(
        "BENCH fleet webhook as the API server measures it (apiserver_admission_webhook_admission_duration_seconds), 1004 nodes, fits some: mean {mean:.2} ms over 20 calls"
    );
    assert!(mean < 1000.0, "{mean} ms");

    // Without NFD (its CRDs deleted): facts --publish labels the Node itself, and the webhook
    // reads the facts back from Node labels.
    ok(
        &c.kubectl(&[
            "delete",
            "crd",
            "nodefeatures.nfd.k8s-sigs.io",
            "--timeout=120s",
        ]),
        "delete the NodeFeature CRD",
    );
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-nonfd",
        "annotations": {"cuda-preflight.test/fake": "no kubelet"}}});
    ok(
        &c.kubectl_stdin(&["create", "-f", "-"], &n.to_string()),
        "node",
    );
    let o = c
        .cmd(BIN)
        .args([
            "facts",
            "--publish",
            "--node",
            "gpu-nonfd",
            "--host-profile",
        ])
        .arg(repo().join("examples/hosts/rtx5070ti-570.json"))
        .output()
        .unwrap();
    assert_eq!(
        ok(&o, "facts --publish without NFD").trim(),
        "NFD is not installed (no NodeFeature API): labelled Node gpu-nonfd directly (labels only, no features)"
    );
    let o = c.kubectl(&[
        "get",
        "node",
        "gpu-nonfd",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    let l = ok(&o, "labels");
    assert!(
        l.contains(r#""cuda-preflight.feature.node.kubernetes.io/driver":"570133007""#),
        "{l}"
    );
    std::fs::write(&body, review(&none)).unwrap();
    let t = Instant::now();
    loop {
        let (_, out) = post_reviews(&ca, &url, &body, 1);
        if out.contains("gpu-nonfd") {
            assert!(
                out.contains("sm_120 geforce nodes with driver 570.133.07 (1: gpu-nonfd)"),
                "{out}"
            );
            assert!(out.contains(r#""allowed":false"#), "{out}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "{out}\n{}",
            c.log("webhook")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The profile from the kernels of the libraries an image loads (nvcc 13.5 fixtures of
/// `scripts/cuda-tools.sh`): sm_80 SASS alone runs on compute capability 8.x at every driver and
/// on nothing newer (209); PTX of ISA 9.5 (CUDA 13.5) runs on no driver cuda-preflight knows (222).
/// Read as a rootfs (`check --rootfs … --profile`): the same facts as an image.
#[test]
fn profiles_from_kernels() {
    let profile = |lib: &Path| -> Value {
        let d = tempfile::tempdir().unwrap();
        let libdir = d.path().join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&libdir).unwrap();
        std::fs::copy(lib, libdir.join(lib.file_name().unwrap())).unwrap();
        let o = Command::new(BIN)
            .args(["check", "--profile", "--rootfs"])
            .arg(d.path())
            .output()
            .unwrap();
        serde_json::from_str(&ok(&o, "check --profile")).unwrap()
    };
    let kind = |p: &Value, cc: &str, brand: &str| -> Value {
        p["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["compute_capability"] == cc && k["brand"] == brand)
            .unwrap_or_else(|| panic!("{cc} {brand}"))
            .clone()
    };
    let sm80 = profile(&sm80_only());
    assert_eq!(
        sm80["newest_driver"], "595.45.04",
        "{}",
        sm80["newest_driver"]
    );
    for cc in ["8.0", "8.6", "8.9"] {
        let k = kind(&sm80, cc, "datacenter");
        assert_eq!(k["min_driver"], "450.51.05", "{cc}: {k:#}");
        assert_eq!(k["steps"].as_array().unwrap().len(), 1, "{cc}: {k:#}");
    }
    for cc in ["9.0", "10.0", "12.0"] {
        for brand in ["datacenter", "other"] {
            let k = kind(&sm80, cc, brand);
            assert!(k["min_driver"].is_null(), "{cc}: {k:#}");
            let r = k["steps"][0]["reason"].as_str().unwrap();
            assert!(
                r.starts_with("kernel-image-missing: 209 CUDA_ERROR_NO_BINARY_FOR_GPU"),
                "{cc}: {r}"
            );
            assert!(r.contains("libk80.so"), "{r}");
        }
    }
    let ptx95 = profile(&nvcc_so("libptx95.so", "arch=compute_80,code=compute_80"));
    for cc in ["8.0", "9.0", "12.0"] {
        let k = kind(&ptx95, cc, "other");
        assert!(k["min_driver"].is_null(), "{cc}: {k:#}");
        let r = k["steps"][0]["reason"].as_str().unwrap();
        assert!(
            r.starts_with("kernel-image-missing: 222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
            "{cc}: {r}"
        );
    }
    // PTX for compute_80 does not run on 7.5 at any driver: a JIT targets newer GPUs only.
    assert!(kind(&ptx95, "7.5", "datacenter")["min_driver"].is_null());

    // The issue's case: kernels only as PTX of a newer ISA than the node's driver JITs. PTX ISA
    // 9.0 (CUDA 13.0) for compute_80 in a library's .nv_fatbin: on sm_120 with a 570 driver
    // (CUDA 12.8, ISA up to 8.7) it fails with 222 until the 580 driver, then JITs (warn).
    let isa90 = isa90_library();
    let p = profile(&isa90);
    let k = kind(&p, "12.0", "other");
    assert_eq!(k["min_driver"], "580.65.06", "{k:#}");
    let steps = k["steps"].as_array().unwrap();
    let r = steps[0]["reason"].as_str().unwrap();
    assert!(
        r.starts_with("kernel-image-missing: 222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
        "{r}"
    );
    assert!(r.contains("it carries ptx sm_80 (ISA 9.0)"), "{r}");
    let last = steps.last().unwrap();
    assert_eq!(
        (&last["driver"], &last["verdict"]),
        (&json!("580.65.06"), &json!("warn")),
        "{k:#}"
    );
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("kernel-ptx-jit-only"),
        "{k:#}"
    );
}

/// A shared library whose only GPU code is PTX ISA 9.0 for compute_80: nvcc 13.5 writes ISA 9.5,
/// so its PTX's `.version` line is edited, packed with `nvcc -fatbin`, and put as the
/// `.nv_fatbin` section into a copy of the sm_80 fixture library (objcopy).
fn isa90_library() -> PathBuf {
    let d = cache().join("fixtures/13.5.37/fleet-libisa90");
    let out = d.join("libisa90.so");
    if out.is_file() {
        return out;
    }
    let nvcc = cache().join("cuda-tools/13.5.37/nvidia/cu13/bin/nvcc");
    assert!(
        nvcc.is_file(),
        "{} is missing: run scripts/cuda-tools.sh first",
        nvcc.display()
    );
    let tmp = d.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("k.cu"),
        "__global__ void add(float *a, const float *b, int n) {\n\
         int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += b[i]; }\n",
    )
    .unwrap();
    let run = |c: &mut Command| ok(&c.output().unwrap(), "nvcc/objcopy");
    run(Command::new(&nvcc).current_dir(&tmp).args([
        "-ptx",
        "-arch=compute_80",
        "-o",
        "k.ptx",
        "k.cu",
    ]));
    let text = std::fs::read_to_string(tmp.join("k.ptx")).unwrap();
    assert!(
        text.contains(".version 9.5"),
        "nvcc 13.5 PTX should say .version 9.5"
    );
    std::fs::write(
        tmp.join("k90.ptx"),
        text.replace(".version 9.5", ".version 9.0"),
    )
    .unwrap();
    run(Command::new(&nvcc).current_dir(&tmp).args([
        "-fatbin",
        "-arch=compute_80",
        "-code=compute_80",
        "-o",
        "k.fatbin",
        "k90.ptx",
    ]));
    std::fs::copy(sm80_only(), tmp.join("libisa90.so")).unwrap();
    run(Command::new("objcopy").current_dir(&tmp).args([
        "--update-section",
        ".nv_fatbin=k.fatbin",
        "libisa90.so",
    ]));
    let _ = std::fs::remove_dir_all(&d);
    if std::fs::rename(&tmp, &d).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    out
}

/// Bad input is exit 2 with one clear line, and nothing is written: no cluster to publish to, no
/// registry to attach to.
#[test]
fn no_cluster_no_registry_is_bad_input() {
    let o = Command::new(BIN)
        .args(["facts", "--publish", "--node", "n", "--host-profile"])
        .arg(repo().join("examples/hosts/h100-580.json"))
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("cuda-preflight: no Kubernetes API configuration"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let d = tempfile::tempdir().unwrap();
    image_layout(&d.path().join("img"), "13.0.0", "X=1", &[]);
    let port = free_port(); // nothing listens there
    let o = Command::new(BIN)
        .args(["check", "--image"])
        .arg(format!("oci:{}:1", d.path().join("img").display()))
        .args(["--attach", &format!("127.0.0.1:{port}/x/y:1")])
        .args(["--plain-http", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}/x/y:1: reading the manifest")),
        "{err}"
    );
}
