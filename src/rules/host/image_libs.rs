//! Driver libraries baked into the image (`libcuda.so*`, `libnvidia-*.so*` outside the
//! forward-compat directories) — typically a `docker commit` of a running GPU container, or a
//! driver installed in a Dockerfile. The NVIDIA hook then fails to create its own files over
//! them (`mount error: file creation failed: …: file exists`), or the image's copy shadows the
//! host's and meets a kernel module of another version (803 / NVML "version mismatch").

use crate::facts::container::GpuRequest;
use crate::facts::host::state::{ImageLib, LibKind};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::Version;
use crate::rules::host::driver_libs;

/// Files named in the evidence; the rest are counted.
const MAX_LISTED: usize = 8;

fn kind(path: &str) -> Option<LibKind> {
    let name = path.rsplit('/').next()?;
    if name.starts_with("libcuda.so") {
        Some(LibKind::Cuda)
    } else if name.starts_with("libnvidia-ml.so") {
        Some(LibKind::Nvml)
    } else {
        None
    }
}

pub fn check(
    request: &GpuRequest,
    libs: &Result<Vec<ImageLib>, String>,
    kernel: &Result<Version, String>,
) -> Vec<Finding> {
    let libs = match libs {
        Ok(l) if l.is_empty() => return Vec::new(),
        Ok(l) => l,
        Err(why) => {
            return vec![Finding::skipped(
                FindingId::ImageDriverLibrariesSkipped,
                format!("the image's library directories were not read: {why}"),
            )];
        }
    };
    let module = kernel.as_ref().ok();
    // The worst outcome decides what is predicted: a libcuda (then libnvidia-ml) of another
    // version than the module, if the loader picks it; else the legacy hook's refusal.
    let mismatched = |k: LibKind| {
        libs.iter().find(|l| {
            kind(&l.path) == Some(k) && matches!((&l.version, module), (Some(v), Some(m)) if v != m)
        })
    };
    let (predicted, outcome) = if let Some(l) = mismatched(LibKind::Cuda) {
        (
            Some(driver_libs::predicted(LibKind::Cuda)),
            format!(
                "where the container's loader picks {} it meets the kernel module of another version",
                l.path
            ),
        )
    } else if let Some(l) = mismatched(LibKind::Nvml) {
        (
            Some(driver_libs::predicted(LibKind::Nvml)),
            format!(
                "where the container's loader picks {} it meets the kernel module of another version",
                l.path
            ),
        )
    } else if matches!(request, GpuRequest::InjectedByHook { .. }) {
        let first = &libs[0].path;
        (
            Some(Predicted::message(
                Api::Toolkit,
                format!("mount error: file creation failed: <rootfs>{first}: file exists"),
            )),
            "the NVIDIA hook creates the host's driver files and links at these paths and fails where the image \
             already has one"
                .to_string(),
        )
    } else {
        (
            None,
            "they shadow or sit beside the host's driver libraries; which one the loader picks depends on the \
             image's ld.so.cache"
                .to_string(),
        )
    };
    let listed: Vec<String> = libs
        .iter()
        .take(MAX_LISTED)
        .map(|l| match &l.version {
            Some(v) => format!("{} (driver {v})", l.path),
            None => format!("{} (version not in its name)", l.path),
        })
        .collect();
    let more = libs.len().saturating_sub(MAX_LISTED);
    let module_txt = module.map_or("unknown".to_string(), |m| m.to_string());
    vec![Finding::new(
        FindingId::ImageDriverLibrary,
        Severity::Warn,
        predicted,
        format!(
            "the image contains NVIDIA driver libraries of its own: {}{}; the host's kernel module is {module_txt}; {outcome}",
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
        "Remove the driver libraries from the image (they come from the host at start; do not `docker commit` a \
         running GPU container, do not install a driver package in the Dockerfile). Forward-compat libraries belong \
         in /usr/local/cuda/compat.",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::state::{image_driver_libs, kernel_module_version};
    use crate::rules::host::fixture::Host;

    fn hook() -> GpuRequest {
        GpuRequest::InjectedByHook {
            visible: "all".into(),
            hook: "/usr/bin/nvidia-container-runtime-hook".into(),
        }
    }

    /// An image rootfs (laid out in a fixture dir) with `files` (path, contents).
    fn image(files: &[(&str, &str)]) -> Host {
        let h = Host::new();
        std::fs::create_dir_all(h.path("/usr/lib/x86_64-linux-gnu")).unwrap();
        for (p, body) in files {
            h.write(p, body);
        }
        h
    }

    #[test]
    fn table() {
        let dir = "/usr/lib/x86_64-linux-gnu";
        let cuda535 = format!("{dir}/libcuda.so.535.104.05");
        let ml535 = format!("{dir}/libnvidia-ml.so.535.104.05");
        let ptx = format!("{dir}/libnvidia-ptxjitcompiler.so.580.159.04");
        let empty = format!("{dir}/libcuda.so.580.159.04");
        let wayland = format!("{dir}/libnvidia-egl-wayland.so.1.1.13");
        // (case, files, request, expected (id, code, message contains))
        // Named test cases, one tuple each: (name, input…, expected).
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<(&str, &str)>,
            GpuRequest,
            Option<(Option<i64>, &str)>,
        )> = vec![
            ("healthy: nothing baked", vec![], hook(), None),
            (
                "healthy: compat and stub libraries are not driver libraries in the image's lib dirs",
                vec![
                    ("/usr/local/cuda-13.0/compat/libcuda.so.580.95.05", "elf"),
                    ("/usr/local/cuda/lib64/stubs/libcuda.so", "elf"),
                ],
                hook(),
                None,
            ),
            (
                "healthy: a distribution's EGL platform library is not the driver's",
                vec![(wayland.as_str(), "elf")],
                hook(),
                None,
            ),
            (
                "healthy: empty mount point left by the hook",
                vec![(empty.as_str(), "")],
                hook(),
                None,
            ),
            (
                "failing: old libcuda baked",
                vec![(cuda535.as_str(), "elf")],
                hook(),
                Some((Some(803), "system has unsupported")),
            ),
            (
                "failing: old nvml baked",
                vec![(ml535.as_str(), "elf")],
                GpuRequest::SpecDevices,
                Some((None, "Driver/library version mismatch")),
            ),
            (
                "failing: same-version library, legacy hook",
                vec![(ptx.as_str(), "elf")],
                hook(),
                Some((
                    None,
                    "mount error: file creation failed: <rootfs>/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.580.159.04: file exists",
                )),
            ),
        ];
        for (name, files, req, want) in cases {
            let h = image(&files);
            h.module("580.159.04");
            let got = check(
                &req,
                &image_driver_libs(h.root()),
                &kernel_module_version(h.root()),
            );
            match want {
                None => assert!(got.is_empty(), "{name}: {got:?}"),
                Some((code, msg)) => {
                    assert_eq!(got.len(), 1, "{name}");
                    let f = &got[0];
                    assert_eq!(
                        (f.id.as_str(), f.severity),
                        (FindingId::ImageDriverLibrary.as_str(), Severity::Warn),
                        "{name}"
                    );
                    let p = f.predicted.as_ref().unwrap();
                    assert_eq!(p.code, code, "{name}");
                    assert!(p.message.contains(msg), "{name}: {}", p.message);
                    assert!(f.evidence.contains(files[0].0), "{name}: {}", f.evidence);
                    assert!(f.fix.contains("Remove the driver libraries"), "{name}");
                }
            }
        }
    }

    #[test]
    fn merged_usr_is_listed_once_and_many_files_are_counted() {
        let h = image(&[]);
        h.link("/lib", "usr/lib");
        for i in 0..12 {
            h.write(&format!("/usr/lib/libnvidia-x{i:02}.so.580.159.04"), "elf");
        }
        let libs = image_driver_libs(h.root()).unwrap();
        assert_eq!(libs.len(), 12, "{libs:?}");
        let f = &check(
            &GpuRequest::SpecDevices,
            &Ok(libs),
            &Err("no module".into()),
        )[0];
        assert!(f.evidence.contains("and 4 more"), "{}", f.evidence);
        assert!(f.predicted.is_none());
    }

    #[test]
    fn missing_rootfs_is_skipped() {
        let got = check(
            &hook(),
            &image_driver_libs(std::path::Path::new("/nonexistent/rootfs")),
            &Err("x".into()),
        );
        assert_eq!(got[0].id, FindingId::ImageDriverLibrariesSkipped);
    }
}
