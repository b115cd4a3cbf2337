//! Commands: each wires the pipeline stages together for one use. `main.rs` only parses
//! arguments and maps what these return to exit codes.

pub mod check;
pub mod doctor;
pub mod explain;
pub mod facts;
pub mod hook;
pub mod install;
pub mod report;
pub mod scan;
pub mod webhook;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::facts::binaries::{self, BinaryFacts, WalkSettings};
use crate::facts::container::{self, DeviceView, GpuRequest};
use crate::facts::headroom::{self, HeadroomFacts};
use crate::facts::host::{self, HostProfile};
use crate::facts::hoststate::{self, HostState};
use crate::facts::image::{self, ImageFacts};
use crate::facts::linkage::{self, LoadFacts};
use crate::facts::toolchains::{self, ToolchainFacts};
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

/// The headroom thresholds of a config.
pub fn headroom_policy(c: &crate::config::Config) -> headroom::Policy {
    headroom::Policy {
        min_free_memory_mib: c.min_free_memory_mib,
        min_free_disk_mib: c.min_free_disk_mib,
    }
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

/// The host's NVML facts for the hook, reused for `ttl` from `<state_dir>/host-facts.json` while
/// the boot and the loaded driver are the same: initialising NVML costs ~20 ms on an H100, more
/// than everything else a cached start does. Free memory in a reused profile is up to `ttl` old.
pub fn host_facts_cached(
    host_root: &Path,
    state_dir: &Path,
    ttl: std::time::Duration,
) -> HostProfile {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Cached {
        key: String,
        time: u64,
        profile: HostProfile,
    }
    let read = |p: &str| std::fs::read_to_string(host_root.join(p)).unwrap_or_default();
    let key = format!(
        "{}|{}",
        read("proc/sys/kernel/random/boot_id").trim(),
        read("proc/driver/nvidia/version")
            .lines()
            .next()
            .unwrap_or("")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = state_dir.join("host-facts.json");
    if let Ok(bytes) = crate::input::read_capped(&path, 4 << 20)
        && let Ok(c) = serde_json::from_slice::<Cached>(&bytes)
        && c.key == key
        && now.saturating_sub(c.time) <= ttl.as_secs()
    {
        let mut p = c.profile;
        p.device_majors = host::device_majors_from_proc(host_root);
        return p;
    }
    let facts = crate::facts::nvml::gather(host_root, host_root == Path::new("/"));
    if facts.source == crate::facts::nvml::FactSource::Nvml && !ttl.is_zero() {
        let c = Cached {
            key,
            time: now,
            profile: facts.profile.clone(),
        };
        // Best effort: a cache that cannot be written costs the next start an NVML call.
        if std::fs::create_dir_all(state_dir).is_ok()
            && let Ok(b) = serde_json::to_vec(&c)
        {
            let _ = crate::atomic::write_file(&path, &b);
        }
    }
    facts.profile
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
    /// GPU memory asked for, free space of the rootfs and volumes (GPU containers only).
    pub headroom: Option<HeadroomFacts>,
    /// The image's CUDA binaries and their inventories (GPU containers with a rootfs only).
    pub binaries: Option<BinaryFacts>,
    /// How the image's CUDA-using libraries will load (GPU containers with a rootfs only).
    pub load: Option<LoadFacts>,
    /// The image's ptxas and NVRTC with their CUDA versions (GPU containers with a rootfs only).
    pub toolchains: Option<ToolchainFacts>,
}

const OFFLINE_INJECTED: &str = "the devices are injected by an NVIDIA hook at start; offline there is no container to look into";

/// Gather the container's facts. `pid` is the container's process at hook time: then the rootfs
/// is read as the container sees it, through `/proc/<pid>/root`, injected files included. Host
/// files are read under `host_root`. `state_annotations` are the OCI state's (the hook's).
pub fn container_facts(
    bundle: &Bundle,
    request: GpuRequest,
    pid: Option<i32>,
    proc_root: &Path,
    host_root: &Path,
    state_annotations: Option<&std::collections::HashMap<String, String>>,
    policy: headroom::Policy,
    walk: &WalkSettings,
) -> ContainerFacts {
    let env = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    // The container's view at hook time (its mounts included), the bundle's rootfs offline:
    // the one root every image fact reads.
    let root = match pid {
        Some(pid) => container::rootfs_in_namespace(pid, &bundle.rootfs, proc_root),
        None => bundle.rootfs.clone(),
    };
    let mut image_facts = request.wants_gpu().then(|| match pid {
        Some(_) => image::gather_rootfs(&root, &env),
        None => image::gather(bundle),
    });
    let walkable = request.wants_gpu() && root.is_dir();
    let site = image_facts
        .as_ref()
        .map(|i| i.site_packages.as_slice())
        .unwrap_or_default();
    let binaries = walkable.then(|| binaries::gather(&root, &env, site, walk));
    let toolchains = walkable.then(|| toolchains::gather(&root, &env, site));
    // The runtimes the image's libraries really load: what the version rules judge.
    let load = match (&binaries, &mut image_facts) {
        (Some(b), Some(img)) => {
            let args0 = bundle
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.args().as_ref())
                .and_then(|a| a.first().cloned());
            let l = linkage::gather(&root, &env, args0.as_deref(), b, img);
            img.loaded_runtimes = l
                .runtimes_in_use
                .iter()
                .filter_map(|r| {
                    Some(image::CudaRuntime {
                        path: r.path.clone(),
                        version: r.version.clone()?,
                        exact: r.exact,
                    })
                })
                .collect();
            Some(l)
        }
        _ => None,
    };
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
    // One statvfs per writable volume, GPU containers only.
    let headroom = request
        .wants_gpu()
        .then(|| headroom::gather(bundle, state_annotations, pid, proc_root, host_root, policy));
    ContainerFacts {
        request,
        image: image_facts,
        devices,
        hoststate,
        headroom,
        binaries,
        load,
        toolchains,
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
    if let Some(h) = &c.headroom {
        out.extend(rules::headroom::check(h, &c.request, host));
    }
    if let (Some(l), Some(image)) = (&c.load, &c.image) {
        out.extend(rules::loading::check(l, image));
    }
    if let Some(b) = &c.binaries {
        out.extend(rules::kernels::image_findings(
            b,
            &container_gpus(c, host),
            host.cuda_driver_version.as_deref().unwrap_or(""),
        ));
    }
    if let Some(t) = &c.toolchains {
        out.extend(rules::toolchains::check(
            t,
            &container_gpus(c, host),
            host.cuda_driver_version.as_deref(),
        ));
    }
    out
}

/// The GPUs the container gets where that is known; else every GPU of the host (hosts are
/// nearly always of one kind, and a mixed one is judged on each).
fn container_gpus(c: &ContainerFacts, host: &HostProfile) -> Vec<crate::facts::host::Gpu> {
    rules::hoststate::compute_mode::container_gpus(&c.request, host)
        .filter(|g| !g.is_empty())
        .map(|g| g.into_iter().cloned().collect())
        .unwrap_or_else(|| host.gpus.clone())
}

/// What the probe needs besides the container: the host's facts, settings and where to cache.
pub struct ProbeContext<'a> {
    pub host: &'a HostProfile,
    pub host_root: &'a Path,
    pub proc_root: &'a Path,
    /// `<state_dir>/probe-cache`; `None` runs every probe (`probe = "always"`).
    pub cache_dir: Option<PathBuf>,
    pub cache_ttl: std::time::Duration,
}

/// Probe the container (see `facts::probe`): build the child's spec from the spec and
/// `/proc/<pid>`, answer from the cache where the same inputs were probed before, else run it
/// within `deadline` (one probe per key at a time: concurrent starts wait for it and read its
/// answer). `Err` is a finding already (no libcuda for the probe to load).
pub fn probe_container(
    bundle: &Bundle,
    facts: &ContainerFacts,
    pid: i32,
    ctx: &ProbeContext,
    deadline: std::time::Duration,
) -> Result<crate::facts::probe::ProbeResult, Finding> {
    use crate::facts::probe::{self, ProbeResult, ProbeSpec};
    use crate::facts::probe_cache;
    use crate::finding::{Api, Predicted, Severity};
    let started = std::time::Instant::now();
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
    let env = |k: &str| bundle.env(k).map(String::from);
    let env_ld = env("LD_LIBRARY_PATH").filter(|s| !s.is_empty());
    let lib_dir = libcuda
        .real_path_in_image
        .parent()
        .map(|p| p.display().to_string());
    let ld = match (&env_ld, lib_dir) {
        (Some(e), Some(d)) => Some(format!("{e}:{d}")),
        (Some(e), None) => Some(e.clone()),
        (None, d) => d,
    };
    // The canary: PTX for GPU 0 at the newest PTX ISA this driver knows.
    let canary = (|| {
        let cc = crate::knowledge::parse_version(&ctx.host.gpus.first()?.compute_capability)?;
        let drv = crate::knowledge::parse_version(ctx.host.cuda_driver_version.as_deref()?)?;
        let (ma, mi) = crate::knowledge::max_ptx_isa_for_cuda(drv)?;
        Some(probe::ptx_canary(
            &format!("{ma}.{mi}"),
            &format!("sm_{}{}", cc.0, cc.1),
        ))
    })();
    let cgroup =
        std::fs::read_to_string(ctx.proc_root.join(format!("{pid}/cgroup"))).unwrap_or_default();
    let spec = ProbeSpec {
        pid,
        proc_root: ctx.proc_root.to_path_buf(),
        cgroup_procs: probe::cgroup_procs_files(&cgroup, Path::new("/sys/fs/cgroup")),
        namespaces: probe::namespaces_to_enter(pid, ctx.proc_root),
        rootfs: bundle.rootfs.clone(),
        libcuda: libcuda.real_path_in_image.clone(),
        uid: user.as_ref().map_or(0, |u| u.uid()),
        gid: user.as_ref().map_or(0, |u| u.gid()),
        additional_gids: user
            .as_ref()
            .and_then(|u| u.additional_gids().clone())
            .unwrap_or_default(),
        ptx_canary: canary,
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let Some(cache_dir) = &ctx.cache_dir else {
        return Ok(probe::run(&spec, &exe, ld.as_deref(), deadline));
    };
    // Everything that decides the driver's answer, and nothing that differs between two
    // containers of one image (inode numbers, cgroup paths, container ids).
    let root = container::rootfs_in_namespace(pid, &bundle.rootfs, ctx.proc_root);
    let loader = crate::facts::loader::Loader::from_image(&root, ld.as_deref());
    let companions: Vec<(String, Option<String>)> = [
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-ml.so.1",
        "libnvidia-nvvm.so.4",
    ]
    .iter()
    .map(|n| {
        (
            n.to_string(),
            loader
                .resolve(n)
                .and_then(|r| probe_cache::library_identity(&r.host_path)),
        )
    })
    .collect();
    let read = |p: &str| std::fs::read_to_string(ctx.host_root.join(p)).unwrap_or_default();
    let devices = facts.devices.as_ref().ok().map(|v| (&v.nodes, &v.cgroup));
    let env_keys: Vec<Option<String>> = [
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    ]
    .iter()
    .map(|k| env(k))
    .collect();
    let inputs = serde_json::json!({
        "cuda_preflight": env!("CARGO_PKG_VERSION"),
        "boot_id": read("proc/sys/kernel/random/boot_id").trim(),
        "driver": read("proc/driver/nvidia/version").lines().next().unwrap_or(""),
        "gpus": ctx.host.gpus.iter().map(|g| &g.uuid).collect::<Vec<_>>(),
        "devices": devices,
        "spec_cgroup": container::spec_cgroup_rules(&bundle.spec),
        "libcuda": [spec.libcuda.display().to_string(), probe_cache::library_identity(&libcuda.host_path).unwrap_or_default()],
        "companions": companions,
        "env": env_keys,
        "user": [spec.uid, spec.gid],
        "groups": spec.additional_gids,
        "canary": spec.ptx_canary,
    });
    let key = probe_cache::key(&inputs);
    let lock_deadline = std::time::Instant::now() + deadline;
    let Some(_lock) = probe_cache::lock(cache_dir, &key, lock_deadline) else {
        return Ok(ProbeResult::TimedOut {
            deadline_ms: deadline.as_millis() as u64,
        });
    };
    if let Some(outcome) = probe_cache::lookup(cache_dir, &key, ctx.cache_ttl) {
        return Ok(ProbeResult::Finished {
            outcome,
            ms: started.elapsed().as_secs_f64() * 1000.0,
            cached: true,
        });
    }
    let left = deadline.saturating_sub(started.elapsed());
    let result = probe::run(&spec, &exe, ld.as_deref(), left);
    // Only a driver's answer is kept: a timeout or crash may be passing, and is asked again.
    if let ProbeResult::Finished { outcome, .. } = &result
        && outcome.setup_error.is_none()
    {
        let _ = probe_cache::store(cache_dir, &key, outcome);
    }
    Ok(result)
}
