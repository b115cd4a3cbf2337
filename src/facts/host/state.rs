//! Host-state facts (issue 13): what the host around a GPU container looks like — `/dev/char`
//! links, the loaded kernel module's version, the driver libraries the container will load, the
//! driver libraries baked into its image, and the CDI specs it asks for.
//!
//! Host files are read only under `host_root`, image files only through [`crate::facts::image::rootfs`].
//! Nothing here fails: a fact that cannot be gathered is an `Err(why)` the rules turn into a
//! `…-skipped` finding.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::container::{DeviceView, GpuRequest, Node, is_nvidia_node};
use crate::facts::host::nvml::parse_nvrm_version;
use crate::facts::image::rootfs;
use crate::facts::library_loading::loader::Loader;
use crate::facts::versions::image_cuda::ImageFacts;
use crate::input::bundle::Bundle;
use crate::knowledge::cuda::Version;

const MAX_PROC_FILE: u64 = 64 << 10;
/// Entries read from one directory (host `/dev`, an image library directory, a CDI directory).
const MAX_DIR_ENTRIES: usize = 4096;
/// nvidia-ctk's specs are tens of KB; a larger file is not one we parse on a container start.
const MAX_CDI_SPEC_BYTES: u64 = 4 << 20;

/// One NVIDIA device of the container and its `/dev/char/MAJ:MIN` link on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevCharLink {
    /// The node as the container sees it, e.g. `/dev/nvidia0`.
    pub node: String,
    pub major: u32,
    pub minor: u32,
    /// `None`: the link resolves to this very device. `Some(why)`: systemd cannot use it.
    pub problem: Option<String>,
}

/// Which driver library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LibKind {
    /// `libcuda.so.*`: `cuInit` checks it against the kernel module.
    Cuda,
    /// `libnvidia-ml.so.*`: `nvmlInit` checks it against the kernel module.
    Nvml,
}

/// A user-space driver library the container will load, and where that was learnt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverLib {
    pub kind: LibKind,
    /// The file (host path for host libraries, container path for the image's).
    pub path: String,
    pub version: Version,
    /// e.g. "the host's library, which the NVIDIA hook mounts".
    pub origin: String,
}

/// A driver library that is part of the image itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageLib {
    /// As the container sees it.
    pub path: String,
    pub version: Option<Version>,
}

/// One CDI spec file that parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdiSpec {
    pub file: String,
    pub kind: String,
    pub devices: Vec<CdiDevice>,
    /// Host paths of the spec-wide `containerEdits`, each with whether it exists on the host.
    pub common_paths: Vec<CdiPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdiDevice {
    pub name: String,
    pub paths: Vec<CdiPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdiPath {
    pub host_path: String,
    /// A device node (`deviceNodes`) rather than a mount.
    pub device: bool,
    pub exists: bool,
}

/// The CDI specs a CDI-requested container depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CdiFacts {
    /// `kind=name` as requested.
    pub requested: Vec<String>,
    pub specs: Vec<CdiSpec>,
    /// Files that could not be read or parsed, with why.
    pub invalid: Vec<(String, String)>,
    /// The spec directories searched.
    pub dirs: Vec<String>,
}

/// Everything the host-state rules judge, for one GPU container.
#[derive(Debug, Clone, Serialize)]
pub struct HostState {
    /// `linux.cgroupsPath` of the spec.
    pub cgroups_path: Option<String>,
    /// The container's NVIDIA devices and their `/dev/char` links, or why they are unknown.
    pub dev_char: Result<Vec<DevCharLink>, String>,
    /// The loaded kernel module's version (`/proc/driver/nvidia/version`).
    pub kernel_module: Result<Version, String>,
    /// User-space driver libraries the container will load.
    pub driver_libs: Vec<DriverLib>,
    /// Driver libraries that are files of the image itself.
    pub image_libs: Result<Vec<ImageLib>, String>,
    /// For CDI requests only.
    pub cdi: Option<CdiFacts>,
    /// Only when the spec creates a user namespace.
    pub userns: Option<Result<UserNs, String>>,
    /// NVSwitches of the host (HGX/DGX A100, H100, H200), or why that is unknown.
    pub nvswitches: Result<Vec<NvSwitch>, String>,
    /// The running Fabric Manager, `Ok(None)` when none runs; looked for only where
    /// `nvswitches` found one (`Err` says why it was not).
    pub fabric_manager: Result<Option<FabricManager>, String>,
}

/// One NVSwitch of the host and where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvSwitch {
    /// PCI address, e.g. `0000:0c:09.0`.
    pub address: String,
    /// e.g. "/proc/driver/nvidia-nvswitch/devices" or "/sys/bus/pci/devices (class 0x068000)".
    pub seen_in: String,
}

/// A running `nv-fabricmanager` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FabricManager {
    pub pid: u32,
    /// How it was found (its PID file, or a scan of `/proc`).
    pub found_by: String,
}

/// Gather the host-state facts of a GPU container. `devices` is the device view of the
/// container (`Err` where there is none, e.g. offline with hook-injected devices); `image` the
/// image facts as the container's loader sees them.
pub fn gather(
    bundle: &Bundle,
    request: &GpuRequest,
    devices: Result<&DeviceView, &str>,
    image: Option<&ImageFacts>,
    host_root: &Path,
) -> HostState {
    let cgroups_path = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.display().to_string());
    // The links matter only under the systemd driver; elsewhere nothing is read for them.
    let dev_char = if cgroups_path.as_deref().is_some_and(is_systemd_cgroups_path) {
        container_devices(devices, host_root).and_then(|d| dev_char_links(host_root, &d))
    } else {
        Err("not under the systemd cgroup driver".to_string())
    };
    let mut driver_libs = Vec::new();
    if matches!(request, GpuRequest::InjectedByHook { .. }) {
        driver_libs.extend(host_driver_libs(host_root));
    }
    driver_libs.extend(spec_mount_libs(bundle, host_root));
    if let Some(r) = image.and_then(|i| i.libcuda.as_ref())
        && image.is_some_and(|i| i.compat_in_use.is_none())
        && let Some(v) = lib_version(&r.real_path_in_image)
    {
        // Compat libraries are judged by the forward-compat rule; this is any other libcuda the
        // container's loader ends at (injected, mounted or the image's own).
        push_lib(
            &mut driver_libs,
            DriverLib {
                kind: LibKind::Cuda,
                path: r.real_path_in_image.display().to_string(),
                version: v,
                origin: "the libcuda.so.1 the container's loader picks".into(),
            },
        );
    }
    let cdi = match request {
        GpuRequest::Cdi { devices } => Some(cdi_facts(host_root, devices)),
        _ => None,
    };
    let nvswitches = nvswitch_facts(host_root);
    HostState {
        cgroups_path,
        dev_char,
        kernel_module: kernel_module_version(host_root),
        driver_libs,
        // A hook at createContainer reads the rootfs inside the container's mount namespace,
        // where the spec's bind mounts (CDI's driver files) show: those are the host's.
        image_libs: image_driver_libs(&bundle.rootfs).map(|libs| {
            let mounted: Vec<&Path> = bundle
                .spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().as_path())
                .collect();
            libs.into_iter()
                .filter(|l| !mounted.contains(&Path::new(&l.path)))
                .collect()
        }),
        cdi,
        userns: userns_facts(&bundle.spec, devices, host_root),
        nvswitches: nvswitches.clone(),
        fabric_manager: match &nvswitches {
            Ok(s) if !s.is_empty() => fabric_manager(host_root),
            Ok(_) => Err("no NVSwitch on the host".to_string()),
            Err(why) => Err(why.clone()),
        },
    }
}

/// Where the nvidia driver lists the NVSwitches its NVSwitch probe claimed
/// (`nvswitch_procfs_device_add`, kernel-open/nvidia/procfs_nvswitch.c of NVIDIA's
/// open-gpu-kernel-modules); NVIDIA's gpu-driver-container starts Fabric Manager exactly when this
/// directory is not empty. On a host with the module loaded but no NVSwitch (a single H100) it
/// exists and is empty, while `/proc/devices` still lists the `nvidia-nvswitch` major.
pub const NVSWITCH_PROCFS: &str = "proc/driver/nvidia-nvswitch/devices";
/// The PCI class the nvidia driver claims as an NVSwitch: vendor 0x10de, class
/// `PCI_CLASS_BRIDGE_OTHER << 8` with an exact class mask (`nvswitch_pci_table`,
/// kernel-open/nvidia/linux_nvswitch.c). Seen even before the driver is loaded.
pub const NVSWITCH_PCI_CLASS: &str = "0x068000";
/// `PID_FILE_PATH` of Fabric Manager's default configuration, the file NVIDIA's
/// gpu-driver-container reads to stop the daemon (`/var/run` is a link to `/run` on current
/// distributions; both are tried).
pub const FABRIC_MANAGER_PID_FILES: [&str; 2] = [
    "run/nvidia-fabricmanager/nv-fabricmanager.pid",
    "var/run/nvidia-fabricmanager/nv-fabricmanager.pid",
];
/// `/proc/<pid>/comm` of `nv-fabricmanager`: the kernel keeps 15 bytes of the name.
pub const FABRIC_MANAGER_COMM: &str = "nv-fabricmanage";
/// Processes looked at when no PID file leads to Fabric Manager.
const MAX_PROC_ENTRIES: usize = 1 << 16;

/// The host's NVSwitches: those the driver registered under `/proc/driver/nvidia-nvswitch`, and
/// NVIDIA PCI functions of the NVSwitch class. NVLink 5 systems (HGX B200), whose switches are
/// not PCI functions of the host, are not seen. A host root with neither directory (a fixture, a
/// host without the driver) has no NVSwitch we can see: `Ok(empty)`. `Err` when a directory
/// exists but cannot be read and no switch was found elsewhere.
pub fn nvswitch_facts(host_root: &Path) -> Result<Vec<NvSwitch>, String> {
    let mut out: Vec<NvSwitch> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut note = |dir: &Path, e: std::io::Error| {
        if e.kind() != std::io::ErrorKind::NotFound {
            errors.push(format!("{}: {e}", dir.display()));
        }
    };
    let procfs = host_root.join(NVSWITCH_PROCFS);
    match std::fs::read_dir(&procfs) {
        Ok(rd) => {
            for e in rd.filter_map(|e| e.ok()).take(MAX_DIR_ENTRIES) {
                out.push(NvSwitch {
                    address: e.file_name().to_string_lossy().into_owned(),
                    seen_in: format!("/{NVSWITCH_PROCFS}"),
                });
            }
        }
        Err(e) => note(&procfs, e),
    }
    let pci = host_root.join("sys/bus/pci/devices");
    match std::fs::read_dir(&pci) {
        Ok(rd) => {
            for e in rd.filter_map(|e| e.ok()).take(MAX_DIR_ENTRIES) {
                let read = |f: &str| {
                    crate::input::read_capped(&e.path().join(f), 64)
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).trim().to_ascii_lowercase())
                };
                if read("vendor").as_deref() == Some("0x10de")
                    && read("class").as_deref() == Some(NVSWITCH_PCI_CLASS)
                {
                    let address = e.file_name().to_string_lossy().into_owned();
                    if !out.iter().any(|s| s.address == address) {
                        out.push(NvSwitch {
                            address,
                            seen_in: format!(
                                "/sys/bus/pci/devices (vendor 0x10de, class {NVSWITCH_PCI_CLASS})"
                            ),
                        });
                    }
                }
            }
        }
        Err(e) => note(&pci, e),
    }
    if out.is_empty() && !errors.is_empty() {
        return Err(errors.join("; "));
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// The running Fabric Manager: the PID in its PID file if that process is `nv-fabricmanager`,
/// else any process of that name (a GPU Operator driver container keeps its PID file inside the
/// container). `Err` when the host's `/proc` cannot be read.
pub fn fabric_manager(host_root: &Path) -> Result<Option<FabricManager>, String> {
    let proc_dir = host_root.join("proc");
    let is_fm = |pid: &str| {
        crate::input::read_capped(&proc_dir.join(pid).join("comm"), 64)
            .is_ok_and(|b| String::from_utf8_lossy(&b).trim_end() == FABRIC_MANAGER_COMM)
    };
    for f in FABRIC_MANAGER_PID_FILES {
        if let Ok(b) = crate::input::read_capped(&host_root.join(f), 64)
            && let Ok(pid) = String::from_utf8_lossy(&b).trim().parse::<u32>()
            && is_fm(&pid.to_string())
        {
            return Ok(Some(FabricManager {
                pid,
                found_by: format!("/{f}"),
            }));
        }
    }
    let rd = std::fs::read_dir(&proc_dir).map_err(|e| format!("{}: {e}", proc_dir.display()))?;
    for e in rd.filter_map(|e| e.ok()).take(MAX_PROC_ENTRIES) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(pid) = name.parse::<u32>()
            && is_fm(name)
        {
            return Ok(Some(FabricManager {
                pid,
                found_by: format!("/proc/{pid}/comm"),
            }));
        }
    }
    Ok(None)
}

/// runc's systemd driver takes `linux.cgroupsPath` as `slice:prefix:name`; the cgroupfs driver
/// takes a path. The form decides which driver the engine configured runc with.
pub fn is_systemd_cgroups_path(p: &str) -> bool {
    !p.starts_with('/') && p.split(':').count() == 3
}

/// The NVIDIA character devices the container gets: from its device view, else (offline,
/// devices injected by the NVIDIA hook) every `/dev/nvidia*` node of the host, which is what
/// `NVIDIA_VISIBLE_DEVICES=all` injects.
fn container_devices(
    devices: Result<&DeviceView, &str>,
    host_root: &Path,
) -> Result<Vec<(String, u32, u32)>, String> {
    if let Ok(view) = devices {
        return Ok(view
            .nodes
            .iter()
            .filter_map(|(p, n)| match n {
                Node::Char { major, minor } => Some((p.clone(), *major, *minor)),
                _ => None,
            })
            .collect());
    }
    let dev = host_root.join("dev");
    let rd = std::fs::read_dir(&dev).map_err(|e| format!("{}: {e}", dev.display()))?;
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()).take(MAX_DIR_ENTRIES) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = format!("/dev/{name}");
        if !is_nvidia_node(Path::new(&path)) {
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(e.path())
            && m.file_type().is_char_device()
        {
            out.push((path, libc::major(m.rdev()), libc::minor(m.rdev())));
        }
    }
    out.sort();
    Ok(out)
}

/// For each device, whether `<host_root>/dev/char/MAJ:MIN` leads to that very device: systemd
/// stats that path and takes the device number from it.
pub fn dev_char_links(
    host_root: &Path,
    devices: &[(String, u32, u32)],
) -> Result<Vec<DevCharLink>, String> {
    let dir = host_root.join("dev/char");
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        // A host with /dev but no /dev/char has no links at all; a host root without /dev is not
        // a host we can judge.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && host_root.join("dev").is_dir() => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    if let Err(e) = std::fs::read_dir(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(format!("{}: {e}", dir.display()));
    }
    let mut out = Vec::new();
    for (node, major, minor) in devices {
        let link = format!("/dev/char/{major}:{minor}");
        let problem = match rootfs::resolve(host_root, Path::new(&link))
            .and_then(std::fs::symlink_metadata)
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("{link} is missing"))
            }
            Err(e) => Some(format!("{link}: {e}")),
            Ok(m) if !m.file_type().is_char_device() => {
                Some(format!("{link} does not lead to a character device"))
            }
            Ok(m) if (libc::major(m.rdev()), libc::minor(m.rdev())) != (*major, *minor) => {
                Some(format!(
                    "{link} leads to char {}:{}, not {major}:{minor}",
                    libc::major(m.rdev()),
                    libc::minor(m.rdev())
                ))
            }
            Ok(_) => None,
        };
        out.push(DevCharLink {
            node: node.clone(),
            major: *major,
            minor: *minor,
            problem,
        });
    }
    Ok(out)
}

/// The loaded kernel module's version, or why it is unknown.
pub fn kernel_module_version(host_root: &Path) -> Result<Version, String> {
    let p = host_root.join("proc/driver/nvidia/version");
    let bytes = crate::input::read_capped(&p, MAX_PROC_FILE)
        .map_err(|e| format!("{}: {e} (NVIDIA kernel module not loaded?)", p.display()))?;
    parse_nvrm_version(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
        format!(
            "{}: no version in a line `NVRM version: … <x.y.z> …` (unknown format)",
            p.display()
        )
    })
}

/// `libcuda.so.580.159.04` → 580.159.04; `libcuda.so.1` and `libcuda.so` carry no driver
/// version (a one-part soname is not one).
pub fn lib_version(path: &Path) -> Option<Version> {
    let name = path.file_name()?.to_str()?;
    let (_, rest) = name.split_once(".so.")?;
    rest.contains('.').then(|| Version::parse(rest)).flatten()
}

fn lib_kind(name: &str) -> Option<LibKind> {
    if name.starts_with("libcuda.so") {
        Some(LibKind::Cuda)
    } else if name.starts_with("libnvidia-ml.so") {
        Some(LibKind::Nvml)
    } else {
        None
    }
}

fn push_lib(out: &mut Vec<DriverLib>, lib: DriverLib) {
    if !out
        .iter()
        .any(|l| l.path == lib.path && l.version == lib.version)
    {
        out.push(lib);
    }
}

/// The host's `libcuda.so.1` and `libnvidia-ml.so.1`, found as the NVIDIA hook finds them (the
/// host's `ld.so.cache`, else its loader's directories), followed to the versioned file.
pub fn host_driver_libs(host_root: &Path) -> Vec<DriverLib> {
    let loader = Loader::from_image(host_root, None);
    let mut out = Vec::new();
    for (name, kind) in [
        ("libcuda.so.1", LibKind::Cuda),
        ("libnvidia-ml.so.1", LibKind::Nvml),
    ] {
        if let Some(r) = loader.resolve(name)
            && let Some(v) = lib_version(&r.real_path_in_image)
        {
            push_lib(
                &mut out,
                DriverLib {
                    kind,
                    path: r.real_path_in_image.display().to_string(),
                    version: v,
                    origin: "the host's library, which the NVIDIA hook mounts into the container"
                        .into(),
                },
            );
        }
    }
    out
}

/// Driver libraries bind-mounted by the spec (CDI puts the host's versioned files there).
fn spec_mount_libs(bundle: &Bundle, host_root: &Path) -> Vec<DriverLib> {
    let mut out = Vec::new();
    for m in bundle.spec.mounts().iter().flatten() {
        let Some(src) = m.source().as_ref() else {
            continue;
        };
        let Some(kind) = src.file_name().and_then(|n| n.to_str()).and_then(lib_kind) else {
            continue;
        };
        // A mount of the `.so.1` link: its version is the file it leads to on the host.
        let version = lib_version(src).or_else(|| {
            rootfs::resolve(host_root, src)
                .ok()
                .and_then(|p| lib_version(&p))
        });
        if let Some(v) = version {
            push_lib(
                &mut out,
                DriverLib {
                    kind,
                    path: src.display().to_string(),
                    version: v,
                    origin: "mounted by config.json (CDI or --volume)".into(),
                },
            );
        }
    }
    out
}

/// Library directories where a driver installer (or a `docker commit` of a GPU container) leaves
/// driver libraries; forward-compat directories (`/usr/local/cuda*/compat`) are not among them.
const IMAGE_LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib64",
    "/lib",
    "/usr/local/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
];

/// `libnvidia-*` names that are not the driver's: NVIDIA's open EGL external platforms, packaged
/// by distributions on their own versions (`libnvidia-egl-wayland.so.1.1.13`) and never injected.
const NOT_DRIVER: &[&str] = &[
    "libnvidia-egl-wayland",
    "libnvidia-egl-gbm",
    "libnvidia-egl-xcb",
    "libnvidia-egl-xlib",
];

/// Driver libraries that are files of the image. Read from the bundle's rootfs as the host sees
/// it, where the NVIDIA hook's bind mounts (made in the container's mount namespace) do not
/// show; the empty files it or runc creates as mount points are left out for the same reason.
pub fn image_driver_libs(rootfs_dir: &Path) -> Result<Vec<ImageLib>, String> {
    if !rootfs_dir.is_dir() {
        return Err(format!(
            "{}: rootfs is not a directory",
            rootfs_dir.display()
        ));
    }
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for dir in IMAGE_LIB_DIRS {
        // Merged-/usr images make /lib a link to /usr/lib: list each real directory once.
        let Ok(host_dir) = rootfs::resolve(rootfs_dir, Path::new(dir)) else {
            continue;
        };
        if seen_dirs.contains(&host_dir) {
            continue;
        }
        seen_dirs.push(host_dir.clone());
        let Ok(rd) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| {
                (n.starts_with("libcuda.so") || n.starts_with("libnvidia-"))
                    && n.contains(".so")
                    && !NOT_DRIVER.iter().any(|p| n.starts_with(p))
            })
            .collect();
        names.sort();
        for name in names {
            let Ok(m) = std::fs::symlink_metadata(host_dir.join(&name)) else {
                continue;
            };
            // Links carry no library of their own; an empty file is a mount point.
            if !m.file_type().is_file() || m.len() == 0 {
                continue;
            }
            let path = Path::new(dir).join(&name);
            out.push(ImageLib {
                version: lib_version(&path),
                path: path.display().to_string(),
            });
        }
    }
    Ok(out)
}

/// The CDI spec directories, in the CDI registry's order (later overrides earlier).
const CDI_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// The CDI specs under the host root, parsed, with the existence of every host path they name.
pub fn cdi_facts(host_root: &Path, requested: &[String]) -> CdiFacts {
    let mut f = CdiFacts {
        requested: requested.to_vec(),
        ..CdiFacts::default()
    };
    for dir in CDI_DIRS {
        let host_dir = host_root.join(dir.trim_start_matches('/'));
        let Ok(rd) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        f.dirs.push(dir.to_string());
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        names.sort();
        for name in names {
            let file = format!("{dir}/{name}");
            // The CDI registry reads exactly these extensions; nvidia-ctk writes YAML by default.
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if !yaml && !name.ends_with(".json") {
                continue;
            }
            match crate::input::read_capped(&host_dir.join(&name), MAX_CDI_SPEC_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| parse_cdi(&b, yaml))
            {
                Ok(raw) => f.specs.push(raw.into_spec(file, host_root)),
                Err(e) => f.invalid.push((file, e)),
            }
        }
    }
    f
}

#[derive(serde::Deserialize)]
struct RawSpec {
    kind: String,
    #[serde(default)]
    devices: Vec<RawDevice>,
    #[serde(default, rename = "containerEdits")]
    edits: RawEdits,
}

#[derive(serde::Deserialize)]
struct RawDevice {
    #[serde(deserialize_with = "name_string")]
    name: String,
    #[serde(default, rename = "containerEdits")]
    edits: RawEdits,
}

#[derive(serde::Deserialize, Default)]
struct RawEdits {
    #[serde(default, rename = "deviceNodes")]
    device_nodes: Vec<RawNode>,
    #[serde(default)]
    mounts: Vec<RawMount>,
}

#[derive(serde::Deserialize)]
struct RawNode {
    path: String,
    #[serde(default, rename = "hostPath")]
    host_path: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawMount {
    #[serde(rename = "hostPath")]
    host_path: String,
}

/// Parse one CDI spec file (YAML or JSON) as `cdi_facts` does, checking the host paths it names
/// under `host_root`. Public so the fuzz target feeds it untrusted bytes directly.
pub fn parse_cdi_spec(
    bytes: &[u8],
    yaml: bool,
    file: String,
    host_root: &Path,
) -> Result<CdiSpec, String> {
    parse_cdi(bytes, yaml).map(|raw| raw.into_spec(file, host_root))
}

fn parse_cdi(bytes: &[u8], yaml: bool) -> Result<RawSpec, String> {
    if yaml {
        serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A device name as YAML may give it: `name: 0` is a number to a YAML parser, a name to CDI.
fn name_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Name {
        S(String),
        N(u64),
    }
    Ok(match <Name as serde::Deserialize>::deserialize(d)? {
        Name::S(s) => s,
        Name::N(n) => n.to_string(),
    })
}

impl RawEdits {
    fn paths(&self, host_root: &Path) -> Vec<CdiPath> {
        let exists = |p: &str| rootfs::resolve(host_root, Path::new(p)).is_ok();
        let nodes = self.device_nodes.iter().map(|n| {
            // A device node's hostPath defaults to its path (CDI spec).
            let hp = n.host_path.clone().unwrap_or_else(|| n.path.clone());
            CdiPath {
                exists: exists(&hp),
                host_path: hp,
                device: true,
            }
        });
        let mounts = self.mounts.iter().map(|m| CdiPath {
            exists: exists(&m.host_path),
            host_path: m.host_path.clone(),
            device: false,
        });
        nodes.chain(mounts).collect()
    }
}

impl RawSpec {
    fn into_spec(self, file: String, host_root: &Path) -> CdiSpec {
        CdiSpec {
            file,
            kind: self.kind,
            common_paths: self.edits.paths(host_root),
            devices: self
                .devices
                .iter()
                .map(|d| CdiDevice {
                    name: d.name.clone(),
                    paths: d.edits.paths(host_root),
                })
                .collect(),
        }
    }
}

/// The container's user as the host sees it, in a user namespace, and the host's NVIDIA nodes
/// the container will have. In a user namespace runc cannot create device nodes and bind-mounts
/// the host's, so their owner and mode on the host decide access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserNs {
    /// The process uid and gids inside the container.
    pub uid: u32,
    /// Host ids they map to; an unmapped id is the overflow id 65534.
    pub host_uid: u32,
    pub host_gids: Vec<u32>,
    /// Root in the container with CAP_DAC_OVERRIDE bypasses modes on files whose owner and group
    /// are both mapped into its namespace (the kernel's `capable_wrt_inode_uidgid`).
    pub dac_override: bool,
    pub uid_map: Vec<(u32, u32, u32)>,
    pub gid_map: Vec<(u32, u32, u32)>,
    pub nodes: Vec<HostNode>,
}

/// One NVIDIA node of the container as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostNode {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

const OVERFLOW_ID: u32 = 65534;

/// `(container id, host id, size)` mappings applied to `id`.
pub fn map_id(map: &[(u32, u32, u32)], id: u32) -> Option<u32> {
    map.iter()
        .find_map(|&(c, h, n)| (id >= c && (id - c) < n).then(|| h + (id - c)))
}

/// The user-namespace facts, `None` when the spec creates no user namespace.
pub fn userns_facts(
    spec: &oci_spec::runtime::Spec,
    devices: Result<&DeviceView, &str>,
    host_root: &Path,
) -> Option<Result<UserNs, String>> {
    use oci_spec::runtime::{Capability, LinuxNamespaceType};
    let linux = spec.linux().as_ref()?;
    let ns = linux
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)?;
    Some((|| {
        if ns.path().is_some() {
            return Err(
                "the container joins an existing user namespace: its mappings are not in the spec"
                    .into(),
            );
        }
        let conv = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<(u32, u32, u32)> {
            m.iter()
                .flatten()
                .map(|m| (m.container_id(), m.host_id(), m.size()))
                .collect()
        };
        let uid_map = conv(linux.uid_mappings());
        let gid_map = conv(linux.gid_mappings());
        if uid_map.is_empty() || gid_map.is_empty() {
            return Err("the spec's user namespace has no uid or gid mappings".into());
        }
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        let user = process.user();
        let mut gids = vec![user.gid()];
        gids.extend(user.additional_gids().iter().flatten());
        let dac_override = user.uid() == 0
            && process
                .capabilities()
                .as_ref()
                .and_then(|c| c.effective().as_ref())
                .is_some_and(|e| e.contains(&Capability::DacOverride));
        let mut nodes = Vec::new();
        for (path, _, _) in container_devices(devices, host_root)? {
            let Ok(m) = std::fs::symlink_metadata(host_root.join(path.trim_start_matches('/')))
            else {
                continue; // a missing node is the device rule's finding
            };
            nodes.push(HostNode {
                path,
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o777,
            });
        }
        Ok(UserNs {
            uid: user.uid(),
            host_uid: map_id(&uid_map, user.uid()).unwrap_or(OVERFLOW_ID),
            host_gids: gids
                .iter()
                .map(|g| map_id(&gid_map, *g).unwrap_or(OVERFLOW_ID))
                .collect(),
            dac_override,
            uid_map,
            gid_map,
            nodes,
        })
    })())
}
