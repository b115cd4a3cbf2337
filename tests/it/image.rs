//! `check --image`: the same image read from an OCI layout (written here, two layers with
//! whiteouts), Podman's store (`podman import`), Podman's `docker-archive` and `oci-archive`
//! output, and a real dockerd's store (`docker import`, then `docker-daemon:` and a bare name)
//! gives the same verdicts; hostile layers write and open nothing outside the private directory.

use crate::common::dockerd::Dockerd;
use crate::common::*;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const ENV: &[&str] = &[
    "PATH=/bin",
    "CUDA_VERSION=13.0.0",
    "NVIDIA_REQUIRE_CUDA=cuda>=13.0",
];
const TAG: &str = "cuda-preflight-test/image:1";
const DRIVER_LIB: &str = "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05";
const NVIDIA_DIR_LIB: &str = "usr/local/nvidia/lib64/libcuda.so.535.104.05";

fn hosts() -> [PathBuf; 2] {
    [
        repo().join("examples/hosts/a100-535.json"),
        repo().join("examples/hosts/h100-580.json"),
    ]
}

/// The image as a container sees it: busybox, a CUDA 13.0 toolkit tree (`/usr/local/cuda` a link
/// to it), and a real NVIDIA library where the cache has one (`scripts/cuda-tools.sh`).
fn flat_rootfs(dir: &Path) -> PathBuf {
    let root = busybox_rootfs(dir);
    let cuda = root.join("usr/local/cuda-13.0");
    std::fs::create_dir_all(cuda.join("lib64")).unwrap();
    std::fs::write(
        cuda.join("version.json"),
        r#"{"cuda": {"name": "CUDA SDK", "version": "13.0.48"}}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("cuda-13.0", root.join("usr/local/cuda")).unwrap();
    let real = Path::new(
        "/var/tmp/cuda-preflight-cache/cuda-libs/nvjpeg-13.3.2.43/nvidia/cu13/lib/libnvjpeg.so.13",
    );
    let lib = cuda.join("lib64/libnvjpeg.so.13");
    if real.exists() {
        std::fs::copy(real, &lib).unwrap();
    } else {
        std::fs::write(&lib, b"\x7fELF not a real library").unwrap();
    }
    root
}

fn tar_of_dir(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root).unwrap();
    b.into_inner().unwrap()
}

/// A raw tar entry: the name and link name are written as given (the tar crate's own setters
/// refuse `..`, which is the point of the hostile cases).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn sha256(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// An OCI image layout with gzip layers, tagged `1`.
fn write_oci_layout(dir: &Path, layers: &[Vec<u8>], env: &[&str]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha256(data);
        std::fs::write(blobs.join(&d), data).unwrap();
        (format!("sha256:{d}"), data.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256(l)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l).unwrap();
        let (d, n) = put(&gz.finish().unwrap());
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
    }
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Env": env},
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cn) = put(config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                          "layers": descs});
    let (md, mn) = put(manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
}

/// Layer 1 is the flat rootfs plus two NVIDIA driver libraries; layer 2 removes them again, one
/// by a whiteout file, one by an opaque directory. Read right, the image has no driver library
/// of its own (else `image-driver-library` warns on the H100).
fn two_layers(flat: &Path) -> Vec<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", flat).unwrap();
    for p in [DRIVER_LIB, NVIDIA_DIR_LIB] {
        raw_entry(&mut b, tar::EntryType::Regular, p, "", b"\x7fELF");
    }
    let l1 = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        tar::EntryType::Regular,
        "usr/lib/x86_64-linux-gnu/.wh.libnvidia-ml.so.535.104.05",
        "",
        b"",
    );
    raw_entry(
        &mut b,
        tar::EntryType::Regular,
        "usr/local/nvidia/lib64/.wh..wh..opq",
        "",
        b"",
    );
    vec![l1, b.into_inner().unwrap()]
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

fn check(image: &str, extra: &[&str], envs: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", BIN, "check", "--image", image, "--json"])
        .arg("--host-root")
        .arg(repo().join("tests/fixtures/h100-580"))
        .args(extra);
    for h in hosts() {
        cmd.arg("--host-profile").arg(h);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

/// Per host: the verdict and the judging findings' ids.
fn verdicts(r: &Run) -> Vec<(String, String, Vec<String>)> {
    r.json["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts: {} {}", r.json, r.stderr))
        .iter()
        .map(|h| {
            let mut ids = finding_ids(h);
            ids.sort();
            (
                h["profile"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                h["verdict"].as_str().unwrap().to_string(),
                ids,
            )
        })
        .collect()
}

fn expected() -> Vec<(String, String, Vec<String>)> {
    vec![
        (
            "a100-535.json".into(),
            "block".into(),
            vec![
                "cuda-driver-insufficient".into(),
                "require-unsatisfied".into(),
            ],
        ),
        ("h100-580.json".into(), "allow".into(), vec![]),
    ]
}

fn podman(store: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", "120", "podman"])
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("runroot"))
        .args(["--storage-driver", "vfs", "--events-backend", "none"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn oci_layout_and_podman_store_and_archives_give_the_same_verdicts() {
    require_tool("podman");
    let d = tempfile::tempdir().unwrap();
    let flat = flat_rootfs(&d.path().join("fixture"));

    let layout = d.path().join("layout");
    write_oci_layout(&layout, &two_layers(&flat), ENV);
    let oci = check(&format!("oci:{}:1", layout.display()), &[], &[]);
    assert_eq!(oci.code, 1, "{}", oci.stderr);
    assert_eq!(verdicts(&oci), expected(), "{:#}", oci.json);
    assert_eq!(oci.json["verdict"], "block");

    // Podman's store: the flat rootfs imported with the same environment.
    let store = d.path().join("store");
    let tar = d.path().join("flat.tar");
    std::fs::write(&tar, tar_of_dir(&flat)).unwrap();
    let mut import = vec!["import"];
    let changes: Vec<String> = ENV.iter().map(|e| format!("ENV {e}")).collect();
    for c in &changes {
        import.extend(["--change", c]);
    }
    import.extend([tar.to_str().unwrap(), TAG]);
    ok(&podman(&store, &import), "podman import");
    let root = store.join("root");
    let runroot = store.join("runroot");
    let flags = [
        "--storage-root",
        root.to_str().unwrap(),
        "--storage-runroot",
        runroot.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    let cs = check(&format!("containers-storage:{TAG}"), &flags, &[]);
    assert_eq!(verdicts(&cs), expected(), "{:#} {}", cs.json, cs.stderr);

    // Podman's docker-archive and oci-archive output of the same image.
    for (format, scheme) in [
        ("docker-archive", "docker-archive"),
        ("oci-archive", "oci-archive"),
    ] {
        let file = d.path().join(format!("{format}.tar"));
        ok(
            &podman(
                &store,
                &[
                    "save",
                    "--format",
                    format,
                    "-o",
                    file.to_str().unwrap(),
                    TAG,
                ],
            ),
            "podman save",
        );
        let r = check(&format!("{scheme}:{}", file.display()), &[], &[]);
        assert_eq!(
            verdicts(&r),
            expected(),
            "{scheme}: {:#} {}",
            r.json,
            r.stderr
        );
    }

    // A name in no store, and a store that is not there: bad input, one line naming the image.
    let r = check("containers-storage:no/such:image", &flags, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("cuda-preflight: containers-storage:no/such:image: podman could not save"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn hostile_layers_stay_inside_the_private_directory() {
    let d = tempfile::tempdir().unwrap();
    let flat = flat_rootfs(&d.path().join("fixture"));
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "secret").unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("canary"), "canary").unwrap();
    // Unique per run: a file left by a broken build must not fail, or pass, a later run.
    let canary_name = format!("libcuda-preflight-canary-{}.so.1", std::process::id());
    let etc_canary = Path::new("/etc").join(&canary_name);
    let out = outside.display().to_string();
    let out_rel = format!("../../../../../../../../..{out}");

    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, T::Regular, "../escape-libcuda.so.1", "", b"x");
    raw_entry(
        &mut b,
        T::Regular,
        &format!("usr/lib/{out_rel}/libdotdot.so.1"),
        "",
        b"x",
    );
    raw_entry(
        &mut b,
        T::Symlink,
        "usr/lib/x86_64-linux-gnu/etcdir",
        "/etc",
        b"",
    );
    raw_entry(
        &mut b,
        T::Regular,
        &format!("usr/lib/x86_64-linux-gnu/etcdir/{canary_name}"),
        "",
        b"x",
    );
    raw_entry(&mut b, T::Symlink, "usr/lib/out", &out, b"");
    raw_entry(&mut b, T::Regular, "usr/lib/out/libescape.so.1", "", b"x");
    raw_entry(&mut b, T::Symlink, "usr/lib/outrel", &out_rel, b"");
    raw_entry(
        &mut b,
        T::Regular,
        "usr/lib/outrel/libescape2.so.1",
        "",
        b"x",
    );
    raw_entry(
        &mut b,
        T::Link,
        "usr/lib/x86_64-linux-gnu/libhard.so.1",
        &format!("{out_rel}/secret"),
        b"",
    );
    raw_entry(
        &mut b,
        T::Link,
        "usr/lib/x86_64-linux-gnu/libhard2.so.1",
        &format!("{out}/secret"),
        b"",
    );
    raw_entry(&mut b, T::Regular, ".wh..", "", b"");
    raw_entry(&mut b, T::Regular, "usr/.wh...", "", b"");
    raw_entry(
        &mut b,
        T::Fifo,
        "usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "",
        b"",
    );
    raw_entry(
        &mut b,
        T::Char,
        "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        "",
        b"",
    );
    let hostile = b.into_inner().unwrap();

    let layout = d.path().join("layout");
    write_oci_layout(&layout, &[tar_of_dir(&flat), hostile], ENV);
    let r = check(
        &format!("oci:{}", layout.display()),
        &[],
        &[("TMPDIR", &tmp)],
    );
    assert_eq!(r.code, 1, "a100 still blocks: {}", r.stderr);

    // Nothing outside was written, linked or removed; the private directory is gone.
    let listing = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&outside), ["secret"]);
    assert_eq!(
        std::fs::metadata(&secret).unwrap().nlink(),
        1,
        "no hard link to it"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    assert!(!etc_canary.exists());
    assert_eq!(
        listing(&tmp),
        ["canary"],
        "the private directory is removed"
    );
    assert!(!d.path().join("escape-libcuda.so.1").exists());

    // The same verdicts as the clean image, plus one warning naming each refused entry.
    let hosts = r.json["hosts"].as_array().unwrap();
    for h in hosts {
        let f = h["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "image-layer-entry-refused")
            .unwrap_or_else(|| panic!("{h:#}"));
        assert_eq!(f["severity"], "warn");
        let ev = f["evidence"].as_str().unwrap();
        for want in [
            "layer 2: ../escape-libcuda.so.1: `..` in the path leads out of the image",
            "libdotdot.so.1: `..`",
            "libhard.so.1: hard link leads out of the image",
            "layer 2: .wh..: whiteout of the directory itself or its parent",
            "layer 2: usr/.wh...: whiteout",
            "usr/lib/x86_64-linux-gnu/libcuda.so.1: a device or FIFO",
            "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1: a device or FIFO",
        ] {
            assert!(ev.contains(want), "{want:?} in {ev}");
        }
        assert!(ev.starts_with("7 layer entries"), "{ev}");
    }
    let h100 = &hosts[1];
    assert_eq!(h100["verdict"], "warn", "{h100:#}");
    let mut ids = finding_ids(h100);
    ids.sort();
    assert_eq!(ids, ["image-layer-entry-refused"], "{h100:#}");
}

#[test]
fn rootfs_and_fleet_and_text_table() {
    let d = tempfile::tempdir().unwrap();
    let flat = flat_rootfs(&d.path().join("fixture"));
    let fleet = d.path().join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    for h in ["a100-535", "h100-580", "t4-470"] {
        std::fs::copy(
            repo().join(format!("examples/hosts/{h}.json")),
            fleet.join(format!("{h}.json")),
        )
        .unwrap();
    }
    std::fs::write(fleet.join("README"), "not a profile").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--rootfs"])
        .arg(&flat)
        .arg("--fleet")
        .arg(&fleet)
        .arg("--host-root")
        .arg(repo().join("tests/fixtures/h100-580"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    // Without an image config the version comes from the toolkit's version.json, through the
    // /usr/local/cuda link.
    assert!(
        lines[0].contains("a100-535.json  block  35 cudaErrorInsufficientDriver"),
        "{text}"
    );
    assert!(
        lines[0].contains("CUDA 13.0 runtime (/usr/local/cuda/version.json)"),
        "{text}"
    );
    assert!(lines[1].contains("h100-580.json  allow  -"), "{text}");
    assert!(lines[2].contains("t4-470.json    block"), "{text}");
    // Columns line up.
    let col = |l: &str| l.find("  block").or_else(|| l.find("  allow")).unwrap();
    assert_eq!(col(lines[0]), col(lines[1]));

    // One host: {"verdict", "findings"}.
    let out = Command::new(BIN)
        .args(["check", "--json", "--rootfs"])
        .arg(&flat)
        .arg("--host-profile")
        .arg(repo().join("examples/hosts/h100-580.json"))
        .arg("--host-root")
        .arg(repo().join("tests/fixtures/h100-580"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "allow", "{v:#}");
    assert!(
        v["findings"].is_array() && v.get("hosts").is_none(),
        "{v:#}"
    );

    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--rootfs"])
        .arg(&flat)
        .arg("--fleet")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no *.json host profile"));
}

// --- Docker: a daemon of the test's own (tests/it/common/dockerd.rs, as in tests/it/docker.rs),
// without any runtime change.

fn start_docker() -> Dockerd {
    let mut daemon = Dockerd::new();
    daemon.start(None);
    daemon
}

#[test]
fn docker_store_gives_the_same_verdicts() {
    let daemon = start_docker();
    let d = tempfile::tempdir().unwrap();
    let flat = flat_rootfs(&d.path().join("fixture"));
    let mut args = vec!["import".to_string()];
    for e in ENV {
        args.push("--change".into());
        args.push(format!("ENV {e}"));
    }
    args.extend(["-".to_string(), TAG.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(
        &daemon.docker(&args, Some(&tar_of_dir(&flat))),
        "docker import",
    );

    let host = PathBuf::from(daemon.host());
    let envs = [("DOCKER_HOST", host.as_path())];
    let r = check(&format!("docker-daemon:{TAG}"), &[], &envs);
    assert_eq!(verdicts(&r), expected(), "{:#} {}", r.json, r.stderr);

    // A bare name: Podman's store (here an empty one of the test's own) has no such image, so
    // Docker's is asked.
    let store = d.path().join("empty-store");
    let root = store.join("root");
    let runroot = store.join("runroot");
    let flags = [
        "--storage-root",
        root.to_str().unwrap(),
        "--storage-runroot",
        runroot.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    let r = check(TAG, &flags, &envs);
    assert_eq!(verdicts(&r), expected(), "{:#} {}", r.json, r.stderr);

    let r = check("docker-daemon:no-such-image:1", &[], &envs);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("cuda-preflight: docker-daemon:no-such-image:1: docker could not save"),
        "{}",
        r.stderr
    );
}
