//! Container facts: does this container ask for a GPU ([`gpu_request`]), and which NVIDIA device
//! nodes and device cgroup rules will it really have (here).
//!
//! How a GPU is asked for decides where the devices are (`docs/design.md`, "What the spec
//! shows"): in `linux.devices` (CDI, `--device`), or injected by an NVIDIA prestart hook into the
//! container's mount namespace just before we run, or nowhere (the variable alone).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, Spec};
use serde::Serialize;

pub mod gpu_request;

pub use gpu_request::{GpuRequest, detect, is_nvidia_node, is_nvidia_runtime};

/// What the container has at one device path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "is", rename_all = "kebab-case")]
pub enum Node {
    Char {
        major: u32,
        minor: u32,
    },
    /// Present but not a character device (a regular file, a directory, a block device).
    NotChar,
    Missing,
}

/// Where the device view was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewSource {
    /// `linux.devices` of the spec.
    Spec,
    /// The container's mount namespace, through `/proc/<pid>/root`.
    Namespace,
}

/// One `linux.resources.devices` entry, or one line of a cgroup v1 `devices.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupRule {
    pub allow: bool,
    /// `a`, `c` or `b`
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

/// The NVIDIA devices the container will have, as far as we could see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    pub source: ViewSource,
    /// `/dev/nvidia*` paths and what is there; for the spec, every NVIDIA entry of
    /// `linux.devices` plus the required ones that are absent.
    pub nodes: Vec<(String, Node)>,
    /// Device cgroup rules in order, where known (the spec's, or the cgroup v1 list).
    pub cgroup: Option<Vec<CgroupRule>>,
    /// Where the cgroup rules came from, for the evidence.
    pub cgroup_source: Option<String>,
}

pub fn spec_cgroup_rules(spec: &Spec) -> Option<Vec<CgroupRule>> {
    let rules = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .devices()
        .as_ref()?;
    Some(
        rules
            .iter()
            .map(|r| CgroupRule {
                allow: r.allow(),
                kind: match r.typ() {
                    Some(LinuxDeviceType::C | LinuxDeviceType::U) => 'c',
                    Some(LinuxDeviceType::B) => 'b',
                    Some(LinuxDeviceType::P) => 'p',
                    Some(LinuxDeviceType::A) | None => 'a',
                },
                major: r.major().and_then(|m| u32::try_from(m).ok()),
                minor: r.minor().and_then(|m| u32::try_from(m).ok()),
                access: r.access().clone().unwrap_or_else(|| "rwm".into()),
            })
            .collect(),
    )
}

/// The device view from the spec: what runc will create.
pub fn view_from_spec(spec: &Spec) -> DeviceView {
    let mut nodes = Vec::new();
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        if !is_nvidia_node(d.path()) {
            continue;
        }
        let node = match (d.typ(), u32::try_from(d.major()), u32::try_from(d.minor())) {
            (LinuxDeviceType::C | LinuxDeviceType::U, Ok(major), Ok(minor)) => {
                Node::Char { major, minor }
            }
            _ => Node::NotChar,
        };
        nodes.push((d.path().display().to_string(), node));
    }
    DeviceView {
        source: ViewSource::Spec,
        nodes,
        cgroup: spec_cgroup_rules(spec),
        cgroup_source: Some("linux.resources.devices in config.json".into()),
    }
}

/// The rootfs as the container's mount namespace shows it: before `pivot_root` it is mounted at
/// its own absolute path there, with whatever the NVIDIA hook mounted into it.
pub fn rootfs_in_namespace(pid: i32, rootfs: &Path, proc_root: &Path) -> PathBuf {
    proc_root
        .join(pid.to_string())
        .join("root")
        .join(rootfs.strip_prefix("/").unwrap_or(rootfs))
}

/// The device view from the container's mount namespace: `/dev/nvidia*` under
/// `/proc/<pid>/root/<rootfs>`, read without following the image out of its rootfs.
pub fn view_from_namespace(
    pid: i32,
    rootfs: &Path,
    proc_root: &Path,
) -> std::io::Result<DeviceView> {
    let root = proc_root
        .join(pid.to_string())
        .join("root")
        .join(rootfs.strip_prefix("/").unwrap_or(rootfs));
    let mut view = view_from_root(&root)?;
    if let Some((rules, src)) = cgroup_v1_devices_list(pid, proc_root) {
        view.cgroup = Some(rules);
        view.cgroup_source = Some(src);
    }
    Ok(view)
}

/// The device view from a rootfs path that already shows the container's mounts: a hook at
/// `createContainer` runs inside the container's mount namespace before `pivot_root`, so the
/// bundle's rootfs path is the container's view (`/dev` made by runc and the NVIDIA hook).
/// No cgroup rules: the pid the state gives there is not a host pid.
pub fn view_from_root(root: &Path) -> std::io::Result<DeviceView> {
    let dev = crate::facts::image::rootfs::resolve(root, Path::new("/dev"))?;
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir(&dev)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("nvidia") {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path())?;
        let node = if meta.file_type().is_char_device() {
            let rdev = meta.rdev();
            Node::Char {
                major: libc::major(rdev),
                minor: libc::minor(rdev),
            }
        } else {
            Node::NotChar
        };
        nodes.push((format!("/dev/{name}"), node));
    }
    nodes.sort();
    Ok(DeviceView {
        source: ViewSource::Namespace,
        nodes,
        cgroup: None,
        cgroup_source: None,
    })
}

/// cgroup v1 exposes the effective rules as `devices.list`; v2 enforces them with an eBPF program
/// that cannot be read back as rules, so there the view has none.
fn cgroup_v1_devices_list(pid: i32, proc_root: &Path) -> Option<(Vec<CgroupRule>, String)> {
    cgroup_v1_devices_list_of(&proc_root.join(format!("{pid}/cgroup")))
}

/// As [`cgroup_v1_devices_list`] for the process whose `/proc/…/cgroup` file is `cgroup_file`:
/// a hook at `createContainer` reads `/proc/self/cgroup`, since runc has put `runc init`, and so
/// its hooks, into the container's cgroup by then.
pub fn cgroup_v1_devices_list_of(cgroup_file: &Path) -> Option<(Vec<CgroupRule>, String)> {
    let cg = std::fs::read_to_string(cgroup_file).ok()?;
    let path = cg.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls
            .split(',')
            .any(|c| c == "devices")
            .then(|| path.to_string())
    })?;
    let list_path = PathBuf::from("/sys/fs/cgroup/devices")
        .join(path.trim_start_matches('/'))
        .join("devices.list");
    let text = std::fs::read_to_string(&list_path).ok()?;
    Some((parse_devices_list(&text), list_path.display().to_string()))
}

/// `devices.list` lines: `c 195:* rwm`, `a *:* rwm`. Lines are all allow rules (v1 lists what is
/// allowed).
pub fn parse_devices_list(text: &str) -> Vec<CgroupRule> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let kind = it.next()?.chars().next()?;
            let (maj, min) = it.next()?.split_once(':')?;
            let access = it.next().unwrap_or("").to_string();
            Some(CgroupRule {
                allow: true,
                kind,
                major: maj.parse().ok(),
                minor: min.parse().ok(),
                access,
            })
        })
        .collect()
}

/// Whether a device cgroup's rules let the container open char device `major:minor` for read and
/// write. Spec rules apply in order with the last match deciding and default deny, as runc does;
/// a v1 list holds only allow rules.
pub fn cgroup_allows(rules: &[CgroupRule], major: u32, minor: u32) -> bool {
    let mut allowed_r = false;
    let mut allowed_w = false;
    for r in rules {
        let kind_matches = r.kind == 'a' || r.kind == 'c';
        let major_matches = r.major.is_none_or(|m| m == major);
        let minor_matches = r.minor.is_none_or(|m| m == minor);
        if !(kind_matches && major_matches && minor_matches) {
            continue;
        }
        if r.access.contains('r') {
            allowed_r = r.allow;
        }
        if r.access.contains('w') {
            allowed_w = r.allow;
        }
    }
    allowed_r && allowed_w
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const NV_HOOK: &str = r#""hooks":{"prestart":[{"path":"/usr/bin/nvidia-container-runtime-hook","args":["nvidia-container-runtime-hook","prestart"]}]}"#;

    #[test]
    fn detection_table() {
        let proc_env = |env: &str| {
            format!(r#""process":{{"user":{{"uid":0,"gid":0}},"cwd":"/","env":[{env}]}}"#)
        };
        let cases: Vec<(&str, String, &str)> = vec![
            ("no gpu", format!("{{\"ociVersion\":\"1.0.2\",{}}}", proc_env(r#""PATH=/bin""#)), "none"),
            (
                "explicit device",
                r#"{"ociVersion":"1.0.2","linux":{"devices":[{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}]}}"#.into(),
                "spec-devices",
            ),
            (
                "other devices only",
                r#"{"ociVersion":"1.0.2","linux":{"devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}]}}"#.into(),
                "none",
            ),
            (
                "cdi annotation",
                r#"{"ociVersion":"1.0.2","annotations":{"cdi.k8s.io/gpu":"nvidia.com/gpu=0,nvidia.com/gpu=1"}}"#.into(),
                "cdi",
            ),
            (
                "cdi annotation other vendor",
                r#"{"ociVersion":"1.0.2","annotations":{"cdi.k8s.io/x":"vendor.com/fpga=0"}}"#.into(),
                "none",
            ),
            ("env all with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=all""#)), "injected-by-hook"),
            ("env uuid with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=GPU-2f6a8e1c""#)), "injected-by-hook"),
            ("env mig with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=MIG-0/1/2""#)), "injected-by-hook"),
            ("env all, no hook", format!("{{\"ociVersion\":\"1.0.2\",{}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=all""#)), "env-only"),
            ("env void with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=void""#)), "none"),
            ("env none with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=none""#)), "none"),
            ("env empty with hook", format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=""#)), "none"),
            (
                "last env entry wins",
                format!("{{\"ociVersion\":\"1.0.2\",{},{NV_HOOK}}}", proc_env(r#""NVIDIA_VISIBLE_DEVICES=all","NVIDIA_VISIBLE_DEVICES=void""#)),
                "none",
            ),
        ];
        for (name, json, want) in cases {
            let got = detect(&spec(&json), None);
            let kind = serde_json::to_value(&got).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(kind, want, "{name}");
        }
        // State annotations count too (Podman passes CDI requests there).
        let mut ann = HashMap::new();
        ann.insert(
            "cdi.k8s.io/devices".to_string(),
            "nvidia.com/gpu=all".to_string(),
        );
        assert_eq!(
            detect(&spec(r#"{"ociVersion":"1.0.2"}"#), Some(&ann)),
            GpuRequest::Cdi {
                devices: vec!["nvidia.com/gpu=all".into()]
            }
        );
    }

    #[test]
    fn the_variable_alone_is_a_gpu_request_only_through_nvidias_runtime() {
        let nvidia = Path::new("/usr/bin/nvidia-container-runtime");
        let runc = Path::new("/usr/bin/runc");
        let env_only = GpuRequest::EnvOnly {
            visible: "all".into(),
        };
        // (request, next runtime, gets a GPU)
        let cases = [
            (GpuRequest::None, nvidia, false),
            (GpuRequest::None, runc, false),
            (env_only.clone(), nvidia, true),
            (env_only, runc, false),
            (GpuRequest::SpecDevices, runc, true),
        ];
        for (request, next, want) in cases {
            assert_eq!(
                request.wants_gpu_through(next),
                want,
                "{request:?} {next:?}"
            );
        }
    }

    #[test]
    fn cgroup_rules_last_match_wins_default_deny() {
        let r = |allow, kind, major, minor, access: &str| CgroupRule {
            allow,
            kind,
            major,
            minor,
            access: access.into(),
        };
        let cases: Vec<(&str, Vec<CgroupRule>, bool)> = vec![
            ("no rules: default deny", vec![], false),
            ("deny all", vec![r(false, 'a', None, None, "rwm")], false),
            (
                "deny all then allow major",
                vec![
                    r(false, 'a', None, None, "rwm"),
                    r(true, 'c', Some(195), None, "rwm"),
                ],
                true,
            ),
            (
                "allow then deny exact",
                vec![
                    r(true, 'c', Some(195), None, "rw"),
                    r(false, 'c', Some(195), Some(0), "rwm"),
                ],
                false,
            ),
            (
                "read only",
                vec![r(true, 'c', Some(195), Some(0), "r")],
                false,
            ),
            (
                "block type does not match",
                vec![r(true, 'b', Some(195), None, "rwm")],
                false,
            ),
            ("allow all", vec![r(true, 'a', None, None, "rwm")], true),
            (
                "other major",
                vec![r(true, 'c', Some(238), None, "rwm")],
                false,
            ),
        ];
        for (name, rules, want) in cases {
            assert_eq!(cgroup_allows(&rules, 195, 0), want, "{name}");
        }
    }

    #[test]
    fn devices_list_v1() {
        let rules = parse_devices_list("c 1:3 rwm\nc 195:* rwm\na *:* rwm\n");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1].major, Some(195));
        assert_eq!(rules[1].minor, None);
        assert!(cgroup_allows(&rules[..2], 195, 255));
        assert!(!cgroup_allows(&rules[..2], 238, 0));
    }
}
