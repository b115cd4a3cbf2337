//! Does this container ask for a GPU — decided from the spec alone, cheaply and with no I/O, so
//! a container that asks for none costs the hook a JSON parse and nothing more (the fast path:
//! the hook, `check`, the shim and the NRI plugin all ask here).

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::Spec;
use serde::Serialize;

/// Why we think the container gets GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GpuRequest {
    /// Nothing asks for a GPU: the fast path.
    None,
    /// NVIDIA device nodes in `linux.devices` (CDI-injected or `--device`).
    SpecDevices,
    /// A CDI annotation names NVIDIA devices; the devices should be in the spec too.
    Cdi { devices: Vec<String> },
    /// `NVIDIA_VISIBLE_DEVICES` with an NVIDIA hook in the spec that injects the devices.
    InjectedByHook { visible: String, hook: String },
    /// `NVIDIA_VISIBLE_DEVICES` with no NVIDIA hook or runtime: the container gets no GPU.
    EnvOnly { visible: String },
}

impl GpuRequest {
    /// Whether the container will have GPUs to judge (the variable alone gives it none).
    pub fn wants_gpu(&self) -> bool {
        !matches!(self, GpuRequest::None | GpuRequest::EnvOnly { .. })
    }

    /// Whether the container will have GPUs once `next_runtime` has run it: what the runtime
    /// shim asks before the real runtime saw the spec. `nvidia-container-runtime` turns the
    /// variable alone into a GPU request (legacy mode: it adds the prestart hook that injects
    /// the devices); any other runtime does not.
    pub fn wants_gpu_through(&self, next_runtime: &Path) -> bool {
        self.wants_gpu()
            || (matches!(self, GpuRequest::EnvOnly { .. }) && is_nvidia_runtime(next_runtime))
    }
}

/// Is this runtime NVIDIA's `nvidia-container-runtime` (by its file name, as engines and the
/// shim's config name it)?
pub fn is_nvidia_runtime(runtime: &Path) -> bool {
    runtime
        .file_name()
        .is_some_and(|n| n == "nvidia-container-runtime")
}

/// Binary names of the hooks the NVIDIA container toolkit puts in a spec (legacy
/// `nvidia-container-runtime` and Docker's `--gpus` add `nvidia-container-runtime-hook prestart`;
/// older installs name it `nvidia-container-toolkit`).
const NVIDIA_HOOKS: &[&str] = &["nvidia-container-runtime-hook", "nvidia-container-toolkit"];

pub fn is_nvidia_node(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("/dev/nvidia"))
}

/// `NVIDIA_VISIBLE_DEVICES` names devices unless unset, empty, `void` or `none` (the toolkit's
/// own meaning of those words).
fn visible_names_devices(v: &str) -> bool {
    !matches!(v.trim(), "" | "void" | "none")
}

/// CDI requests in annotations: keys with the `cdi.k8s.io/` prefix (any vendor prefix before it,
/// as the CDI spec allows), values a comma list of fully-qualified device names.
fn cdi_nvidia_devices(annotations: &[&HashMap<String, String>]) -> Vec<String> {
    let mut out = Vec::new();
    for map in annotations {
        for (k, v) in map.iter() {
            if k.contains("cdi.k8s.io/") {
                out.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|d| d.starts_with("nvidia.com/"))
                        .map(String::from),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn nvidia_hook(spec: &Spec) -> Option<String> {
    let hooks = spec.hooks().as_ref()?;
    #[allow(deprecated)]
    let lists = [
        hooks.prestart(),
        hooks.create_runtime(),
        hooks.create_container(),
    ];
    lists.into_iter().flatten().flatten().find_map(|h| {
        let name = h.path().file_name()?.to_str()?;
        NVIDIA_HOOKS
            .contains(&name)
            .then(|| h.path().display().to_string())
    })
}

/// Decide from the spec alone — cheap, no I/O — whether the container asks for a GPU.
pub fn detect(spec: &Spec, state_annotations: Option<&HashMap<String, String>>) -> GpuRequest {
    let spec_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| d.iter().any(|d| is_nvidia_node(d.path())));
    if spec_devices {
        return GpuRequest::SpecDevices;
    }
    let mut maps = Vec::new();
    if let Some(a) = spec.annotations() {
        maps.push(a);
    }
    if let Some(a) = state_annotations {
        maps.push(a);
    }
    let cdi = cdi_nvidia_devices(&maps);
    if !cdi.is_empty() {
        return GpuRequest::Cdi { devices: cdi };
    }
    match crate::input::bundle::spec_env(spec, "NVIDIA_VISIBLE_DEVICES") {
        Some(v) if visible_names_devices(v) => match nvidia_hook(spec) {
            Some(hook) => GpuRequest::InjectedByHook {
                visible: v.to_string(),
                hook,
            },
            None => GpuRequest::EnvOnly {
                visible: v.to_string(),
            },
        },
        _ => GpuRequest::None,
    }
}
