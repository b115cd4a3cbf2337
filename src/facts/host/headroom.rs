//! Headroom facts, for GPU containers only: how much GPU memory the container asks to find free
//! (annotation `cuda-preflight/min-free-memory` in MiB, else config `min_free_memory_mib`), and
//! the free space of its rootfs and of the host directories it bind-mounts writable (one
//! `statvfs` each).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::facts::host::disk::{self, Space};
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

/// Bind mounts that engines and the NVIDIA hook add and that are not the user's volumes: driver
/// files, and what lands under these destinations (Podman's 64 MiB `/dev/shm`, `/etc/hosts`,
/// `/run/secrets`, …). A file (`/etc/resolv.conf`, a driver library) is never a volume either.
fn is_system_mount(src: &Path, dest: &Path) -> bool {
    [
        "/dev", "/proc", "/sys", "/usr/lib", "/usr/bin", "/lib", "/etc",
    ]
    .iter()
    .any(|s| src.starts_with(s))
        || ["/dev", "/proc", "/sys", "/run", "/var/run", "/etc"]
            .iter()
            .any(|d| dest.starts_with(d))
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
        if !bind || opts.iter().any(|o| o == "ro") || is_system_mount(src, m.destination()) {
            continue;
        }
        let host = host_root.join(src.strip_prefix("/").unwrap_or(src));
        if !host.is_dir() {
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_mounts_are_not_volumes() {
        let cases = [
            (
                "/var/lib/containers/storage/x/userdata/shm",
                "/dev/shm",
                true,
            ),
            (
                "/var/lib/containers/storage/x/userdata/hosts",
                "/etc/hosts",
                true,
            ),
            ("/run/user/0/secrets", "/run/secrets", true),
            (
                "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                true,
            ),
            ("/srv/models", "/models", false),
            ("/data", "/workspace/data", false),
        ];
        for (src, dest, want) in cases {
            assert_eq!(
                is_system_mount(Path::new(src), Path::new(dest)),
                want,
                "{src} -> {dest}"
            );
        }
    }
}
