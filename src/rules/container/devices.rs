//! The device rule: the NVIDIA device nodes and device cgroup rules the container will really
//! have. Every CUDA process opens `/dev/nvidiactl`, `/dev/nvidia-uvm` and one `/dev/nvidiaN` per
//! GPU it uses; a node that is absent, has the wrong major, or is denied by the device cgroup
//! makes `cuInit` fail with the error the knowledge table records for that node.

use std::collections::BTreeMap;

use crate::facts::container::{DeviceView, GpuRequest, Node, ViewSource, cgroup_allows};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::{NodeClass, device_error};

/// Minor of `/dev/nvidiactl` (fixed by the driver).
const CTL_MINOR: u32 = 255;

struct Required {
    path: String,
    class: NodeClass,
    major_name: &'static str,
}

/// GPUs named by index in `NVIDIA_VISIBLE_DEVICES` (`0,1`); `all`, UUIDs and MIG ids give none,
/// and then at least one GPU node is required.
fn visible_indices(visible: &str) -> Vec<u32> {
    visible
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn predicted(class: NodeClass, denied: bool) -> (Predicted, &'static str) {
    let (call, code) = device_error(class, denied);
    (Predicted::driver(code), call)
}

fn fix_for(source: ViewSource, path: &str) -> String {
    match source {
        ViewSource::Spec => format!(
            "Add {path} to the container's devices (CDI spec or --device {path}); regenerate the CDI spec with \
             `nvidia-ctk cdi generate` if it was written for another driver."
        ),
        ViewSource::Namespace => format!(
            "The NVIDIA hook did not give the container {path}: check that the host has the node (`nvidia-modprobe`, \
             `nvidia-ctk system create-device-nodes`) and the toolkit's logs."
        ),
    }
}

/// Judge the device view. `view` is `Err(why)` where there is none to judge, e.g. devices
/// injected by a hook and no container process to look into (offline `check`).
pub fn device_findings(
    request: &GpuRequest,
    view: Result<&DeviceView, &str>,
    majors: &BTreeMap<String, u32>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let GpuRequest::EnvOnly { visible } = request {
        out.push(Finding::new(
            FindingId::GpuEnvWithoutRuntime,
            Severity::Warn,
            Some(Predicted::message(Api::Loader, "libcuda.so.1: cannot open shared object file: No such file or directory")),
            format!(
                "NVIDIA_VISIBLE_DEVICES={visible} is set (every nvidia/cuda image sets it), but the spec has no NVIDIA \
                 hook or devices: this runtime gives the container no GPU"
            ),
            "Start it with --gpus (Docker), --device nvidia.com/gpu=all (CDI) or --runtime nvidia if it needs a GPU; \
             otherwise ignore this.",
        ));
        return out;
    }
    if !request.wants_gpu() {
        return out;
    }
    let view = match view {
        Ok(v) => v,
        Err(why) => {
            out.push(Finding::skipped(FindingId::DeviceNodesSkipped, why));
            return out;
        }
    };
    let mut required = vec![
        Required {
            path: "/dev/nvidiactl".into(),
            class: NodeClass::Ctl,
            major_name: "nvidia",
        },
        Required {
            path: "/dev/nvidia-uvm".into(),
            class: NodeClass::Uvm,
            major_name: "nvidia-uvm",
        },
    ];
    let gpu_nodes: Vec<&(String, Node)> = view
        .nodes
        .iter()
        .filter(|(p, _)| {
            p.strip_prefix("/dev/nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let indices = match request {
        GpuRequest::InjectedByHook { visible, .. } => visible_indices(visible),
        _ => Vec::new(),
    };
    for i in &indices {
        required.push(Required {
            path: format!("/dev/nvidia{i}"),
            class: NodeClass::Gpu,
            major_name: "nvidia",
        });
    }
    if indices.is_empty() {
        match gpu_nodes.first() {
            Some((p, _)) => required.push(Required {
                path: p.clone(),
                class: NodeClass::Gpu,
                major_name: "nvidia",
            }),
            None => required.push(Required {
                path: "/dev/nvidia0".into(),
                class: NodeClass::Gpu,
                major_name: "nvidia",
            }),
        }
        // Every GPU node present is used by `all`; judge the others as well.
        for (p, _) in gpu_nodes.iter().skip(1) {
            required.push(Required {
                path: p.clone(),
                class: NodeClass::Gpu,
                major_name: "nvidia",
            });
        }
    }
    let where_ = match view.source {
        ViewSource::Spec => "linux.devices of config.json",
        ViewSource::Namespace => "the container's /dev",
    };
    if majors.get("nvidia").is_none() || majors.get("nvidia-uvm").is_none() {
        out.push(Finding::skipped(
            FindingId::DeviceMajorsSkipped,
            "the host's /proc/devices lists no nvidia or nvidia-uvm major (driver not loaded, or no host profile): \
             device majors and cgroup rules were not checked",
        ));
    }
    let mut cgroup_checked = false;
    for req in &required {
        let node = view
            .nodes
            .iter()
            .find(|(p, _)| *p == req.path)
            .map(|(_, n)| n)
            .unwrap_or(&Node::Missing);
        let (major, minor) = match node {
            Node::Missing | Node::NotChar => {
                let (pred, call) = predicted(req.class, false);
                let what = if *node == Node::Missing {
                    "is missing from"
                } else {
                    "is not a character device in"
                };
                out.push(Finding::new(
                    FindingId::DeviceNodeMissing,
                    Severity::Block,
                    Some(pred),
                    format!("{} {what} {where_}; {call} fails without it", req.path),
                    fix_for(view.source, &req.path),
                ));
                continue;
            }
            Node::Char { major, minor } => (*major, *minor),
        };
        let host_major = majors.get(req.major_name).copied();
        if let Some(hm) = host_major
            && hm != major
        {
            let (pred, call) = predicted(req.class, false);
            out.push(Finding::new(
                FindingId::DeviceNodeWrongMajor,
                Severity::Block,
                Some(pred),
                format!(
                    "{} in {where_} is char {major}:{minor}, but the host's {} driver has major {hm} (/proc/devices); \
                     {call} opens a device that is not the GPU driver's",
                    req.path, req.major_name
                ),
                format!("Recreate {} with major {hm} (regenerate the CDI spec, or reload the driver and its nodes).", req.path),
            ));
            continue;
        }
        if req.class == NodeClass::Ctl && minor != CTL_MINOR {
            let (pred, _) = predicted(req.class, false);
            out.push(Finding::new(
                FindingId::DeviceNodeWrongMajor,
                Severity::Block,
                Some(pred),
                format!("/dev/nvidiactl in {where_} has minor {minor}, the driver's control node is minor {CTL_MINOR}"),
                "Recreate /dev/nvidiactl as char 195:255 (regenerate the CDI spec).",
            ));
            continue;
        }
        if let Some(rules) = &view.cgroup {
            cgroup_checked = true;
            if !cgroup_allows(rules, major, minor) {
                let (pred, call) = predicted(req.class, true);
                out.push(Finding::new(
                    FindingId::DeviceCgroupDenied,
                    Severity::Block,
                    Some(pred),
                    format!(
                        "{} (char {major}:{minor}) is present but the device cgroup ({}) does not allow rw on it; \
                         {call} gets EPERM opening it",
                        req.path,
                        view.cgroup_source.as_deref().unwrap_or("cgroup")
                    ),
                    format!(
                        "Allow c {major}:{minor} rw in linux.resources.devices (Docker: --device-cgroup-rule 'c {major}:* rwm'; \
                         Kubernetes: the device plugin or CDI adds it)."
                    ),
                ));
            }
        }
    }
    if !cgroup_checked && view.cgroup.is_none() && view.source == ViewSource::Namespace {
        out.push(Finding::skipped(
            FindingId::DeviceCgroupSkipped,
            "the container's device cgroup is cgroup v2 (an eBPF program) or unreadable: its rules were not checked",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container::CgroupRule;

    fn majors() -> BTreeMap<String, u32> {
        [("nvidia", 195), ("nvidiactl", 195), ("nvidia-uvm", 238)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn full_nodes() -> Vec<(String, Node)> {
        vec![
            (
                "/dev/nvidia-uvm".into(),
                Node::Char {
                    major: 238,
                    minor: 0,
                },
            ),
            (
                "/dev/nvidia0".into(),
                Node::Char {
                    major: 195,
                    minor: 0,
                },
            ),
            (
                "/dev/nvidiactl".into(),
                Node::Char {
                    major: 195,
                    minor: 255,
                },
            ),
        ]
    }

    fn view(nodes: Vec<(String, Node)>, cgroup: Option<Vec<CgroupRule>>) -> DeviceView {
        DeviceView {
            source: ViewSource::Spec,
            nodes,
            cgroup,
            cgroup_source: None,
        }
    }

    fn allow_all() -> Vec<CgroupRule> {
        vec![CgroupRule {
            allow: true,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        }]
    }

    fn ids(f: &[Finding]) -> Vec<String> {
        f.iter()
            .map(|f| format!("{}:{}", f.id, f.severity.as_str()))
            .collect()
    }

    fn without(path: &str) -> Vec<(String, Node)> {
        full_nodes()
            .into_iter()
            .filter(|(p, _)| p != path)
            .collect()
    }

    #[test]
    fn device_rule_table() {
        let hook = GpuRequest::InjectedByHook {
            visible: "all".into(),
            hook: "/usr/bin/nvidia-container-runtime-hook".into(),
        };
        let deny_uvm = vec![
            CgroupRule {
                allow: true,
                kind: 'a',
                major: None,
                minor: None,
                access: "rwm".into(),
            },
            CgroupRule {
                allow: false,
                kind: 'c',
                major: Some(238),
                minor: None,
                access: "rwm".into(),
            },
        ];
        let mut wrong_uvm = full_nodes();
        wrong_uvm[0].1 = Node::Char {
            major: 511,
            minor: 0,
        };
        let cases: Vec<(&str, GpuRequest, Result<DeviceView, &str>, Vec<&str>)> = vec![
            (
                "all present, allowed",
                GpuRequest::SpecDevices,
                Ok(view(full_nodes(), Some(allow_all()))),
                vec![],
            ),
            (
                "no ctl",
                GpuRequest::SpecDevices,
                Ok(view(without("/dev/nvidiactl"), Some(allow_all()))),
                vec!["device-node-missing:block"],
            ),
            (
                "no uvm",
                GpuRequest::SpecDevices,
                Ok(view(without("/dev/nvidia-uvm"), None)),
                vec!["device-node-missing:block"],
            ),
            (
                "no gpu node",
                GpuRequest::SpecDevices,
                Ok(view(without("/dev/nvidia0"), None)),
                vec!["device-node-missing:block"],
            ),
            (
                "uvm denied",
                GpuRequest::SpecDevices,
                Ok(view(full_nodes(), Some(deny_uvm))),
                vec!["device-cgroup-denied:block"],
            ),
            (
                "default deny",
                GpuRequest::SpecDevices,
                Ok(view(full_nodes(), Some(vec![]))),
                vec!["device-cgroup-denied:block"; 3],
            ),
            (
                "stale uvm major",
                GpuRequest::SpecDevices,
                Ok(view(wrong_uvm, None)),
                vec!["device-node-wrong-major:block"],
            ),
            (
                "offline injected",
                hook.clone(),
                Err("offline"),
                vec!["device-nodes-skipped:info"],
            ),
            (
                "index 1 asked, only 0 injected",
                GpuRequest::InjectedByHook {
                    visible: "1".into(),
                    hook: "h".into(),
                },
                Ok(view(full_nodes(), None)),
                vec!["device-node-missing:block"],
            ),
            (
                "env only",
                GpuRequest::EnvOnly {
                    visible: "all".into(),
                },
                Err("no gpu"),
                vec!["gpu-env-without-runtime:warn"],
            ),
            ("no gpu", GpuRequest::None, Err("no gpu"), vec![]),
        ];
        for (name, req, v, want) in cases {
            let got = device_findings(&req, v.as_ref().map_err(|e| *e), &majors());
            assert_eq!(ids(&got), want, "{name}");
            for f in &got {
                if f.severity == Severity::Block {
                    let p = f.predicted.as_ref().expect("a block predicts an error");
                    assert!(
                        p.name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("CUDA_ERROR_")),
                        "{name}"
                    );
                    assert!(!f.fix.is_empty() && !f.evidence.is_empty());
                }
            }
        }
    }

    #[test]
    fn missing_node_names_the_node_and_the_driver_error() {
        let got = device_findings(
            &GpuRequest::SpecDevices,
            Ok(&view(without("/dev/nvidia-uvm"), None)),
            &majors(),
        );
        assert!(
            got[0].evidence.starts_with("/dev/nvidia-uvm is missing"),
            "{}",
            got[0].evidence
        );
        let (_, code) = device_error(NodeClass::Uvm, false);
        assert_eq!(got[0].predicted.as_ref().unwrap().code, Some(code));
    }

    #[test]
    fn no_host_majors_is_said_not_guessed() {
        let got = device_findings(
            &GpuRequest::SpecDevices,
            Ok(&view(full_nodes(), None)),
            &BTreeMap::new(),
        );
        assert_eq!(ids(&got), vec!["device-majors-skipped:info"]);
    }
}
