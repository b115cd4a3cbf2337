//! Findings about where the hook runs on this start path.

use crate::facts::start_path::{CdiHooks, CompatDecision, Stage};
use crate::finding::{Finding, FindingId};

/// What NVIDIA's `enable-cuda-compat` hook will do on this CDI start, and why: the
/// forward-compatibility rules (`rules::versions::driver_compat`) then judge the library it leaves the loader.
pub fn compat_decision(d: &CompatDecision) -> Finding {
    let lib = d
        .library
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the image's compat libcuda".into());
    Finding::new(
        FindingId::ForwardCompatCdi,
        crate::finding::Severity::Info,
        None,
        if d.use_compat {
            format!(
                "NVIDIA's enable-cuda-compat hook will put {lib} first in the container's loader cache: {}",
                d.why
            )
        } else {
            format!(
                "NVIDIA's enable-cuda-compat hook will leave the image's compat library unused: {}",
                d.why
            )
        },
        "",
    )
}

/// The probe is not run where NVIDIA's CDI hooks that make `libcuda.so.1` loadable
/// (`create-symlinks`, `update-ldcache`) run after this hook: the workload will find the library,
/// the probe would not (measured on an H100: every healthy CDI container was blocked with
/// "libcuda.so.1: cannot open shared object file" by a probe at createRuntime). The static rules
/// judge the library those hooks will link instead.
pub fn probe_deferred(stage: Stage, pending: &CdiHooks) -> Finding {
    Finding::new(
        FindingId::ProbeSkipped,
        crate::finding::Severity::Info,
        None,
        format!(
            "not run at {}: NVIDIA's CDI hooks ({}) run after this hook and make libcuda.so.1 and the \
             container's loader cache entry; a probe now would miss the library the workload will load",
            stage.as_str(),
            pending.names()
        ),
        "For the probe on CDI starts, place the hook at createContainer after NVIDIA's hooks \
         (`cuda-preflight hook --stage createContainer`, see docs/design.md).",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::start_path::nvidia_cdi_hooks;

    #[test]
    fn deferral_names_the_stage_and_the_hooks() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "hooks": {"createContainer": [
                {"path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "libcuda.so.580.159.04::/usr/local/nvidia/lib64/libcuda.so.1"]},
                {"path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/local/nvidia/lib64"]}
            ]}
        }))
        .unwrap();
        let f = probe_deferred(Stage::CreateRuntime, &nvidia_cdi_hooks(&spec));
        assert_eq!(f.id, "probe-skipped");
        assert_eq!(f.severity, crate::finding::Severity::Info);
        assert!(
            f.evidence.contains("not run at createRuntime"),
            "{}",
            f.evidence
        );
        assert!(
            f.evidence.contains("create-symlinks, update-ldcache"),
            "{}",
            f.evidence
        );
    }
}
