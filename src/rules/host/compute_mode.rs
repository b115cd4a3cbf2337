//! Compute mode and persistence mode of the GPUs the container gets. In `exclusive_process`
//! mode a GPU takes one CUDA context: with another process already on it, the container's
//! context creation fails with 46 `CUDA_ERROR_DEVICE_UNAVAILABLE`; `prohibited` takes none.
//! Persistence mode off on a datacenter GPU makes each first `cuInit` re-initialise the GPU
//! (slow, and "driver rpc error: timed out" in the toolkit under load): information only.

use crate::facts::container::GpuRequest;
use crate::facts::host::{Gpu, HostProfile};
use crate::finding::{Finding, FindingId, Predicted, Severity};

/// The host GPUs the container gets, where that can be told without guessing: every GPU for
/// `all`, the named indices or UUIDs, or the only GPU of a one-GPU host.
pub(crate) fn container_gpus<'a>(
    request: &GpuRequest,
    host: &'a HostProfile,
) -> Option<Vec<&'a Gpu>> {
    if let GpuRequest::InjectedByHook { visible, .. } = request {
        let entries: Vec<&str> = visible.split(',').map(str::trim).collect();
        if entries.contains(&"all") {
            return Some(host.gpus.iter().collect());
        }
        let mut out = Vec::new();
        for e in entries {
            let g = if let Ok(i) = e.parse::<u32>() {
                host.gpus.iter().find(|g| g.index == i)
            } else {
                host.gpus
                    .iter()
                    .find(|g| !g.uuid.is_empty() && g.uuid.eq_ignore_ascii_case(e))
            };
            out.push(g?);
        }
        return Some(out);
    }
    (host.gpus.len() == 1).then(|| host.gpus.iter().collect())
}

fn unavailable(g: &Gpu) -> Option<String> {
    match (g.compute_mode.as_deref(), g.compute_processes) {
        (Some("prohibited"), _) => Some(format!(
            "GPU {} ({}) is in compute mode prohibited: it takes no CUDA context",
            g.index, g.name
        )),
        (Some("exclusive_process" | "exclusive_thread"), Some(n)) if n > 0 => Some(format!(
            "GPU {} ({}) is in compute mode {} and {n} compute process(es) already hold it",
            g.index,
            g.name,
            g.compute_mode.as_deref().unwrap_or("")
        )),
        _ => None,
    }
}

pub fn check(request: &GpuRequest, host: &HostProfile) -> Vec<Finding> {
    let Some(gpus) = container_gpus(request, host).filter(|g| !g.is_empty()) else {
        return Vec::new();
    };
    if gpus.iter().all(|g| g.compute_mode.is_none()) {
        return vec![Finding::skipped(
            FindingId::GpuComputeModeSkipped,
            "the GPUs' compute mode is unknown (not read through NVML, not in the host profile)",
        )];
    }
    let mut out = Vec::new();
    let busy: Vec<String> = gpus.iter().filter_map(|g| unavailable(g)).collect();
    if !busy.is_empty() {
        // With some GPUs still usable the process starts; it fails on the busy one when it uses it.
        let all = busy.len() == gpus.len();
        out.push(Finding::new(
            FindingId::GpuComputeModeUnavailable,
            if all { Severity::Block } else { Severity::Warn },
            Some(Predicted::driver(46)),
            format!(
                "{}{}",
                busy.join("; "),
                if all { "" } else { "; the container's other GPUs are usable" }
            ),
            "Stop the process holding the GPU (`nvidia-smi --query-compute-apps=pid,process_name --format=csv`), give \
             the container another GPU, or set the compute mode back to default (`nvidia-smi -i N -c DEFAULT`, an \
             administrator's decision).",
        ));
    }
    let off: Vec<String> = gpus
        .iter()
        .filter(|g| g.persistence_mode == Some(false) && g.brand == "datacenter")
        .map(|g| format!("GPU {} ({})", g.index, g.name))
        .collect();
    if !off.is_empty() {
        out.push(Finding::new(
            FindingId::GpuPersistenceModeOff,
            Severity::Info,
            None,
            format!(
                "persistence mode is off on {}: every first CUDA initialisation after the GPU goes idle re-initialises \
                 it (seconds, not ms; `driver rpc error: timed out` under load)",
                off.join(", ")
            ),
            "Run nvidia-persistenced on the host (`systemctl enable --now nvidia-persistenced`).",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32, mode: Option<&str>, procs: Option<u32>, persist: Option<bool>) -> Gpu {
        Gpu {
            index: i,
            uuid: format!("GPU-0000000{i}"),
            name: "NVIDIA H100 80GB HBM3".into(),
            brand: "datacenter".into(),
            compute_mode: mode.map(String::from),
            compute_processes: procs,
            persistence_mode: persist,
            ..Gpu::default()
        }
    }

    fn hosts(gpus: Vec<Gpu>) -> HostProfile {
        HostProfile {
            gpus,
            ..HostProfile::default()
        }
    }

    fn hook(v: &str) -> GpuRequest {
        GpuRequest::InjectedByHook {
            visible: v.into(),
            hook: "/usr/bin/nvidia-container-runtime-hook".into(),
        }
    }

    #[test]
    fn table() {
        let ok = || gpu(0, Some("default"), Some(3), Some(true));
        let excl_busy = |i| gpu(i, Some("exclusive_process"), Some(1), Some(true));
        // Named test cases, one tuple each: (name, input…, expected).
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, GpuRequest, HostProfile, Vec<(&str, Severity)>)> = vec![
            (
                "healthy: default mode, others running",
                hook("all"),
                hosts(vec![ok()]),
                vec![],
            ),
            (
                "healthy: exclusive but idle",
                hook("0"),
                hosts(vec![gpu(0, Some("exclusive_process"), Some(0), Some(true))]),
                vec![],
            ),
            (
                "failing: exclusive and busy",
                hook("0"),
                hosts(vec![excl_busy(0)]),
                vec![(
                    FindingId::GpuComputeModeUnavailable.as_str(),
                    Severity::Block,
                )],
            ),
            (
                "failing: prohibited, one-GPU host, spec devices",
                GpuRequest::SpecDevices,
                hosts(vec![gpu(0, Some("prohibited"), None, Some(true))]),
                vec![(
                    FindingId::GpuComputeModeUnavailable.as_str(),
                    Severity::Block,
                )],
            ),
            (
                "one of two GPUs busy: warn",
                hook("all"),
                hosts(vec![ok(), excl_busy(1)]),
                vec![(
                    FindingId::GpuComputeModeUnavailable.as_str(),
                    Severity::Warn,
                )],
            ),
            (
                "the busy GPU is not the container's",
                hook("0"),
                hosts(vec![ok(), excl_busy(1)]),
                vec![],
            ),
            (
                "spec devices on a two-GPU host: not judged",
                GpuRequest::SpecDevices,
                hosts(vec![excl_busy(0), excl_busy(1)]),
                vec![],
            ),
            (
                "persistence off on a datacenter GPU",
                hook("all"),
                hosts(vec![gpu(0, Some("default"), Some(0), Some(false))]),
                vec![(FindingId::GpuPersistenceModeOff.as_str(), Severity::Info)],
            ),
            (
                "compute mode unknown",
                hook("all"),
                hosts(vec![gpu(0, None, None, None)]),
                vec![(FindingId::GpuComputeModeSkipped.as_str(), Severity::Info)],
            ),
        ];
        for (name, req, host, want) in cases {
            let got = check(&req, &host);
            let ids: Vec<(&str, Severity)> =
                got.iter().map(|f| (f.id.as_str(), f.severity)).collect();
            assert_eq!(ids, want, "{name}");
            for f in got
                .iter()
                .filter(|f| f.id == FindingId::GpuComputeModeUnavailable)
            {
                let p = f.predicted.as_ref().unwrap();
                assert_eq!(
                    (p.code, p.name.as_deref()),
                    (Some(46), Some("CUDA_ERROR_DEVICE_UNAVAILABLE"))
                );
                assert!(f.fix.contains("nvidia-smi"), "{name}");
            }
        }
    }

    #[test]
    fn profile_fields_parse() {
        let p: HostProfile = serde_json::from_str(
            r#"{"gpus":[{"index":0,"compute_mode":"exclusive_process","compute_processes":2,"persistence_mode":true}]}"#,
        )
        .unwrap();
        assert_eq!(
            check(&hook("0"), &p)[0].id,
            FindingId::GpuComputeModeUnavailable
        );
    }
}
