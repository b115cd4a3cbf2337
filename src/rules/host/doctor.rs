//! `cuda-preflight doctor`'s checks: pure functions from [`DoctorFacts`] to a list of checks, each
//! with a stable id, a status and, for every problem, the fix. The manual GPU-in-container
//! troubleshooting order: driver, modules, device nodes, GPUs, toolkit, CDI, engines, a real
//! context, disk space.

use serde::Serialize;

use crate::facts::host::doctor::{DoctorFacts, HostProbe};
use crate::facts::host::nvml::FactSource;
use crate::facts::probe::ProbeResult;
use crate::finding::Severity;
use crate::knowledge;
use crate::rules::host::{cdi, driver_libs};

pub const DRIVER: &str = "driver-loaded";
pub const DRIVER_LIBS: &str = "driver-libraries";
pub const NVML: &str = "nvml";
pub const MODULES: &str = "kernel-modules";
pub const MAJORS: &str = "device-majors";
pub const NODES: &str = "device-nodes";
pub const DEV_CHAR: &str = "dev-char-links";
pub const PERSISTENCE: &str = "persistence-mode";
pub const GPU: &str = "gpu";
pub const GPU_ECC: &str = "gpu-ecc";
pub const TOOLKIT: &str = "container-toolkit";
pub const CDI: &str = "cdi-specs";
pub const ENGINE_DOCKER: &str = "engine-docker";
pub const ENGINE_PODMAN: &str = "engine-podman";
pub const ENGINE_CONTAINERD: &str = "engine-containerd";
pub const ENGINE_NRI: &str = "engine-nri";
pub const HOOK_REGISTERED: &str = "hook-registered";
pub const CONTEXT: &str = "host-context";
pub const DISK: &str = "disk-space";

/// Every check id `doctor` can print, in its order. `gpu`, `gpu-ecc`, `persistence-mode` and
/// `disk-space` appear once per GPU or directory.
pub const CHECK_IDS: &[&str] = &[
    DRIVER,
    NVML,
    DRIVER_LIBS,
    MODULES,
    MAJORS,
    NODES,
    DEV_CHAR,
    PERSISTENCE,
    GPU,
    GPU_ECC,
    TOOLKIT,
    CDI,
    ENGINE_DOCKER,
    ENGINE_PODMAN,
    ENGINE_CONTAINERD,
    ENGINE_NRI,
    HOOK_REGISTERED,
    CONTEXT,
    DISK,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Warn,
    Skip,
}

impl Status {
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Fail => "✗",
            Status::Warn => "!",
            Status::Skip => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    /// Empty where there is nothing to fix.
    pub fix: String,
}

fn check(
    id: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        id,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Thresholds from the config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Below this, a directory's free space is a warning.
    pub min_free_disk_mib: u64,
}

const LOAD_MODULES: &str = "load the driver: `modprobe nvidia && modprobe nvidia_uvm` (or `nvidia-modprobe -u -c=0`); \
     if modprobe fails, reinstall the driver for this kernel and read `dmesg`";

fn severity_status(s: Severity) -> Status {
    match s {
        Severity::Block => Status::Fail,
        Severity::Warn => Status::Warn,
        Severity::Info => Status::Skip,
    }
}

pub fn checks(f: &DoctorFacts, policy: Policy) -> Vec<Check> {
    let mut out = Vec::new();
    let driver = f.host.driver_version.as_deref();
    let loaded = f.kernel_module.is_ok() || driver.is_some();
    // 1. The driver.
    match (&f.kernel_module, driver) {
        (Ok(m), d) => {
            let cuda = f
                .host
                .cuda_driver_version
                .as_deref()
                .map_or(String::new(), |c| format!(" (CUDA {c})"));
            let lib = match d {
                Some(d) if d != m.to_string() => format!(", NVML reports {d}"),
                _ => String::new(),
            };
            out.push(check(DRIVER, Status::Ok, format!("kernel module {m}{cuda}{lib}"), ""));
        }
        (Err(_), Some(d)) => out.push(check(
            DRIVER,
            Status::Ok,
            format!("{d} (from the host profile; /proc/driver/nvidia/version not read)"),
            "",
        )),
        (Err(e), None) => out.push(check(
            DRIVER,
            Status::Fail,
            format!("no NVIDIA driver loaded: {e}"),
            "install the NVIDIA driver for this kernel, then `modprobe nvidia`; `lsmod | grep nvidia` shows whether it loaded",
        )),
    }
    // NVML: what nvidia-smi and the toolkit use; its failure is often the first symptom.
    out.push(match f.source {
        FactSource::Nvml => check(NVML, Status::Ok, format!("{} GPU(s)", f.host.gpus.len()), ""),
        FactSource::Proc | FactSource::None if f.notes.iter().any(|n| n.starts_with("NVML")) => {
            let why = f.notes.iter().find(|n| n.starts_with("NVML")).cloned().unwrap_or_default();
            let why = why.split("; falling back").next().unwrap_or(&why).to_string();
            check(
                NVML,
                if loaded { Status::Fail } else { Status::Skip },
                why,
                "`nvidia-smi` shows the same error; \"Driver/library version mismatch\": reboot (or reload the module) after a driver upgrade",
            )
        }
        _ => check(NVML, Status::Skip, "not asked: a host profile or a --host-root other than / is in use", ""),
    });
    // 2. Libraries against the module: an upgrade without a reboot.
    if f.kernel_module.is_ok() {
        let findings = driver_libs::check(&f.kernel_module, &f.driver_libs);
        match findings.iter().find(|x| x.severity == Severity::Block) {
            Some(x) => out.push(check(
                DRIVER_LIBS,
                Status::Fail,
                format!("{}; containers fail with \"{}\"", x.evidence, driver_libs::NVML_MISMATCH),
                x.fix.clone(),
            )),
            None if f.driver_libs.is_empty() => out.push(check(
                DRIVER_LIBS,
                Status::Warn,
                "no libcuda.so.1 or libnvidia-ml.so.1 with a version in its file name on the host's loader path",
                "install the driver's user-space libraries (libnvidia-compute / nvidia-driver-libs of the same version as the module)",
            )),
            None => {
                let libs: Vec<&str> = f.driver_libs.iter().map(|l| file_name(&l.path)).collect();
                out.push(check(DRIVER_LIBS, Status::Ok, format!("{}: the module's version", libs.join(", ")), ""));
            }
        }
    }
    // 3. Kernel modules.
    match &f.modules {
        Ok(m) => {
            let has = |n: &str| m.iter().any(|x| x == n);
            let missing: Vec<&str> = ["nvidia", "nvidia_uvm"]
                .into_iter()
                .filter(|n| !has(n))
                .collect();
            if missing.is_empty() {
                let extra: Vec<&str> = ["nvidia_modeset", "nvidia_drm", "nvidia_peermem"]
                    .into_iter()
                    .filter(|n| has(n))
                    .collect();
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!(" (also {})", extra.join(", "))
                };
                out.push(check(
                    MODULES,
                    Status::Ok,
                    format!("nvidia, nvidia_uvm loaded{extra}"),
                    "",
                ));
            } else {
                let why = if missing.contains(&"nvidia") {
                    "no GPU can be opened"
                } else {
                    "cuInit fails with 999 CUDA_ERROR_UNKNOWN"
                };
                out.push(check(
                    MODULES,
                    Status::Fail,
                    format!("{} not in /proc/modules: {why}", missing.join(", ")),
                    LOAD_MODULES,
                ));
            }
        }
        Err(e) => out.push(check(MODULES, Status::Skip, e.clone(), "")),
    }
    // 4. Majors.
    let majors = &f.host.device_majors;
    match &f.proc_devices {
        Err(e) => out.push(check(MAJORS, Status::Skip, e.clone(), "")),
        Ok(()) => {
            let want = ["nvidia", "nvidia-uvm"];
            let missing: Vec<&str> = want
                .into_iter()
                .filter(|n| !majors.contains_key(*n))
                .collect();
            let shown: Vec<String> = majors
                .iter()
                .filter(|(k, _)| ["nvidia", "nvidia-uvm", "nvidia-caps"].contains(&k.as_str()))
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if missing.is_empty() {
                out.push(check(MAJORS, Status::Ok, shown.join(", "), ""));
            } else if !loaded {
                out.push(check(
                    MAJORS,
                    Status::Skip,
                    "no driver: /proc/devices names no NVIDIA device",
                    "",
                ));
            } else {
                out.push(check(
                    MAJORS,
                    Status::Fail,
                    format!("/proc/devices has no {}", missing.join(", ")),
                    LOAD_MODULES,
                ));
            }
        }
    }
    // 5. Nodes, and their majors against /proc/devices.
    if loaded {
        let mut problems = Vec::new();
        let mut ok = Vec::new();
        for n in &f.nodes {
            let want = if n.path.starts_with("/dev/nvidia-uvm") {
                majors.get("nvidia-uvm")
            } else {
                majors.get("nvidia")
            };
            match &n.dev {
                Ok(None) => problems.push(format!("{} missing", n.path)),
                Err(e) => problems.push(format!("{}: {e}", n.path)),
                Ok(Some((ma, mi))) => match want {
                    Some(w) if w != ma => problems.push(format!(
                        "{} is {ma}:{mi} but /proc/devices gives major {w}",
                        n.path
                    )),
                    _ => ok.push(format!("{} {ma}:{mi}", file_name(&n.path))),
                },
            }
        }
        if problems.is_empty() {
            out.push(check(NODES, Status::Ok, ok.join(", "), ""));
        } else {
            out.push(check(
                NODES,
                Status::Fail,
                problems.join("; "),
                "create them: `nvidia-modprobe -u -c=0` (or `nvidia-ctk system create-device-nodes --control-devices --load-kernel-modules`); \
                 a wrong major means a node left from before a driver reload: delete it and recreate",
            ));
        }
        // 6. /dev/char links, which systemd's cgroup driver resolves.
        match &f.dev_char {
            Err(e) => out.push(check(DEV_CHAR, Status::Skip, e.clone(), "")),
            Ok(links) => {
                let bad: Vec<String> = links.iter().filter_map(|l| l.problem.clone()).collect();
                if links.is_empty() {
                    out.push(check(
                        DEV_CHAR,
                        Status::Skip,
                        "no NVIDIA device nodes to link",
                        "",
                    ));
                } else if bad.is_empty() {
                    out.push(check(
                        DEV_CHAR,
                        Status::Ok,
                        format!("{} links lead to their nodes", links.len()),
                        "",
                    ));
                } else {
                    out.push(check(
                        DEV_CHAR,
                        Status::Warn,
                        format!("{}: under the systemd cgroup driver containers lose the GPU after `systemctl daemon-reload`", bad.join("; ")),
                        "`nvidia-ctk system create-dev-char-symlinks --create-all` (and the udev rule it documents, so they survive reboots)",
                    ));
                }
            }
        }
    } else {
        out.push(check(NODES, Status::Skip, "no driver loaded", ""));
        out.push(check(DEV_CHAR, Status::Skip, "no driver loaded", ""));
    }
    // 7. GPUs.
    if f.host.gpus.is_empty() {
        out.push(if loaded {
            check(GPU, Status::Fail, "the driver reports no GPU", "check `nvidia-smi` and `dmesg` for Xid errors (79: fallen off the bus); reseat or reset the GPU")
        } else {
            check(GPU, Status::Skip, "no driver loaded", "")
        });
    }
    for g in &f.host.gpus {
        match g.persistence_mode {
            Some(true) => out.push(check(PERSISTENCE, Status::Ok, format!("gpu {}: on", g.index), "")),
            Some(false) => out.push(check(
                PERSISTENCE,
                Status::Warn,
                format!("gpu {}: off: every first CUDA call in a container pays the driver's initialisation", g.index),
                "`nvidia-smi -pm 1`, or enable nvidia-persistenced",
            )),
            None => {}
        }
    }
    for g in &f.host.gpus {
        let mut parts = vec![format!(
            "gpu {}: {}",
            g.index,
            if g.name.is_empty() { "?" } else { &g.name }
        )];
        if !g.compute_capability.is_empty() {
            parts.push(format!("cc {}", g.compute_capability));
        }
        match (g.memory_free_mib, g.memory_total_mib) {
            (Some(fr), Some(t)) => parts.push(format!("{fr} of {t} MiB free")),
            (Some(fr), None) => parts.push(format!("{fr} MiB free")),
            _ => {}
        }
        parts.push(if g.mig {
            "MIG on".into()
        } else {
            "MIG off".into()
        });
        if let Some(m) = g.compute_mode.as_deref().filter(|m| *m != "default") {
            parts.push(format!("compute mode {m}"));
        }
        let mut status = Status::Ok;
        let mut fix = String::new();
        if g.compute_mode.as_deref() == Some("prohibited") {
            status = Status::Fail;
            fix = "`nvidia-smi -i <gpu> -c DEFAULT`: a prohibited GPU takes no context (46 CUDA_ERROR_DEVICE_UNAVAILABLE)".into();
        }
        out.push(check(GPU, status, parts.join(", "), fix));
        if g.ecc_uncorrected.is_some() || g.retired_pages_pending.is_some() {
            let e = g.ecc_uncorrected.unwrap_or(0);
            let pending = g.retired_pages_pending == Some(true);
            let (status, fix) = if pending {
                (
                    Status::Fail,
                    "drain the GPU and reload the driver (or reboot) so the pending pages are retired; `nvidia-smi -q -d PAGE_RETIREMENT`",
                )
            } else if e > 0 {
                (
                    Status::Warn,
                    "watch `nvidia-smi -q -d ECC`; repeated uncorrected errors mean the GPU needs service",
                )
            } else {
                (Status::Ok, "")
            };
            let mut d = format!(
                "gpu {}: {e} uncorrected ECC errors since the driver loaded",
                g.index
            );
            if pending {
                d.push_str(", pages pending retirement");
            }
            out.push(check(GPU_ECC, status, d, fix));
        }
    }
    // 8. Toolkit.
    let names: Vec<&str> = f.tools.iter().map(|t| t.name).collect();
    let versions: Vec<String> = f
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    if f.tools.is_empty() {
        out.push(check(
            TOOLKIT,
            Status::Warn,
            "no nvidia-ctk, nvidia-container-runtime or nvidia-container-runtime-hook in /usr/bin, /usr/local/bin",
            "install the NVIDIA Container Toolkit (package nvidia-container-toolkit), then `nvidia-ctk runtime configure` or `nvidia-ctk cdi generate`",
        ));
    } else {
        let v = if versions.is_empty() {
            "version unknown: not in /var/lib/dpkg/status".to_string()
        } else {
            format!("{} (/var/lib/dpkg/status)", versions.join(", "))
        };
        out.push(check(
            TOOLKIT,
            Status::Ok,
            format!("{}; {v}", names.join(", ")),
            "",
        ));
    }
    // 9. CDI specs: every NVIDIA device they define must resolve, with the module's libraries.
    let mut cdi_facts = f.cdi.clone();
    cdi_facts.requested = cdi_facts
        .specs
        .iter()
        .filter(|s| s.kind.starts_with("nvidia.com/"))
        .flat_map(|s| {
            s.devices
                .iter()
                .map(move |d| format!("{}={}", s.kind, d.name))
        })
        .collect();
    if cdi_facts.specs.is_empty() && cdi_facts.invalid.is_empty() {
        out.push(check(
            CDI,
            Status::Skip,
            "no CDI spec in /etc/cdi or /var/run/cdi (needed only for --device nvidia.com/gpu=…)",
            "",
        ));
    } else {
        let findings = cdi::check(&cdi_facts, &f.kernel_module);
        let worst = findings
            .iter()
            .filter(|x| x.severity != Severity::Info)
            .max_by_key(|x| x.severity);
        match worst {
            Some(x) => out.push(check(
                CDI,
                severity_status(x.severity),
                x.evidence.clone(),
                x.fix.clone(),
            )),
            None => {
                let specs: Vec<String> = cdi_facts
                    .specs
                    .iter()
                    .map(|s| format!("{} ({}, {} device(s))", s.file, s.kind, s.devices.len()))
                    .collect();
                out.push(check(CDI, Status::Ok, specs.join(", "), ""));
            }
        }
    }
    // 10. Engines.
    let mut any = false;
    for e in &f.engines {
        let id = match e.engine {
            "docker" => ENGINE_DOCKER,
            "podman" => ENGINE_PODMAN,
            _ => ENGINE_CONTAINERD,
        };
        let Some(cfg) = &e.config else {
            out.push(check(
                id,
                Status::Skip,
                format!("{}: not installed (no configuration found)", e.engine),
                "",
            ));
            continue;
        };
        out.push(match &e.configured {
            Ok(true) => {
                any = true;
                check(id, Status::Ok, format!("{cfg} runs cuda-preflight"), "")
            }
            Ok(false) => check(
                id,
                Status::Warn,
                format!(
                    "{cfg} does not run cuda-preflight: GPU containers of {} start unchecked",
                    e.engine
                ),
                match e.engine {
                    "containerd" => {
                        "`cuda-preflight install containerd` prints the runtime entry to merge"
                            .to_string()
                    }
                    other => format!("`cuda-preflight install {other}`"),
                },
            ),
            Err(why) => check(
                id,
                Status::Warn,
                format!("{cfg}: {why}"),
                format!("fix {cfg}"),
            ),
        });
    }
    let nri = nri_check(&f.nri);
    any |= nri.status == Status::Ok;
    out.push(nri);
    if !any {
        out.push(check(
            HOOK_REGISTERED,
            Status::Warn,
            "no container engine on this host runs cuda-preflight",
            "`cuda-preflight install docker` or `cuda-preflight install podman`",
        ));
    }
    // 11. A real context.
    out.push(match &f.probe {
        HostProbe::Skipped { why } => check(CONTEXT, Status::Skip, why.clone(), ""),
        HostProbe::Ran { libcuda, result } => probe_check(libcuda, result),
    });
    // 12. Disk space.
    for d in &f.disks {
        out.push(match &d.space {
            Ok(None) => check(DISK, Status::Skip, format!("{}: not on this host", d.path), ""),
            Err(e) => check(DISK, Status::Warn, format!("{}: {e}", d.path), ""),
            Ok(Some(s)) if s.avail_mib < policy.min_free_disk_mib => check(
                DISK,
                Status::Warn,
                format!(
                    "{}: {} MiB free of {} MiB, below min_free_disk_mib {}: pulls and model loads fail with \"No space left on device\"",
                    d.path, s.avail_mib, s.total_mib, policy.min_free_disk_mib
                ),
                format!("free space under {} (`docker system prune`, `podman system prune`, old models)", d.path),
            ),
            Ok(Some(s)) => check(DISK, Status::Ok, format!("{}: {} MiB free of {} MiB", d.path, s.avail_mib, s.total_mib), ""),
        });
    }
    out
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The `host-context` check from a probe run on the host.
pub fn probe_check(libcuda: &str, r: &ProbeResult) -> Check {
    match r {
        ProbeResult::Finished { outcome: o, ms, .. } => {
            if let Some(e) = &o.setup_error {
                return check(
                    CONTEXT,
                    Status::Warn,
                    format!("the probe could not set itself up: {e}"),
                    "run doctor as root",
                );
            }
            if let Some(e) = &o.load_error {
                return check(
                    CONTEXT,
                    Status::Fail,
                    format!("{libcuda} could not be loaded: {e}"),
                    "reinstall the driver's user-space libraries for the loaded module",
                );
            }
            if let Some(c) = o.first_failure() {
                let name = knowledge::driver_error(c.code)
                    .map(|e| e.name.to_string())
                    .or_else(|| c.name.clone())
                    .unwrap_or_else(|| "?".into());
                return check(
                    CONTEXT,
                    Status::Fail,
                    format!(
                        "{} failed with {} {name} on the host ({libcuda})",
                        c.call, c.code
                    ),
                    format!(
                        "`cuda-preflight explain {}`; every GPU container on this host fails the same way",
                        c.code
                    ),
                );
            }
            if o.device_count == Some(0) {
                return check(
                    CONTEXT,
                    Status::Fail,
                    "cuInit succeeded but the driver lists no device",
                    "check `nvidia-smi` and `dmesg`",
                );
            }
            let calls: Vec<String> = o
                .calls
                .iter()
                .map(|c| format!("{} {:.0} ms", c.call, c.ms))
                .collect();
            check(
                CONTEXT,
                Status::Ok,
                format!(
                    "context created and destroyed in {ms:.0} ms ({})",
                    calls.join(", ")
                ),
                "",
            )
        }
        ProbeResult::TimedOut { deadline_ms } => check(
            CONTEXT,
            Status::Fail,
            format!("no answer from the driver within {deadline_ms} ms"),
            "a hung cuInit is usually a GPU off the bus or a stuck driver: `nvidia-smi`, `dmesg` for Xid",
        ),
        ProbeResult::Crashed { signal, exit_code } => check(
            CONTEXT,
            Status::Fail,
            format!("the probe died (signal {signal:?}, exit {exit_code:?}) inside {libcuda}"),
            "reinstall the driver's user-space libraries",
        ),
        ProbeResult::Failed { error } => check(
            CONTEXT,
            Status::Warn,
            format!("the probe could not run: {error}"),
            "",
        ),
    }
}

/// The NRI socket and the plugin: registered (and answering) is the Kubernetes path's "runs
/// cuda-preflight"; a socket with no plugin means GPU pods on this node start unchecked.
pub fn nri_check(n: &crate::facts::host::doctor::NriFact) -> Check {
    const DEPLOY: &str =
        "deploy the NRI plugin (packaging/kubernetes/daemonset.yaml) or run `cuda-preflight nri`";
    let sock = &n.socket;
    match (&n.present, &n.state, &n.health) {
        (Err(e), _, _) => check(ENGINE_NRI, Status::Warn, format!("{sock}: {e}"), ""),
        (Ok(false), None, _) => check(
            ENGINE_NRI,
            Status::Skip,
            format!("no NRI socket at {sock}: no runtime here has NRI on"),
            "",
        ),
        (Ok(true), None, _) => check(
            ENGINE_NRI,
            Status::Warn,
            format!(
                "{sock} is there but the cuda-preflight NRI plugin never ran on this host: GPU pods start unchecked"
            ),
            DEPLOY,
        ),
        (_, Some(Err(e)), _) => check(ENGINE_NRI, Status::Warn, e.clone(), DEPLOY),
        (present, Some(Ok(st)), health) => {
            let answered = match health {
                Some(Ok(200)) => Ok(()),
                Some(Ok(code)) => Err(format!("its /healthz answers {code}")),
                Some(Err(e)) => Err(format!("its /healthz does not answer ({e})")),
                None => Ok(()),
            };
            match (st.registered, answered, present) {
                (true, Ok(()), Ok(true)) => check(
                    ENGINE_NRI,
                    Status::Ok,
                    format!(
                        "the cuda-preflight NRI plugin (pid {}) is registered with {} ({})",
                        st.pid,
                        st.socket.display(),
                        if st.runtime.is_empty() {
                            "runtime unnamed"
                        } else {
                            st.runtime.as_str()
                        }
                    ),
                    "",
                ),
                (_, Err(why), _) => check(
                    ENGINE_NRI,
                    Status::Warn,
                    format!(
                        "the NRI plugin's state says pid {} but {why}: it is not running",
                        st.pid
                    ),
                    DEPLOY,
                ),
                (true, Ok(()), _) => check(
                    ENGINE_NRI,
                    Status::Warn,
                    format!(
                        "the NRI plugin says it is registered with {}, which is not a socket now: the runtime is down or moved its socket",
                        st.socket.display()
                    ),
                    "",
                ),
                (false, Ok(()), _) => check(
                    ENGINE_NRI,
                    Status::Warn,
                    format!(
                        "the NRI plugin runs but is not registered with {}: GPU pods start unchecked",
                        st.socket.display()
                    ),
                    "check that the runtime has NRI on (containerd: [plugins.\"io.containerd.nri.v1.nri\"] disable = false) and the socket path the plugin is given",
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nri_check_table() {
        use super::{Status, nri_check};
        use crate::facts::host::doctor::NriFact;
        use crate::nri::PluginState;
        let st = |registered| PluginState {
            pid: 7,
            socket: "/var/run/nri/nri.sock".into(),
            listen: Some("127.0.0.1:9466".into()),
            registered,
            since: 0,
            runtime: "containerd v2.3.4".into(),
        };
        let f = |present, state, health| NriFact {
            socket: "/var/run/nri/nri.sock".into(),
            present,
            state,
            health,
        };
        let cases: Vec<(&str, NriFact, Status)> = vec![
            (
                "no socket, no plugin",
                f(Ok(false), None, None),
                Status::Skip,
            ),
            ("socket, no plugin", f(Ok(true), None, None), Status::Warn),
            (
                "registered and healthy",
                f(Ok(true), Some(Ok(st(true))), Some(Ok(200))),
                Status::Ok,
            ),
            (
                "registered, no health endpoint",
                f(Ok(true), Some(Ok(st(true))), None),
                Status::Ok,
            ),
            (
                "stale state: endpoint dead",
                f(Ok(true), Some(Ok(st(true))), Some(Err("refused".into()))),
                Status::Warn,
            ),
            (
                "running, not registered",
                f(Ok(true), Some(Ok(st(false))), Some(Ok(503))),
                Status::Warn,
            ),
            (
                "registered but the socket is gone",
                f(Ok(false), Some(Ok(st(true))), Some(Ok(200))),
                Status::Warn,
            ),
            (
                "unreadable state",
                f(Ok(true), Some(Err("bad".into())), None),
                Status::Warn,
            ),
        ];
        for (name, fact, want) in cases {
            assert_eq!(nri_check(&fact).status, want, "{name}");
        }
    }

    #[test]
    fn check_ids_are_unique_kebab_case() {
        let ids = super::CHECK_IDS;
        for (i, a) in ids.iter().enumerate() {
            assert!(
                a.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{a}"
            );
            assert!(!ids[i + 1..].contains(a), "{a} twice");
        }
    }
}
