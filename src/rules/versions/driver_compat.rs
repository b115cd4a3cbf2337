//! The version relation between the image's CUDA and the host's driver: minor-version
//! compatibility, forward compatibility, "driver too old", and compute capabilities the image's
//! CUDA does not build for. Sources: `knowledge/cuda_*.tsv`, the CUDA Compatibility guide, and the
//! 803 measured on the H100 host (docs/facts.md).

use crate::facts::host::HostProfile;
use crate::facts::versions::image_cuda::{CompatLib, ImageFacts};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::{
    CcSupport, Version, cc_support, cuda_for_driver, minor_compat_min_driver, toolkit_min_driver,
};

/// The runtime's own error when the driver is older than the runtime needs (cuda_runtime_api.h).
pub fn insufficient_driver() -> Predicted {
    Predicted {
        api: Api::Runtime,
        code: Some(35),
        name: Some("cudaErrorInsufficientDriver".to_string()),
        message: "CUDA driver version is insufficient for CUDA runtime version".to_string(),
    }
}

/// The CUDA versions the image will run, with where each was read. The runtimes its CUDA-using
/// libraries load are what talks to the driver; without those, every runtime on disk; and
/// `version.json` and `CUDA_VERSION` stand in only without any.
pub fn image_cuda_versions(image: &ImageFacts) -> Vec<(Version, String)> {
    // A map, not a linear search: an image with thousands of runtime names made this quadratic
    // (tests/it/hostile.rs, 200,000 files).
    let mut by_version: std::collections::BTreeMap<Version, String> = Default::default();
    let runtimes = if image.loaded_runtimes.is_empty() {
        &image.runtimes
    } else {
        &image.loaded_runtimes
    };
    for r in runtimes {
        let mm = r.version.major_minor();
        let src = if r.exact {
            r.path.display().to_string()
        } else {
            format!("{} (major only)", r.path.display())
        };
        by_version
            .entry(mm)
            .and_modify(|s| s.push_str(&format!(", {src}")))
            .or_insert(src);
    }
    let mut out: Vec<(Version, String)> = by_version.into_iter().collect();
    if out.is_empty() {
        if let Some(v) = &image.toolkit_version {
            out.push((v.major_minor(), "/usr/local/cuda/version.json".to_string()));
        } else if let Some(v) = image.cuda_env_version() {
            out.push((v.major_minor(), "CUDA_VERSION".to_string()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn host_cuda(host: &HostProfile, driver: &Version) -> Option<Version> {
    host.cuda_driver().or_else(|| cuda_for_driver(driver))
}

/// What the forward-compat library in use does: `Some(cuda)` when it lifts the driver's CUDA
/// version, `None` when it changes nothing; findings either way.
fn forward_compat(
    compat: &CompatLib,
    host: &HostProfile,
    kmd: &Version,
    out: &mut Vec<Finding>,
) -> Result<Option<Version>, ()> {
    let path = compat.path.display();
    let Some(cv) = &compat.version else {
        out.push(Finding::new(
            FindingId::ForwardCompatUnparsable,
            Severity::Warn,
            None,
            format!("the loader picks {path} for libcuda.so.1, but its name carries no driver version"),
            "name the compat library libcuda.so.<driver version> as the cuda-compat package does, or remove it",
        ));
        return Err(());
    };
    if cv == kmd {
        return Ok(None); // the same driver as the kernel module: nothing forwarded
    }
    if cv < kmd {
        // Measured: compat 580.95.05 on kernel module 580.159.04 → cuInit 803.
        out.push(Finding::new(
            FindingId::ForwardCompatDriverMismatch,
            Severity::Block,
            Some(Predicted::driver(803)),
            format!("the loader picks the forward-compat {path} ({cv}), older than the host's kernel module {kmd}"),
            format!("remove {path} from the loader's path (LD_LIBRARY_PATH, ld.so.conf.d) so the host's libcuda {kmd} is used; forward compatibility only helps on an older kernel module"),
        ));
        return Err(());
    }
    let unknown_brand = |b: &str| b.is_empty() || b == "unknown";
    let non_dc: Vec<String> = host
        .gpus
        .iter()
        .filter(|g| g.brand != "datacenter" && !unknown_brand(&g.brand))
        .map(|g| format!("GPU {} {} (brand {})", g.index, g.name, g.brand))
        .collect();
    if host.gpus.is_empty()
        || (non_dc.is_empty() && host.gpus.iter().any(|g| unknown_brand(&g.brand)))
    {
        out.push(Finding::skipped(
            FindingId::ForwardCompatSkipped,
            format!("the loader picks the forward-compat {path} ({cv}) over kernel module {kmd}; the host profile lists no GPUs or no brand for them, so whether they support forward compatibility is unknown"),
        ));
        return Err(());
    }
    if !non_dc.is_empty() {
        out.push(Finding::new(
            FindingId::ForwardCompatUnsupportedGpu,
            Severity::Block,
            Some(Predicted::driver(804)),
            format!("the loader picks the forward-compat {path} ({cv}) over kernel module {kmd}; forward compatibility needs NVIDIA datacenter GPUs, and this host has {}", non_dc.join(", ")),
            format!("upgrade the host driver to {cv} or newer and drop the compat library from the loader's path, or run on datacenter GPUs"),
        ));
        return Err(());
    }
    if cv.major() == kmd.major() {
        // Same branch, newer build: not a forward-compat pairing; not measured, so a warning.
        out.push(Finding::new(
            FindingId::ForwardCompatDriverMismatch,
            Severity::Warn,
            Some(Predicted::driver(803)),
            format!("the loader picks the forward-compat {path} ({cv}) on kernel module {kmd} of the same branch; forward compatibility pairs a newer branch with an older one"),
            format!("upgrade the host driver to {cv}, or remove the compat library from the loader's path"),
        ));
        return Err(());
    }
    let lifted = cuda_for_driver(cv);
    out.push(Finding::new(
        FindingId::ForwardCompatActive,
        Severity::Info,
        None,
        format!(
            "the loader picks the forward-compat {path} ({cv}, CUDA {}) over kernel module {kmd} on datacenter GPUs: CUDA works through forward compatibility, provided branch R{} is in NVIDIA's forward-compatibility support matrix",
            lifted.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            kmd.major()
        ),
        "nothing to do; upgrading the host driver removes the dependency on the compat package",
    ));
    Ok(lifted)
}

/// At container creation (the NRI plugin) the image is not mounted: its CUDA is only its
/// `CUDA_VERSION`, and its runtime libraries and a forward-compat package may say otherwise, so
/// nothing is judged from it there; the hook judges it when the container starts.
pub fn not_mounted(findings: &mut Vec<Finding>) {
    findings.retain(|f| f.id.area() != crate::finding::catalog::Area::CudaVersions);
    findings.push(Finding::skipped(
        FindingId::CudaVersionSkipped,
        "at creation the image is not mounted: its CUDA libraries and forward-compat package are judged by the hook when the container starts",
    ));
}

pub fn check(image: &ImageFacts, host: &HostProfile) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(e) = &image.toolkit_version_error {
        out.push(Finding::new(
            FindingId::CudaVersionJsonUnreadable,
            Severity::Info,
            None,
            e.clone(),
            "judged from the runtime libraries and CUDA_VERSION instead",
        ));
    }
    // What the image facts left out (a corrupt ld.so.cache, a FIFO where a file should be, a
    // directory past its listing bound) must show where people look, not only in `facts`.
    if !image.notes.is_empty() {
        const SHOWN: usize = 5;
        let mut ev = image.notes[..image.notes.len().min(SHOWN)].join("; ");
        if image.notes.len() > SHOWN {
            ev.push_str(&format!("; and {} more", image.notes.len() - SHOWN));
        }
        out.push(Finding::new(
            FindingId::ImageReadPartial,
            Severity::Info,
            None,
            format!("parts of the image were not read: {ev}"),
            "judged from what could be read",
        ));
    }
    let cudas = image_cuda_versions(image);
    let Some(kmd) = host.driver() else {
        out.push(Finding::skipped(
            FindingId::CudaVersionSkipped,
            "the host's driver version is unknown",
        ));
        return out;
    };
    let Some(host_cuda) = host_cuda(host, &kmd) else {
        out.push(Finding::skipped(
            FindingId::CudaVersionSkipped,
            format!("the CUDA version of driver {kmd} is unknown"),
        ));
        return out;
    };

    // Forward compatibility first: it decides which driver the runtime talks to.
    // `umd`: the user-mode driver the runtime talks to (the compat library when it is active).
    let mut effective = host_cuda.clone();
    let mut umd = kmd.clone();
    let mut compat_broken = false;
    if let Some(c) = &image.compat_in_use {
        match forward_compat(c, host, &kmd, &mut out) {
            Ok(Some(lifted)) if lifted > effective => {
                effective = lifted;
                umd = c.version.clone().unwrap_or(umd);
            }
            Ok(_) => {}
            Err(()) => compat_broken = true,
        }
    }

    if cudas.is_empty() {
        out.push(Finding::skipped(
            FindingId::CudaVersionSkipped,
            "no CUDA runtime library, /usr/local/cuda/version.json or CUDA_VERSION in the image",
        ));
    }
    // With a broken compat library in the way, cuInit fails before any version check.
    for (r, src) in cudas.iter().filter(|_| !compat_broken) {
        if *r <= effective {
            continue;
        }
        let minor_min = (r.major() == effective.major())
            .then(|| minor_compat_min_driver(r.major()))
            .flatten();
        match minor_min {
            Some(min) if umd >= min => out.push(Finding::new(
                FindingId::CudaMinorVersionCompat,
                Severity::Info,
                None,
                format!(
                    "CUDA {r} runtime ({src}) on driver {umd} (CUDA {effective}): runs through minor-version compatibility (CUDA {}.x needs driver {min} or newer); PTX built by CUDA {r} cannot be JIT-compiled by this driver (the fatbin rule judges that), and APIs newer than CUDA {effective} return errors",
                    r.major()
                ),
                "nothing to do unless the fatbin rule finds PTX-only kernels",
            )),
            _ => {
                let need = toolkit_min_driver(r)
                    .map(|t| format!("driver {} or newer ({})", t.min_driver, t.label))
                    .unwrap_or_else(|| format!("a driver for CUDA {r}"));
                let mut fix = format!("install {need}, or use an image built for CUDA {effective} or older");
                let all_dc = !host.gpus.is_empty() && host.gpus.iter().all(|g| g.brand == "datacenter");
                if all_dc && image.compat_in_use.is_none() {
                    if let Some(c) = image.compat_libs.iter().find(|c| c.version.as_ref().is_some_and(|v| *v > kmd)) {
                        fix.push_str(&format!(
                            "; the image has the forward-compat {} but the loader does not pick it: put its directory first in LD_LIBRARY_PATH",
                            c.path.display()
                        ));
                    } else {
                        fix.push_str(&format!("; on these datacenter GPUs the cuda-compat package for CUDA {r} also works"));
                    }
                }
                out.push(Finding::new(
                    FindingId::CudaDriverInsufficient,
                    Severity::Block,
                    Some(insufficient_driver()),
                    format!("CUDA {r} runtime ({src}) needs a newer driver than {umd} (CUDA {effective}){}", if r.major() > effective.major() { "; a newer major needs forward compatibility" } else { "" }),
                    fix,
                ));
            }
        }
    }

    // Compute capabilities: judged against the newest CUDA the image carries.
    if let Some((r, src)) = cudas.last() {
        for g in &host.gpus {
            let Some(cc) = g.cc_version() else {
                out.push(Finding::skipped(
                    FindingId::ComputeCapabilitySkipped,
                    format!("GPU {}: compute capability unknown", g.index),
                ));
                continue;
            };
            match cc_support(&cc, r) {
                CcSupport::Supported => {}
                CcSupport::TooNew { first_cuda } => out.push(Finding::new(
                    FindingId::ComputeCapabilityNewerThanCuda,
                    Severity::Warn,
                    Some(Predicted::driver(209)),
                    format!("GPU {} {} has compute capability {cc}, which CUDA {r} ({src}) predates (first supported by CUDA {first_cuda}): its libraries carry no code for it, only PTX could be JIT-compiled", g.index, g.name),
                    format!("use an image built with CUDA {first_cuda} or newer"),
                )),
                CcSupport::Dropped { last_cuda } => out.push(Finding::new(
                    FindingId::ComputeCapabilityDroppedByCuda,
                    Severity::Warn,
                    Some(Predicted::driver(209)),
                    format!("GPU {} {} has compute capability {cc}, which CUDA {r} ({src}) no longer builds for (last: CUDA {last_cuda})", g.index, g.name),
                    format!("use an image built with CUDA {last_cuda} or older for this GPU"),
                )),
                CcSupport::Unknown => out.push(Finding::skipped(
                    FindingId::ComputeCapabilitySkipped,
                    format!("GPU {}: compute capability {cc} is not in the knowledge table", g.index),
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::Gpu;
    use crate::facts::versions::image_cuda::CudaRuntime;
    use std::path::PathBuf;

    /// Regression (tests/it/hostile.rs, 200,000 files): grouping runtimes by version was quadratic;
    /// 20,000 distinct versions took seconds. Now a map: well under a second even in debug.
    #[test]
    fn thousands_of_runtimes_group_in_linear_time() {
        let image = ImageFacts {
            runtimes: (0..20_000)
                .map(|i| CudaRuntime {
                    path: PathBuf::from(format!("/usr/local/cuda/lib64/libcudart.so.12.{i}")),
                    version: Version::from_parts(&[12, i]),
                    exact: true,
                })
                .collect(),
            ..ImageFacts::default()
        };
        let t = std::time::Instant::now();
        let v = image_cuda_versions(&image);
        assert_eq!(v.len(), 20_000);
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn host(driver: &str, cuda: Option<&str>, gpus: &[(&str, &str, &str)]) -> HostProfile {
        HostProfile {
            driver_version: Some(driver.into()),
            cuda_driver_version: cuda.map(str::to_string),
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (name, cc, brand))| Gpu {
                    index: i as u32,
                    name: name.to_string(),
                    compute_capability: cc.to_string(),
                    brand: brand.to_string(),
                    ..Gpu::default()
                })
                .collect(),
            ..HostProfile::default()
        }
    }

    fn h100_580() -> HostProfile {
        host(
            "580.159.04",
            Some("13.0"),
            &[("NVIDIA H100 80GB HBM3", "9.0", "datacenter")],
        )
    }

    fn image(runtime: &str) -> ImageFacts {
        ImageFacts {
            runtimes: vec![CudaRuntime {
                path: PathBuf::from(format!("/usr/local/cuda/lib64/libcudart.so.{runtime}")),
                version: v(runtime),
                exact: true,
            }],
            ..ImageFacts::default()
        }
    }

    fn with_compat(mut i: ImageFacts, ver: &str) -> ImageFacts {
        let c = CompatLib {
            path: PathBuf::from(format!("/usr/local/cuda/compat/libcuda.so.{ver}")),
            version: Version::parse(ver),
        };
        i.compat_libs.push(c.clone());
        i.compat_in_use = Some(c);
        i
    }

    /// Ids of the findings; every id a rule emits must be listed in FINDING_IDS.
    fn ids(f: &[Finding]) -> Vec<&str> {
        crate::rules::ids(f)
    }

    /// Named scenario: a CUDA 13.0 image on a 570 driver blocks and names the driver needed
    /// (release notes: CUDA 13.0 GA needs >= 580.65.06).
    #[test]
    fn cuda_13_image_on_570_driver() {
        let h = host(
            "570.133.20",
            Some("12.8"),
            &[("NVIDIA A100-SXM4-80GB", "8.0", "datacenter")],
        );
        let f = check(&image("13.0.96"), &h);
        assert_eq!(ids(&f), ["cuda-driver-insufficient"]);
        assert_eq!(f[0].severity, Severity::Block);
        assert_eq!(f[0].predicted, Some(insufficient_driver()));
        assert!(f[0].fix.contains("580.65.06"), "{}", f[0].fix);
        assert!(
            f[0].fix.contains("cuda-compat"),
            "datacenter GPUs: forward compat is a way out: {}",
            f[0].fix
        );
    }

    /// Named scenario: a CUDA 12.0 image on a 570 driver starts (no false block).
    #[test]
    fn cuda_12_0_image_on_570_driver() {
        let h = host(
            "570.133.20",
            Some("12.8"),
            &[("NVIDIA GeForce RTX 5070 Ti", "12.0", "geforce")],
        );
        let f = check(&image("12.0.146"), &h);
        assert!(f.iter().all(|f| f.severity != Severity::Block), "{f:?}");
        // But a 5070 Ti (CC 12.0) is unknown to CUDA 12.0 (first: 12.8).
        assert_eq!(ids(&f), ["compute-capability-newer-than-cuda"]);
    }

    /// Minor-version compatibility rows (compat guide): 12.x from 525.60.13, 11.x from 450.80.02.
    #[test]
    fn minor_version_compatibility_table() {
        let cases = [
            // (runtime, driver, driver's CUDA, expected ids)
            (
                "12.8.90",
                "535.104.05",
                "12.2",
                vec!["cuda-minor-version-compat"],
            ),
            (
                "12.4.127",
                "525.60.13",
                "12.0",
                vec!["cuda-minor-version-compat"],
            ),
            (
                "11.8.89",
                "450.80.02",
                "11.0",
                vec!["cuda-minor-version-compat"],
            ),
            (
                "11.8.89",
                "450.51.06",
                "11.0",
                vec!["cuda-driver-insufficient"],
            ), // below 450.80.02
            (
                "12.2.140",
                "470.82.01",
                "11.4",
                vec!["cuda-driver-insufficient"],
            ), // newer major
            ("11.4.148", "470.82.01", "11.4", vec![]),
            (
                "10.2.89",
                "418.39",
                "10.1",
                vec!["cuda-driver-insufficient"],
            ), // no minor compat before 11
        ];
        for (rt, drv, cuda, want) in cases {
            let f = check(&image(rt), &host(drv, Some(cuda), &[]));
            assert_eq!(ids(&f), want, "{rt} on {drv}");
        }
        // cuda_driver_version missing: derived from the driver version through the table.
        let f = check(&image("12.9.79"), &host("570.133.20", None, &[]));
        assert_eq!(ids(&f), ["cuda-minor-version-compat"]);
        assert!(f[0].evidence.contains("CUDA 12.8"), "{}", f[0].evidence);
    }

    /// Named scenario: forward compat on a GeForce → 804.
    #[test]
    fn forward_compat_on_geforce() {
        let h = host(
            "570.133.20",
            Some("12.8"),
            &[("NVIDIA GeForce RTX 5070 Ti", "12.0", "geforce")],
        );
        let f = check(&with_compat(image("13.0.96"), "580.95.05"), &h);
        assert_eq!(ids(&f), ["forward-compat-unsupported-gpu"]);
        assert_eq!(f[0].predicted, Some(Predicted::driver(804)));
    }

    /// Named scenario, measured on the H100 (FACTS.md): compat 580.95.05 on kernel module
    /// 580.159.04 → cuInit 803.
    #[test]
    fn compat_older_than_kernel_module() {
        let f = check(&with_compat(image("13.0.96"), "580.95.05"), &h100_580());
        assert_eq!(ids(&f), ["forward-compat-driver-mismatch"]);
        assert_eq!(f[0].severity, Severity::Block);
        assert_eq!(
            f[0].predicted.as_ref().unwrap().name.as_deref(),
            Some("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")
        );
    }

    #[test]
    fn forward_compat_on_datacenter_works() {
        let h = host(
            "535.104.05",
            Some("12.2"),
            &[("NVIDIA A100-SXM4-80GB", "8.0", "datacenter")],
        );
        let f = check(&with_compat(image("13.0.96"), "580.95.05"), &h);
        assert_eq!(ids(&f), ["forward-compat-active"], "{f:?}");
        assert!(f[0].evidence.contains("CUDA 13.0"));
        // Compat picked, but the runtime is newer than the compat driver too (13.1 > 13.0).
        let f = check(&with_compat(image("13.1.80"), "580.95.05"), &h);
        assert_eq!(
            ids(&f),
            ["forward-compat-active", "cuda-minor-version-compat"]
        );
        // Same branch, newer build: not a forward-compat pairing.
        let h = host(
            "580.65.06",
            Some("13.0"),
            &[("NVIDIA H100", "9.0", "datacenter")],
        );
        let f = check(&with_compat(image("13.0.96"), "580.95.05"), &h);
        assert_eq!(ids(&f), ["forward-compat-driver-mismatch"]);
        assert_eq!(f[0].severity, Severity::Warn);
        // Identical to the kernel module: nothing forwarded, nothing to say.
        assert!(check(&with_compat(image("13.0.96"), "580.159.04"), &h100_580()).is_empty());
    }

    #[test]
    fn compat_present_but_not_picked_is_named_in_the_fix() {
        let h = host(
            "535.104.05",
            Some("12.2"),
            &[("NVIDIA A100", "8.0", "datacenter")],
        );
        let mut i = with_compat(image("13.0.96"), "580.95.05");
        i.compat_in_use = None;
        let f = check(&i, &h);
        assert_eq!(ids(&f), ["cuda-driver-insufficient"]);
        assert!(f[0].fix.contains("loader does not pick it"), "{}", f[0].fix);
    }

    #[test]
    fn bad_input_gives_findings_not_panics() {
        // A compat library with a non-version name.
        let mut i = image("13.0.96");
        i.compat_in_use = Some(CompatLib {
            path: PathBuf::from("/usr/local/cuda/compat/libcuda.so.latest"),
            version: None,
        });
        let f = check(&i, &h100_580());
        assert_eq!(ids(&f), ["forward-compat-unparsable"]);
        // An unreadable version.json, with CUDA_VERSION as the fallback.
        let i = ImageFacts {
            toolkit_version_error: Some("/usr/local/cuda/version.json: not JSON".into()),
            cuda_version: Some("12.4.1".into()),
            ..ImageFacts::default()
        };
        let f = check(&i, &h100_580());
        assert_eq!(ids(&f), ["cuda-version-json-unreadable"]);
        // Notes of the image facts become one info finding, bounded in size.
        let i = ImageFacts {
            notes: (0..7).map(|n| format!("note {n}")).collect(),
            cuda_version: Some("12.4.1".into()),
            ..ImageFacts::default()
        };
        let f = check(&i, &h100_580());
        assert_eq!(ids(&f), ["image-read-partial"]);
        assert!(
            f[0].evidence.ends_with("note 4; and 2 more"),
            "{}",
            f[0].evidence
        );
        // Missing host facts.
        let f = check(&image("12.4.127"), &HostProfile::default());
        assert_eq!(ids(&f), ["cuda-version-skipped"]);
        let f = check(&image("12.4.127"), &host("not-a-version", None, &[]));
        assert_eq!(ids(&f), ["cuda-version-skipped"]);
        let f = check(&ImageFacts::default(), &h100_580());
        assert_eq!(ids(&f), ["cuda-version-skipped"]);
        let f = check(
            &image("12.4.127"),
            &host("580.159.04", Some("13.0"), &[("x", "", "datacenter")]),
        );
        assert_eq!(ids(&f), ["compute-capability-skipped"]);
        // Forward compat with no GPU list, or GPUs of unknown brand.
        let f = check(
            &with_compat(image("13.0.96"), "580.95.05"),
            &host("535.104.05", Some("12.2"), &[]),
        );
        assert_eq!(ids(&f), ["forward-compat-skipped"]);
        let f = check(
            &with_compat(image("13.0.96"), "580.95.05"),
            &host("535.104.05", Some("12.2"), &[("x", "8.0", "")]),
        );
        assert_eq!(ids(&f), ["forward-compat-skipped"]);
    }

    /// Compute-capability rows of compute_capability.tsv: 6.1 last in CUDA 12.9, 12.0 first in
    /// CUDA 12.8.
    #[test]
    fn compute_capability_rules() {
        let h = host(
            "580.159.04",
            Some("13.0"),
            &[("NVIDIA TITAN Xp", "6.1", "geforce")],
        );
        let f = check(&image("13.0.96"), &h);
        assert_eq!(ids(&f), ["compute-capability-dropped-by-cuda"]);
        assert!(f[0].fix.contains("12.9"));
        assert!(check(&image("12.9.79"), &h).is_empty());
        let h = host(
            "580.159.04",
            Some("13.0"),
            &[("NVIDIA B200", "10.0", "datacenter")],
        );
        assert_eq!(
            ids(&check(&image("12.4.127"), &h)),
            ["compute-capability-newer-than-cuda"]
        );
        assert!(check(&image("12.8.90"), &h).is_empty());
    }
}

/// The shipped example hosts (`examples/hosts/`) against typical images.
#[cfg(test)]
mod example_hosts {
    use super::*;
    use crate::facts::versions::image_cuda::CudaRuntime;
    use std::path::{Path, PathBuf};

    fn load(name: &str) -> HostProfile {
        HostProfile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/hosts")
                .join(name),
        )
        .unwrap()
    }

    fn image(rt: &str) -> ImageFacts {
        ImageFacts {
            runtimes: vec![CudaRuntime {
                path: PathBuf::from("/usr/local/cuda/lib64/libcudart.so"),
                version: Version::parse(rt).unwrap(),
                exact: true,
            }],
            ..ImageFacts::default()
        }
    }

    fn blocks(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity == Severity::Block)
            .map(|f| f.id.as_str())
            .collect()
    }

    #[test]
    fn profiles_are_consistent() {
        for name in [
            "h100-580.json",
            "a100-535.json",
            "rtx5070ti-570.json",
            "t4-470.json",
            "rtx5090-570.json",
            "rtx5090-580.json",
            "t4-550.json",
        ] {
            let p = load(name);
            let drv = Version::parse(p.driver_version.as_deref().unwrap()).unwrap();
            assert_eq!(
                cuda_for_driver(&drv).map(|v| v.to_string()),
                p.cuda_driver_version,
                "{name}"
            );
            for g in &p.gpus {
                assert_eq!(
                    crate::facts::host::brand_class(&g.nvml_brand, &g.name),
                    g.brand,
                    "{name}"
                );
                assert!(Version::parse(&g.compute_capability).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn images_across_the_fleet() {
        let cases = [
            ("13.0.96", "h100-580.json", vec![]),
            ("13.0.96", "a100-535.json", vec!["cuda-driver-insufficient"]),
            (
                "13.0.96",
                "rtx5070ti-570.json",
                vec!["cuda-driver-insufficient"],
            ),
            ("12.8.90", "a100-535.json", vec![]), // minor-version compatibility
            ("12.0.146", "rtx5070ti-570.json", vec![]),
            ("12.0.146", "t4-470.json", vec!["cuda-driver-insufficient"]),
            ("11.8.89", "t4-470.json", vec![]), // 470.82.01 >= 450.80.02
        ];
        for (rt, host, want) in cases {
            assert_eq!(
                blocks(&check(&image(rt), &load(host))),
                want,
                "{rt} on {host}"
            );
        }
    }
}

/// Predictions against what was measured on the H100 (tests/fixtures/h100-580/README.md).
#[cfg(test)]
mod measured_on_h100 {
    use super::*;
    use crate::facts::library_loading::loader::tests::elf64;
    use crate::facts::versions::image_cuda::gather_rootfs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// The H100's library layout, with its real ld.so.cache, as an image rootfs.
    fn h100_like_rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100-580");
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::copy(fixture.join("etc/ld.so.cache"), r.join("etc/ld.so.cache")).unwrap();
        elf64(&r.join("usr/local/nvidia/lib64/libcuda.so.580.159.04"));
        symlink(
            "libcuda.so.580.159.04",
            r.join("usr/local/nvidia/lib64/libcuda.so.1"),
        )
        .unwrap();
        let compat = r.join("usr/local/cuda-13.0/compat");
        elf64(&compat.join("libcuda.so.580.95.05"));
        symlink("libcuda.so.580.95.05", compat.join("libcuda.so.1")).unwrap();
        elf64(&r.join("usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13.0.96"));
        symlink("cuda-13.0", r.join("usr/local/cuda")).unwrap();
        d
    }

    fn host() -> HostProfile {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100-580");
        let mut p = crate::facts::host::nvml::gather(&root, false).profile;
        // /proc has no compute capability or NVML brand; nvidia-smi there said 9.0 and "NVIDIA".
        p.gpus[0].compute_capability = "9.0".into();
        p.gpus[0].nvml_brand = "nvidia".into();
        p
    }

    #[test]
    fn proc_fallback_on_the_real_files() {
        let p = host();
        assert_eq!(p.driver_version.as_deref(), Some("580.159.04"));
        assert_eq!(p.cuda_driver_version.as_deref(), Some("13.0")); // cuDriverGetVersion: 13000
        assert_eq!(p.gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(p.gpus[0].brand, "datacenter");
        assert_eq!(p.major("nvidia-caps"), Some(241));
    }

    /// Actual: cuInit 803 with the compat directory first in LD_LIBRARY_PATH.
    #[test]
    fn compat_first_predicts_803() {
        let d = h100_like_rootfs();
        let f = gather_rootfs(
            d.path(),
            &["LD_LIBRARY_PATH=/usr/local/cuda-13.0/compat".to_string()],
        );
        let got = check(&f, &host());
        assert_eq!(
            got.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["forward-compat-driver-mismatch"]
        );
        assert_eq!(got[0].predicted.as_ref().unwrap().code, Some(803));
    }

    /// Actual: cuInit 0 when the real cache picks /usr/local/nvidia/lib64/libcuda.so.1.
    #[test]
    fn cache_picks_the_host_driver_predicts_nothing() {
        let d = h100_like_rootfs();
        let f = gather_rootfs(d.path(), &[]);
        let lib = f.libcuda.as_ref().unwrap();
        assert_eq!(
            lib.via,
            crate::facts::library_loading::loader::Source::LdSoCache
        );
        assert_eq!(
            lib.path_in_image,
            Path::new("/usr/local/nvidia/lib64/libcuda.so.1")
        );
        assert!(f.compat_in_use.is_none());
        assert!(check(&f, &host()).is_empty());
    }
}
