//! packaging/kubernetes: the manifests validate against the Kubernetes schemas
//! (kubernetes-validate, installed by scripts/kubernetes-validate.sh), and they agree with each
//! other and with the containerd snippet: the RuntimeClass names the snippet's runtime, and the
//! DaemonSet writes where the engines read.

use crate::common::repo;
use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;

fn validate(files: &[&Path]) -> (bool, String) {
    let out = Command::new(repo().join("scripts/kubernetes-validate.sh"))
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn docs(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let d = repo().join("packaging/kubernetes");
    let (ok, text) = validate(&[&d.join("daemonset.yaml"), &d.join("runtimeclass.yaml")]);
    assert!(ok, "{text}");
    // One line per resource: the validator saw all three.
    for r in [
        "namespace/cuda-preflight",
        "daemonset/cuda-preflight-installer",
        "runtimeclass/cuda-preflight",
    ] {
        assert!(text.contains(&format!("passed for resource {r}")), "{text}");
    }
}

/// The validator does reject: the same DaemonSet with a misspelt key (strict mode) and one with a
/// required field gone.
#[test]
fn the_validator_rejects_a_broken_manifest() {
    let good = std::fs::read_to_string(repo().join("packaging/kubernetes/daemonset.yaml")).unwrap();
    let t = tempfile::tempdir().unwrap();
    for (name, from, to) in [
        ("misspelt.yaml", "  updateStrategy:", "  updateStrategi:"),
        (
            "no-selector.yaml",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: cuda-preflight\n",
            "",
        ),
    ] {
        assert!(good.contains(from));
        let p = t.path().join(name);
        std::fs::write(&p, good.replacen(from, to, 1)).unwrap();
        let (ok, text) = validate(&[&p]);
        assert!(!ok, "{name}: {text}");
        assert!(
            text.contains("did not validate for resource daemonset/"),
            "{name}: {text}"
        );
    }
}

#[test]
fn runtimeclass_names_the_containerd_runtime_and_the_daemonset_covers_its_nodes() {
    let rc = docs("packaging/kubernetes/runtimeclass.yaml");
    let rc = kind(&rc, "RuntimeClass");
    let handler = rc["handler"].as_str().unwrap();
    let snippet: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo().join("hooks/containerd/config.toml")).unwrap(),
    )
    .unwrap();
    let runtimes = &snippet["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    assert!(
        runtimes.get(handler).is_some(),
        "containerd has no runtime {handler}: {runtimes:?}"
    );

    let ds = docs("packaging/kubernetes/daemonset.yaml");
    let ds = kind(&ds, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    // Pods of the RuntimeClass are scheduled only where the DaemonSet installed the runtime.
    assert_eq!(rc["scheduling"]["nodeSelector"], pod["nodeSelector"]);
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"], "true");

    // Each host directory is mounted at /host + the same path, which the install script assumes.
    let mounts = pod["initContainers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap();
    let mut host_paths = vec![];
    for v in pod["volumes"].as_sequence().unwrap() {
        let path = v["hostPath"]["path"].as_str().unwrap();
        let m = mounts.iter().find(|m| m["name"] == v["name"]).unwrap();
        assert_eq!(m["mountPath"].as_str().unwrap(), format!("/host{path}"));
        host_paths.push(path);
    }
    for want in [
        "/opt/cuda-preflight",
        "/etc/cuda-preflight",
        "/usr/share/containers/oci/hooks.d",
        "/etc/containerd/conf.d",
    ] {
        assert!(
            host_paths.contains(&want),
            "{want} not mounted: {host_paths:?}"
        );
    }
}

/// The init container's script, run with busybox's sh in a chroot laid out like the image (the
/// .deb's files) with the node's directories under /host: it writes what the README says, with
/// the node's paths, and a second run (a DaemonSet restart) keeps the node's edited config.
#[test]
fn daemonset_install_script_on_a_fake_node() {
    let ds = docs("packaging/kubernetes/daemonset.yaml");
    let init = &kind(&ds, "DaemonSet")["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        init["command"],
        serde_yaml_ng::from_str::<Value>("[/bin/sh, -c]").unwrap()
    );
    let script = init["args"][0].as_str().unwrap();

    let t = tempfile::tempdir().unwrap();
    let root = image_root(t.path());
    let run = || run_in(&root, script);
    run();
    let host = root.join("host");
    for b in ["cuda-preflight", "cuda-preflight-runtime"] {
        let p = host.join("opt/cuda-preflight/bin").join(b);
        let out = Command::new(&p).arg("--help").output().unwrap();
        assert!(out.status.success(), "{}", p.display());
    }
    let hook: serde_json::Value = serde_json::from_slice(
        &std::fs::read(host.join("usr/share/containers/oci/hooks.d/cuda-preflight.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        hook["hook"]["path"],
        "/opt/cuda-preflight/bin/cuda-preflight"
    );
    assert_eq!(hook["stages"], serde_json::json!(["createContainer"]));
    assert_eq!(
        hook["hook"]["args"],
        serde_json::json!(["cuda-preflight", "hook", "--stage", "createContainer"])
    );
    let dropin: toml::Table = toml::from_str(
        &std::fs::read_to_string(host.join("etc/containerd/conf.d/cuda-preflight.toml")).unwrap(),
    )
    .unwrap();
    let rt =
        &dropin["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["cuda-preflight"];
    assert_eq!(
        rt["options"]["BinaryName"].as_str(),
        Some("/opt/cuda-preflight/bin/cuda-preflight-runtime")
    );
    let config = host.join("etc/cuda-preflight/config.toml");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(repo().join("packaging/config.toml")).unwrap()
    );

    // The node's own settings survive a second run.
    std::fs::write(&config, "mode = \"warn\"\n").unwrap();
    run();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "mode = \"warn\"\n"
    );
}

/// A chroot laid out like the image (the .deb's files and the libraries they load, busybox for
/// the shell), for the init containers' scripts.
fn image_root(dir: &Path) -> std::path::PathBuf {
    let root = crate::common::busybox_rootfs(dir);
    for applet in ["mkdir", "cp", "chmod", "mv", "["] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    // The image: both binaries and the default config where the .deb puts them, and the
    // libraries they load (ldd's list).
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/cuda-preflight")).unwrap();
    let runtime = env!("CARGO_BIN_EXE_cuda-preflight-runtime");
    for b in [crate::common::BIN, runtime] {
        let name = Path::new(b).file_name().unwrap();
        std::fs::copy(b, root.join("usr/bin").join(name)).unwrap();
        let ldd = Command::new("ldd").arg(b).output().unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if lib.starts_with('/') {
                let dest = root.join(lib.trim_start_matches('/'));
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(lib, dest).unwrap();
            }
        }
    }
    std::fs::copy(
        repo().join("packaging/config.toml"),
        root.join("etc/cuda-preflight/config.toml"),
    )
    .unwrap();

    root
}

/// Run a script with the image's sh in the chroot; it must succeed.
fn run_in(root: &Path, script: &str) {
    let out = Command::new(crate::common::require_tool("chroot"))
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nri_manifest_validates_against_the_kubernetes_schemas() {
    let (ok, text) = validate(&[&repo().join("packaging/kubernetes/nri.yaml")]);
    assert!(ok, "{text}");
    for r in ["namespace/cuda-preflight", "daemonset/cuda-preflight-nri"] {
        assert!(text.contains(&format!("passed for resource {r}")), "{text}");
    }
}

/// The plugin container sees every node directory at the node's own path (the hook and config
/// paths it writes into specs must be the node's), the NRI socket is the plugin's default one,
/// the readiness probe asks the plugin's default health address, and nothing mounts a runtime's
/// configuration.
#[test]
fn nri_daemonset_mounts_the_node_paths_it_names() {
    let ds = docs("packaging/kubernetes/nri.yaml");
    let pod = &kind(&ds, "DaemonSet")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    let host_path = |name: &Value| {
        volumes.iter().find(|v| v["name"] == *name).unwrap()["hostPath"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for v in volumes {
        let p = v["hostPath"]["path"].as_str().unwrap();
        assert!(
            !p.contains("containerd") && !p.contains("crio"),
            "a runtime's configuration is mounted: {p}"
        );
    }
    let c = &pod["containers"][0];
    let argv: Vec<&str> = c["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[1], "nri");
    let flag = |f: &str| argv[argv.iter().position(|a| *a == f).unwrap() + 1];
    assert_eq!(
        flag("--nri-socket"),
        cuda_preflight::commands::nri::DEFAULT_SOCKET
    );
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let covered = |path: &str| {
        mounts.iter().any(|m| {
            let at = m["mountPath"].as_str().unwrap();
            // Mounted at the node's own path (the host root at /host is the one exception,
            // for --host-root).
            path.starts_with(&format!("{at}/")) && host_path(&m["name"]) == at
        })
    };
    for p in [
        argv[0],
        flag("--config"),
        flag("--nri-socket"),
        "/run/cuda-preflight/reports",
    ] {
        assert!(
            covered(p),
            "{p} is not the node's own path in the plugin container"
        );
    }
    let host = mounts.iter().find(|m| m["mountPath"] == "/host").unwrap();
    assert_eq!(host_path(&host["name"]), "/");
    assert_eq!(host["readOnly"], true);
    assert_eq!(flag("--host-root"), "/host");
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(
        format!(
            "{}:{}",
            probe["host"].as_str().unwrap(),
            probe["port"].as_u64().unwrap()
        ),
        cuda_preflight::commands::nri::DEFAULT_LISTEN
    );
    assert_eq!(probe["path"], "/healthz");
    assert_eq!(
        pod["hostNetwork"], true,
        "the health address is the node's loopback"
    );
}

/// The NRI DaemonSet's init script on a fake node: the binary and the default config land where
/// the plugin container runs them from, and a second run keeps the node's own config.
#[test]
fn nri_install_script_on_a_fake_node() {
    let ds = docs("packaging/kubernetes/nri.yaml");
    let init = &kind(&ds, "DaemonSet")["spec"]["template"]["spec"]["initContainers"][0];
    let script = init["args"][0].as_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = image_root(t.path());
    std::fs::create_dir_all(root.join("host/etc/cuda-preflight")).unwrap();
    run_in(&root, script);
    let bin = root.join("host/opt/cuda-preflight/bin/cuda-preflight");
    let out = Command::new(&bin).args(["nri", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", bin.display());
    let config = root.join("host/etc/cuda-preflight/config.toml");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(repo().join("packaging/config.toml")).unwrap()
    );
    std::fs::write(&config, "mode = \"warn\"\n").unwrap();
    run_in(&root, script);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "mode = \"warn\"\n"
    );
}

/// packaging/kubernetes/fleet.yaml (docs/fleet.md): valid, and its parts fit together and with
/// the binary — the configuration calls the Service, the Service selects the webhook's pods, the
/// containers' flags are ones the binary takes, the RBAC covers what each one does.
#[test]
fn fleet_manifests_validate_and_fit_together() {
    let file = repo().join("packaging/kubernetes/fleet.yaml");
    let (ok, text) = validate(&[&file]);
    assert!(ok, "{text}");
    for r in [
        "serviceaccount/cuda-preflight-facts",
        "role/cuda-preflight-facts",
        "rolebinding/cuda-preflight-facts",
        "daemonset/cuda-preflight-facts",
        "serviceaccount/cuda-preflight-webhook",
        "clusterrole/cuda-preflight-webhook",
        "clusterrolebinding/cuda-preflight-webhook",
        "deployment/cuda-preflight-webhook",
        "service/cuda-preflight-webhook",
        "mutatingwebhookconfiguration/cuda-preflight",
    ] {
        assert!(text.contains(&format!("passed for resource {r}")), "{text}");
    }
    let d = docs("packaging/kubernetes/fleet.yaml");
    let cfg = &kind(&d, "MutatingWebhookConfiguration")["webhooks"][0];
    let svc = kind(&d, "Service");
    let dep = kind(&d, "Deployment");
    assert_eq!(
        cfg["clientConfig"]["service"]["name"],
        svc["metadata"]["name"]
    );
    assert_eq!(
        cfg["clientConfig"]["service"]["namespace"],
        svc["metadata"]["namespace"]
    );
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["template"]["metadata"]["labels"]
    );
    // Never a pod stopped because the webhook is down, and an answer inside the timeout.
    assert_eq!(cfg["failurePolicy"], "Ignore");
    assert_eq!(cfg["sideEffects"], "None");
    assert!(cfg["timeoutSeconds"].as_u64().unwrap() <= 10);
    // The webhook's flags parse: with certificate files that do not exist here the binary gets as
    // far as reading them (a flag it did not know would stop it at argument parsing).
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = Command::new(crate::common::BIN)
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/tls/tls.crt: cannot read the certificate"),
        "{err}"
    );
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/tls"));

    // The publisher: the flags it runs with, the node name from the downward API, and a Role in
    // the namespace the binary writes NodeFeatures to by default.
    let ds = kind(&d, "DaemonSet");
    let pc = &ds["spec"]["template"]["spec"]["containers"][0];
    let script = pc["args"][0].as_str().unwrap();
    assert!(
        script.contains("cuda-preflight facts --publish --node \"$NODE_NAME\""),
        "{script}"
    );
    let help = Command::new(crate::common::BIN)
        .args(["facts", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--publish") && help.contains("--node <NAME>"),
        "{help}"
    );
    assert_eq!(
        pc["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let role = kind(&d, "Role");
    assert_eq!(role["metadata"]["namespace"], "node-feature-discovery");
    let verbs = role["rules"][0]["verbs"].as_sequence().unwrap();
    assert!(
        verbs.iter().any(|v| v == "patch"),
        "server-side apply is a PATCH"
    );
    let cr = kind(&d, "ClusterRole");
    assert!(
        cr["rules"][0]["verbs"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v == "list")
    );
}
