//! The probe step: where the hook may run image code, a real CUDA context inside the container's
//! namespaces (`facts::probe`), cached per image and host. Its answer is a fact
//! ([`ProbeAnswer`]); `rules::probe` turns it into findings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, ProbePolicy};
use crate::facts::container;
use crate::facts::host::HostProfile;
use crate::facts::probe::answer::ProbeAnswer;
use crate::facts::start_path::Stage;
use crate::finding::{Finding, Severity};
use crate::input::bundle::Bundle;
use crate::pipeline::ContainerFacts;

/// Where and when the hook may probe.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The stage the hook really runs at.
    pub stage: Stage,
    /// The pid the probe reads the container through; `None` where image code may not run here
    /// (at createContainer, a hook that is not a child of the container's init).
    pub pid: Option<i32>,
    /// Where `/proc/<pid>` is looked up.
    pub proc_root: &'a Path,
    /// When the hook started: the probe ends well inside the hook's own deadline.
    pub started: Instant,
}

/// The probe step of the hook. Not asked for a container without a GPU or with
/// `probe = "never"`; deferred while NVIDIA's hooks that make `libcuda.so.1` loadable are still to
/// run; not run where a static rule already blocks: the static rules explain a block, the probe
/// is for what only the driver knows. That is judged after the severity table: a static block
/// the host downgraded still gets the probe, and a warning raised to a block does not need it.
pub fn answer(
    bundle: &Bundle,
    facts: &ContainerFacts,
    findings: &[Finding],
    p: &Probe,
    host: &HostProfile,
    config: &Config,
) -> ProbeAnswer {
    if !facts.request.wants_gpu() || config.probe == ProbePolicy::Never {
        return ProbeAnswer::NotAsked;
    }
    if facts.pending_hooks.makes_libcuda_loadable() {
        return ProbeAnswer::Deferred {
            stage: p.stage,
            pending: facts.pending_hooks.clone(),
        };
    }
    let Some(pid) = p.pid else {
        return if p.stage == Stage::CreateContainer {
            ProbeAnswer::OutsideContainer
        } else {
            ProbeAnswer::NotAsked
        };
    };
    if findings
        .iter()
        .any(|f| crate::verdict::effective_severity(config, f) == Severity::Block)
    {
        return ProbeAnswer::NotAsked;
    }
    // It must end well inside the hook's own deadline.
    let left = Duration::from_millis(config.deadline_ms).saturating_sub(
        p.started.elapsed() + Duration::from_millis(200) + crate::facts::probe::REAP_GRACE,
    );
    let deadline = Duration::from_millis(config.probe_deadline_ms).min(left);
    let ctx = ProbeContext {
        host,
        host_root: &config.host_root,
        proc_root: p.proc_root,
        cache_dir: (config.probe == ProbePolicy::Auto)
            .then(|| config.state_dir.join("probe-cache")),
        cache_ttl: Duration::from_secs(config.probe_cache_ttl_s),
        in_container: p.stage == Stage::CreateContainer,
    };
    probe_container(bundle, facts, pid, &ctx, deadline)
}

/// What the probe needs besides the container: the host's facts, settings and where to cache.
struct ProbeContext<'a> {
    host: &'a HostProfile,
    host_root: &'a Path,
    proc_root: &'a Path,
    /// `<state_dir>/probe-cache`; `None` runs every probe (`probe = "always"`).
    cache_dir: Option<PathBuf>,
    cache_ttl: Duration,
    /// The hook runs as a `createContainer` hook: already inside the container's namespaces
    /// and cgroup (runc runs those hooks from `runc init`), where the state's pid is not a host
    /// pid; the probe then enters nothing and joins nothing.
    in_container: bool,
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
/// answer). Where it cannot run, the answer says why (no libcuda for the probe to load, or a
/// confinement the probe cannot reproduce); where it ran, it also says why a failure may be the
/// probe's own footprint (see `rules::probe`).
fn probe_container(
    bundle: &Bundle,
    facts: &ContainerFacts,
    pid: i32,
    ctx: &ProbeContext,
    deadline: Duration,
) -> ProbeAnswer {
    use crate::facts::probe::cache as probe_cache;
    use crate::facts::probe::{self, ProbeResult, ProbeSpec, Rlimit};
    let started = Instant::now();
    let Some(libcuda) = facts.image.as_ref().and_then(|i| i.libcuda.as_ref()) else {
        return ProbeAnswer::NoLibcuda;
    };
    let linux = bundle.spec.linux().as_ref();
    // Compiled only when the probe runs (a cache hit needs the spec's text, not the program).
    let seccomp_spec = linux.and_then(|l| l.seccomp().as_ref());
    let compile_seccomp = |spec: &mut ProbeSpec| -> Result<(), String> {
        if let Some(s) = seccomp_spec {
            spec.seccomp = crate::facts::probe::seccomp::compile(s)?;
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
        apparmor_profile: None,
        selinux_label: None,
    };
    // The container's AppArmor profile and SELinux label, for the modules this host has on.
    let process = bundle.spec.process().as_ref();
    (spec.apparmor_profile, spec.selinux_label) = probe::lsm_labels(
        process.and_then(|p| p.apparmor_profile().as_deref()),
        process.and_then(|p| p.selinux_label().as_deref()),
        probe::HostLsm::of_host(ctx.host_root),
    );
    let footprint = footprint_limit(&spec.cgroup_procs, &bundle.spec);
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let Some(cache_dir) = &ctx.cache_dir else {
        if let Err(why) = compile_seccomp(&mut spec) {
            return ProbeAnswer::CannotConfine(why);
        }
        return ProbeAnswer::Ran {
            result: probe::run(&spec, &exe, deadline),
            footprint,
        };
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
        "lsm": [&spec.apparmor_profile, &spec.selinux_label],
        "footprint": footprint,
    });
    let key = probe_cache::key(&inputs);
    let lock_deadline = Instant::now() + deadline;
    let Some(_lock) = probe_cache::lock(cache_dir, &key, lock_deadline) else {
        return ProbeAnswer::Ran {
            result: ProbeResult::TimedOut {
                deadline_ms: deadline.as_millis() as u64,
            },
            footprint,
        };
    };
    if let Some(outcome) = probe_cache::lookup(cache_dir, &key, ctx.cache_ttl) {
        return ProbeAnswer::Ran {
            result: ProbeResult::Finished {
                outcome,
                ms: started.elapsed().as_secs_f64() * 1000.0,
                cached: true,
            },
            footprint,
        };
    }
    if let Err(why) = compile_seccomp(&mut spec) {
        return ProbeAnswer::CannotConfine(why);
    }
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
    ProbeAnswer::Ran { result, footprint }
}

#[cfg(test)]
mod tests {
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
