//! Rootless containers and user namespaces: the container's user, through the spec's uid/gid
//! mappings, must be able to open the host's NVIDIA nodes for read and write — in a user
//! namespace runc bind-mounts them from the host rather than creating them, so their host owner
//! and mode decide. A node it cannot open fails `cuInit` as a denied node does.

use crate::facts::host::state::{HostNode, UserNs};
use crate::finding::{Finding, FindingId, Predicted, Severity};
use crate::knowledge::{NodeClass, device_error};

fn class(path: &str) -> Option<NodeClass> {
    match path {
        "/dev/nvidiactl" => Some(NodeClass::Ctl),
        "/dev/nvidia-uvm" => Some(NodeClass::Uvm),
        p => p
            .strip_prefix("/dev/nvidia")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| NodeClass::Gpu),
    }
}

/// Read and write for the mapped user: root with CAP_DAC_OVERRIDE where the node's owner and
/// group are mapped, else the owner, group or other bits, in the kernel's order.
fn allowed(u: &UserNs, n: &HostNode) -> bool {
    // A host id is mapped when some mapping's host range holds it.
    let mapped = |map: &[(u32, u32, u32)], host: u32| {
        map.iter().any(|&(_, h, len)| host >= h && host - h < len)
    };
    if u.dac_override && mapped(&u.uid_map, n.uid) && mapped(&u.gid_map, n.gid) {
        return true;
    }
    let bits = if u.host_uid == n.uid {
        n.mode >> 6
    } else if u.host_gids.contains(&n.gid) {
        n.mode >> 3
    } else {
        n.mode
    } & 0o7;
    bits & 0o6 == 0o6
}

pub fn check(userns: Option<&Result<UserNs, String>>) -> Vec<Finding> {
    let u = match userns {
        None => return Vec::new(),
        Some(Err(why)) => {
            return vec![Finding::skipped(
                FindingId::UsernsDevicesSkipped,
                format!("access to the NVIDIA nodes in the user namespace not checked: {why}"),
            )];
        }
        Some(Ok(u)) => u,
    };
    let mut out = Vec::new();
    for n in &u.nodes {
        let Some(c) = class(&n.path) else { continue };
        if allowed(u, n) {
            continue;
        }
        let (call, code) = device_error(c, true);
        out.push(Finding::new(
            FindingId::UsernsDeviceDenied,
            Severity::Block,
            Some(Predicted::driver(code)),
            format!(
                "the container runs in a user namespace as uid {} (host uid {}, host gids {:?}), and the host's {} is \
                 {:o} owned by {}:{}: it cannot open it for read and write, so {call} fails (EACCES; the code is the one \
                 measured for a denied node)",
                u.uid, u.host_uid, u.host_gids, n.path, n.mode, n.uid, n.gid
            ),
            format!(
                "Make {} readable and writable by the mapped user: the driver's default mode 0666 \
                 (NVreg_DeviceFileMode), or the node's group among the container's groups (Podman rootless: \
                 --group-add keep-groups); or map the container's user to one that may open it.",
                n.path
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container::{DeviceView, Node, ViewSource};
    use crate::facts::host::state::userns_facts;
    use crate::rules::host::fixture::Host;

    /// A rootless-style spec: container uid 1000 (or root), mapped to host 100000+.
    fn spec(uid: u32, caps: bool, extra_gids: &[u32], userns: bool) -> oci_spec::runtime::Spec {
        let ns = if userns { r#",{"type":"user"}"# } else { "" };
        let caps = if caps {
            r#","capabilities":{"effective":["CAP_DAC_OVERRIDE"]}"#
        } else {
            ""
        };
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2",
                "process":{{"user":{{"uid":{uid},"gid":{uid},"additionalGids":{extra_gids:?}}},"cwd":"/"{caps}}},
                "linux":{{"namespaces":[{{"type":"mount"}}{ns}],
                  "uidMappings":[{{"containerID":0,"hostID":100000,"size":65536}}],
                  "gidMappings":[{{"containerID":0,"hostID":100000,"size":65536}},{{"containerID":65536,"hostID":44,"size":1}}]}}}}"#
        ))
        .unwrap()
    }

    fn view() -> DeviceView {
        DeviceView {
            source: ViewSource::Spec,
            nodes: [
                ("/dev/nvidiactl", 195, 255),
                ("/dev/nvidia-uvm", 238, 0),
                ("/dev/nvidia0", 195, 0),
            ]
            .iter()
            .map(|(p, a, b)| {
                (
                    p.to_string(),
                    Node::Char {
                        major: *a,
                        minor: *b,
                    },
                )
            })
            .collect(),
            cgroup: None,
            cgroup_source: None,
        }
    }

    /// A host whose NVIDIA nodes have `mode`, owned by root and group 44 (video).
    fn host(mode: u32) -> Host {
        let h = Host::new();
        for (p, a, b) in [
            ("/dev/nvidiactl", 195, 255),
            ("/dev/nvidia-uvm", 238, 0),
            ("/dev/nvidia0", 195, 0),
        ] {
            h.mknod(p, a, b);
            let path = h.path(p);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            std::os::unix::fs::chown(&path, Some(0), Some(44)).unwrap();
        }
        h
    }

    #[test]
    fn table() {
        let v = view();
        // (case, host mode, spec, expected ids)
        let cases: Vec<(&str, u32, oci_spec::runtime::Spec, Vec<&str>)> = vec![
            (
                "healthy: driver default 0666",
                0o666,
                spec(1000, false, &[], true),
                vec![],
            ),
            (
                "failing: 0660 root:video, user not in video",
                0o660,
                spec(1000, false, &[], true),
                vec![FindingId::UsernsDeviceDenied.as_str(); 3],
            ),
            (
                "healthy: 0660, video mapped in and kept",
                0o660,
                spec(1000, false, &[65536], true),
                vec![],
            ),
            (
                "failing: container root cannot override host-owned nodes",
                0o600,
                spec(0, true, &[], true),
                vec![FindingId::UsernsDeviceDenied.as_str(); 3],
            ),
            (
                "no user namespace: not judged here",
                0o600,
                spec(1000, false, &[], false),
                vec![],
            ),
        ];
        for (name, mode, s, want) in cases {
            let h = host(mode);
            let facts = userns_facts(&s, Ok(&v), h.root());
            let got = check(facts.as_ref());
            let ids: Vec<&str> = got.iter().map(|f| f.id.as_str()).collect();
            assert_eq!(ids, want, "{name}: {got:#?}");
            if let Some(f) = got.first() {
                // nvidiactl denied: cuInit 100 as measured (knowledge/device_errors.tsv).
                assert_eq!(f.predicted.as_ref().unwrap().code, Some(100), "{name}");
                assert!(f.evidence.contains("host uid 10"), "{}", f.evidence);
                assert!(f.fix.contains("0666"), "{name}");
            }
        }
    }

    #[test]
    fn unknown_mappings_are_skipped() {
        let s: oci_spec::runtime::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"cwd":"/"},
                "linux":{"namespaces":[{"type":"user","path":"/proc/1/ns/user"}]}}"#,
        )
        .unwrap();
        let h = host(0o666);
        let got = check(userns_facts(&s, Ok(&view()), h.root()).as_ref());
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].id.as_str(), got[0].severity),
            (FindingId::UsernsDevicesSkipped.as_str(), Severity::Info)
        );
    }
}

#[cfg(test)]
mod override_tests {
    use super::*;

    #[test]
    fn container_root_overrides_modes_only_on_mapped_nodes() {
        let u = |dac| UserNs {
            uid: 0,
            host_uid: 100000,
            host_gids: vec![100000],
            dac_override: dac,
            uid_map: vec![(0, 100000, 65536)],
            gid_map: vec![(0, 100000, 65536)],
            nodes: vec![],
        };
        let node = |uid, gid| HostNode {
            path: "/dev/nvidiactl".into(),
            uid,
            gid,
            mode: 0o600,
        };
        assert!(allowed(&u(true), &node(100005, 100005)));
        assert!(!allowed(&u(false), &node(100005, 100005)));
        assert!(!allowed(&u(true), &node(0, 100005)));
        assert!(allowed(&u(false), &node(100000, 0)));
    }
}
