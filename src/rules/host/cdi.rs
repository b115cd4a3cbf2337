//! Stale or wrong CDI specs, for containers that request CDI devices: the requested names must
//! be in a spec under `/etc/cdi` or `/var/run/cdi`, every host path the spec names must exist,
//! and the driver libraries it mounts must be the loaded kernel module's version (a spec
//! generated before a driver upgrade names the old files).

use crate::facts::host::state::{CdiFacts, CdiPath, CdiSpec, LibKind, lib_version};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::Version;
use crate::rules::host::driver_libs;

const REGENERATE: &str = "Regenerate the spec for this host's driver: `nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml` \
     (or restart the nvidia-cdi-refresh service / the GPU operator's toolkit pod), then `nvidia-ctk cdi list`.";

/// The device `kind=name` as the CDI registry resolves it: of several specs defining it, the
/// later directory (`/var/run/cdi`) wins.
fn resolve<'a>(specs: &'a [CdiSpec], qualified: &str) -> Option<(&'a CdiSpec, &'a [CdiPath])> {
    let (kind, name) = qualified.split_once('=')?;
    specs.iter().rev().find_map(|s| {
        (s.kind == kind)
            .then(|| s.devices.iter().find(|d| d.name == name))
            .flatten()
            .map(|d| (s, d.paths.as_slice()))
    })
}

pub fn check(cdi: &CdiFacts, kernel: &Result<Version, String>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (file, why) in &cdi.invalid {
        out.push(Finding::new(
            FindingId::CdiSpecInvalid,
            Severity::Warn,
            None,
            format!("CDI spec {file} does not parse: {why}; the CDI registry ignores it"),
            format!("Fix or remove {file}. {REGENERATE}"),
        ));
    }
    let unresolved: Vec<&str> = cdi
        .requested
        .iter()
        .filter(|r| resolve(&cdi.specs, r).is_none())
        .map(String::as_str)
        .collect();
    if !unresolved.is_empty() {
        if cdi.invalid.is_empty() {
            out.push(Finding::new(
                FindingId::CdiDeviceUnresolvable,
                Severity::Block,
                Some(Predicted::message(
                    Api::Toolkit,
                    format!("unresolvable CDI devices {}", unresolved.join(", ")),
                )),
                format!(
                    "no CDI spec under {} defines {}",
                    if cdi.dirs.is_empty() { "/etc/cdi or /var/run/cdi (neither exists)".to_string() } else { cdi.dirs.join(" or ") },
                    unresolved.join(", ")
                ),
                format!(
                    "{REGENERATE} If the engine reads specs from another directory (containerd's cdi_spec_dirs), \
                     this finding can be silenced per id."
                ),
            ));
        } else {
            // A spec we could not read may define them: never block on a guess.
            let unread: Vec<&str> = cdi.invalid.iter().map(|(f, _)| f.as_str()).collect();
            out.push(Finding::skipped(
                FindingId::CdiSpecsSkipped,
                format!(
                    "{} not found in the specs read; not judged, since {} could not be read and may define them",
                    unresolved.join(", "),
                    unread.join(", ")
                ),
            ));
        }
    }
    let mut judged_specs: Vec<&str> = Vec::new();
    for r in &cdi.requested {
        let Some((spec, dev_paths)) = resolve(&cdi.specs, r) else {
            continue;
        };
        let first_for_spec = !judged_specs.contains(&spec.file.as_str());
        let mut paths: Vec<&CdiPath> = dev_paths.iter().collect();
        if first_for_spec {
            // The spec-wide edits apply to every device of the spec: judge them once.
            paths.extend(spec.common_paths.iter());
            judged_specs.push(&spec.file);
        }
        let missing: Vec<&CdiPath> = paths.iter().copied().filter(|p| !p.exists).collect();
        if !missing.is_empty() {
            let predicted = missing.iter().find(|p| p.device).map(|p| {
                Predicted::message(
                    Api::Toolkit,
                    format!(
                        "failed to stat CDI host device \"{}\": no such file or directory",
                        p.host_path
                    ),
                )
            });
            out.push(Finding::new(
                FindingId::CdiHostPathMissing,
                Severity::Block,
                predicted,
                format!(
                    "CDI spec {} ({r}) names host paths that do not exist: {}",
                    spec.file,
                    missing.iter().map(|p| p.host_path.as_str()).collect::<Vec<_>>().join(", ")
                ),
                format!("The spec is stale (driver upgraded, GPU removed, or generated on another host). {REGENERATE}"),
            ));
        }
        if !first_for_spec {
            continue;
        }
        let Ok(module) = kernel else { continue };
        for p in spec
            .common_paths
            .iter()
            .chain(dev_paths)
            .filter(|p| !p.device)
        {
            let name = p.host_path.rsplit('/').next().unwrap_or("");
            let kind = if name.starts_with("libcuda.so") {
                LibKind::Cuda
            } else if name.starts_with("libnvidia-ml.so") {
                LibKind::Nvml
            } else {
                continue;
            };
            if let Some(v) = lib_version(std::path::Path::new(&p.host_path))
                && v != *module
            {
                out.push(Finding::new(
                    FindingId::CdiSpecDriverMismatch,
                    Severity::Block,
                    Some(driver_libs::predicted(kind)),
                    format!(
                        "CDI spec {} mounts {} (driver {v}) but the loaded kernel module is {module}",
                        spec.file, p.host_path
                    ),
                    REGENERATE,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::state::{cdi_facts, kernel_module_version};
    use crate::rules::host::fixture::Host;

    const LIB: &str = "/usr/lib/x86_64-linux-gnu";

    /// An nvidia-ctk-shaped JSON spec for GPU 0 mounting libraries of driver `libs`.
    fn spec_json(libs: &str) -> String {
        format!(
            r#"{{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu",
              "devices":[{{"name":"0","containerEdits":{{"deviceNodes":[{{"path":"/dev/nvidia0"}}]}}}},
                         {{"name":"all","containerEdits":{{"deviceNodes":[{{"path":"/dev/nvidia0"}}]}}}}],
              "containerEdits":{{"deviceNodes":[{{"path":"/dev/nvidiactl"}},{{"path":"/dev/nvidia-uvm","hostPath":"/dev/nvidia-uvm"}}],
                "mounts":[{{"hostPath":"{LIB}/libcuda.so.{libs}","containerPath":"{LIB}/libcuda.so.{libs}","options":["ro","bind"]}},
                          {{"hostPath":"{LIB}/libnvidia-ml.so.{libs}","containerPath":"{LIB}/libnvidia-ml.so.{libs}"}}],
                "hooks":[{{"hookName":"createContainer","path":"/usr/bin/nvidia-cdi-hook"}}]}}}}"#
        )
    }

    /// The YAML nvidia-ctk writes (device names unquoted here: YAML reads `0` as a number).
    fn yaml(libs: &str) -> String {
        format!(
            "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: 0\n  containerEdits:\n    deviceNodes:\n    \
             - path: /dev/nvidia0\n- name: all\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n\
             containerEdits:\n  deviceNodes:\n  - path: /dev/nvidiactl\n  mounts:\n  - hostPath: {LIB}/libcuda.so.{libs}\n    \
             containerPath: {LIB}/libcuda.so.{libs}\n    options:\n    - ro\n    - nosuid\n    - bind\n"
        )
    }

    /// A host with driver 580.159.04 loaded and installed, its nodes, and `specs` (file, body).
    fn host(specs: &[(&str, String)]) -> Host {
        let h = Host::new();
        h.module("580.159.04")
            .write(&format!("{LIB}/libcuda.so.580.159.04"), "elf")
            .write(&format!("{LIB}/libnvidia-ml.so.580.159.04"), "elf")
            .write("/dev/nvidia0", "")
            .write("/dev/nvidiactl", "")
            .write("/dev/nvidia-uvm", "");
        for (f, body) in specs {
            h.write(f, body);
        }
        h
    }

    fn ids(got: &[Finding]) -> Vec<&str> {
        got.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn table() {
        let good = spec_json("580.159.04");
        let stale = spec_json("580.95.05");
        // (case, host, requested, expected ids, predicted message (first finding) contains)
        // Named test cases, one tuple each: (name, input…, expected).
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Host, Vec<&str>, Vec<&str>, &str)> = vec![
            (
                "healthy: spec in /etc/cdi",
                host(&[("/etc/cdi/nvidia.json", good.clone())]),
                vec!["nvidia.com/gpu=all"],
                vec![],
                "",
            ),
            (
                "healthy: two devices",
                host(&[("/var/run/cdi/nvidia.json", good.clone())]),
                vec!["nvidia.com/gpu=0", "nvidia.com/gpu=all"],
                vec![],
                "",
            ),
            (
                "failing: no spec at all",
                host(&[]),
                vec!["nvidia.com/gpu=all"],
                vec![FindingId::CdiDeviceUnresolvable.as_str()],
                "unresolvable CDI devices nvidia.com/gpu=all",
            ),
            (
                "failing: device not in spec",
                host(&[("/etc/cdi/nvidia.json", good.clone())]),
                vec!["nvidia.com/gpu=3"],
                vec![FindingId::CdiDeviceUnresolvable.as_str()],
                "unresolvable CDI devices nvidia.com/gpu=3",
            ),
            (
                "failing: stale spec after a driver upgrade",
                host(&[("/etc/cdi/nvidia.json", stale.clone())]),
                vec!["nvidia.com/gpu=all"],
                vec![
                    FindingId::CdiHostPathMissing.as_str(),
                    FindingId::CdiSpecDriverMismatch.as_str(),
                    FindingId::CdiSpecDriverMismatch.as_str(),
                ],
                "",
            ),
            (
                "failing: /var/run/cdi overrides /etc/cdi",
                host(&[
                    ("/etc/cdi/nvidia.json", good.clone()),
                    ("/var/run/cdi/nvidia.json", stale.clone()),
                ]),
                vec!["nvidia.com/gpu=all"],
                vec![
                    FindingId::CdiHostPathMissing.as_str(),
                    FindingId::CdiSpecDriverMismatch.as_str(),
                    FindingId::CdiSpecDriverMismatch.as_str(),
                ],
                "",
            ),
            (
                "broken spec beside a good one: warn, still resolved",
                host(&[
                    ("/etc/cdi/broken.json", "{not json".into()),
                    ("/etc/cdi/nvidia.json", good.clone()),
                ]),
                vec!["nvidia.com/gpu=all"],
                vec![FindingId::CdiSpecInvalid.as_str()],
                "",
            ),
            (
                "broken spec only: not a block",
                host(&[("/etc/cdi/nvidia.json", "{\"kind\": 5}".into())]),
                vec!["nvidia.com/gpu=all"],
                vec![
                    FindingId::CdiSpecInvalid.as_str(),
                    FindingId::CdiSpecsSkipped.as_str(),
                ],
                "",
            ),
            (
                "healthy: YAML spec as nvidia-ctk writes it",
                host(&[("/var/run/cdi/nvidia.yaml", yaml("580.159.04"))]),
                vec!["nvidia.com/gpu=0", "nvidia.com/gpu=all"],
                vec![],
                "",
            ),
            (
                "failing: stale YAML spec",
                host(&[("/etc/cdi/nvidia.yaml", yaml("580.95.05"))]),
                vec!["nvidia.com/gpu=all"],
                vec![
                    FindingId::CdiHostPathMissing.as_str(),
                    FindingId::CdiSpecDriverMismatch.as_str(),
                ],
                "",
            ),
            (
                "broken YAML spec only: not a block",
                host(&[(
                    "/etc/cdi/nvidia.yaml",
                    "cdiVersion: 0.5.0\nkind: [unclosed\n".into(),
                )]),
                vec!["nvidia.com/gpu=all"],
                vec![
                    FindingId::CdiSpecInvalid.as_str(),
                    FindingId::CdiSpecsSkipped.as_str(),
                ],
                "",
            ),
        ];
        for (name, h, req, want, msg) in cases {
            let req: Vec<String> = req.into_iter().map(String::from).collect();
            let got = check(&cdi_facts(h.root(), &req), &kernel_module_version(h.root()));
            assert_eq!(ids(&got), want, "{name}: {got:#?}");
            if !msg.is_empty() {
                assert_eq!(got[0].severity, Severity::Block);
                assert_eq!(got[0].predicted.as_ref().unwrap().message, msg, "{name}");
                assert!(got[0].fix.contains("nvidia-ctk cdi generate"), "{name}");
            }
            for f in got
                .iter()
                .filter(|f| f.id == FindingId::CdiSpecDriverMismatch)
            {
                assert!(
                    f.evidence.contains("580.95.05") && f.evidence.contains("580.159.04"),
                    "{}",
                    f.evidence
                );
            }
            if let Some(f) = got.iter().find(|f| f.id == FindingId::CdiHostPathMissing) {
                assert!(
                    f.evidence.contains("libcuda.so.580.95.05"),
                    "{}",
                    f.evidence
                );
            }
        }
    }

    #[test]
    fn missing_device_node_predicts_the_toolkit_message() {
        let h = host(&[("/etc/cdi/nvidia.json", spec_json("580.159.04"))]);
        std::fs::remove_file(h.path("/dev/nvidia0")).unwrap();
        let got = check(
            &cdi_facts(h.root(), &["nvidia.com/gpu=0".into()]),
            &kernel_module_version(h.root()),
        );
        assert_eq!(ids(&got), vec![FindingId::CdiHostPathMissing]);
        assert_eq!(
            got[0].predicted.as_ref().unwrap().message,
            "failed to stat CDI host device \"/dev/nvidia0\": no such file or directory"
        );
    }
}
