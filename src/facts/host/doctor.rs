//! Facts for `cuda-preflight doctor`: the whole host, not one container — kernel modules, device
//! nodes, the container toolkit, CDI specs, which engines run the hook, free disk space, and a
//! real context created on the host. Read under `host_root`; nothing here fails: what cannot be
//! read is an `Err(why)` the doctor's rules show as a skipped or failed check.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::host::HostProfile;
use crate::facts::host::disk::{self, Space};
use crate::facts::host::nvml::FactSource;
use crate::facts::host::state::{self as hoststate, CdiFacts, DevCharLink, DriverLib};
use crate::facts::library_loading::loader::Loader;
use crate::facts::probe::ProbeResult;
use crate::knowledge::cuda::Version;

const MAX_PROC_FILE: u64 = 1 << 20;
const MAX_CONFIG_FILE: u64 = 4 << 20;
/// `/var/lib/dpkg/status` of a large host is a few MB.
const MAX_DPKG_STATUS: u64 = 32 << 20;
const MAX_DIR_ENTRIES: usize = 4096;

/// One device node the host should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFact {
    /// As the host names it (`/dev/nvidia0`).
    pub path: String,
    /// `Ok(Some((major, minor)))` a character device; `Ok(None)` missing; `Err` something else.
    pub dev: Result<Option<(u32, u32)>, String>,
}

/// A container-toolkit binary found at a fixed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolFact {
    pub name: &'static str,
    pub path: String,
}

/// An installed package and its version, from the package database file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageFact {
    pub name: String,
    pub version: String,
    /// The file the version was read from.
    pub source: String,
}

/// Whether one engine runs cuda-preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineFact {
    pub engine: &'static str,
    /// The configuration file or directory looked at, as the host names it; `None`: the engine
    /// has none on this host.
    pub config: Option<String>,
    /// `Ok(true)`: it names cuda-preflight; `Err`: unreadable or unparsable.
    pub configured: Result<bool, String>,
}

/// The host probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum HostProbe {
    /// Not run; why.
    Skipped { why: String },
    Ran {
        libcuda: String,
        result: Box<ProbeResult>,
    },
}

/// Free space where a directory lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskFact {
    /// As the host names it.
    pub path: String,
    /// `Ok(None)`: the directory does not exist on this host.
    pub space: Result<Option<Space>, String>,
}

/// The runtime's NRI socket and the cuda-preflight NRI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NriFact {
    /// As the host names it.
    pub socket: String,
    /// `Ok(true)`: a socket is there; `Ok(false)`: nothing is.
    pub present: Result<bool, String>,
    /// The plugin's state file (`<state_dir>/nri.json`); `None`: none (the plugin never ran here).
    pub state: Option<Result<crate::nri::PluginState, String>>,
    /// `/healthz` of a plugin whose state says it serves one: the HTTP status, or why none came.
    pub health: Option<Result<u16, String>>,
}

/// Look at the NRI socket and the plugin's state file, and ask the plugin's health endpoint.
pub fn nri(host_root: &Path, socket: &Path, state_dir: &Path) -> NriFact {
    use std::os::unix::fs::FileTypeExt;
    let shown = socket.display().to_string();
    let present = match std::fs::metadata(under(host_root, &shown)) {
        Ok(m) => Ok(m.file_type().is_socket()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.to_string()),
    };
    let file = state_dir.join(crate::nri::STATE_FILE);
    let state = match crate::input::read_capped(&file, MAX_CONFIG_FILE) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("{}: {e}", file.display()))),
        Ok(b) => Some(
            serde_json::from_slice::<crate::nri::PluginState>(&b)
                .map_err(|e| format!("{}: {e}", file.display())),
        ),
    };
    let health = match &state {
        Some(Ok(st)) => st.listen.as_deref().map(healthz),
        _ => None,
    };
    NriFact {
        socket: shown,
        present,
        state,
        health,
    }
}

/// `GET /healthz` with a short deadline: the status code.
fn healthz(addr: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let t = std::time::Duration::from_millis(500);
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut c = std::net::TcpStream::connect_timeout(&sa, t).map_err(|e| format!("{addr}: {e}"))?;
    c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    let _ = c.take(4096).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorFacts {
    pub host: HostProfile,
    pub source: FactSource,
    pub notes: Vec<String>,
    pub kernel_module: Result<Version, String>,
    /// Module names of `/proc/modules`.
    pub modules: Result<Vec<String>, String>,
    /// Whether `/proc/devices` could be read (the majors themselves are in `host`).
    pub proc_devices: Result<(), String>,
    pub nodes: Vec<NodeFact>,
    pub dev_char: Result<Vec<DevCharLink>, String>,
    pub driver_libs: Vec<DriverLib>,
    pub tools: Vec<ToolFact>,
    pub packages: Vec<PackageFact>,
    pub cdi: CdiFacts,
    pub engines: Vec<EngineFact>,
    pub probe: HostProbe,
    pub disks: Vec<DiskFact>,
    pub nri: NriFact,
}

/// Directories where images and models live, checked unless the config names others.
pub const DEFAULT_DISK_PATHS: &[&str] = &["/var/lib/docker", "/var/lib/containers"];

/// The toolkit's binaries, at the paths its packages install them.
const TOOLS: &[&str] = &[
    "nvidia-ctk",
    "nvidia-container-runtime",
    "nvidia-container-runtime-hook",
    "nvidia-container-cli",
];
const TOOL_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/usr/sbin"];
/// The toolkit's packages (Debian and RPM name them alike).
const PACKAGES: &[&str] = &[
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
];

/// Podman's and CRI-O's hooks directories (`containers.conf` `hooks_dir` defaults).
const HOOKS_DIRS: &[&str] = &[
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// A host path under the host root.
fn under(host_root: &Path, p: &str) -> PathBuf {
    host_root.join(p.trim_start_matches('/'))
}

pub fn parse_proc_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The nodes a working host has: the control and UVM devices, and one per GPU by its device
/// minor (`/proc/driver/nvidia/gpus/*/information`; else the profile's indices, else whatever
/// `/dev/nvidia<N>` exist). `nvidia-uvm-tools` (profilers only) is not required.
fn node_paths(host_root: &Path, host: &HostProfile) -> Vec<String> {
    let mut out: Vec<String> = ["/dev/nvidiactl", "/dev/nvidia-uvm"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut minors: Vec<u32> = crate::facts::host::nvml::from_proc(host_root, &mut Vec::new())
        .gpus
        .iter()
        .map(|g| g.index)
        .collect();
    if minors.is_empty() {
        minors = host.gpus.iter().map(|g| g.index).collect();
    }
    if minors.is_empty() {
        minors = std::fs::read_dir(under(host_root, "/dev"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .take(MAX_DIR_ENTRIES)
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
    }
    minors.sort();
    minors.dedup();
    out.extend(minors.into_iter().map(|i| format!("/dev/nvidia{i}")));
    if under(host_root, "/dev/nvidia-uvm-tools").exists() {
        out.push("/dev/nvidia-uvm-tools".into());
    }
    out
}

fn node(host_root: &Path, path: &str) -> NodeFact {
    let dev = match std::fs::metadata(under(host_root, path)) {
        Ok(m) if m.file_type().is_char_device() => {
            Ok(Some((libc::major(m.rdev()), libc::minor(m.rdev()))))
        }
        Ok(_) => Err("not a character device".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    NodeFact {
        path: path.to_string(),
        dev,
    }
}

/// `Package:`/`Status:`/`Version:` stanzas of a dpkg status file, for the names asked.
pub fn parse_dpkg_status(text: &str, names: &[&str], source: &str) -> Vec<PackageFact> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let (Some(name), Some(version)) = (field("Package:"), field("Version:")) else {
            continue;
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        if installed && names.contains(&name.as_str()) {
            out.push(PackageFact {
                name,
                version,
                source: source.to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn engines(host_root: &Path) -> Vec<EngineFact> {
    let mut out = Vec::new();
    // Docker: a `runtimes` entry whose path is our shim.
    let daemon = "/etc/docker/daemon.json";
    out.push(
        match crate::input::read_capped(&under(host_root, daemon), MAX_CONFIG_FILE) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EngineFact {
                engine: "docker",
                config: None,
                configured: Ok(false),
            },
            r => EngineFact {
                engine: "docker",
                config: Some(daemon.to_string()),
                configured: r.map_err(|e| e.to_string()).and_then(|b| {
                    let v: serde_json::Value =
                        serde_json::from_slice(&b).map_err(|e| format!("not JSON: {e}"))?;
                    Ok(v["runtimes"].as_object().is_some_and(|rt| {
                        rt.values().any(|r| {
                            r["path"]
                                .as_str()
                                .is_some_and(|p| p.ends_with("cuda-preflight-runtime"))
                        })
                    }))
                }),
            },
        },
    );
    // Podman / CRI-O: a hooks-directory entry whose hook is our binary.
    let dirs: Vec<&str> = HOOKS_DIRS
        .iter()
        .copied()
        .filter(|d| under(host_root, d).is_dir())
        .collect();
    let podman_bin = ["/usr/bin/podman", "/usr/bin/crio"]
        .iter()
        .any(|b| under(host_root, b).exists());
    if dirs.is_empty() && !podman_bin {
        out.push(EngineFact {
            engine: "podman",
            config: None,
            configured: Ok(false),
        });
    } else {
        let mut found = false;
        for d in &dirs {
            let Ok(rd) = std::fs::read_dir(under(host_root, d)) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()).take(MAX_DIR_ENTRIES) {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let hook = crate::input::read_capped(&p, MAX_CONFIG_FILE)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                if hook.is_some_and(|h| {
                    h["hook"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/cuda-preflight"))
                }) {
                    found = true;
                }
            }
        }
        out.push(EngineFact {
            engine: "podman",
            config: Some(if dirs.is_empty() {
                HOOKS_DIRS.join(" or ")
            } else {
                dirs.join(", ")
            }),
            configured: Ok(found),
        });
    }
    // containerd: its config names our shim as a runtime's BinaryName.
    let ctd = "/etc/containerd/config.toml";
    out.push(
        match crate::input::read_capped(&under(host_root, ctd), MAX_CONFIG_FILE) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EngineFact {
                engine: "containerd",
                config: None,
                configured: Ok(false),
            },
            r => EngineFact {
                engine: "containerd",
                config: Some(ctd.to_string()),
                configured: r.map_err(|e| e.to_string()).and_then(|b| {
                    let v: toml::Table = String::from_utf8_lossy(&b)
                        .parse()
                        .map_err(|e: toml::de::Error| format!("not TOML: {}", e.message()))?;
                    Ok(toml_names_shim(&toml::Value::Table(v)))
                }),
            },
        },
    );
    out
}

/// Whether any string value in the TOML tree (a runtime's `BinaryName`) is our shim.
fn toml_names_shim(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.ends_with("cuda-preflight-runtime"),
        toml::Value::Table(t) => t.values().any(toml_names_shim),
        toml::Value::Array(a) => a.iter().any(toml_names_shim),
        _ => false,
    }
}

/// A real context on the host: the probe child with no namespace to enter, rootfs `/`, and the
/// host's `libcuda.so.1` as the host's loader resolves it. Only on the real host (`host_root`
/// `/`): a fixture tree's library is not this machine's driver.
fn probe(host_root: &Path, deadline: std::time::Duration) -> HostProbe {
    let loader = Loader::from_image(host_root, None);
    let Some(r) = loader.resolve("libcuda.so.1") else {
        return HostProbe::Skipped {
            why: "no libcuda.so.1 on the host (ld.so.cache and the default directories): the driver's user-space libraries are not installed".into(),
        };
    };
    if host_root != Path::new("/") {
        return HostProbe::Skipped {
            why: "--host-root is not /: a context is created only on the real host".into(),
        };
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    host_probe(&r.real_path_in_image, &exe, deadline)
}

/// Create a context with `libcuda` (a host path) through the probe child `exe`
/// (`cuda-preflight probe-child`): no namespace to enter and rootfs `/`, as this process's user,
/// every capability dropped before the library is loaded, as in a container.
#[allow(unsafe_code)]
pub fn host_probe(libcuda: &Path, exe: &Path, deadline: std::time::Duration) -> HostProbe {
    use crate::facts::probe::{self, ProbeSpec};
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let spec = ProbeSpec {
        pid: std::process::id() as i32,
        proc_root: PathBuf::from("/proc"),
        cgroup_procs: Vec::new(),
        namespaces: Vec::new(),
        rootfs: PathBuf::from("/"),
        libcuda: libcuda.to_path_buf(),
        uid,
        gid,
        additional_gids: Vec::new(),
        ..ProbeSpec::default()
    };
    HostProbe::Ran {
        libcuda: libcuda.display().to_string(),
        result: Box::new(probe::run(&spec, exe, deadline)),
    }
}

/// Gather everything the doctor judges. `host` is the host profile (NVML, `/proc` or a file);
/// `disk_paths` the directories whose free space matters.
pub fn gather(
    host_root: &Path,
    host: HostProfile,
    source: FactSource,
    notes: Vec<String>,
    disk_paths: &[PathBuf],
    probe_deadline: std::time::Duration,
    nri_fact: NriFact,
) -> DoctorFacts {
    let modules = crate::input::read_capped(&under(host_root, "/proc/modules"), MAX_PROC_FILE)
        .map(|b| parse_proc_modules(&String::from_utf8_lossy(&b)))
        .map_err(|e| format!("/proc/modules: {e}"));
    let proc_devices = crate::input::read_capped(&under(host_root, "/proc/devices"), MAX_PROC_FILE)
        .map(|_| ())
        .map_err(|e| format!("/proc/devices: {e}"));
    let nodes: Vec<NodeFact> = node_paths(host_root, &host)
        .iter()
        .map(|p| node(host_root, p))
        .collect();
    let present: Vec<(String, u32, u32)> = nodes
        .iter()
        .filter_map(|n| match n.dev {
            Ok(Some((ma, mi))) => Some((n.path.clone(), ma, mi)),
            _ => None,
        })
        .collect();
    let dev_char = hoststate::dev_char_links(host_root, &present);
    let mut tools = Vec::new();
    for t in TOOLS {
        if let Some(d) = TOOL_DIRS
            .iter()
            .find(|d| under(host_root, &format!("{d}/{t}")).is_file())
        {
            tools.push(ToolFact {
                name: t,
                path: format!("{d}/{t}"),
            });
        }
    }
    let dpkg = "/var/lib/dpkg/status";
    let packages = crate::input::read_capped(&under(host_root, dpkg), MAX_DPKG_STATUS)
        .map(|b| parse_dpkg_status(&String::from_utf8_lossy(&b), PACKAGES, dpkg))
        .unwrap_or_default();
    let disks = disk_paths
        .iter()
        .map(|p| {
            let shown = p.display().to_string();
            let space = match disk::space(&under(host_root, &shown)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            };
            DiskFact { path: shown, space }
        })
        .collect();
    DoctorFacts {
        kernel_module: if under(host_root, "/proc/driver/nvidia/version").exists() {
            hoststate::kernel_module_version(host_root)
                .map_err(|e| e.replace(&host_root.join("proc").display().to_string(), "/proc"))
        } else {
            Err("/proc/driver/nvidia/version is missing".to_string())
        },
        modules,
        proc_devices,
        nodes,
        dev_char: dev_char
            .map_err(|e| e.replace(&host_root.join("dev").display().to_string(), "/dev")),
        driver_libs: hoststate::host_driver_libs(host_root),
        tools,
        packages,
        cdi: hoststate::cdi_facts(host_root, &[]),
        engines: engines(host_root),
        probe: probe(host_root, probe_deadline),
        disks,
        nri: nri_fact,
        host,
        source,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_modules_and_dpkg_status() {
        let m = parse_proc_modules(
            "nvidia_uvm 1892352 0 - Live 0x0000000000000000 (POE)\nnvidia 10592256 2 nvidia_uvm, Live 0x0 (POE)\n",
        );
        assert_eq!(m, ["nvidia_uvm", "nvidia"]);
        let status = "Package: nvidia-container-toolkit\nStatus: install ok installed\nVersion: 1.17.8-1\n\n\
                      Package: libnvidia-container1\nStatus: deinstall ok config-files\nVersion: 1.16.0-1\n\n\
                      Package: bash\nStatus: install ok installed\nVersion: 5.2\n";
        let p = parse_dpkg_status(status, PACKAGES, "/var/lib/dpkg/status");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("nvidia-container-toolkit", "1.17.8-1")
        );
    }

    #[test]
    fn containerd_config_naming_the_shim() {
        let v: toml::Table =
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cuda-preflight.options]
BinaryName = "/usr/bin/cuda-preflight-runtime""#
                .parse()
                .unwrap();
        assert!(toml_names_shim(&toml::Value::Table(v)));
        let v: toml::Table = "version = 2\n[plugins.x]\nBinaryName = \"/usr/bin/runc\"\n"
            .parse()
            .unwrap();
        assert!(!toml_names_shim(&toml::Value::Table(v)));
    }
}
