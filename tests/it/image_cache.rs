//! The image facts cache through a real engine: Podman with its overlay storage driver (a
//! private store), the project's hooks.d entry and a stand-in for NVIDIA's prestart hook. The
//! cache's key comes from the layer directories Podman mounts; these tests check that two
//! containers of one image share an entry, that an image with the very same files but its own
//! layers does not, and that `check --rootfs` of `podman image mount` sees the identity the
//! image's containers have.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        require_tool("podman");
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        let config = dir.path().join("config.toml");
        // Warn, so every container starts; the verdict is read from the report.
        std::fs::write(&config, "probe = \"never\"\nmode = \"warn\"\n").unwrap();
        let mut ours: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
        )
        .unwrap();
        ours["hook"]["path"] = BIN.into();
        ours["hook"]["args"] = serde_json::json!([
            "cuda-preflight",
            "hook",
            "--config",
            config,
            "--state-dir",
            dir.path().join("state"),
            "--host-profile",
            h100_profile()
        ]);
        std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
        let standin = standin_nvidia_hook(dir.path(), ALL_NODES, true);
        let nvidia = serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": standin, "args": ["nvidia-container-runtime-hook", "prestart"]},
            "when": {"always": true},
            "stages": ["prestart"]
        });
        std::fs::write(hooks.join("oci-nvidia-hook.json"), nvidia.to_string()).unwrap();
        Podman { dir }
    }

    fn podman(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "120", "podman"])
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--runtime",
                "runc",
            ])
            .arg("--hooks-dir")
            .arg(d.join("hooks.d"));
        cmd
    }

    /// An image of busybox and `lib` at `/usr/lib/x86_64-linux-gnu/libk.so`, imported as `name`.
    fn image(&self, name: &str, lib: &Path) {
        let root = self
            .dir
            .path()
            .join(format!("src-{}", name.replace(['/', ':'], "-")));
        std::fs::create_dir_all(&root).unwrap();
        let busybox = busybox_rootfs(&root);
        std::fs::create_dir_all(busybox.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::copy(lib, busybox.join("usr/lib/x86_64-linux-gnu/libk.so")).unwrap();
        let tar = root.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&busybox)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let o = self
            .podman()
            .arg("import")
            .arg(&tar)
            .arg(name)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Run a GPU container of `image`; its report.
    fn run(&self, image: &str) -> serde_json::Value {
        let name = unique_id("cache");
        let o = self
            .podman()
            .args(["run", "--rm", "--network", "none", "--name", &name])
            // This machine's hard limits are below Podman's defaults (as tests/it/podman.rs).
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(["-e", "NVIDIA_VISIBLE_DEVICES=all", image, "/bin/true"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let reports = self.dir.path().join("state/reports");
        let mut reps: Vec<PathBuf> = std::fs::read_dir(&reports)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(reps.len(), 1, "{reps:?}");
        let p = reps.pop().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        std::fs::remove_file(p).unwrap();
        r
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Unmount what the private store still has mounted, so the directory can go.
        let _ = self.podman().args(["image", "umount", "--all"]).output();
        let _ = self.podman().args(["rmi", "--all", "--force"]).output();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("storage/overlay"))
            .output();
    }
}

fn cache_result(r: &serde_json::Value) -> (String, String) {
    let c = &r["binaries"]["image_cache"];
    (
        c["result"].as_str().unwrap_or("-").to_string(),
        c["identity"].as_str().unwrap_or("-").to_string(),
    )
}

fn kernel_blocks(r: &serde_json::Value) -> Vec<String> {
    all_finding_ids(r)
        .into_iter()
        .filter(|id| id.starts_with("kernel-"))
        .collect()
}

#[test]
fn containers_of_one_image_share_an_entry_and_another_image_never_does() {
    let p = Podman::new();
    // sm_80 SASS only: 209 on the H100 of the host profile.
    p.image("localhost/cpf-cache-a:1", &sm80_only());
    let first = p.run("localhost/cpf-cache-a:1");
    let (res, id_a) = cache_result(&first);
    assert_eq!(res, "stored", "{:#}", first["binaries"]);
    assert_eq!(
        kernel_blocks(&first),
        vec!["kernel-image-missing"],
        "{first:#}"
    );
    let second = p.run("localhost/cpf-cache-a:1");
    assert_eq!(
        cache_result(&second),
        ("hit".to_string(), id_a.clone()),
        "{:#}",
        second["binaries"]
    );
    assert_eq!(first["findings"], second["findings"]);

    // The same files imported again are another image to the engine (its own layer
    // directories): its own identity and entry, never a hit on the first image's.
    p.image("localhost/cpf-cache-b:1", &sm80_only());
    let other = p.run("localhost/cpf-cache-b:1");
    let (res, id_b) = cache_result(&other);
    assert_eq!(res, "stored", "{:#}", other["binaries"]);
    assert_ne!(id_a, id_b);

    // `check --rootfs` of the image as the engine mounts it: the identity its containers have,
    // so it fills the scan cache for their first start.
    let o = p
        .podman()
        .args(["image", "mount", "localhost/cpf-cache-a:1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mount = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let state = p.dir.path().join("state");
    let o = Command::new(BIN)
        .args(["check", "--json", "--rootfs", &mount, "--host-profile"])
        .arg(h100_profile())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(
        v["binaries"]["image_cache"]["identity"].as_str(),
        Some(id_a.as_str()),
        "{:#} (containers of the image: {id_a}, of the other: {id_b})",
        v["binaries"]
    );
    // And the same scan-cache keys: its library's inventory is the one the containers stored.
    assert_eq!(
        v["binaries"]["stats"]["cache_hits"], 1,
        "{:#}",
        v["binaries"]
    );
    assert_eq!(
        v["binaries"]["stats"]["cache_misses"], 0,
        "{:#}",
        v["binaries"]
    );

    // `check --image REF --warm` does that itself, with the image's own environment, and
    // unmounts what it mounted.
    let d = p.dir.path();
    let o = Command::new(BIN)
        .args([
            "check",
            "--json",
            "--warm",
            "--image",
            "containers-storage:localhost/cpf-cache-b:1",
        ])
        .arg("--storage-root")
        .arg(d.join("storage"))
        .arg("--storage-runroot")
        .arg(d.join("runroot"))
        .args(["--storage-driver", "overlay", "--host-profile"])
        .arg(h100_profile())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(
        v["binaries"]["image_cache"]["identity"].as_str(),
        Some(id_b.as_str()),
        "{:#}",
        v["binaries"]
    );
    assert_eq!(
        v["binaries"]["stats"]["cache_hits"], 1,
        "{:#}",
        v["binaries"]
    );
    assert_eq!(
        all_finding_ids(&v)
            .iter()
            .filter(|id| id.starts_with("kernel-"))
            .collect::<Vec<_>>(),
        vec!["kernel-image-missing"],
        "{v:#}"
    );
    let o = p.podman().args(["image", "mount"]).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(!listed.contains("cpf-cache-b"), "still mounted: {listed}");
    // An image outside Podman's store is bad input for --warm.
    let o = Command::new(BIN)
        .args(["check", "--warm", "--image", "oci:/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--warm reads an image of Podman's store"));
}

/// NVIDIA's toolkit binaries: `CUDA_PREFLIGHT_NVIDIA_TOOLKIT`, else `../shared/nvidia-toolkit`
/// beside the repository; a missing one fails the test and says so.
fn nvidia_cdi_hook(dir: &Path) -> PathBuf {
    let kit = std::env::var_os("CUDA_PREFLIGHT_NVIDIA_TOOLKIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/nvidia-toolkit"));
    let xz = kit.join("nvidia-cdi-hook.xz");
    assert!(
        xz.is_file(),
        "{} is missing: set CUDA_PREFLIGHT_NVIDIA_TOOLKIT to the directory of NVIDIA's toolkit binaries",
        xz.display()
    );
    let out = dir.join("nvidia-cdi-hook");
    let o = Command::new("xz").arg("-dc").arg(&xz).output().unwrap();
    assert!(o.status.success());
    std::fs::write(&out, o.stdout).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    out
}

/// An overlay mount, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// NVIDIA's real `update-ldcache` and `create-symlinks` CDI hooks write the container's
/// writable layer on every CDI start (`ld.so.cache`, `ld.so.conf.d/00-nvcr-<random>.conf`,
/// links): two containers of one image that got the same hooks still share an entry, and one
/// whose hooks made other links does not.
#[test]
fn nvidia_cdi_hooks_writes_keep_a_second_container_a_hit() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let hook = nvidia_cdi_hook(t);
    let layer = t.join("layer");
    let root = busybox_rootfs(&layer);
    std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
    std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
    std::fs::create_dir_all(root.join("usr/local/nvidia/lib64")).unwrap();
    std::fs::copy(sm80_only(), root.join("usr/lib/x86_64-linux-gnu/libk.so")).unwrap();
    let holder = Command::new("sleep").arg("600").spawn().unwrap();
    let state = t.join("state");
    let start = |n: u32, links: &[&str]| -> serde_json::Value {
        let c = t.join(format!("c{n}"));
        for s in ["upper", "work", "merged"] {
            std::fs::create_dir_all(c.join(s)).unwrap();
        }
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                root.display(),
                c.join("upper").display(),
                c.join("work").display()
            ))
            .arg(c.join("merged"))
            .status()
            .unwrap();
        assert!(st.success(), "mount overlay (needs root)");
        let _m = Mounted(c.join("merged"));
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/",
                        "env": ["PATH=/bin", format!("HOSTNAME=c{n}")]},
            "root": {"path": c.join("merged")},
            "linux": {"devices": [
                {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]}
        });
        std::fs::write(c.join("config.json"), spec.to_string()).unwrap();
        let state_json = serde_json::json!({"ociVersion": "1.0.2", "id": format!("c{n}"),
            "status": "creating", "pid": holder.id(), "bundle": c});
        let mut args: Vec<String> = vec!["create-symlinks".into()];
        for l in links {
            args.push("--link".into());
            args.push(l.to_string());
        }
        for hook_args in [
            args,
            vec![
                "update-ldcache".into(),
                "--folder".into(),
                "/usr/local/nvidia/lib64".into(),
            ],
        ] {
            let mut child = Command::new(&hook)
                .args(&hook_args)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(state_json.to_string().as_bytes())
                .unwrap();
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "nvidia-cdi-hook {hook_args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(c.join("upper/etc/ld.so.cache").is_file());
        let o = Command::new(BIN)
            .args(["check", "--json", "--bundle"])
            .arg(&c)
            .arg("--host-profile")
            .arg(h100_profile())
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    };
    let link = "libk.so::/usr/lib/x86_64-linux-gnu/libk.so.1";
    let first = start(1, &[link]);
    assert_eq!(cache_result(&first).0, "stored", "{:#}", first["binaries"]);
    let second = start(2, &[link]);
    assert_eq!(cache_result(&second).0, "hit", "{:#}", second["binaries"]);
    assert_eq!(first["findings"], second["findings"]);
    let other = start(3, &[link, "libk.so::/usr/lib/x86_64-linux-gnu/libk2.so"]);
    assert_eq!(cache_result(&other).0, "stored", "{:#}", other["binaries"]);
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
}
