//! Gather the facts of one container: its GPU request's devices, the image (versions,
//! binaries, loading, toolchains), the host state it meets and its headroom. Every judging
//! caller gathers through here; only where it stands differs ([`Where`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::facts::container::{self, DeviceView, GpuRequest};
use crate::facts::gpu_code::binaries::{self, BinaryFacts, WalkSettings};
use crate::facts::host::headroom::{self, HeadroomFacts};
use crate::facts::host::state::{self as hoststate, HostState};
use crate::facts::image::cache as image_cache;
use crate::facts::library_loading::cuda_libraries::{self as linkage, LoadFacts};
use crate::facts::start_path::{self, CdiHooks, Stage, StartPath};
use crate::facts::toolchains::{self, ToolchainFacts};
use crate::facts::versions::image_cuda::{self as image, ImageFacts};
use crate::input::bundle::Bundle;

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
    /// Time of each gathering step, ms (the report's `phases_ms`).
    pub phases: Vec<(&'static str, f64)>,
}

const OFFLINE_INJECTED: &str = "the devices are injected by an NVIDIA hook at start; offline there is no container to look into";

/// Where the facts are gathered from.
#[derive(Debug, Clone, Copy)]
pub enum Where<'a> {
    /// Nothing runs yet (`check`, the NRI plugin): the bundle's rootfs as it lies, every NVIDIA
    /// CDI hook of the spec still to come, the host's own mount table.
    Offline,
    /// A hook at `stage` (where it really runs). At prestart and createRuntime `pid` is the container's init
    /// as the host sees it, read through `<proc_root>/<pid>`. At createContainer runc runs us
    /// inside the container's mount namespace before pivot_root: the rootfs path shows what the
    /// container will see, and the state's pid is not a host pid (runc
    /// libcontainer/rootfs_linux.go sets it to getpid() there), so no `/proc/<pid>` is read.
    Hook {
        stage: Stage,
        pid: Option<i32>,
        proc_root: &'a Path,
    },
}

impl Where<'_> {
    /// The container's host pid, where one may be read.
    pub fn pid(&self) -> Option<i32> {
        match *self {
            Where::Hook {
                stage: Stage::Prestart | Stage::CreateRuntime,
                pid,
                ..
            } => pid,
            _ => None,
        }
    }

    fn proc_root(&self) -> &Path {
        match self {
            Where::Offline => Path::new("/proc"),
            Where::Hook { proc_root, .. } => proc_root,
        }
    }

    /// NVIDIA's CDI hooks that have not run yet here: offline all of them; in a hook, those after
    /// this hook's place (before them `libcuda.so.1` and the loader cache entry do not exist).
    fn pending(&self, spec: &oci_spec::runtime::Spec) -> CdiHooks {
        let all = start_path::nvidia_cdi_hooks(spec);
        match *self {
            Where::Offline => all,
            Where::Hook { stage, .. } => {
                all.pending_after(stage, start_path::our_index(spec, stage))
            }
        }
    }
}

/// What gathering needs: the container, where we stand, and the settings that bound the work.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub bundle: &'a Bundle,
    pub request: GpuRequest,
    pub at: Where<'a>,
    /// The OCI state's annotations (the hook's, the NRI plugin's): they may ask for headroom.
    pub state_annotations: Option<&'a HashMap<String, String>>,
    /// Where host files are read.
    pub host_root: &'a Path,
    pub headroom: headroom::Policy,
    pub walk: WalkSettings,
}

impl<'a> Input<'a> {
    /// Offline, with the config's host root and limits.
    pub fn new(bundle: &'a Bundle, request: GpuRequest, config: &'a Config) -> Input<'a> {
        Input {
            bundle,
            request,
            at: Where::Offline,
            state_annotations: None,
            host_root: &config.host_root,
            headroom: headroom_policy(config),
            walk: WalkSettings::from_config(config),
        }
    }
}

/// The headroom thresholds of a config.
pub fn headroom_policy(c: &Config) -> headroom::Policy {
    headroom::Policy {
        min_free_memory_mib: c.min_free_memory_mib,
        min_free_disk_mib: c.min_free_disk_mib,
    }
}

/// The facts the runtime shim has before the real runtime ran: the spec's environment (what
/// `NVIDIA_REQUIRE_*` needs) and the start path as the shim sees it (`start_path`: with
/// `nvidia-container-runtime` next, its mode); nothing the NVIDIA runtime or hook will inject.
pub fn before_runtime(
    bundle: &Bundle,
    request: GpuRequest,
    start_path: StartPath,
) -> ContainerFacts {
    let env = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    ContainerFacts {
        image: Some(image::gather_env(&env)),
        env,
        start_path,
        pending_hooks: CdiHooks::default(),
        cuda_compat: None,
        request,
        devices: Err("not read before the runtime ran".to_string()),
        hoststate: None,
        headroom: None,
        binaries: None,
        load: None,
        toolchains: None,
        phases: Vec::new(),
    }
}

/// Gather the container's facts (see [`Input`] and [`Where`]): where the hook has the
/// container's host pid, the rootfs is read as the container sees it, through
/// `/proc/<pid>/root`, injected files included. Host files are read under `host_root`. NVIDIA's
/// CDI hooks that have not run yet are worked out from the spec and the stage: where the image
/// has no `libcuda.so.1` yet, the one their links will give it is judged.
pub fn gather(input: Input) -> ContainerFacts {
    let Input {
        bundle,
        request,
        at,
        state_annotations,
        host_root,
        headroom: policy,
        walk,
    } = input;
    let walk = &walk;
    let mut phases = crate::output::report::Phases::since(std::time::Instant::now());
    let (pid, proc_root) = (at.pid(), at.proc_root());
    let pending = at.pending(&bundle.spec);
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
    // Every image path below is looked up from this directory, opened once.
    let _held = crate::facts::image::rootfs::hold(&root);
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
    phases.mark("image");
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
    phases.mark("binaries");
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
    phases.mark("hoststate");
    // One statvfs per writable volume, GPU containers only.
    let headroom = request
        .wants_gpu()
        .then(|| headroom::gather(bundle, state_annotations, pid, proc_root, host_root, policy));
    phases.mark("headroom");
    let mut facts = ContainerFacts {
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
        phases: phases.spans,
    };
    if let Where::Hook {
        stage: Stage::CreateContainer,
        proc_root,
        ..
    } = at
        && matches!(facts.request, GpuRequest::InjectedByHook { .. })
    {
        // The legacy hook's nodes are in the rootfs we see from inside the mount namespace, and
        // our own cgroup is the container's. Read after the host state, which was gathered
        // with the offline view (as before this module).
        facts.devices = container::view_from_root(&bundle.rootfs)
            .map(|mut v| {
                if let Some((rules, src)) =
                    container::cgroup_v1_devices_list_of(&proc_root.join("self/cgroup"))
                {
                    v.cgroup = Some(rules);
                    v.cgroup_source = Some(src);
                }
                v
            })
            .map_err(|e| {
                format!(
                    "could not read the container's /dev under {}: {e}",
                    bundle.rootfs.display()
                )
            });
    }
    facts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_says_which_pid_is_read_and_which_nvidia_hooks_are_still_to_run() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "hooks": {"createContainer": [
                {"path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "libcuda.so.580.159.04::/usr/lib64/libcuda.so.1"]},
                {"path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib64"]},
                {"path": "/usr/bin/cuda-preflight", "args": ["cuda-preflight", "hook", "--stage", "createContainer"]}
            ]}
        }))
        .unwrap();
        let proc_root = Path::new("/proc");
        let hook = |stage| Where::Hook {
            stage,
            pid: Some(4242),
            proc_root,
        };
        // (where, pid read, NVIDIA hooks still to run)
        let cases = [
            (Where::Offline, None, 2),
            (hook(Stage::Prestart), Some(4242), 2),
            (hook(Stage::CreateRuntime), Some(4242), 2),
            // Inside the container, after NVIDIA's hooks: the state's pid is not a host pid.
            (hook(Stage::CreateContainer), None, 0),
        ];
        for (at, pid, pending) in cases {
            assert_eq!(at.pid(), pid, "{at:?}");
            assert_eq!(at.pending(&spec).hooks.len(), pending, "{at:?}");
        }
    }
}
