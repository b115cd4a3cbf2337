//! JIT toolchains against the GPU and the driver: a `ptxas` or NVRTC whose CUDA predates the
//! GPU cannot compile for it (Triton's "Value 'sm_120' is not defined for option 'gpu-name'"),
//! and one newer than the driver emits PTX the driver cannot JIT (222). Knowledge:
//! `knowledge::cuda::cc_support` (compute capability ↔ CUDA) and the PTX ISA table.

use crate::facts::host::Gpu;
use crate::facts::toolchains::{Kind, Origin, Toolchain, ToolchainFacts};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::{CcSupport, Version, cc_support};
use crate::knowledge::{cuda_for_ptx_isa, max_ptx_isa_for_cuda};

/// What NVRTC's `nvrtcGetProgramLog` holds for an architecture it does not know (read from
/// `libnvrtc.so.12` 12.4.127, and seen from `nvrtcCompileProgram` with `-arch=sm_120`).
pub const NVRTC_BAD_ARCH: &str = "nvrtc: error: invalid value for --gpu-architecture (-arch)";

/// `ptxas`'s own line for an architecture it does not know (ptxas 12.4.99 and 13.5.37, spacing
/// included).
pub fn ptxas_bad_arch(gpu_name: &str) -> String {
    format!("ptxas fatal   : Value '{gpu_name}' is not defined for option 'gpu-name'")
}

/// The `--gpu-name` Triton passes for a compute capability (`backends/nvidia/compiler.py`):
/// Triton 3.0-3.2 add `a` for sm_90 only, 3.3 and later for every sm_90 and newer.
pub fn triton_gpu_name(triton: Option<&str>, cc: &Version) -> String {
    let sm = cc.major() * 10 + cc.minor();
    let old = triton
        .and_then(|v| Version::parse(v.split(['+', 'a', 'b', 'r']).next().unwrap_or(v)))
        .is_some_and(|v| v.major_minor() < Version::from_parts(&[3, 3]));
    let a = if old { sm == 90 } else { sm >= 90 };
    format!("sm_{sm}{}", if a { "a" } else { "" })
}

/// Findings for the image's toolchains on these GPUs and this driver (the host's
/// `cuda_driver_version`, [`HostProfile::cuda_driver`](crate::facts::host::HostProfile::cuda_driver)).
pub fn check(facts: &ToolchainFacts, gpus: &[Gpu], driver: Option<Version>) -> Vec<Finding> {
    let mut out = Vec::new();
    let used: Vec<&Toolchain> = facts
        .toolchains
        .iter()
        // Triton runs the file `TRITON_PTXAS_PATH` names, never its bundled one.
        .filter(|t| t.overridden_by.is_none())
        .collect();
    if used.is_empty() {
        return out;
    }
    // One line per compute capability: a host of eight B200s is one finding, not eight.
    let mut ccs: Vec<(Version, Vec<&Gpu>)> = Vec::new();
    for g in gpus {
        match g.cc_version() {
            Some(cc) => match ccs.iter_mut().find(|(c, _)| *c == cc) {
                Some((_, v)) => v.push(g),
                None => ccs.push((cc, vec![g])),
            },
            None => out.push(Finding::skipped(
                FindingId::ToolchainVersionSkipped,
                format!(
                    "GPU {} ({}) has no compute capability in the host facts ({:?}): the image's JIT toolchains are not judged against it",
                    g.index, g.name, g.compute_capability
                ),
            )),
        }
    }
    if gpus.is_empty() {
        out.push(Finding::skipped(
            FindingId::ToolchainVersionSkipped,
            "the host facts list no GPU: the image's JIT toolchains (ptxas, NVRTC) are not judged",
        ));
    }
    if driver.is_none() {
        out.push(Finding::skipped(
            FindingId::ToolchainVersionSkipped,
            "the host's CUDA driver version is unknown: whether the image's JIT toolchains emit PTX newer than the driver is not judged",
        ));
    }
    for t in used {
        let Some(cuda) = &t.cuda else {
            out.push(Finding::skipped(
                FindingId::ToolchainVersionSkipped,
                format!(
                    "{} {}: CUDA version not read ({}); whether it knows the GPU is not judged",
                    kind_name(t),
                    t.path.display(),
                    t.error.as_deref().unwrap_or("no reason recorded")
                ),
            ));
            continue;
        };
        for (cc, gs) in &ccs {
            if !t.used_for.covers(cc.major()) {
                continue;
            }
            if let Some(f) = gpu_finding(t, cuda, cc, gs) {
                out.push(f);
            }
        }
        if let Some(d) = &driver
            && let Some(f) = driver_finding(t, cuda, d)
        {
            out.push(f);
        }
    }
    out
}

fn kind_name(t: &Toolchain) -> &'static str {
    match t.kind {
        Kind::Ptxas => "ptxas",
        Kind::Nvrtc => "NVRTC",
    }
}

/// `ptxas /x/ptxas (Triton 3.0.0's bundled ptxas) is CUDA 12.4.99, read from its embedded
/// "Cuda compilation tools" banner`
fn describe(t: &Toolchain, cuda: &Version) -> String {
    let whose = match &t.origin {
        Origin::Triton { version } => format!(
            " (Triton {}'s bundled ptxas)",
            version.as_deref().unwrap_or("of unknown version")
        ),
        Origin::Toolkit => " (CUDA toolkit)".into(),
        Origin::Wheel => " (NVIDIA wheel)".into(),
        Origin::Loader => " (found by the container's loader)".into(),
        Origin::TritonPtxasPath { variable } => {
            format!(" (named by {variable}, so Triton uses it)")
        }
    };
    let source = match t.version_source {
        Some(crate::facts::toolchains::VersionSource::FileName) => "its file name".to_string(),
        _ => "its embedded \"Cuda compilation tools, release\" banner".to_string(),
    };
    format!(
        "{} {}{whose} is CUDA {cuda}, read from {source}",
        kind_name(t),
        t.path.display()
    )
}

fn gpus_text(cc: &Version, gs: &[&Gpu]) -> String {
    let names: Vec<String> = gs
        .iter()
        .map(|g| format!("{} {}", g.index, g.name))
        .collect();
    format!(
        "GPU {} (compute capability {cc})",
        if names.len() > 3 {
            format!("{}, … ({} GPUs)", names[..2].join(", "), names.len())
        } else {
            names.join(", ")
        }
    )
}

fn gpu_finding(t: &Toolchain, cuda: &Version, cc: &Version, gs: &[&Gpu]) -> Option<Finding> {
    let (why, need) = match cc_support(cc, cuda) {
        CcSupport::Supported | CcSupport::Unknown => return None,
        CcSupport::TooNew { first_cuda } => (
            format!(
                "predates the GPU: the first CUDA that compiles for compute capability {cc} is {first_cuda}"
            ),
            format!("CUDA {first_cuda} or newer"),
        ),
        CcSupport::Dropped { last_cuda } => (
            format!(
                "no longer compiles for the GPU: the last CUDA that compiles for compute capability {cc} is {last_cuda}"
            ),
            format!("CUDA {last_cuda} or older"),
        ),
    };
    let sm = format!("sm_{}", cc.major() * 10 + cc.minor());
    let (predicted, what_fails) = match (&t.kind, &t.origin) {
        (Kind::Nvrtc, _) => (
            Predicted::message(Api::Toolkit, NVRTC_BAD_ARCH),
            format!(
                "nvrtcCompileProgram for {sm} (or compute_{}) fails with NVRTC_ERROR_INVALID_OPTION",
                &sm[3..]
            ),
        ),
        (Kind::Ptxas, Origin::Triton { version }) => (
            Predicted::message(
                Api::Toolkit,
                ptxas_bad_arch(&triton_gpu_name(version.as_deref(), cc)),
            ),
            "every Triton kernel compilation (torch.compile, Triton kernels) fails with PTXASError"
                .to_string(),
        ),
        (Kind::Ptxas, _) => (
            Predicted::message(Api::Toolkit, ptxas_bad_arch(&sm)),
            format!("assembling PTX for {sm} with it fails"),
        ),
    };
    let fix = match (&t.kind, &t.origin) {
        (Kind::Ptxas, Origin::Triton { .. }) => format!(
            "Install a Triton whose bundled ptxas is {need} (Triton 3.3 ships a CUDA 12.8 ptxas-blackwell for sm_100 and newer; 3.4 and 3.5 bundle CUDA 12.8's ptxas), \
             or set TRITON_PTXAS_PATH to the ptxas of a {need} toolkit in the image."
        ),
        (Kind::Ptxas, Origin::TritonPtxasPath { variable }) => {
            format!(
                "Point {variable} at a ptxas of {need}, or unset it to use Triton's bundled one."
            )
        }
        (Kind::Ptxas, Origin::Wheel) => format!("Install the nvidia-cuda-nvcc wheel of {need}."),
        (Kind::Nvrtc, Origin::Wheel | Origin::Loader) => format!(
            "Install the NVRTC of {need} (the nvidia-cuda-nvrtc wheel for CUDA 13, nvidia-cuda-nvrtc-cu12 for 12), or build the image on a CUDA toolkit of {need}."
        ),
        _ => format!("Build the image on a CUDA toolkit of {need}."),
    };
    Some(Finding::new(
        FindingId::ToolchainGpuUnsupported,
        Severity::Warn,
        Some(predicted),
        format!(
            "{} {why}; on {}: {what_fails}",
            describe(t, cuda),
            gpus_text(cc, gs)
        ),
        fix,
    ))
}

/// The toolchain's newest PTX ISA against the driver's: PTX it emits at its own ISA fails to JIT
/// with 222 on an older driver. CUDA releases below the ISA table (< 9.0) compare as versions.
fn driver_finding(t: &Toolchain, cuda: &Version, driver: &Version) -> Option<Finding> {
    let mm = |v: &Version| (v.major() as u32, v.minor() as u32);
    let (tool_isa, drv_isa) = (
        max_ptx_isa_for_cuda(mm(cuda)),
        max_ptx_isa_for_cuda(mm(driver)),
    );
    let newer = match (tool_isa, drv_isa) {
        (Some(a), Some(b)) => a > b,
        _ => cuda.major_minor() > driver.major_minor(),
    };
    if !newer {
        return None;
    }
    let isa = |i: Option<(u32, u32)>| i.map_or("?".to_string(), |(a, b)| format!("{a}.{b}"));
    let when = match (&t.kind, &t.origin) {
        (Kind::Nvrtc, _) => "NVRTC asked for a virtual architecture (compute_XX, the default) returns PTX of this ISA, and loading it \
             (cuModuleLoadData) fails; asked for a real one (sm_XX) it returns a cubin, which the driver loads within the same CUDA major"
            .to_string(),
        (Kind::Ptxas, Origin::Triton { .. } | Origin::TritonPtxasPath { .. }) => format!(
            "Triton writes its PTX at the ISA this ptxas knows and assembles it to a cubin itself, so no PTX reaches the driver; the cubin \
             loads within the same CUDA major{}",
            if cuda.major() > driver.major() {
                ", but this ptxas is of a newer major than the driver, whose cubins an older major's driver refuses"
            } else {
                " — the risk is PTX kept and loaded as PTX (a kernel cache, a custom launcher)"
            }
        ),
        (Kind::Ptxas, _) => "ptxas itself makes cubins; the PTX written for it (nvcc, CuPy, Numba with this toolkit) at its ISA fails to JIT where \
             it is loaded as PTX"
            .to_string(),
    };
    let first = cuda_for_ptx_isa(tool_isa.unwrap_or((0, 0)))
        .map_or(cuda.major_minor().to_string(), |(a, b)| format!("{a}.{b}"));
    Some(Finding::new(
        FindingId::ToolchainPtxNewerThanDriver,
        Severity::Warn,
        Some(Predicted::driver(222)),
        format!(
            "{} (PTX ISA {}), newer than the driver's CUDA {driver} (PTX ISA {}): {when}.",
            describe(t, cuda),
            isa(tool_isa),
            isa(drv_isa)
        ),
        format!(
            "Update the host driver to one of CUDA {first} or newer, or use a {} of CUDA {} or older in the image.",
            match t.kind {
                Kind::Ptxas => "ptxas",
                Kind::Nvrtc => "NVRTC",
            },
            driver.major_minor()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::toolchains::{UsedFor, VersionSource};
    use std::path::PathBuf;

    fn gpu(cc: &str) -> Gpu {
        Gpu {
            name: format!("GPU cc {cc}"),
            compute_capability: cc.into(),
            ..Gpu::default()
        }
    }

    fn tc(kind: Kind, origin: Origin, cuda: Option<&str>) -> Toolchain {
        Toolchain {
            kind,
            path: PathBuf::from("/x/tool"),
            origin,
            cuda: cuda.and_then(Version::parse),
            version_source: cuda.map(|_| VersionSource::Banner),
            error: cuda.is_none().then(|| "no banner".to_string()),
            overridden_by: None,
            used_for: UsedFor::AllGpus,
            bytes_read: 0,
        }
    }

    fn triton(v: &str, cuda: &str) -> Toolchain {
        tc(
            Kind::Ptxas,
            Origin::Triton {
                version: Some(v.into()),
            },
            Some(cuda),
        )
    }

    #[test]
    fn table() {
        let split = |cuda: &str, used_for| Toolchain {
            used_for,
            ..triton("3.3.0", cuda)
        };
        let overridden = Toolchain {
            overridden_by: Some("/usr/local/cuda/bin/ptxas".into()),
            ..triton("3.0.0", "12.4.99")
        };
        // (name, toolchains, GPU ccs, driver CUDA, ids, a fragment of the first message)
        type Case<'a> = (
            &'a str,
            Vec<Toolchain>,
            &'a [&'a str],
            Option<&'a str>,
            &'a [&'a str],
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "old Triton on Blackwell",
                vec![triton("3.0.0", "12.4.99")],
                &["12.0"],
                Some("12.8"),
                &["toolchain-gpu-unsupported"],
                "ptxas fatal   : Value 'sm_120' is not defined for option 'gpu-name'",
            ),
            (
                "Triton 3.0 on B200: no `a` before 3.3",
                vec![triton("3.0.0", "12.4.99")],
                &["10.0"],
                Some("13.0"),
                &["toolchain-gpu-unsupported"],
                "'sm_100'",
            ),
            (
                "old Triton on H100",
                vec![triton("3.0.0", "12.4.99")],
                &["9.0"],
                Some("13.0"),
                &[],
                "",
            ),
            (
                "new Triton on Blackwell",
                vec![triton("3.5.1", "12.8.93")],
                &["12.0", "10.0"],
                Some("12.8"),
                &[],
                "",
            ),
            (
                "Triton 3.5 ptxas 12.8 on GB300 (10.3 needs 12.9): sm_103a",
                vec![triton("3.5.1", "12.8.93")],
                &["10.3"],
                Some("13.0"),
                &["toolchain-gpu-unsupported"],
                "'sm_103a'",
            ),
            (
                "Triton 3.3: ptxas 12.4 below sm_100, ptxas-blackwell 12.8 above",
                vec![
                    split("12.4.99", UsedFor::BelowSm100),
                    split("12.8.61", UsedFor::Sm100AndNewer),
                ],
                &["12.0", "9.0"],
                Some("12.8"),
                &[],
                "",
            ),
            (
                "overridden bundled ptxas is not judged",
                vec![overridden],
                &["12.0"],
                Some("12.8"),
                &[],
                "",
            ),
            (
                "ptxas 13 dropped Volta",
                vec![tc(Kind::Ptxas, Origin::Wheel, Some("13.5.37"))],
                &["7.0"],
                Some("13.5"),
                &["toolchain-gpu-unsupported"],
                "'sm_70'",
            ),
            (
                "NVRTC 12.4 on Blackwell",
                vec![tc(Kind::Nvrtc, Origin::Wheel, Some("12.4.127"))],
                &["12.0"],
                Some("12.8"),
                &["toolchain-gpu-unsupported"],
                NVRTC_BAD_ARCH,
            ),
            (
                "NVRTC 13.5 on a CUDA 13.0 driver",
                vec![tc(Kind::Nvrtc, Origin::Wheel, Some("13.5.37"))],
                &["9.0"],
                Some("13.0"),
                &["toolchain-ptx-newer-than-driver"],
                "the provided PTX was compiled with an unsupported toolchain.",
            ),
            (
                // 12.6 brought no new PTX ISA: its PTX (8.5) JITs on a 12.5 driver.
                "same ISA is not newer",
                vec![tc(Kind::Nvrtc, Origin::Toolkit, Some("12.6.85"))],
                &["9.0"],
                Some("12.5"),
                &[],
                "",
            ),
            (
                "unknown version",
                vec![tc(Kind::Ptxas, Origin::Toolkit, None)],
                &["9.0"],
                Some("13.0"),
                &["toolchain-version-skipped"],
                "",
            ),
            (
                "no driver version",
                vec![triton("3.5.1", "12.8.93")],
                &["9.0"],
                None,
                &["toolchain-version-skipped"],
                "",
            ),
            (
                "no GPU compute capability",
                vec![triton("3.5.1", "12.8.93")],
                &[""],
                Some("13.0"),
                &["toolchain-version-skipped"],
                "",
            ),
            ("no toolchains", vec![], &["12.0"], None, &[], ""),
        ];
        for (name, tcs, ccs, driver, want, msg) in cases {
            let facts = ToolchainFacts {
                toolchains: tcs,
                notes: vec![],
            };
            let gpus: Vec<Gpu> = ccs.iter().map(|c| gpu(c)).collect();
            let got = check(&facts, &gpus, driver.and_then(Version::parse));
            assert_eq!(crate::rules::ids(&got), want, "{name}: {got:#?}");
            if let Some(f) = got.first()
                && !msg.is_empty()
            {
                let p = f.predicted.as_ref().unwrap();
                assert!(p.message.contains(msg), "{name}: {}", p.message);
                assert!(!f.fix.is_empty() && !f.evidence.is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn one_finding_per_compute_capability() {
        let facts = ToolchainFacts {
            toolchains: vec![triton("3.0.0", "12.4.99")],
            notes: vec![],
        };
        let gpus: Vec<Gpu> = (0..8)
            .map(|i| Gpu {
                index: i,
                ..gpu("10.0")
            })
            .collect();
        let got = check(&facts, &gpus, Version::parse("13.0"));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].evidence.contains("(8 GPUs)"), "{}", got[0].evidence);
        assert!(
            got[0].evidence.contains("Triton 3.0.0"),
            "{}",
            got[0].evidence
        );
        assert!(got[0].evidence.contains("12.8"), "{}", got[0].evidence);
    }

    #[test]
    fn triton_arch_names() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(triton_gpu_name(Some("3.0.0"), &v("12.0")), "sm_120");
        assert_eq!(triton_gpu_name(Some("3.0.0"), &v("9.0")), "sm_90a");
        assert_eq!(triton_gpu_name(Some("3.3.0"), &v("12.0")), "sm_120a");
        assert_eq!(triton_gpu_name(Some("3.2.0+git"), &v("10.0")), "sm_100");
        assert_eq!(triton_gpu_name(None, &v("8.6")), "sm_86");
    }
}
