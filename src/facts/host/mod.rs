//! Host facts: the host profile of `docs/host-profile.md`, from a file or from the host.
//!
//! File-based facts are read under `host_root` (default `/`), so tests and "what if" runs use a
//! fixture host directory instead of this machine.

pub mod disk;
pub mod doctor;
pub mod headroom;
pub mod nvml;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::formats::version::{ComputeCapability, CudaVersion, ParsedOnce};
use crate::knowledge::cuda::Version;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    /// `major.minor`
    #[serde(default)]
    pub compute_capability: String,
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub nvml_brand: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_free_mib: Option<u64>,
    #[serde(default)]
    pub mig: bool,
    /// NVML's compute mode: `default`, `exclusive_process`, `prohibited`, `exclusive_thread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_mode: Option<String>,
    /// Compute processes running on the GPU when the facts were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_processes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_mode: Option<bool>,
    /// Uncorrected ECC errors since the driver loaded (NVML's volatile count), where ECC is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected: Option<u64>,
    /// Memory pages waiting to be retired at the next driver reload (NVML; GPUs before Ampere —
    /// later ones remap rows and report NOT_SUPPORTED here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_pages_pending: Option<bool>,
    /// `compute_capability` as rules read it, parsed once (not in the JSON).
    #[doc(hidden)]
    #[serde(skip)]
    pub parsed: GpuParsed,
}

/// A GPU's typed facts, parsed from its strings on first use: see [`ParsedOnce`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuParsed {
    cc: ParsedOnce<Option<Version>>,
    cc_pair: ParsedOnce<Option<ComputeCapability>>,
}

impl Gpu {
    /// The compute capability as a dotted [`Version`] (`9.0`); `None` where the facts' string is
    /// not one.
    pub fn cc_version(&self) -> Option<Version> {
        self.parsed.cc.get(&self.compute_capability, Version::parse)
    }

    /// The compute capability as `major.minor` (`9.0`, `sm_90`); `None` where the facts' string is
    /// not one.
    pub fn cc(&self) -> Option<ComputeCapability> {
        self.parsed
            .cc_pair
            .get(&self.compute_capability, |s| s.parse().ok())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports, `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// Character-device majors from `/proc/devices`: `nvidia`, `nvidia-uvm`, `nvidia-caps`.
    #[serde(default)]
    pub device_majors: BTreeMap<String, u32>,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// The versions above as rules read them, parsed once (not in the JSON).
    #[doc(hidden)]
    #[serde(skip)]
    pub parsed: HostParsed,
}

/// A host's typed facts, parsed from its strings on first use: see [`ParsedOnce`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostParsed {
    driver: ParsedOnce<Option<Version>>,
    cuda_driver: ParsedOnce<Option<Version>>,
    cuda_driver_pair: ParsedOnce<Option<CudaVersion>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: cannot read host profile: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a host profile: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
}

/// Host profiles are small; a larger file is not one.
const MAX_PROFILE_BYTES: u64 = 4 << 20;

impl HostProfile {
    pub fn load(path: &Path) -> Result<HostProfile, HostError> {
        let text = crate::input::read_capped(path, MAX_PROFILE_BYTES).map_err(|source| {
            HostError::Read {
                path: path.to_path_buf(),
                error: source,
            }
        })?;
        serde_json::from_slice(&text).map_err(|source| HostError::Parse {
            path: path.to_path_buf(),
            error: source,
        })
    }

    /// The kernel-mode driver's version (`580.95.05`); `None` where unknown or not a version.
    pub fn driver(&self) -> Option<Version> {
        let s = self.driver_version.as_deref()?;
        self.parsed.driver.get(s, Version::parse)
    }

    /// The highest CUDA version the driver supports, as a dotted [`Version`]; `None` where
    /// unknown or not a version.
    pub fn cuda_driver(&self) -> Option<Version> {
        let s = self.cuda_driver_version.as_deref()?;
        self.parsed.cuda_driver.get(s, Version::parse)
    }

    /// The highest CUDA version the driver supports, as `major.minor` (`13.0`; `13` or `13.0.1`
    /// are not); `None` where unknown or not one.
    pub fn cuda_driver_release(&self) -> Option<CudaVersion> {
        let s = self.cuda_driver_version.as_deref()?;
        self.parsed.cuda_driver_pair.get(s, |s| s.parse().ok())
    }

    pub fn major(&self, name: &str) -> Option<u32> {
        self.device_majors.get(name).copied()
    }
}

/// The brand class cuda-preflight judges by (`docs/design.md`), from NVML's brand (lower
/// case, as `NVIDIA_REQUIRE_*` spells it) and the product name. NVML reports current datacenter
/// parts (H100, …) as plain "NVIDIA", older ones as "Tesla"; professional RTX cards as
/// "NVIDIA RTX"/"Quadro RTX". Where the brand says nothing (`unknown`), the name decides.
pub fn brand_class(nvml_brand: &str, name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    match nvml_brand.to_ascii_lowercase().as_str() {
        "tesla" => "datacenter",
        "nvidia" if n.contains("rtx") => "workstation",
        "nvidia" => "datacenter",
        "geforce" | "geforcertx" | "titan" | "titanrtx" => "geforce",
        "quadro" | "quadrortx" | "nvidiartx" | "nvs" => "workstation",
        "grid" | "vapps" | "vpc" | "vcs" | "vws" | "cloudgaming" | "vgaming" => "virtual",
        _ if n.contains("geforce") || n.contains("titan") => "geforce",
        _ if n.contains("quadro") || n.contains("rtx") => "workstation",
        _ if n.contains("tesla")
            || [
                "a100", "h100", "h200", "h800", "a800", "b200", "b100", "gb200", "l40", "l4", "t4",
                "a10", "a30", "a40", "v100", "p100",
            ]
            .iter()
            .any(|p| n.split([' ', '-']).any(|w| w == *p)) =>
        {
            "datacenter"
        }
        _ => "unknown",
    }
}

/// Character-device majors of the NVIDIA drivers, from `<host_root>/proc/devices`.
/// `nvidiactl` shares the `nvidia` major; only the names we judge are kept.
pub fn device_majors_from_proc(host_root: &Path) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(host_root.join("proc/devices")).unwrap_or_default();
    parse_proc_devices(&text)
}

pub fn parse_proc_devices(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut in_char = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Character devices") {
            in_char = true;
            continue;
        }
        if line.starts_with("Block devices") {
            in_char = false;
            continue;
        }
        if !in_char {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(num), Some(name)) = (it.next(), it.next())
            && let Ok(major) = num.parse::<u32>()
            && name.starts_with("nvidia")
        {
            out.entry(name.to_string()).or_insert(major);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_versions_parsed_once_and_never_stale() {
        // A malformed version loads as today (a string) and reads as None, not an error.
        let p: HostProfile = serde_json::from_str(
            r#"{"driver_version":"580.95.05","cuda_driver_version":"13.x","gpus":[{"compute_capability":"sm_90"}]}"#,
        )
        .unwrap();
        assert_eq!(p.driver().map(|v| v.to_string()), Some("580.95.05".into()));
        assert!(p.cuda_driver().is_none() && p.cuda_driver_release().is_none());
        assert_eq!(p.gpus[0].cc(), Some(ComputeCapability(9, 0)));
        assert!(
            p.gpus[0].cc_version().is_none(),
            "Version reads dotted numbers only"
        );
        // The JSON is the strings, unchanged by what was read.
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("parsed"), "{json}");
        // A fact changed after it was read is read afresh; a clone starts empty and is equal.
        let mut q = p.clone();
        assert_eq!(p, q);
        q.cuda_driver_version = Some("12.8".into());
        assert_eq!(q.cuda_driver_release(), Some(CudaVersion(12, 8)));
        q.cuda_driver_version = Some("13.0".into());
        assert_eq!(q.cuda_driver_release(), Some(CudaVersion(13, 0)));
        assert_eq!(q.cuda_driver().map(|v| v.to_string()), Some("13.0".into()));
    }

    #[test]
    fn proc_devices_of_the_h100_host() {
        // As read on the H100 machine (docs/facts.md).
        let text = "Character devices:\n  1 mem\n195 nvidia-frontend\n195 nvidia\n195 nvidiactl\n238 nvidia-uvm\n\
                    239 nvidia-nvswitch\n240 nvidia-nvlink\n241 nvidia-caps\n242 nvidia-caps-imex-channels\n\n\
                    Block devices:\n  7 loop\n195 nvidia-bogus\n";
        let m = parse_proc_devices(text);
        assert_eq!(m.get("nvidia"), Some(&195));
        assert_eq!(m.get("nvidiactl"), Some(&195));
        assert_eq!(m.get("nvidia-uvm"), Some(&238));
        assert_eq!(m.get("nvidia-caps"), Some(&241));
        assert!(
            !m.contains_key("nvidia-bogus"),
            "block devices are not character majors"
        );
    }

    #[test]
    fn brand_classes() {
        let cases = [
            ("nvidia", "NVIDIA H100 80GB HBM3", "datacenter"), // the H100 reports brand NVIDIA
            ("tesla", "Tesla T4", "datacenter"),
            ("nvidia", "NVIDIA A100-SXM4-80GB", "datacenter"),
            ("geforcertx", "NVIDIA GeForce RTX 5070 Ti", "geforce"),
            ("titan", "NVIDIA TITAN Xp", "geforce"),
            ("nvidiartx", "NVIDIA RTX A6000", "workstation"),
            (
                "nvidia",
                "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                "workstation",
            ),
            ("quadro", "Quadro RTX 8000", "workstation"),
            ("grid", "GRID A100-40C", "virtual"),
            ("unknown", "NVIDIA H100 PCIe", "datacenter"),
            ("", "NVIDIA GeForce GTX 1080", "geforce"),
            ("", "Mystery", "unknown"),
        ];
        for (b, n, want) in cases {
            assert_eq!(brand_class(b, n), want, "{b} {n}");
        }
    }

    #[test]
    fn profile_example_parses_and_tolerates_unknown_fields() {
        let p: HostProfile = serde_json::from_str(
            r#"{"driver_version":"580.159.04","cuda_driver_version":"13.0","future":1,
                "device_majors":{"nvidia":195},"gpus":[{"index":0,"compute_capability":"9.0","extra":true}]}"#,
        )
        .unwrap();
        assert_eq!(p.major("nvidia"), Some(195));
        assert_eq!(p.gpus[0].compute_capability, "9.0");
    }
}
