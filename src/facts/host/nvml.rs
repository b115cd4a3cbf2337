//! Host facts from the running system: NVML first (loaded at run time, so the binary starts on
//! hosts without `libnvidia-ml.so.1`), `/proc/driver/nvidia` and `/proc/devices` under
//! `host_root` as the fallback and for the device majors.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::host::{Gpu, HostProfile, brand_class, device_majors_from_proc};
use crate::knowledge::cuda::{Version, cuda_for_driver};

/// Where the driver and GPU facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactSource {
    Nvml,
    Proc,
    /// Neither gave a driver version.
    None,
}

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub profile: HostProfile,
    pub source: FactSource,
    /// Why a source was not used, what was guessed.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NvmlFactsError {
    #[error("NVML unavailable: {0}")]
    Init(nvml_wrapper::error::NvmlError),
    #[error("NVML: {what}: {error}")]
    Query {
        what: &'static str,
        error: nvml_wrapper::error::NvmlError,
    },
}

/// Bounds on what `/proc` offers; a host with more GPU directories than this is not real.
const MAX_PROC_GPUS: usize = 256;
const MAX_PROC_FILE: u64 = 64 << 10;

/// Gather the host's facts. `use_nvml` is false when `--host-root` points at another tree
/// (NVML would describe this machine, not that one).
pub fn gather(host_root: &Path, use_nvml: bool) -> HostFacts {
    let mut notes = Vec::new();
    let majors = device_majors_from_proc(host_root);
    if use_nvml {
        match from_nvml() {
            Ok(mut p) => {
                p.device_majors = majors;
                return HostFacts {
                    profile: p,
                    source: FactSource::Nvml,
                    notes,
                };
            }
            Err(e) => notes.push(format!(
                "{e}; falling back to {}",
                host_root.join("proc/driver/nvidia").display()
            )),
        }
    }
    let mut p = from_proc(host_root, &mut notes);
    p.device_majors = majors;
    let source = if p.driver_version.is_some() {
        FactSource::Proc
    } else {
        FactSource::None
    };
    HostFacts {
        profile: p,
        source,
        notes,
    }
}

/// Driver and GPUs through NVML.
pub fn from_nvml() -> Result<HostProfile, NvmlFactsError> {
    use nvml_wrapper::Nvml;
    use std::ffi::OsStr;
    // The versioned name: the unversioned `libnvidia-ml.so` exists only with development packages.
    let nvml = Nvml::builder()
        .lib_path(OsStr::new("libnvidia-ml.so.1"))
        .init()
        .map_err(NvmlFactsError::Init)?;
    let q = |what: &'static str| move |error| NvmlFactsError::Query { what, error };
    let driver = nvml.sys_driver_version().map_err(q("driver version"))?;
    let cuda = nvml
        .sys_cuda_driver_version()
        .map_err(q("CUDA driver version"))?;
    let count = nvml.device_count().map_err(q("device count"))?;
    let mut gpus = Vec::new();
    for i in 0..count {
        let d = nvml.device_by_index(i).map_err(q("device handle"))?;
        let name = d.name().unwrap_or_default();
        let nvml_brand = d.brand().map(brand_name).unwrap_or("unknown").to_string();
        let cc = d
            .cuda_compute_capability()
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_default();
        let mem = d.memory_info().ok();
        gpus.push(Gpu {
            parsed: Default::default(),
            index: d.index().unwrap_or(i),
            uuid: d.uuid().unwrap_or_default(),
            brand: brand_class(&nvml_brand, &name).to_string(),
            name,
            compute_capability: cc,
            nvml_brand,
            memory_total_mib: mem.as_ref().map(|m| m.total >> 20),
            memory_free_mib: mem.as_ref().map(|m| m.free >> 20),
            // NOT_SUPPORTED on GPUs without MIG: that is "off".
            mig: d.mig_mode().map(|m| m.current == 1).unwrap_or(false),
            compute_mode: d
                .compute_mode()
                .ok()
                .map(|m| compute_mode_name(m).to_string()),
            compute_processes: d.running_compute_processes_count().ok(),
            persistence_mode: d.is_in_persistent_mode().ok(),
            ecc_uncorrected: d
                .total_ecc_errors(
                    nvml_wrapper::enum_wrappers::device::MemoryError::Uncorrected,
                    nvml_wrapper::enum_wrappers::device::EccCounter::Volatile,
                )
                .ok(),
            retired_pages_pending: d.are_pages_pending_retired().ok(),
        });
    }
    Ok(HostProfile {
        parsed: Default::default(),
        driver_version: Some(driver),
        cuda_driver_version: Version::from_cuda_int(cuda).map(|v| v.to_string()),
        device_majors: Default::default(),
        gpus,
    })
}

fn compute_mode_name(m: nvml_wrapper::enum_wrappers::device::ComputeMode) -> &'static str {
    use nvml_wrapper::enum_wrappers::device::ComputeMode::*;
    match m {
        Default => "default",
        ExclusiveThread => "exclusive_thread",
        Prohibited => "prohibited",
        ExclusiveProcess => "exclusive_process",
    }
}

/// NVML's brand as `NVIDIA_REQUIRE_*` spells it: the enum name, lower case.
fn brand_name(b: nvml_wrapper::enum_wrappers::device::Brand) -> &'static str {
    use nvml_wrapper::enum_wrappers::device::Brand::*;
    match b {
        Unknown => "unknown",
        Quadro => "quadro",
        Tesla => "tesla",
        NVS => "nvs",
        GRID => "grid",
        GeForce => "geforce",
        Titan => "titan",
        VApps => "vapps",
        VPC => "vpc",
        VCS => "vcs",
        VWS => "vws",
        CloudGaming => "cloudgaming",
        VGaming => "vgaming",
        QuadroRTX => "quadrortx",
        NvidiaRTX => "nvidiartx",
        Nvidia => "nvidia",
        GeForceRTX => "geforcertx",
        TitanRTX => "titanrtx",
    }
}

/// Driver version from `/proc/driver/nvidia/version`, GPUs (name, UUID, minor) from
/// `/proc/driver/nvidia/gpus/*/information`. No compute capability or memory there.
pub fn from_proc(host_root: &Path, notes: &mut Vec<String>) -> HostProfile {
    let mut p = HostProfile::default();
    let vpath = host_root.join("proc/driver/nvidia/version");
    match crate::input::read_capped(&vpath, MAX_PROC_FILE) {
        Ok(b) => match parse_nvrm_version(&String::from_utf8_lossy(&b)) {
            Some(v) => {
                p.cuda_driver_version = cuda_for_driver(&v).map(|c| c.to_string());
                if p.cuda_driver_version.is_some() {
                    notes.push(format!(
                        "CUDA version of driver {v} taken from the knowledge table"
                    ));
                }
                p.driver_version = Some(v.to_string());
            }
            None => notes.push(format!("{}: no NVRM version line", vpath.display())),
        },
        Err(e) => notes.push(format!("{}: {e}", vpath.display())),
    }
    let gdir = host_root.join("proc/driver/nvidia/gpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&gdir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .take(MAX_PROC_GPUS)
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for (i, d) in dirs.iter().enumerate() {
        let Ok(b) = crate::input::read_capped(&d.join("information"), MAX_PROC_FILE) else {
            continue;
        };
        let text = String::from_utf8_lossy(&b);
        let field = |k: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(k)
                    .map(|r| r.trim_start_matches(':').trim().to_string())
            })
        };
        let name = field("Model").unwrap_or_default();
        let index = field("Device Minor")
            .and_then(|m| m.parse().ok())
            .unwrap_or(i as u32);
        p.gpus.push(Gpu {
            index,
            uuid: field("GPU UUID").unwrap_or_default(),
            brand: brand_class("unknown", &name).to_string(),
            name,
            nvml_brand: String::new(),
            ..Gpu::default()
        });
    }
    if !p.gpus.is_empty() {
        notes.push("GPUs from /proc: no compute capability, NVML brand or memory".to_string());
    }
    p
}

/// `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build …`
pub fn parse_nvrm_version(text: &str) -> Option<Version> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .filter_map(Version::parse)
        .find(|v| v.to_string().contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvrm_version_lines() {
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U16-I1-N08-12-3)  Thu Oct  9 00:00:00 UTC 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(parse_nvrm_version(open).unwrap().to_string(), "580.159.04");
        let legacy = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Wed Oct 27 21:21:55 UTC 2021\n";
        assert_eq!(parse_nvrm_version(legacy).unwrap().to_string(), "470.82.01");
        assert!(parse_nvrm_version("garbage\n").is_none());
        assert!(parse_nvrm_version("NVRM version: x86_64 only\n").is_none());
    }

    #[test]
    fn proc_fallback_reads_a_fixture_host() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("proc/driver/nvidia/gpus/0000:1a:00.0")).unwrap();
        std::fs::write(
            r.join("proc/driver/nvidia/version"),
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build\n",
        )
        .unwrap();
        std::fs::write(
            r.join("proc/driver/nvidia/gpus/0000:1a:00.0/information"),
            "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 42\nGPU UUID: \t GPU-2f6a8e1c-0000-4000-8000-000000000001\nDevice Minor: \t 0\n",
        )
        .unwrap();
        std::fs::write(
            r.join("proc/devices"),
            "Character devices:\n195 nvidia\n238 nvidia-uvm\n\nBlock devices:\n",
        )
        .unwrap();
        let f = gather(r, false);
        assert_eq!(f.source, FactSource::Proc);
        assert_eq!(f.profile.driver_version.as_deref(), Some("580.159.04"));
        assert_eq!(f.profile.cuda_driver_version.as_deref(), Some("13.0"));
        assert_eq!(f.profile.major("nvidia-uvm"), Some(238));
        let g = &f.profile.gpus[0];
        assert_eq!(
            (g.name.as_str(), g.brand.as_str()),
            ("NVIDIA H100 80GB HBM3", "datacenter")
        );
        assert_eq!(g.uuid, "GPU-2f6a8e1c-0000-4000-8000-000000000001");

        let empty = tempfile::tempdir().unwrap();
        let f = gather(empty.path(), false);
        assert_eq!(f.source, FactSource::None);
        assert!(!f.notes.is_empty());
    }
}
