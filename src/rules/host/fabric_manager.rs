//! Fabric Manager on NVSwitch systems (issue 13, item 6).
//!
//! On HGX/DGX A100, H100 and H200 the GPUs reach each other through NVSwitches, and NVIDIA's
//! Fabric Manager (`nv-fabricmanager`, the `nvidia-fabricmanager` service) must set the fabric up
//! before CUDA can use the GPUs: without it `cuInit` fails with 802
//! `CUDA_ERROR_SYSTEM_NOT_READY` ("system not yet initialized") while `nvidia-smi` works
//! (NVIDIA Fabric Manager user guide; gpu-operator issue 375, pytorch issue 35710, gpu-burn
//! issues 92 and 133).
//!
//! Signs, all files under the host root ([`crate::facts::host::state::nvswitch_facts`],
//! [`crate::facts::host::state::fabric_manager`]): NVSwitches the driver registered under
//! `/proc/driver/nvidia-nvswitch/devices` (the test NVIDIA's gpu-driver-container uses to start
//! Fabric Manager) or NVIDIA PCI functions of class 0x068000 (the nvidia driver's
//! `nvswitch_pci_table`); a running Fabric Manager from its PID file
//! (`/run/nvidia-fabricmanager/nv-fabricmanager.pid`) or a process whose `comm` is
//! `nv-fabricmanage`. Not the `nvidia-nvswitch` major of `/proc/devices`, which a single-GPU host
//! lists too. NVLink 5 systems (HGX B200), whose switches are not PCI functions of the host, are
//! not recognised: no finding there rather than a guess. Whether a running Fabric Manager is of
//! the driver's version is not judged (no file states the running daemon's version).

use crate::facts::host::state::{FabricManager, NvSwitch};
use crate::finding::{Finding, FindingId, Predicted, Severity};

pub fn check(
    nvswitches: &Result<Vec<NvSwitch>, String>,
    fabric_manager: &Result<Option<FabricManager>, String>,
) -> Vec<Finding> {
    let switches = match nvswitches {
        Ok(s) if s.is_empty() => return vec![],
        Ok(s) => s,
        Err(why) => {
            return vec![Finding::skipped(
                FindingId::FabricManagerSkipped,
                format!("whether the host has NVSwitches is unknown: {why}"),
            )];
        }
    };
    match fabric_manager {
        Ok(Some(_)) => vec![],
        Err(why) => vec![Finding::skipped(
            FindingId::FabricManagerSkipped,
            format!(
                "the host has {} NVSwitch(es) but whether Fabric Manager runs is unknown: {why}",
                switches.len()
            ),
        )],
        Ok(None) => {
            let first = &switches[0];
            vec![Finding::new(
                FindingId::FabricManagerNotRunning,
                Severity::Block,
                Some(Predicted::driver(802)),
                format!(
                    "the host has {} NVSwitch(es) ({} in {}) but no nv-fabricmanager process runs (no live \
                     /run/nvidia-fabricmanager/nv-fabricmanager.pid, no process named nv-fabricmanage in /proc): \
                     the NVLink fabric is not set up, so CUDA cannot initialise while nvidia-smi still works",
                    switches.len(),
                    first.address,
                    first.seen_in
                ),
                "Start NVIDIA Fabric Manager of exactly the driver's version: `systemctl enable --now \
                 nvidia-fabricmanager` (package nvidia-fabricmanager-<branch> matching the loaded driver), or with \
                 the GPU Operator let its driver container start it; check `journalctl -u nvidia-fabricmanager` if \
                 it fails to start. Then start the container again.",
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::state::{fabric_manager, nvswitch_facts};
    use crate::rules::host::fixture::Host;

    /// An NVSwitch as sysfs shows it on a p4d.24xlarge (device 1af1, A100 NVSwitch).
    fn pci_switch(h: &Host, bdf: &str) {
        h.write(&format!("/sys/bus/pci/devices/{bdf}/vendor"), "0x10de\n")
            .write(&format!("/sys/bus/pci/devices/{bdf}/device"), "0x1af1\n")
            .write(&format!("/sys/bus/pci/devices/{bdf}/class"), "0x068000\n");
    }

    /// A GPU on the PCI bus (class 0x030200, 3D controller).
    fn pci_gpu(h: &Host, bdf: &str) {
        h.write(&format!("/sys/bus/pci/devices/{bdf}/vendor"), "0x10de\n")
            .write(&format!("/sys/bus/pci/devices/{bdf}/class"), "0x030200\n");
    }

    fn fm_running(h: &Host, pid: u32, pid_file: bool) {
        h.write(&format!("/proc/{pid}/comm"), "nv-fabricmanage\n");
        if pid_file {
            h.write(
                "/run/nvidia-fabricmanager/nv-fabricmanager.pid",
                &format!("{pid}\n"),
            );
        }
    }

    fn judge(h: &Host) -> Vec<Finding> {
        let s = nvswitch_facts(h.root());
        let fm = match &s {
            Ok(v) if !v.is_empty() => fabric_manager(h.root()),
            _ => Err("not looked for".into()),
        };
        check(&s, &fm)
    }

    #[test]
    fn table() {
        // Named test cases, one tuple each: (name, host, expected (id, predicted code)).
        let hgx_no_fm = || {
            let h = Host::new();
            h.module("580.159.04");
            h.write("/proc/devices", "195 nvidia\n507 nvidia-nvswitch\n");
            h.write("/proc/driver/nvidia-nvswitch/devices/0000:0c:09.0", "")
                .write("/proc/driver/nvidia-nvswitch/devices/0000:0c:0a.0", "");
            pci_gpu(&h, "0000:18:00.0");
            h.write("/proc/1/comm", "systemd\n");
            h
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Host, Vec<(&str, Option<i64>)>)> = vec![
            (
                "failing: HGX, switches registered by the driver, Fabric Manager not running",
                hgx_no_fm(),
                vec![(FindingId::FabricManagerNotRunning.as_str(), Some(802))],
            ),
            (
                "failing: switches on the PCI bus only (driver's nvswitch dir empty), stale PID file",
                {
                    let h = Host::new();
                    h.module("580.159.04");
                    std::fs::create_dir_all(h.path("/proc/driver/nvidia-nvswitch/devices"))
                        .unwrap();
                    pci_switch(&h, "0000:80:1a.0");
                    pci_gpu(&h, "0000:10:1c.0");
                    // The PID file names a process that is gone (its pid now another program's).
                    h.write("/run/nvidia-fabricmanager/nv-fabricmanager.pid", "4242\n")
                        .write("/proc/4242/comm", "bash\n");
                    h
                },
                vec![(FindingId::FabricManagerNotRunning.as_str(), Some(802))],
            ),
            (
                "healthy: HGX with Fabric Manager running (PID file)",
                {
                    let h = hgx_no_fm();
                    fm_running(&h, 2171, true);
                    h
                },
                vec![],
            ),
            (
                "healthy: HGX with Fabric Manager in a driver container (no host PID file)",
                {
                    let h = hgx_no_fm();
                    fm_running(&h, 31337, false);
                    h
                },
                vec![],
            ),
            (
                "healthy: single H100 — the nvidia-nvswitch major is listed, no switch exists",
                {
                    let h = Host::new();
                    h.module("580.159.04");
                    h.write("/proc/devices", "195 nvidia\n507 nvidia-nvswitch\n");
                    std::fs::create_dir_all(h.path("/proc/driver/nvidia-nvswitch/devices"))
                        .unwrap();
                    pci_gpu(&h, "0000:3b:00.0");
                    h
                },
                vec![],
            ),
            (
                "facts missing: /sys/bus/pci/devices unreadable (not a directory), no nvswitch dir",
                {
                    let h = Host::new();
                    h.write("/sys/bus/pci/devices", "not a directory\n");
                    h
                },
                vec![(FindingId::FabricManagerSkipped.as_str(), None)],
            ),
            (
                "bare host root (no /proc, no /sys): no NVSwitch seen, no finding",
                Host::new(),
                vec![],
            ),
        ];
        for (name, h, want) in cases {
            let got = judge(&h);
            let ids: Vec<(&str, Option<i64>)> = got
                .iter()
                .map(|f| (f.id.as_str(), f.predicted.as_ref().and_then(|p| p.code)))
                .collect();
            assert_eq!(ids, want, "{name}");
            for f in &got {
                match f.id {
                    FindingId::FabricManagerNotRunning => {
                        assert_eq!(f.severity, Severity::Block, "{name}");
                        assert_eq!(
                            f.predicted.as_ref().unwrap().name.as_deref(),
                            Some("CUDA_ERROR_SYSTEM_NOT_READY"),
                            "{name}"
                        );
                        assert!(f.evidence.contains("NVSwitch"), "{name}");
                        assert!(f.fix.contains("nvidia-fabricmanager"), "{name}");
                    }
                    _ => assert_eq!(f.severity, Severity::Info, "{name}"),
                }
            }
        }
    }

    #[test]
    fn proc_unreadable_with_switches_is_skipped_not_blocked() {
        let s = Ok(vec![NvSwitch {
            address: "0000:0c:09.0".into(),
            seen_in: "/proc/driver/nvidia-nvswitch/devices".into(),
        }]);
        let got = check(&s, &Err("/proc: permission denied".into()));
        assert_eq!(
            got.iter()
                .map(|f| (f.id.as_str(), f.severity))
                .collect::<Vec<_>>(),
            vec![(FindingId::FabricManagerSkipped.as_str(), Severity::Info)]
        );
    }

    #[test]
    fn odd_pid_file_and_sysfs_values_do_not_panic() {
        let h = hgx_like_with_garbage();
        let got = judge(&h);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, FindingId::FabricManagerNotRunning);
    }

    fn hgx_like_with_garbage() -> Host {
        let h = Host::new();
        h.module("580.159.04");
        pci_switch(&h, "0000:80:1a.0");
        h.write("/sys/bus/pci/devices/0000:81:00.0/vendor", "\u{0}\u{ff}")
            .write("/sys/bus/pci/devices/0000:81:00.0/class", "not a class")
            .write(
                "/run/nvidia-fabricmanager/nv-fabricmanager.pid",
                "-1\u{fe}\n",
            )
            .write("/proc/self/comm", "cuda-preflight\n");
        h
    }
}
