//! Commands: each wires the pipeline stages together for one use. `main.rs` only parses
//! arguments and maps what these return to exit codes.

pub mod check;
pub mod explain;
pub mod facts;
pub mod hook;
pub mod install;
pub mod report;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::facts::container::{self, DeviceView, GpuRequest};
use crate::facts::host::{self, HostProfile};
use crate::facts::image::{self, ImageFacts};
use crate::finding::Finding;
use crate::input::bundle::Bundle;
use crate::rules;

/// Settings every command shares. A flag and its config key share a name; a flag wins.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Config file [default: /etc/cuda-preflight/config.toml; absent means defaults]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Where file-based host facts are read (/proc, /dev) [config: host_root; default /]
    #[arg(long, value_name = "DIR", global = true)]
    pub host_root: Option<PathBuf>,
    /// Where reports are written [config: state_dir; default /run/cuda-preflight]
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

impl SettingsArgs {
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(r) = &self.host_root {
            c.host_root = r.clone();
        }
        if let Some(s) = &self.state_dir {
            c.state_dir = s.clone();
        }
        Ok(c)
    }
}

/// The host as the rules see it: a profile file where one is given (device majors from
/// `<host_root>/proc/devices` where the profile has none), else NVML (only when the host root is
/// `/`, since NVML describes this machine) with `/proc` as fallback.
pub fn host_facts(
    profile: Option<&Path>,
    host_root: &Path,
) -> Result<HostProfile, host::HostError> {
    match profile {
        Some(path) => {
            let mut p = HostProfile::load(path)?;
            if p.device_majors.is_empty() {
                p.device_majors = host::device_majors_from_proc(host_root);
            }
            Ok(p)
        }
        None => Ok(crate::facts::nvml::gather(host_root, host_root == Path::new("/")).profile),
    }
}

/// Facts gathered about one container, handed to the rules.
pub struct ContainerFacts {
    pub request: GpuRequest,
    /// The image's CUDA versions, requirements and compat libraries (GPU containers only).
    pub image: Option<ImageFacts>,
    /// The device view, or why there is none to judge.
    pub devices: Result<DeviceView, String>,
}

const OFFLINE_INJECTED: &str = "the devices are injected by an NVIDIA hook at start; offline there is no container to look into";

/// Gather the container's facts. `pid` is the container's process at hook time: then the rootfs
/// is read as the container sees it, through `/proc/<pid>/root`, injected files included.
pub fn container_facts(
    bundle: &Bundle,
    request: GpuRequest,
    pid: Option<i32>,
    proc_root: &Path,
) -> ContainerFacts {
    let image_facts = request.wants_gpu().then(|| {
        let env = bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        match pid {
            Some(pid) => image::gather_rootfs(
                &container::rootfs_in_namespace(pid, &bundle.rootfs, proc_root),
                &env,
            ),
            None => image::gather(bundle),
        }
    });
    let devices = match (&request, pid) {
        (GpuRequest::SpecDevices | GpuRequest::Cdi { .. }, _) => {
            Ok(container::view_from_spec(&bundle.spec))
        }
        (GpuRequest::InjectedByHook { .. }, Some(pid)) => {
            container::view_from_namespace(pid, &bundle.rootfs, proc_root).map_err(|e| {
                format!("could not read the container's /dev through /proc/{pid}/root: {e}")
            })
        }
        (GpuRequest::InjectedByHook { .. }, None) => Err(OFFLINE_INJECTED.to_string()),
        (GpuRequest::None | GpuRequest::EnvOnly { .. }, _) => {
            Err("the container asks for no GPU".to_string())
        }
    };
    ContainerFacts {
        request,
        image: image_facts,
        devices,
    }
}

/// All rules over the facts.
pub fn run_rules(c: &ContainerFacts, host: &HostProfile) -> Vec<Finding> {
    let devices = c.devices.as_ref().map_err(String::as_str);
    let mut out = rules::devices::device_findings(&c.request, devices, &host.device_majors);
    if let Some(image) = &c.image {
        out.extend(rules::requirements::check(image, host));
        out.extend(rules::versions::check(image, host));
    }
    out
}
