//! Commands: each wires the pipeline stages together for one use. `main.rs` only parses
//! arguments and maps what these return to exit codes.

pub mod check;
pub mod explain;
pub mod facts;
pub mod hook;
pub mod install;
pub mod report;
pub mod scan;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::facts::container::{self, DeviceView, GpuRequest};
use crate::facts::host::{self, HostProfile};
use crate::facts::hoststate::{self, HostState};
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
        Ok(self.apply(Config::load(self.config.as_deref())?))
    }

    /// The config, or where the file has errors the defaults; flags apply either way. The hook
    /// records its own errors with this: with plain defaults a broken config file sent the report
    /// to the default state directory instead of the `--state-dir` given (tests/faults.rs).
    pub fn load_or_defaults(&self) -> Config {
        self.load()
            .unwrap_or_else(|_| self.apply(Config::default()))
    }

    fn apply(&self, mut c: Config) -> Config {
        if let Some(r) = &self.host_root {
            c.host_root = r.clone();
        }
        if let Some(s) = &self.state_dir {
            c.state_dir = s.clone();
        }
        c
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
    /// `/dev/char` links, kernel module and driver libraries, CDI specs (GPU containers only).
    pub hoststate: Option<HostState>,
}

const OFFLINE_INJECTED: &str = "the devices are injected by an NVIDIA hook at start; offline there is no container to look into";

/// Gather the container's facts. `pid` is the container's process at hook time: then the rootfs
/// is read as the container sees it, through `/proc/<pid>/root`, injected files included. Host
/// files are read under `host_root`.
pub fn container_facts(
    bundle: &Bundle,
    request: GpuRequest,
    pid: Option<i32>,
    proc_root: &Path,
    host_root: &Path,
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
    let hoststate = request.wants_gpu().then(|| {
        hoststate::gather(
            bundle,
            &request,
            devices.as_ref().map_err(String::as_str),
            image_facts.as_ref(),
            host_root,
        )
    });
    ContainerFacts {
        request,
        image: image_facts,
        devices,
        hoststate,
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
    if let Some(hs) = &c.hoststate {
        out.extend(rules::hoststate::check(&c.request, hs, host));
    }
    out
}

/// Probe the container (see `facts::probe`): build the child's spec from the spec and
/// `/proc/<pid>`, run it within `deadline`, and return its result; `Err` is a finding already
/// (no libcuda for the probe to load).
pub fn probe_container(
    bundle: &Bundle,
    facts: &ContainerFacts,
    pid: i32,
    proc_root: &Path,
    deadline: std::time::Duration,
) -> Result<crate::facts::probe::ProbeResult, Finding> {
    use crate::facts::probe::{self, ProbeSpec};
    use crate::finding::{Api, Predicted, Severity};
    let Some(libcuda) = facts.image.as_ref().and_then(|i| i.libcuda.as_ref()) else {
        return Err(Finding::new(
            "probe-libcuda-missing",
            Severity::Block,
            Some(Predicted::message(
                Api::Loader,
                "libcuda.so.1: cannot open shared object file: No such file or directory",
            )),
            "the container's loader finds no libcuda.so.1 (LD_LIBRARY_PATH, ld.so.cache, default directories): \
             the NVIDIA runtime did not inject the driver library",
            "Start the container through the NVIDIA runtime or CDI so the host's driver libraries are mounted into it.",
        ));
    };
    let user = bundle.spec.process().as_ref().map(|p| p.user().clone());
    let env_ld = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|e| {
            e.iter()
                .rev()
                .find_map(|kv| kv.strip_prefix("LD_LIBRARY_PATH="))
        })
        .filter(|s| !s.is_empty());
    let lib_dir = libcuda
        .real_path_in_image
        .parent()
        .map(|p| p.display().to_string());
    let ld = match (env_ld, lib_dir) {
        (Some(e), Some(d)) => Some(format!("{e}:{d}")),
        (Some(e), None) => Some(e.to_string()),
        (None, d) => d,
    };
    let cgroup =
        std::fs::read_to_string(proc_root.join(format!("{pid}/cgroup"))).unwrap_or_default();
    let spec = ProbeSpec {
        pid,
        proc_root: proc_root.to_path_buf(),
        cgroup_procs: probe::cgroup_procs_files(&cgroup, Path::new("/sys/fs/cgroup")),
        namespaces: probe::namespaces_to_enter(pid, proc_root),
        rootfs: bundle.rootfs.clone(),
        libcuda: libcuda.real_path_in_image.clone(),
        uid: user.as_ref().map_or(0, |u| u.uid()),
        gid: user.as_ref().map_or(0, |u| u.gid()),
        additional_gids: user
            .as_ref()
            .and_then(|u| u.additional_gids().clone())
            .unwrap_or_default(),
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    Ok(probe::run(&spec, &exe, ld.as_deref(), deadline))
}
