//! `NVIDIA_VISIBLE_DEVICES` against the host's GPUs, for GPUs injected by the NVIDIA hook: a
//! name the host does not have stops the start in `nvidia-container-cli` ("device error: 1:
//! unknown device" is the classic `--gpus 2` on a one-GPU machine), and so does the MIG naming of
//! drivers before R470 (`MIG-GPU-<uuid>/<gi>/<ci>`) on a newer driver, which names MIG devices
//! `MIG-<uuid>` (nvidia-container-toolkit issue 203). Several MIG devices in one container are
//! allowed but CUDA enumerates only one of them.

use crate::facts::container::GpuRequest;
use crate::facts::host::HostProfile;
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};

/// The driver branch from which MIG devices are named `MIG-<uuid>`.
const NEW_MIG_NAMING: u64 = 470;

fn unknown(entry: &str, why: String, fix: &str) -> Finding {
    Finding::new(
        FindingId::VisibleDeviceUnknown,
        Severity::Block,
        Some(Predicted::message(
            Api::Toolkit,
            format!("nvidia-container-cli: device error: {entry}: unknown device"),
        )),
        format!("NVIDIA_VISIBLE_DEVICES names {entry}, {why}"),
        fix,
    )
}

pub fn check(request: &GpuRequest, host: &HostProfile) -> Vec<Finding> {
    let GpuRequest::InjectedByHook { visible, .. } = request else {
        return Vec::new();
    };
    let entries: Vec<&str> = visible
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.contains(&"all") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let is_mig = |e: &str| e.starts_with("MIG-") || e.contains(':');
    let migs: Vec<&str> = entries.iter().copied().filter(|e| is_mig(e)).collect();
    if migs.len() > 1 {
        out.push(Finding::new(
            FindingId::MigDevicesSeveral,
            Severity::Warn,
            None,
            format!(
                "NVIDIA_VISIBLE_DEVICES gives the container {} MIG devices ({}); a CUDA process enumerates only one \
                 MIG device, the others stay unused",
                migs.len(),
                migs.join(", ")
            ),
            "Give each CUDA process (container) one MIG device, or run one process per MIG device with \
             CUDA_VISIBLE_DEVICES set to its UUID.",
        ));
    }
    if host.gpus.is_empty() {
        out.push(Finding::skipped(
            FindingId::VisibleDevicesSkipped,
            "the host's GPUs are unknown (no NVML, no /proc/driver/nvidia/gpus, no host profile GPUs): the names \
             in NVIDIA_VISIBLE_DEVICES were not checked",
        ));
        return out;
    }
    let count = host.gpus.len();
    let driver = host.driver();
    for e in entries {
        if let Ok(i) = e.parse::<usize>() {
            if i >= count {
                out.push(unknown(
                    e,
                    format!("but the host has {count} GPU(s), index 0 to {}", count - 1),
                    "Ask for GPUs the host has (`--gpus 1`, `--gpus '\"device=0\"'`), or schedule the container \
                     on a host with more GPUs.",
                ));
            }
        } else if let Some((gpu, _)) = e.split_once(':') {
            if gpu.parse::<usize>().is_ok_and(|g| g >= count) {
                out.push(unknown(
                    e,
                    format!("a MIG device of GPU {gpu}, but the host has {count} GPU(s)"),
                    "Name a MIG device of a GPU the host has (`nvidia-smi -L` lists them).",
                ));
            }
        } else if e.starts_with("MIG-GPU-") {
            if let Some(d) = driver.as_ref().filter(|d| d.major() >= NEW_MIG_NAMING) {
                out.push(unknown(
                    e,
                    format!(
                        "the MIG naming of drivers before R{NEW_MIG_NAMING}; driver {d} names MIG devices MIG-<uuid>"
                    ),
                    "Use the MIG device's UUID as `nvidia-smi -L` prints it (MIG-xxxxxxxx-…) or the index form \
                     GPU:MIG (`0:1`).",
                ));
            }
        } else if e.to_ascii_uppercase().starts_with("GPU-") {
            // Only when every GPU's UUID is known; a prefix counts, as nvidia-smi accepts one.
            let uuids: Vec<String> = host
                .gpus
                .iter()
                .map(|g| g.uuid.to_ascii_lowercase())
                .collect();
            if uuids.iter().all(|u| !u.is_empty())
                && !uuids.iter().any(|u| u.starts_with(&e.to_ascii_lowercase()))
            {
                out.push(unknown(
                    e,
                    format!("but no GPU of this host has that UUID (it has {})", uuids.join(", ")),
                    "The UUID is of another host's GPU (a pinned scheduler assignment, a copied compose file): \
                     use `--gpus all`, an index, or a UUID from this host's `nvidia-smi -L`.",
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::Gpu;

    const UUID0: &str = "GPU-2f6a8e1c-0000-4000-8000-000000000001";

    fn hook(visible: &str) -> GpuRequest {
        GpuRequest::InjectedByHook {
            visible: visible.into(),
            hook: "/usr/bin/nvidia-container-runtime-hook".into(),
        }
    }

    /// The H100 host: one GPU, driver 580.
    fn h100() -> HostProfile {
        HostProfile {
            driver_version: Some("580.159.04".into()),
            gpus: vec![Gpu {
                index: 0,
                uuid: UUID0.into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                ..Gpu::default()
            }],
            ..HostProfile::default()
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("healthy: all", "all", &[]),
            ("healthy: index 0", "0", &[]),
            ("healthy: the host's UUID", UUID0, &[]),
            ("healthy: a UUID prefix, lower case", "gpu-2f6a8e1c", &[]),
            (
                "healthy: one new-style MIG device",
                "MIG-0929581a-2be6-5dec-bf34-0954c6c529a6",
                &[],
            ),
            (
                "failing: --gpus 2 on one GPU",
                "0,1",
                &[FindingId::VisibleDeviceUnknown.as_str()],
            ),
            (
                "failing: another host's UUID",
                "GPU-deadbeef-0000-4000-8000-000000000009",
                &[FindingId::VisibleDeviceUnknown.as_str()],
            ),
            (
                "failing: MIG of a GPU the host lacks",
                "3:0",
                &[FindingId::VisibleDeviceUnknown.as_str()],
            ),
            (
                "failing: pre-R470 MIG name on driver 580",
                "MIG-GPU-2f6a8e1c-0000-4000-8000-000000000001/1/0",
                &[FindingId::VisibleDeviceUnknown.as_str()],
            ),
            (
                "two MIG devices",
                "0:0,0:1",
                &[FindingId::MigDevicesSeveral.as_str()],
            ),
        ];
        for (name, visible, want) in cases {
            let got = check(&hook(visible), &h100());
            let ids: Vec<&str> = got.iter().map(|f| f.id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
            for f in got
                .iter()
                .filter(|f| f.id == FindingId::VisibleDeviceUnknown)
            {
                assert_eq!(f.severity, Severity::Block);
                let p = f.predicted.as_ref().unwrap();
                assert!(
                    p.message
                        .starts_with("nvidia-container-cli: device error: "),
                    "{}",
                    p.message
                );
                assert!(p.message.ends_with(": unknown device"), "{}", p.message);
            }
        }
        let got = check(&hook("0,1"), &h100());
        assert_eq!(
            got[0].predicted.as_ref().unwrap().message,
            "nvidia-container-cli: device error: 1: unknown device"
        );
    }

    #[test]
    fn unknown_host_gpus_skip_and_other_requests_are_not_judged() {
        let got = check(&hook("0,1"), &HostProfile::default());
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].id.as_str(), got[0].severity),
            (FindingId::VisibleDevicesSkipped.as_str(), Severity::Info)
        );
        // A pre-R470 driver still knows the old MIG names.
        let mut old = h100();
        old.driver_version = Some("460.91.03".into());
        assert!(
            check(
                &hook("MIG-GPU-2f6a8e1c-0000-4000-8000-000000000001/1/0"),
                &old
            )
            .is_empty()
        );
        // GPUs from the spec or CDI are not named by the variable.
        assert!(check(&GpuRequest::SpecDevices, &HostProfile::default()).is_empty());
    }
}
