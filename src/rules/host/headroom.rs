//! Headroom: failures that come from what is left, not from what is wrong — GPU memory already
//! held by other processes leaving less free than the container asks for (the "model weights
//! leave 17 MiB for activations" OOM), and a rootfs or volume nearly full (a model cannot load
//! into 28 KB). Both warn by default: the start may still work, and the numbers move.

use crate::facts::container::GpuRequest;
use crate::facts::host::HostProfile;
use crate::facts::host::headroom::HeadroomFacts;
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::rules::host::compute_mode::container_gpus;

/// What a process writing to a full filesystem is told (`strerror(ENOSPC)`).
pub const ENOSPC: &str = "No space left on device";

/// `request` decides which GPUs are judged: those the container gets where that can be told
/// (`NVIDIA_VISIBLE_DEVICES`, a one-GPU host); otherwise a warning only when every GPU of the
/// host is short, since whichever it gets is.
pub fn check(h: &HeadroomFacts, request: &GpuRequest, host: &HostProfile) -> Vec<Finding> {
    let mut out = Vec::new();
    match &h.min_free_memory {
        None => {}
        Some(Err(why)) => out.push(Finding::skipped(FindingId::GpuMemorySkipped, why.clone())),
        Some(Ok((want, source))) => {
            let (gpus, all_must_be_low) = match container_gpus(request, host) {
                Some(g) => (g, false),
                None => (host.gpus.iter().collect(), true),
            };
            let known: Vec<_> = gpus
                .into_iter()
                .filter_map(|g| Some((g, g.memory_free_mib?)))
                .collect();
            if known.is_empty() {
                out.push(Finding::skipped(
                    FindingId::GpuMemorySkipped,
                    "the host facts give no free GPU memory (NVML unavailable, or a profile without memory_free_mib)",
                ));
            }
            let low: Vec<String> = known
                .iter()
                .filter(|(_, free)| free < want)
                .map(|(g, free)| {
                    let total = g
                        .memory_total_mib
                        .map_or(String::new(), |t| format!(" of {t}"));
                    format!("gpu {} has {free}{total} MiB free", g.index)
                })
                .collect();
            if !low.is_empty() && (!all_must_be_low || low.len() == known.len()) {
                out.push(Finding::new(
                    FindingId::GpuMemoryLow,
                    Severity::Warn,
                    Some(Predicted::driver(2)),
                    format!(
                        "{}; the container asks for {want} MiB ({source}): other processes hold the rest, \
                         and the first large allocation fails with \"CUDA error: out of memory\"",
                        low.join(", ")
                    ),
                    "See what holds the memory (`nvidia-smi --query-compute-apps=pid,used_memory --format=csv`), \
                     stop it or schedule the container on a GPU with room.",
                ));
            }
        }
    }
    for v in &h.volumes {
        match &v.space {
            Err(e) => out.push(Finding::skipped(
                FindingId::DiskSpaceSkipped,
                format!("free space of {} ({}): {e}", v.what, v.host_path),
            )),
            Ok(s) if s.avail_mib < h.min_free_disk_mib => out.push(Finding::new(
                FindingId::DiskSpaceLow,
                Severity::Warn,
                Some(Predicted::message(Api::Os, ENOSPC)),
                format!(
                    "{} ({}) has {} MiB free of {} MiB, below min_free_disk_mib {}: \
                     writing checkpoints, caches or downloaded models there fails",
                    v.what, v.host_path, s.avail_mib, s.total_mib, h.min_free_disk_mib
                ),
                format!(
                    "Free space on the filesystem of {} or mount a larger volume.",
                    v.host_path
                ),
            )),
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::Gpu;
    use crate::facts::host::disk::Space;
    use crate::facts::host::headroom::Volume;

    fn host(free: Option<u64>) -> HostProfile {
        HostProfile {
            gpus: vec![Gpu {
                index: 0,
                memory_total_mib: Some(81559),
                memory_free_mib: free,
                ..Gpu::default()
            }],
            ..HostProfile::default()
        }
    }

    fn facts(mem: Option<Result<(u64, &'static str), String>>, avail: u64) -> HeadroomFacts {
        HeadroomFacts {
            min_free_memory: mem,
            min_free_disk_mib: 1024,
            volumes: vec![Volume {
                what: "/models".into(),
                host_path: "/srv/models".into(),
                space: Ok(Space {
                    avail_mib: avail,
                    total_mib: 100_000,
                }),
            }],
        }
    }

    fn ids(f: &[Finding]) -> Vec<(&str, Severity)> {
        f.iter().map(|f| (f.id.as_str(), f.severity)).collect()
    }

    type Case = (
        &'static str,
        HeadroomFacts,
        HostProfile,
        Vec<(&'static str, Severity)>,
    );

    #[test]
    fn table() {
        let ann = |m| Some(Ok((m, "annotation")));
        let cases: Vec<Case> = vec![
            (
                "nothing asked, room on disk",
                facts(None, 50_000),
                host(Some(17)),
                vec![],
            ),
            (
                "17 MiB free, 20000 asked",
                facts(ann(20_000), 50_000),
                host(Some(17)),
                vec![(FindingId::GpuMemoryLow.as_str(), Severity::Warn)],
            ),
            (
                "enough free",
                facts(ann(20_000), 50_000),
                host(Some(81_000)),
                vec![],
            ),
            (
                "free unknown",
                facts(ann(1), 50_000),
                host(None),
                vec![("gpu-memory-skipped", Severity::Info)],
            ),
            (
                "bad annotation",
                facts(Some(Err("x".into())), 50_000),
                host(Some(1)),
                vec![("gpu-memory-skipped", Severity::Info)],
            ),
            (
                "volume nearly full",
                facts(None, 12),
                host(None),
                vec![(FindingId::DiskSpaceLow.as_str(), Severity::Warn)],
            ),
        ];
        for (name, f, h, want) in cases {
            let got = check(&f, &GpuRequest::SpecDevices, &h);
            assert_eq!(ids(&got), want, "{name}");
        }
        let f = check(
            &facts(ann(20_000), 50_000),
            &GpuRequest::SpecDevices,
            &host(Some(17)),
        );
        assert_eq!(
            f[0].predicted.as_ref().unwrap().name.as_deref(),
            Some("CUDA_ERROR_OUT_OF_MEMORY")
        );
        assert!(
            f[0].evidence.contains("gpu 0 has 17 of 81559 MiB free"),
            "{}",
            f[0].evidence
        );
        let f = check(&facts(None, 12), &GpuRequest::SpecDevices, &host(None));
        assert_eq!(f[0].predicted.as_ref().unwrap().message, ENOSPC);
        // Two GPUs, one full: a container that cannot be told to get either is not warned; one
        // that gets the full GPU is.
        let mut two = host(Some(17));
        two.gpus.push(Gpu {
            index: 1,
            memory_free_mib: Some(80_000),
            ..Gpu::default()
        });
        let f20k = facts(ann(20_000), 50_000);
        assert!(check(&f20k, &GpuRequest::SpecDevices, &two).is_empty());
        let gets = |v: &str| GpuRequest::InjectedByHook {
            visible: v.into(),
            hook: "nvidia-container-runtime-hook".into(),
        };
        assert_eq!(
            ids(&check(&f20k, &gets("0"), &two)),
            vec![(FindingId::GpuMemoryLow.as_str(), Severity::Warn)]
        );
        assert!(check(&f20k, &gets("1"), &two).is_empty());
        assert_eq!(f[0].predicted.as_ref().unwrap().message, ENOSPC);
    }
}
