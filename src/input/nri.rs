//! Input: the container NRI hands a plugin at CreateContainer, as an OCI runtime spec. containerd
//! has applied CDI by then (its devices, mounts, env and hooks are in the container), so the spec
//! built here is what `config.json` will hold, less what later plugins add. There is no rootfs to
//! read yet (the snapshot is mounted when the task starts) and no pid.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::nri::api;

/// The annotation key the container's CDI device names are put under for GPU detection: NRI
/// hands them over as their own field, the detection reads `cdi.k8s.io/*` annotations.
pub const CDI_ANNOTATION: &str = "cdi.k8s.io/nri-cdi-devices";

/// The OCI spec of `c`, with `rootfs` as `root.path` (the rootfs does not exist yet).
pub fn spec_json(c: &api::Container, rootfs: &str) -> Value {
    let user = c.user.as_ref();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs},
        "process": {
            "args": c.args,
            "env": c.env,
            "cwd": "/",
            "user": {
                "uid": user.map_or(0, |u| u.uid),
                "gid": user.map_or(0, |u| u.gid),
                "additionalGids": user.map(|u| u.additional_gids.clone()).unwrap_or_default(),
            },
        },
        "mounts": c.mounts.iter().map(|m| json!({
            "destination": m.destination,
            "type": m.type_,
            "source": m.source,
            "options": m.options,
        })).collect::<Vec<_>>(),
        "annotations": c.annotations,
    });
    if let Some(h) = c.hooks.as_ref() {
        spec["hooks"] = json!({
            "prestart": hooks(&h.prestart),
            "createRuntime": hooks(&h.create_runtime),
            "createContainer": hooks(&h.create_container),
            "startContainer": hooks(&h.start_container),
            "poststart": hooks(&h.poststart),
            "poststop": hooks(&h.poststop),
        });
    }
    if let Some(l) = c.linux.as_ref() {
        let devices: Vec<Value> = l
            .devices
            .iter()
            .map(|d| {
                let mut v =
                    json!({"path": d.path, "type": d.type_, "major": d.major, "minor": d.minor});
                if let Some(m) = d.file_mode.as_ref() {
                    v["fileMode"] = json!(m.value);
                }
                if let Some(u) = d.uid.as_ref() {
                    v["uid"] = json!(u.value);
                }
                if let Some(g) = d.gid.as_ref() {
                    v["gid"] = json!(g.value);
                }
                v
            })
            .collect();
        let rules: Option<Vec<Value>> = l.resources.as_ref().map(|r| {
            r.devices
                .iter()
                .map(|d| {
                    let mut v = json!({"allow": d.allow, "access": d.access});
                    if !d.type_.is_empty() {
                        v["type"] = json!(d.type_);
                    }
                    if let Some(m) = d.major.as_ref() {
                        v["major"] = json!(m.value);
                    }
                    if let Some(m) = d.minor.as_ref() {
                        v["minor"] = json!(m.value);
                    }
                    v
                })
                .collect()
        });
        let mut linux = json!({
            "devices": devices,
            "namespaces": l.namespaces.iter().map(|n| {
                let mut v = json!({"type": n.type_});
                if !n.path.is_empty() {
                    v["path"] = json!(n.path);
                }
                v
            }).collect::<Vec<_>>(),
        });
        if !l.cgroups_path.is_empty() {
            linux["cgroupsPath"] = json!(l.cgroups_path);
        }
        if let Some(rules) = rules {
            linux["resources"] = json!({"devices": rules});
        }
        spec["linux"] = linux;
    }
    spec
}

fn hooks(list: &[api::Hook]) -> Vec<Value> {
    list.iter()
        .map(|h| {
            let mut v = json!({"path": h.path, "args": h.args, "env": h.env});
            if let Some(t) = h.timeout.as_ref() {
                v["timeout"] = json!(t.value);
            }
            v
        })
        .collect()
}

/// The container's CDI requests as an annotation map for `facts::container::detect`.
pub fn cdi_annotations(c: &api::Container) -> HashMap<String, String> {
    let names: Vec<&str> = c.CDI_devices.iter().map(|d| d.name.as_str()).collect();
    let mut m = HashMap::new();
    if !names.is_empty() {
        m.insert(CDI_ANNOTATION.to_string(), names.join(","));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container::{GpuRequest, detect};
    use oci_spec::runtime::Spec;

    fn device(path: &str, major: i64, minor: i64) -> api::LinuxDevice {
        api::LinuxDevice {
            path: path.into(),
            type_: "c".into(),
            major,
            minor,
            ..Default::default()
        }
    }

    fn container(devices: Vec<api::LinuxDevice>, env: &[&str], cdi: &[&str]) -> api::Container {
        let mut linux = api::LinuxContainer::new();
        linux.devices = devices;
        let mut rule = api::LinuxDeviceCgroup::new();
        rule.allow = true;
        rule.type_ = "c".into();
        rule.major = protobuf::MessageField::some(api::OptionalInt64 {
            value: 195,
            ..Default::default()
        });
        rule.access = "rwm".into();
        let mut res = api::LinuxResources::new();
        res.devices = vec![rule];
        linux.resources = protobuf::MessageField::some(res);
        let mut hooks = api::Hooks::new();
        hooks.create_container = vec![api::Hook {
            path: "/usr/bin/nvidia-cdi-hook".into(),
            args: vec!["nvidia-cdi-hook".into(), "update-ldcache".into()],
            ..Default::default()
        }];
        api::Container {
            id: "c1".into(),
            args: vec!["sh".into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            linux: protobuf::MessageField::some(linux),
            hooks: protobuf::MessageField::some(hooks),
            CDI_devices: cdi
                .iter()
                .map(|n| api::CDIDevice {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// What the pipeline's one GPU detection says about each kind of NRI container.
    #[test]
    fn nri_containers_are_detected_like_bundles() {
        let cases: Vec<(&str, api::Container, &str)> = vec![
            (
                "no devices, no env",
                container(vec![], &["PATH=/bin"], &[]),
                "none",
            ),
            (
                "CDI-injected nodes",
                container(
                    vec![
                        device("/dev/nvidiactl", 195, 255),
                        device("/dev/nvidia0", 195, 0),
                    ],
                    &["NVIDIA_VISIBLE_DEVICES=void"],
                    &["nvidia.com/gpu=0"],
                ),
                "spec-devices",
            ),
            (
                "CDI request with no node in the spec",
                container(vec![], &[], &["nvidia.com/gpu=all"]),
                "cdi",
            ),
            (
                "another vendor's CDI device",
                container(vec![], &[], &["vendor.com/fpga=0"]),
                "none",
            ),
            (
                "other device nodes",
                container(vec![device("/dev/fuse", 10, 229)], &[], &[]),
                "none",
            ),
            // The envvar mode's variable without the NVIDIA runtime's hook gets no GPU.
            (
                "env only",
                container(vec![], &["NVIDIA_VISIBLE_DEVICES=all"], &[]),
                "env-only",
            ),
        ];
        for (name, c, want) in cases {
            let spec: Spec = serde_json::from_value(spec_json(&c, "/nonexistent")).unwrap();
            let got = detect(&spec, Some(&cdi_annotations(&c)));
            let kind = serde_json::to_value(&got).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(kind, want, "{name}");
        }
    }

    #[test]
    fn devices_rules_hooks_and_user_reach_the_spec() {
        let mut c = container(vec![device("/dev/nvidia0", 195, 0)], &["A=1"], &[]);
        c.user = protobuf::MessageField::some(api::User {
            uid: 1000,
            gid: 100,
            additional_gids: vec![44],
            ..Default::default()
        });
        let spec: Spec = serde_json::from_value(spec_json(&c, "/r")).unwrap();
        let view = crate::facts::container::view_from_spec(&spec);
        assert_eq!(
            view.nodes,
            vec![(
                "/dev/nvidia0".to_string(),
                crate::facts::container::Node::Char {
                    major: 195,
                    minor: 0
                }
            )]
        );
        let rules = view.cgroup.unwrap();
        assert!(crate::facts::container::cgroup_allows(&rules, 195, 0));
        assert!(!crate::facts::container::cgroup_allows(&rules, 238, 0));
        let user = spec.process().as_ref().unwrap().user();
        assert_eq!((user.uid(), user.gid()), (1000, 100));
        let cc = spec
            .hooks()
            .as_ref()
            .unwrap()
            .create_container()
            .as_ref()
            .unwrap();
        assert_eq!(cc[0].path().to_str(), Some("/usr/bin/nvidia-cdi-hook"));
        assert!(matches!(detect(&spec, None), GpuRequest::SpecDevices));
    }
}
