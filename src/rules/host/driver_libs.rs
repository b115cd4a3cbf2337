//! Kernel module against the driver libraries the container will load.
//!
//! `libcuda` and `libnvidia-ml` refuse a kernel module of another version: after a driver
//! upgrade without a reboot the host's new libraries meet the old module, and `cuInit` fails
//! with 803 (measured on the H100 with a `libcuda.so.580.95.05` against module 580.159.04,
//! `docs/facts.md`) while NVML says "Driver/library version mismatch".

use crate::facts::host::state::{DriverLib, LibKind};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::Version;

pub const NVML_MISMATCH: &str = "Failed to initialize NVML: Driver/library version mismatch";

/// What the user sees when a library of `kind` meets a module of another version.
pub fn predicted(kind: LibKind) -> Predicted {
    match kind {
        LibKind::Cuda => Predicted::driver(803),
        LibKind::Nvml => Predicted::message(Api::Nvml, NVML_MISMATCH),
    }
}

pub fn check(kernel: &Result<Version, String>, libs: &[DriverLib]) -> Vec<Finding> {
    if libs.is_empty() {
        return vec![Finding::skipped(
            FindingId::DriverLibraryVersionSkipped,
            "no versioned libcuda or libnvidia-ml the container will load was found (host ld.so.cache, \
             config.json mounts, the container's loader): the kernel module was not compared with them",
        )];
    }
    let module = match kernel {
        Ok(v) => v,
        Err(why) => {
            return vec![Finding::skipped(
                FindingId::DriverLibraryVersionSkipped,
                format!("the kernel module's version is unknown: {why}"),
            )];
        }
    };
    libs.iter()
        .filter(|l| l.version != *module)
        .map(|l| {
            Finding::new(
                FindingId::DriverLibraryVersionMismatch,
                Severity::Block,
                Some(predicted(l.kind)),
                format!(
                    "the loaded NVIDIA kernel module is {module} (/proc/driver/nvidia/version) but the container will \
                     load {} {} ({}); the driver refuses a library of another version",
                    l.path, l.version, l.origin
                ),
                format!(
                    "The driver's files were changed without reloading its kernel module (an upgrade without reboot). \
                     Reboot the host, or stop every GPU process and reload the nvidia modules, so that module and \
                     libraries are both {}; or reinstall driver {module}. Regenerate CDI specs afterwards \
                     (`nvidia-ctk cdi generate`).",
                    l.version
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::state::{host_driver_libs, kernel_module_version};
    use crate::rules::host::fixture::Host;

    /// The loader takes only 64-bit ELF files: the magic and class byte are enough.
    const ELF64: &str = "\u{7f}ELF\u{2}";

    /// A host whose module is `module` and whose installed libraries are `libs`, linked from
    /// `.so.1` as ldconfig leaves them (no ld.so.cache: the loader's default directories).
    fn host(module: Option<&str>, libs: &str) -> Host {
        let h = Host::new();
        if let Some(m) = module {
            h.module(m);
        }
        let dir = "/usr/lib/x86_64-linux-gnu";
        h.write(&format!("{dir}/libcuda.so.{libs}"), ELF64)
            .link(
                &format!("{dir}/libcuda.so.1"),
                &format!("libcuda.so.{libs}"),
            )
            .write(&format!("{dir}/libnvidia-ml.so.{libs}"), ELF64)
            .link(
                &format!("{dir}/libnvidia-ml.so.1"),
                &format!("libnvidia-ml.so.{libs}"),
            );
        h
    }

    #[test]
    fn table() {
        // Named test cases, one tuple each: (name, input…, expected).
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Host, Vec<(&str, Option<i64>)>)> = vec![
            (
                "healthy: module and libraries agree",
                host(Some("580.159.04"), "580.159.04"),
                vec![],
            ),
            (
                "failing: upgraded without reboot",
                host(Some("580.95.05"), "580.159.04"),
                vec![
                    (FindingId::DriverLibraryVersionMismatch.as_str(), Some(803)),
                    (FindingId::DriverLibraryVersionMismatch.as_str(), None),
                ],
            ),
            (
                "module not loaded",
                host(None, "580.159.04"),
                vec![(FindingId::DriverLibraryVersionSkipped.as_str(), None)],
            ),
        ];
        for (name, h, want) in cases {
            let libs = host_driver_libs(h.root());
            assert_eq!(libs.len(), 2, "{name}: {libs:?}");
            let got = check(&kernel_module_version(h.root()), &libs);
            let ids: Vec<(&str, Option<i64>)> = got
                .iter()
                .map(|f| (f.id.as_str(), f.predicted.as_ref().and_then(|p| p.code)))
                .collect();
            assert_eq!(ids, want, "{name}");
            for f in got
                .iter()
                .filter(|f| f.id == FindingId::DriverLibraryVersionMismatch)
            {
                assert_eq!(f.severity, Severity::Block);
                assert!(
                    f.evidence.contains("580.95.05") && f.evidence.contains("580.159.04"),
                    "{}",
                    f.evidence
                );
                assert!(f.fix.contains("Reboot"), "{name}");
            }
        }
        let h = host(Some("580.95.05"), "580.159.04");
        let got = check(
            &kernel_module_version(h.root()),
            &host_driver_libs(h.root()),
        );
        assert_eq!(
            got[0].predicted.as_ref().unwrap().name.as_deref(),
            Some("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")
        );
        assert_eq!(got[1].predicted.as_ref().unwrap().message, NVML_MISMATCH);
    }

    #[test]
    fn odd_version_file_is_skipped_not_blocked() {
        let h = host(None, "580.159.04");
        for body in [
            "garbage\n",
            "NVRM version: NVIDIA UNIX Kernel Module for x86_64\n",
            "\u{0}\u{ff}\u{fe}",
        ] {
            h.write("/proc/driver/nvidia/version", body);
            let got = check(
                &kernel_module_version(h.root()),
                &host_driver_libs(h.root()),
            );
            assert_eq!(got.len(), 1, "{body:?}");
            assert_eq!(
                (got[0].id.as_str(), got[0].severity),
                (
                    FindingId::DriverLibraryVersionSkipped.as_str(),
                    Severity::Info
                )
            );
            assert!(
                got[0].evidence.contains("unknown format") || got[0].evidence.contains("version")
            );
        }
    }

    #[test]
    fn no_libraries_is_skipped() {
        let h = Host::new();
        h.module("580.159.04");
        let got = check(
            &kernel_module_version(h.root()),
            &host_driver_libs(h.root()),
        );
        assert_eq!(got[0].id, FindingId::DriverLibraryVersionSkipped);
    }
}
