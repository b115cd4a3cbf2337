//! Headroom facts, for GPU containers only: how much GPU memory the container asks to find free
//! (annotation `cuda-preflight/min-free-memory` in MiB, else config `min_free_memory_mib`), and
//! the free space of its rootfs and of the host directories it bind-mounts writable (one
//! `statvfs` each).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::facts::disk::{self, Space};
use crate::input::bundle::Bundle;

pub const MIN_FREE_MEMORY_ANNOTATION: &str = "cuda-preflight/min-free-memory";

/// The thresholds from the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub min_free_memory_mib: Option<u64>,
    pub min_free_disk_mib: u64,
}

/// One filesystem the container writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// `rootfs`, or the mount's destination in the container.
    pub what: String,
    /// Where it was measured, as the host names it.
    pub host_path: String,
    pub space: Result<Space, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadroomFacts {
    /// The GPU memory the container asks for and where that came from; `Err` an annotation that
    /// is not a number.
    pub min_free_memory: Option<Result<(u64, &'static str), String>>,
    pub min_free_disk_mib: u64,
    pub volumes: Vec<Volume>,
}

/// Sources bind-mounted by runtimes and the NVIDIA hook that are not volumes.
fn is_system_source(p: &Path) -> bool {
    [
        "/dev",
        "/proc",
        "/sys",
        "/run/nvidia",
        "/usr/lib",
        "/usr/bin",
        "/lib",
        "/etc",
    ]
    .iter()
    .any(|s| p.starts_with(s))
}

pub fn gather(
    bundle: &Bundle,
    state_annotations: Option<&HashMap<String, String>>,
    pid: Option<i32>,
    proc_root: &Path,
    host_root: &Path,
    policy: Policy,
) -> HeadroomFacts {
    let annotation = state_annotations
        .and_then(|a| a.get(MIN_FREE_MEMORY_ANNOTATION))
        .or_else(|| {
            bundle
                .spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(MIN_FREE_MEMORY_ANNOTATION))
        });
    let min_free_memory = match annotation {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map(|m| (m, "annotation cuda-preflight/min-free-memory"))
                .map_err(|_| {
                    format!("annotation {MIN_FREE_MEMORY_ANNOTATION}={v:?} is not a number of MiB")
                }),
        ),
        None => policy
            .min_free_memory_mib
            .map(|m| Ok((m, "config min_free_memory_mib"))),
    };
    let mut volumes = Vec::new();
    // The rootfs as the container's mount namespace has it (its overlay), else the bundle's.
    let rootfs = match pid {
        Some(pid) => crate::facts::container::rootfs_in_namespace(pid, &bundle.rootfs, proc_root),
        None => bundle.rootfs.clone(),
    };
    volumes.push(Volume {
        what: "rootfs".into(),
        host_path: bundle.rootfs.display().to_string(),
        space: disk::space(&rootfs).map_err(|e| e.to_string()),
    });
    for m in bundle.spec.mounts().iter().flatten() {
        let opts = m.options().clone().unwrap_or_default();
        let bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        let Some(src) = m.source().as_ref().filter(|s| s.is_absolute()) else {
            continue;
        };
        if !bind || opts.iter().any(|o| o == "ro") || is_system_source(src) {
            continue;
        }
        let host = host_root.join(src.strip_prefix("/").unwrap_or(src));
        volumes.push(Volume {
            what: m.destination().display().to_string(),
            host_path: src.display().to_string(),
            space: disk::space(&host).map_err(|e| e.to_string()),
        });
    }
    HeadroomFacts {
        min_free_memory,
        min_free_disk_mib: policy.min_free_disk_mib,
        volumes,
    }
}
