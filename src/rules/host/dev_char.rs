//! `/dev/char/MAJ:MIN` links under the systemd cgroup driver.
//!
//! With `linux.cgroupsPath` in systemd form, runc hands the device rules to systemd as
//! `DeviceAllow=/dev/char/MAJ:MIN`, and systemd re-applies them on every `systemctl
//! daemon-reload`. A device whose link is missing is not in what systemd re-applies, so the
//! running container loses it: NVML then fails with "Unknown Error" (nvidia-container-toolkit
//! issue 48, nvidia-docker issue 1671). runc 1.1.3–1.1.6 even drop such a rule at start, and
//! systemd older than v240 cannot use the rule by major that later runc versions send instead
//! (runc issue 3567: "you either need runc < 1.1.3 or >= 1.1.7" with systemd >= v240).

use crate::facts::host::state::{DevCharLink, is_systemd_cgroups_path};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};

/// NVML's text when the device cgroup denies the GPU (nvidia-smi prints it verbatim).
pub const NVML_UNKNOWN: &str = "Failed to initialize NVML: Unknown Error";

pub fn check(cgroups_path: Option<&str>, links: &Result<Vec<DevCharLink>, String>) -> Vec<Finding> {
    let Some(cg) = cgroups_path.filter(|p| is_systemd_cgroups_path(p)) else {
        return Vec::new();
    };
    let links = match links {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => {
            return vec![Finding::skipped(
                FindingId::DevCharLinksSkipped,
                "no NVIDIA character devices of the container are known: /dev/char links not checked",
            )];
        }
        Err(why) => {
            return vec![Finding::skipped(
                FindingId::DevCharLinksSkipped,
                format!("/dev/char links not checked: {why}"),
            )];
        }
    };
    let bad: Vec<String> = links
        .iter()
        .filter_map(|l| {
            l.problem
                .as_ref()
                .map(|p| format!("{} (char {}:{}): {p}", l.node, l.major, l.minor))
        })
        .collect();
    if bad.is_empty() {
        return Vec::new();
    }
    vec![Finding::new(
        FindingId::DevCharLinkMissing,
        Severity::Warn,
        Some(Predicted::message(Api::Nvml, NVML_UNKNOWN)),
        format!(
            "this container will lose GPU access at the next `systemctl daemon-reload`: linux.cgroupsPath {cg:?} is \
             systemd's form, so systemd re-applies its device rules by /dev/char path, and on this host {}. Affected \
             for certain: runc 1.1.3–1.1.6, or any runc with systemd older than v240 (runc issue 3567); the runtime's \
             version was not read (a hook does not know which runtime binary started it)",
            bad.join("; ")
        ),
        "Create the links: `nvidia-ctk system create-dev-char-symlinks --create-all` now, and at every boot with the \
         udev rule `ACTION==\"add\", DEVPATH==\"/bus/pci/drivers/nvidia\", RUN+=\"/usr/bin/nvidia-ctk system \
         create-dev-char-symlinks --create-all\"` (e.g. /lib/udev/rules.d/71-nvidia-dev-char.rules); or run \
         runc >= 1.1.7 with systemd >= v240.",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::state::dev_char_links;
    use crate::rules::host::fixture::Host;

    const SYSTEMD: &str = "system.slice:docker:c1";
    const NODES: &[(&str, u32, u32)] = &[
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-uvm", 238, 0),
        ("/dev/nvidia0", 195, 0),
    ];

    fn devices() -> Vec<(String, u32, u32)> {
        NODES
            .iter()
            .map(|(p, a, b)| (p.to_string(), *a, *b))
            .collect()
    }

    /// A host with every node, and `/dev/char` links for those in `linked`.
    fn host(linked: &[&str]) -> Host {
        let h = Host::new();
        for (p, a, b) in NODES {
            h.mknod(p, *a, *b);
            let name = p.trim_start_matches("/dev/");
            if linked.contains(&name) {
                h.link(&format!("/dev/char/{a}:{b}"), &format!("../{name}"));
            }
        }
        h
    }

    #[test]
    fn table() {
        let all = ["nvidiactl", "nvidia-uvm", "nvidia0"];
        // (case, host, cgroupsPath, expected ids, text the evidence must hold)
        // Named test cases, one tuple each: (name, input…, expected).
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Host, Option<&str>, Vec<&str>, &str)> = vec![
            ("healthy: every link", host(&all), Some(SYSTEMD), vec![], ""),
            (
                "failing: no links",
                host(&[]),
                Some(SYSTEMD),
                vec![FindingId::DevCharLinkMissing.as_str()],
                "/dev/char/195:0 is missing",
            ),
            (
                "failing: uvm link missing",
                host(&["nvidiactl", "nvidia0"]),
                Some(SYSTEMD),
                vec![FindingId::DevCharLinkMissing.as_str()],
                "/dev/nvidia-uvm (char 238:0)",
            ),
            (
                "cgroupfs path: rule does not apply",
                host(&[]),
                Some("/docker/c1"),
                vec![],
                "",
            ),
            (
                "no cgroupsPath: rule does not apply",
                host(&[]),
                None,
                vec![],
                "",
            ),
            (
                "kubelet systemd form",
                host(&[]),
                Some("kubepods-besteffort-pod1.slice:cri-containerd:c1"),
                vec![FindingId::DevCharLinkMissing.as_str()],
                "daemon-reload",
            ),
        ];
        for (name, h, cg, want, text) in cases {
            let links = dev_char_links(h.root(), &devices());
            let got = check(cg, &links);
            let ids: Vec<&str> = got.iter().map(|f| f.id.as_str()).collect();
            assert_eq!(ids, want, "{name}");
            if let Some(f) = got.first() {
                assert_eq!(f.severity, Severity::Warn, "{name}");
                assert_eq!(
                    f.predicted.as_ref().unwrap().message,
                    NVML_UNKNOWN,
                    "{name}"
                );
                assert!(f.evidence.contains(text), "{name}: {}", f.evidence);
                assert!(f.evidence.contains("lose GPU access at the next"), "{name}");
                assert!(
                    f.fix
                        .contains("nvidia-ctk system create-dev-char-symlinks --create-all"),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn a_link_to_another_device_or_a_file_is_not_a_link() {
        let h = host(&["nvidiactl", "nvidia-uvm"]);
        h.link("/dev/char/195:0", "../nvidia-uvm");
        let links = dev_char_links(h.root(), &devices()).unwrap();
        let p = links.iter().find(|l| l.node == "/dev/nvidia0").unwrap();
        assert!(
            p.problem.as_ref().unwrap().contains("leads to char 238:0"),
            "{p:?}"
        );
        std::fs::remove_file(h.path("/dev/char/195:0")).unwrap();
        h.write("/dev/char/195:0", "");
        let links = dev_char_links(h.root(), &devices()).unwrap();
        let p = links.iter().find(|l| l.node == "/dev/nvidia0").unwrap();
        assert!(
            p.problem
                .as_ref()
                .unwrap()
                .contains("not lead to a character device")
        );
    }

    #[test]
    fn unreadable_or_absent_dev_char_is_skipped_not_warned() {
        // A host root without /dev at all: nothing to judge.
        let d = tempfile::tempdir().unwrap();
        let got = check(Some(SYSTEMD), &dev_char_links(d.path(), &devices()));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, FindingId::DevCharLinksSkipped);
        assert_eq!(got[0].severity, Severity::Info);
        // /dev/char is a file, not a directory.
        let h = Host::new();
        std::fs::remove_dir(h.path("/dev/char")).unwrap();
        h.write("/dev/char", "x");
        let got = check(Some(SYSTEMD), &dev_char_links(h.root(), &devices()));
        assert_eq!(got[0].id, FindingId::DevCharLinksSkipped);
        // /dev exists but /dev/char does not: every link is missing.
        let h = Host::new();
        std::fs::remove_dir(h.path("/dev/char")).unwrap();
        let got = check(Some(SYSTEMD), &dev_char_links(h.root(), &devices()));
        assert_eq!(got[0].id, FindingId::DevCharLinkMissing);
        // No devices known.
        assert_eq!(
            check(Some(SYSTEMD), &Ok(vec![]))[0].id,
            FindingId::DevCharLinksSkipped
        );
    }

    #[test]
    fn systemd_form() {
        assert!(is_systemd_cgroups_path("system.slice:docker:abc"));
        assert!(is_systemd_cgroups_path(":runc:abc"));
        assert!(!is_systemd_cgroups_path("/system.slice/docker-abc.scope"));
        assert!(!is_systemd_cgroups_path("/a:b:c"));
        assert!(!is_systemd_cgroups_path("abc"));
    }
}
