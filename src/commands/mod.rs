//! Commands: each wires the pipeline stages together for one use. `main.rs` only parses
//! arguments and maps what these return to exit codes.

pub mod check;
pub mod doctor;
pub mod explain;
pub mod facts;
pub mod hook;
pub mod install;
pub mod nri;
pub mod report;
pub mod scan;
pub mod webhook;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::facts::container::{self, DeviceView, GpuRequest};
use crate::facts::gpu_code::binaries::{self, BinaryFacts, WalkSettings};
use crate::facts::host::headroom::{self, HeadroomFacts};
use crate::facts::host::state::{self as hoststate, HostState};
use crate::facts::host::{self, HostProfile};
use crate::facts::image::cache as image_cache;
use crate::facts::library_loading::cuda_libraries::{self as linkage, LoadFacts};
use crate::facts::start_path::{self, CdiHooks, StartPath};
use crate::facts::toolchains::{self, ToolchainFacts};
use crate::facts::versions::image_cuda::{self as image, ImageFacts};
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
        None => {
            Ok(crate::facts::host::nvml::gather(host_root, host_root == Path::new("/")).profile)
        }
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
    let facts = crate::facts::host::nvml::gather(host_root, host_root == Path::new("/"));
    if facts.source == crate::facts::host::nvml::FactSource::Nvml && !ttl.is_zero() {
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
    /// The container's process environment (`KEY=VALUE`, as the spec lists it).
    pub env: Vec<String>,
    /// How the container gets its GPUs: decides who enforces `NVIDIA_REQUIRE_*`.
    pub start_path: StartPath,
    /// NVIDIA's CDI hooks that have not run yet where these facts were gathered (all of them
    /// offline and before `createContainer`).
    pub pending_hooks: CdiHooks,
    /// What the pending `enable-cuda-compat` hook will decide, where there is one.
    pub cuda_compat: Option<start_path::CompatDecision>,
}

const OFFLINE_INJECTED: &str = "the devices are injected by an NVIDIA hook at start; offline there is no container to look into";

/// Gather the container's facts. `pid` is the container's process at hook time: then the rootfs
/// is read as the container sees it, through `/proc/<pid>/root`, injected files included. Host
/// files are read under `host_root`. `state_annotations` are the OCI state's (the hook's).
/// `pending` are NVIDIA's CDI hooks that have not run yet: where the image has no `libcuda.so.1`
/// yet, the one their links will give it is judged.
#[allow(clippy::too_many_arguments)]
pub fn container_facts(
    bundle: &Bundle,
    request: GpuRequest,
    pending: CdiHooks,
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
    // On a CDI path `libcuda.so.1` is a link NVIDIA's createContainer hook makes: judge the one
    // it will make rather than report a library that is on its way.
    if let Some(img) = &mut image_facts
        && img.libcuda.is_none()
        && img.rootfs_read
        && let Some(r) = start_path::predict_libcuda(&root, &env, &bundle.spec, &pending)
    {
        img.libcuda = Some(r);
    }
    // On a CDI path NVIDIA's enable-cuda-compat hook decides whether the image's compat
    // libcuda is used: predict it, as the legacy path's rules judged the loader's own choice.
    let cuda_compat = pending
        .enable_cuda_compat()
        .filter(|_| image_facts.as_ref().is_some_and(|i| i.rootfs_read))
        .and_then(|h| start_path::predict_cuda_compat(&root, h));
    if let (Some(d), Some(img)) = (&cuda_compat, &mut image_facts)
        && d.use_compat
        && let Some(lib) = &d.library
        // LD_LIBRARY_PATH comes before the loader cache: a libcuda.so.1 there still wins.
        && !img
            .libcuda
            .as_ref()
            .is_some_and(|r| r.via == crate::facts::library_loading::loader::Source::LdLibraryPath)
        && let Ok(host_path) = crate::facts::image::rootfs::resolve(&root, lib)
    {
        img.compat_in_use = Some(image::CompatLib {
            path: lib.clone(),
            version: d
                .version
                .as_deref()
                .and_then(crate::knowledge::cuda::Version::parse),
        });
        img.libcuda = Some(crate::facts::library_loading::loader::Resolved {
            path_in_image: lib.with_file_name("libcuda.so.1"),
            real_path_in_image: lib.clone(),
            host_path,
            via: crate::facts::library_loading::loader::Source::LdSoCache,
            unloadable: None,
        });
    }
    let walkable = request.wants_gpu() && root.is_dir();
    let site = image_facts
        .as_ref()
        .map(|i| i.site_packages.clone())
        .unwrap_or_default();
    let args0 = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first().cloned());
    let (binaries, load, toolchains) = match (walkable, &mut image_facts) {
        (true, Some(img)) => {
            let (b, l, t) = image_facts_cached(
                bundle,
                &root,
                &env,
                args0.as_deref(),
                &site,
                img,
                crate::facts::image::identity::mountinfo_path(pid, proc_root),
                walk,
            );
            (Some(b), l, Some(t))
        }
        (true, None) => {
            let b = binaries::gather(&root, &env, &site, walk);
            let t = toolchains::gather(&root, &env, &site);
            (Some(b), None, Some(t))
        }
        _ => (None, None, None),
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
        env,
        start_path: StartPath::from_spec(&bundle.spec, &request),
        pending_hooks: pending,
        cuda_compat,
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

/// The image's binaries, load facts and toolchains: from the image facts cache where the rootfs
/// has an identity the host knows and an entry for it exists, else gathered (and stored where it
/// has a key). `mountinfo`: the container's mount table ([`crate::facts::image::identity`]).
#[allow(clippy::too_many_arguments)]
fn image_facts_cached(
    bundle: &Bundle,
    root: &Path,
    env: &[String],
    args0: Option<&str>,
    site: &[PathBuf],
    img: &mut ImageFacts,
    mountinfo: PathBuf,
    walk: &WalkSettings,
) -> (BinaryFacts, Option<LoadFacts>, ToolchainFacts) {
    let started = std::time::Instant::now();
    let cache = walk
        .image_cache_dir
        .as_deref()
        .map(|d| image_cache::ImageCache::open(d, walk.cache_max_bytes));
    let mut lookup = match &cache {
        Some(_) => image_cache::lookup(&mountinfo, &bundle.rootfs, root, env, args0),
        None => image_cache::Lookup {
            key: None,
            scope: None,
            outcome: image_cache::Outcome {
                result: "off".into(),
                reason: Some("no cache directory".into()),
                ..Default::default()
            },
        },
    };
    if let (Some(c), Some(key)) = (&cache, &lookup.key)
        && let Some(hit) = c.get(key)
    {
        if let Some(l) = &hit.load {
            set_loaded_runtimes(img, l);
        }
        let mut b = hit.binaries;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        b.stats.elapsed_ms = ms;
        lookup.outcome.result = "hit".into();
        lookup.outcome.ms = ms;
        b.image_cache = Some(lookup.outcome);
        let t = hit.toolchains.unwrap_or_default();
        return (b, hit.load, t);
    }
    let mut settings = walk.clone();
    settings.cache_scope = lookup.scope.clone();
    let mut b = binaries::gather(root, env, site, &settings);
    let t = toolchains::gather(root, env, site);
    let l = linkage::gather(root, env, args0, &b, img);
    set_loaded_runtimes(img, &l);
    let mut outcome = lookup.outcome;
    outcome.ms = started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(c), Some(key)) = (&cache, &lookup.key) {
        // A walk a budget stopped depends on this start's load: the next start may finish it.
        if let Some(why) = &b.stopped {
            outcome.reason = Some(format!("not stored: the walk stopped at the {why}"));
        } else {
            b.image_cache = None;
            let mut cached = image_cache::Cached {
                binaries: b,
                load: Some(l),
                toolchains: Some(t),
            };
            match c.put(key, &cached) {
                Ok(()) => {
                    outcome.result = "stored".into();
                    let _ = c.prune();
                }
                Err(e) => outcome.reason = Some(format!("not stored: {e}")),
            }
            cached.binaries.image_cache = Some(outcome);
            let image_cache::Cached {
                binaries,
                load,
                toolchains,
            } = cached;
            return (binaries, load, toolchains.unwrap_or_default());
        }
    }
    b.image_cache = Some(outcome);
    (b, Some(l), t)
}

/// The runtimes the image's libraries really load: what the version rules judge.
fn set_loaded_runtimes(img: &mut ImageFacts, l: &LoadFacts) {
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
}

/// All rules over the facts.
pub fn run_rules(c: &ContainerFacts, host: &HostProfile) -> Vec<Finding> {
    let devices = c.devices.as_ref().map_err(String::as_str);
    let mut out =
        rules::container::devices::device_findings(&c.request, devices, &host.device_majors);
    if let Some(image) = &c.image {
        out.extend(rules::versions::requirements::check(image, host));
        out.extend(rules::versions::driver_compat::check(image, host));
    }
    if let Some(hs) = &c.hoststate {
        out.extend(rules::host::check(&c.request, hs, host));
    }
    if let Some(h) = &c.headroom {
        out.extend(rules::host::headroom::check(h, &c.request, host));
    }
    if let (Some(l), Some(image)) = (&c.load, &c.image) {
        out.extend(rules::library_loading::cuda_libraries::check(l, image));
    }
    let judged = c
        .binaries
        .as_ref()
        .map(|b| judge_binaries(b, &c.env, &container_gpus(c, host), host));
    if let Some(j) = &judged {
        out.extend(j.kernels.iter().cloned());
    }
    if let Some(d) = &c.cuda_compat {
        out.push(rules::start_path::compat_decision(d));
    }
    // The container's CUDA_* variables (rules::container::cuda_env): a module of their own next to the
    // kernel rules, from the same facts.
    out.extend(rules::container::cuda_env::check(
        &c.env,
        devices,
        &c.request,
        host,
        None,
        &container_gpus(c, host),
    ));
    if let Some(j) = judged {
        out.extend(j.ptx_jit);
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

/// The rules over the image's fatbin inventories. On an image facts cache hit they are judged
/// once per host ([`image_cache::host_key`]: GPUs, driver, CUDA variables) and the judgement kept
/// beside the entry: a later hit reads it rather than unpacking and judging every entry (21,000
/// in a torch image, most of a hit's time). The judgement is these same functions' result.
fn judge_binaries(
    b: &BinaryFacts,
    env: &[String],
    gpus: &[crate::facts::host::Gpu],
    host: &HostProfile,
) -> image_cache::Judged {
    let driver = host.cuda_driver_version.as_deref().unwrap_or("");
    let judge = |b: &BinaryFacts| image_cache::Judged {
        kernels: rules::gpu_code::image_findings(b, gpus, driver),
        ptx_jit: rules::container::cuda_env::ptx_jit(env, &b.files, gpus, driver),
    };
    let Some(packed) = &b.packed else {
        return judge(b);
    };
    let key = image_cache::host_key(gpus, driver, env);
    if let Some(j) = packed.judged(&key) {
        return j;
    }
    let mut full = BinaryFacts {
        packed: None,
        ..b.clone()
    };
    match packed.unpack() {
        Some(files) => full.files = files,
        // Not reached: the entry was checked when read. Said, never judged as no GPU code.
        None => {
            return image_cache::Judged {
                kernels: vec![Finding::skipped(
                    "kernels",
                    "the image facts cache entry's inventories did not unpack: kernels were not judged",
                )],
                ptx_jit: Vec::new(),
            };
        }
    }
    let j = judge(&full);
    packed.store_judged(&key, &j);
    j
}

/// The GPUs the container gets where that is known; else every GPU of the host (hosts are
/// nearly always of one kind, and a mixed one is judged on each).
fn container_gpus(c: &ContainerFacts, host: &HostProfile) -> Vec<crate::facts::host::Gpu> {
    rules::host::compute_mode::container_gpus(&c.request, host)
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
    /// The hook runs as a `createContainer` hook: already inside the container's namespaces
    /// and cgroup (runc runs those hooks from `runc init`), where the state's pid is not a host
    /// pid; the probe then enters nothing and joins nothing.
    pub in_container: bool,
}

/// Variables of the container's environment the probe sets (with `setenv`, inside the
/// container) before it loads libcuda: those that change what the driver does.
fn cuda_env(bundle: &Bundle) -> Vec<(String, String)> {
    let Some(env) = bundle.spec.process().as_ref().and_then(|p| p.env().clone()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for kv in env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let wanted = k.starts_with("CUDA_")
            || k.starts_with("NVIDIA_")
            || k.starts_with("__NV")
            || k == "LD_LIBRARY_PATH";
        if !wanted || k.len() > 128 || v.len() > 4096 || k.contains('\0') || v.contains('\0') {
            continue;
        }
        // Later entries win, as for the container's process.
        out.retain(|(o, _)| o != k);
        out.push((k.to_string(), v.to_string()));
        if out.len() >= 64 {
            break;
        }
    }
    out
}

/// A limit of the cgroups the probe joins that leaves less room than the probe itself takes
/// (the probe's processes and the driver's threads count against the container's pids limit,
/// its mappings against the memory limit): a failure under it may be the probe's own footprint.
fn footprint_limit(cgroup_procs: &[PathBuf], spec: &oci_spec::runtime::Spec) -> Option<String> {
    /// The probe's three processes, the driver's threads (measured on the H100: 304 at
    /// pids.limit 8), the container's waiting init, with room to spare.
    const PIDS_NEEDED: u64 = 32;
    /// libcuda's mappings and a context's host allocations, with room to spare.
    const MEMORY_NEEDED: u64 = 1 << 30;
    let mut pids: Vec<u64> = Vec::new();
    let mut mem: Vec<u64> = Vec::new();
    for f in cgroup_procs {
        let Some(dir) = f.parent() else { continue };
        let read = |n: &str| {
            std::fs::read_to_string(dir.join(n))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        pids.extend(read("pids.max"));
        mem.extend(read("memory.max"));
        mem.extend(read("memory.limit_in_bytes"));
    }
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        pids.extend(
            r.pids()
                .as_ref()
                .and_then(|p| u64::try_from(p.limit()).ok()),
        );
        mem.extend(
            r.memory()
                .as_ref()
                .and_then(|m| m.limit())
                .and_then(|l| u64::try_from(l).ok()),
        );
    }
    if let Some(p) = pids.into_iter().min().filter(|p| *p <= PIDS_NEEDED) {
        return Some(format!(
            "the container's pids limit of {p} leaves the probe (its processes and the driver's threads count against it) too little room"
        ));
    }
    if let Some(m) = mem.into_iter().min().filter(|m| *m <= MEMORY_NEEDED) {
        return Some(format!(
            "the container's memory limit of {} MiB leaves the probe (libcuda's mappings count against it) too little room",
            m >> 20
        ));
    }
    None
}

/// The NVIDIA device nodes in the container as the host sees them: mode, owner, device number.
fn device_nodes(root: &Path) -> Vec<(String, u32, u32, u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = std::fs::read_dir(root.join("dev"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.rdev(),
            ))
        })
        .take(256)
        .collect();
    out.sort();
    out
}

/// The libraries the probe child loads by path before libcuda: those among the companions, and
/// the direct dependencies of libcuda and of the companions, that the container's
/// `LD_LIBRARY_PATH` resolves to another file than the cache and default directories would
/// (the child's own loader never saw that variable). Dependencies come before what needs them.
fn preload_list(
    with_ld: &crate::facts::library_loading::loader::Loader,
    without: &crate::facts::library_loading::loader::Loader,
    libcuda_host: &Path,
    companions: &[&str],
) -> Vec<PathBuf> {
    let needed_of = |host: &Path| -> Vec<String> {
        let Ok(f) = std::fs::File::open(host) else {
            return Vec::new();
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let bytes = std::cell::Cell::new(0);
        crate::formats::elf_dynamic::read_needed(&f, size, &bytes)
            .ok()
            .flatten()
            .map(|d| d.needed)
            .unwrap_or_default()
    };
    let mut names: Vec<String> = needed_of(libcuda_host);
    for c in companions {
        if let Some(r) = with_ld.resolve(c) {
            names.extend(needed_of(&r.host_path));
        }
        names.push(c.to_string());
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for n in names.iter().take(64) {
        let Some(r) = with_ld.resolve(n) else {
            continue;
        };
        let other = without.resolve(n).map(|o| o.real_path_in_image);
        if other.as_ref() != Some(&r.real_path_in_image) && !out.contains(&r.real_path_in_image) {
            out.push(r.real_path_in_image);
        }
    }
    out
}

/// Probe the container (see `facts::probe`): build the child's spec from the spec and
/// `/proc/<pid>`, answer from the cache where the same inputs were probed before, else run it
/// within `deadline` (one probe per key at a time: concurrent starts wait for it and read its
/// answer). `Err` is a finding already (no libcuda for the probe to load, or a confinement the
/// probe cannot reproduce). The second value says why a failure may be the probe's own
/// footprint (see `rules::probe`).
// The error is a finding for the report, made at most once per hook run.
#[allow(clippy::result_large_err)]
pub fn probe_container(
    bundle: &Bundle,
    facts: &ContainerFacts,
    pid: i32,
    ctx: &ProbeContext,
    deadline: std::time::Duration,
) -> Result<(crate::facts::probe::ProbeResult, Option<String>), Finding> {
    use crate::facts::probe::cache as probe_cache;
    use crate::facts::probe::{self, ProbeResult, ProbeSpec, Rlimit};
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
    let skipped = |why: String| {
        Finding::new(
            "probe-skipped",
            Severity::Info,
            None,
            format!(
                "the probe did not run: {why}; the container was judged by the static rules only"
            ),
            "",
        )
    };
    let linux = bundle.spec.linux().as_ref();
    // Compiled only when the probe runs (a cache hit needs the spec's text, not the program).
    let seccomp_spec = linux.and_then(|l| l.seccomp().as_ref());
    let compile_seccomp = |spec: &mut ProbeSpec| -> Result<(), Finding> {
        if let Some(s) = seccomp_spec {
            spec.seccomp = crate::facts::probe::seccomp::compile(s).map_err(skipped)?;
        }
        Ok(())
    };
    let user = bundle.spec.process().as_ref().map(|p| p.user().clone());
    let env = cuda_env(bundle);
    let env_ld = env
        .iter()
        .find(|(k, _)| k == "LD_LIBRARY_PATH")
        .map(|(_, v)| v.clone())
        .filter(|s| !s.is_empty());
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
    let (cgroup_procs, namespaces, root) = if ctx.in_container {
        // Already in the container's cgroup and namespaces, before pivot_root: its rootfs is at
        // the bundle's path in this mount namespace.
        (Vec::new(), Vec::new(), bundle.rootfs.clone())
    } else {
        let cgroup = std::fs::read_to_string(ctx.proc_root.join(format!("{pid}/cgroup")))
            .unwrap_or_default();
        (
            probe::cgroup_procs_files(&cgroup, Path::new("/sys/fs/cgroup")),
            probe::namespaces_to_enter(pid, ctx.proc_root),
            container::rootfs_in_namespace(pid, &bundle.rootfs, ctx.proc_root),
        )
    };
    // Companions whose resolution the container's LD_LIBRARY_PATH changes: glibc reads it only
    // at process start, so the child loads these by path (see `probe_child`).
    let loader =
        crate::facts::library_loading::loader::Loader::from_image(&root, env_ld.as_deref());
    let plain = crate::facts::library_loading::loader::Loader::from_image(&root, None);
    let companion_names = [
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-nvvm.so.4",
        "libnvidia-gpucomp.so",
    ];
    let preload = preload_list(&loader, &plain, &libcuda.host_path, &companion_names);
    let companions: Vec<(String, Option<String>)> = companion_names
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
    let rlimits = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().clone())
        .unwrap_or_default()
        .iter()
        .map(|r| Rlimit {
            kind: serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    let mut spec = ProbeSpec {
        pid,
        proc_root: ctx.proc_root.to_path_buf(),
        cgroup_procs,
        namespaces,
        rootfs: bundle.rootfs.clone(),
        libcuda: libcuda.real_path_in_image.clone(),
        uid: user.as_ref().map_or(0, |u| u.uid()),
        gid: user.as_ref().map_or(0, |u| u.gid()),
        additional_gids: user
            .as_ref()
            .and_then(|u| u.additional_gids().clone())
            .unwrap_or_default(),
        ptx_canary: canary,
        env,
        preload,
        masked_paths: linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
        root_readonly: bundle
            .spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        rlimits,
        seccomp: Vec::new(),
    };
    let footprint = footprint_limit(&spec.cgroup_procs, &bundle.spec);
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let Some(cache_dir) = &ctx.cache_dir else {
        compile_seccomp(&mut spec)?;
        return Ok((probe::run(&spec, &exe, deadline), footprint));
    };
    // Everything the driver's answer depends on, as the host sees it, and nothing that differs
    // between two containers of one image (inode numbers, cgroup paths, container ids). Only
    // clean answers are ever stored (see below), so a key can at worst skip a probe.
    let read = |p: &str| std::fs::read_to_string(ctx.host_root.join(p)).unwrap_or_default();
    let devices = facts.devices.as_ref().ok().map(|v| (&v.nodes, &v.cgroup));
    let nvidia_env = ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"]
        .map(|k| bundle.env(k).map(String::from));
    let inputs = serde_json::json!({
        "cuda_preflight": env!("CARGO_PKG_VERSION"),
        "boot_id": read("proc/sys/kernel/random/boot_id").trim(),
        "driver": read("proc/driver/nvidia/version").lines().next().unwrap_or(""),
        "gpus": ctx.host.gpus.iter().map(|g| &g.uuid).collect::<Vec<_>>(),
        "devices": devices,
        "device_nodes": device_nodes(&root),
        "spec_cgroup": container::spec_cgroup_rules(&bundle.spec),
        "libcuda": [spec.libcuda.display().to_string(), probe_cache::library_identity(&libcuda.host_path).unwrap_or_default()],
        "companions": companions,
        "preload": spec.preload,
        "env": spec.env,
        "nvidia_env": nvidia_env,
        "user": [spec.uid, spec.gid],
        "groups": spec.additional_gids,
        "canary": spec.ptx_canary,
        "confinement": [&spec.masked_paths, &spec.readonly_paths],
        "root_readonly": spec.root_readonly,
        "rlimits": spec.rlimits,
        "seccomp": seccomp_spec,
        "footprint": footprint,
    });
    let key = probe_cache::key(&inputs);
    let lock_deadline = std::time::Instant::now() + deadline;
    let Some(_lock) = probe_cache::lock(cache_dir, &key, lock_deadline) else {
        return Ok((
            ProbeResult::TimedOut {
                deadline_ms: deadline.as_millis() as u64,
            },
            footprint,
        ));
    };
    if let Some(outcome) = probe_cache::lookup(cache_dir, &key, ctx.cache_ttl) {
        return Ok((
            ProbeResult::Finished {
                outcome,
                ms: started.elapsed().as_secs_f64() * 1000.0,
                cached: true,
            },
            footprint,
        ));
    }
    compile_seccomp(&mut spec)?;
    let left = deadline.saturating_sub(started.elapsed());
    let result = probe::run(&spec, &exe, left);
    // Only a clean answer is kept: a failure is re-asked by every container (an image could
    // forge one, and a failure may belong to one container's own limits), so no container's
    // failure can block another.
    if let ProbeResult::Finished { outcome, .. } = &result
        && outcome.is_clean()
    {
        let _ = probe_cache::store(cache_dir, &key, outcome);
    }
    Ok((result, footprint))
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn footprint_limits_from_the_cgroups_the_probe_joins_and_the_spec() {
        let d = tempfile::tempdir().unwrap();
        let procs = d.path().join("cgroup.procs");
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"}
        }))
        .unwrap();
        assert_eq!(footprint_limit(std::slice::from_ref(&procs), &spec), None);
        std::fs::write(d.path().join("pids.max"), "max\n").unwrap();
        std::fs::write(d.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(footprint_limit(std::slice::from_ref(&procs), &spec), None);
        std::fs::write(d.path().join("pids.max"), "8\n").unwrap();
        assert!(
            footprint_limit(std::slice::from_ref(&procs), &spec)
                .unwrap()
                .contains("pids limit of 8")
        );
        std::fs::write(d.path().join("pids.max"), "4096\n").unwrap();
        std::fs::write(
            d.path().join("memory.limit_in_bytes"),
            format!("{}\n", 512u64 << 20),
        )
        .unwrap();
        assert!(
            footprint_limit(std::slice::from_ref(&procs), &spec)
                .unwrap()
                .contains("512 MiB")
        );
        // The spec's own limit counts where no cgroup file says it.
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "linux": {"resources": {"pids": {"limit": 16}}}
        }))
        .unwrap();
        assert!(
            footprint_limit(&[], &spec)
                .unwrap()
                .contains("pids limit of 16")
        );
    }
}
