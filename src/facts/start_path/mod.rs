//! The start path: how this container gets its GPUs, and what NVIDIA's CDI hooks in the spec
//! will still do after a given hook stage (`docs/design.md`, "Where it sits").
//!
//! Why it matters:
//! * only NVIDIA's legacy prestart hook (`nvidia-container-runtime-hook` → `nvidia-container-cli
//!   --require=…`, `cmd/nvidia-container-runtime-hook/main.go`) and the NVIDIA runtime's CSV mode
//!   (`internal/modifier/csv.go`, `checkRequirements`) evaluate `NVIDIA_REQUIRE_*`; on every CDI
//!   path nothing does (toolkit issue 1470);
//! * on CDI paths the driver's soname links and the container's `ld.so.cache` entry exist only
//!   after NVIDIA's `createContainer` hooks (`nvidia-cdi-hook create-symlinks`, `update-ldcache`,
//!   `enable-cuda-compat`), which runc runs after every `prestart` and `createRuntime` hook.
//!
//! The start path and the hooks are read from the spec alone; [`predict_libcuda`] also looks into
//! the rootfs (inside it, never following the image out).

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

use crate::facts::container::GpuRequest;

pub mod forward_compat;

pub use forward_compat::{CompatDecision, predict_cuda_compat, semver, use_compat};

/// The OCI hook stage `cuda-preflight hook` runs at (`--stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    #[value(name = "prestart")]
    Prestart,
    #[default]
    #[value(name = "createRuntime")]
    CreateRuntime,
    #[value(name = "createContainer")]
    CreateContainer,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
        }
    }
}

/// How the container gets its GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StartPath {
    /// NVIDIA's legacy prestart hook injects devices and libraries (`--gpus` on Docker < 29.2,
    /// `nvidia-container-runtime` in `legacy` mode, Podman's legacy NVIDIA hook). It runs
    /// `nvidia-container-cli`, which refuses a start whose `NVIDIA_REQUIRE_*` does not hold.
    LegacyHook,
    /// CDI edits: NVIDIA's CDI hooks in the spec or a CDI annotation (the NVIDIA runtime in
    /// `cdi`/`jit-cdi` mode, Docker `--device nvidia.com/gpu=…` or ≥ 29.2 `--gpus`, Podman,
    /// containerd/CRI-O with the device plugin). Nothing evaluates `NVIDIA_REQUIRE_*`.
    Cdi,
    /// NVIDIA device nodes in `linux.devices` and nothing NVIDIA's in the hooks (`--device
    /// /dev/nvidia0 …`): nothing evaluates `NVIDIA_REQUIRE_*`.
    ExplicitDevices,
    /// The shim runs before `nvidia-container-runtime`, which decides by its mode: `legacy`
    /// adds the prestart hook, `csv` checks requirements itself, `cdi`/`jit-cdi` do neither.
    NvidiaRuntime { mode: String },
    /// No GPU asked for, or only the variable with nothing to act on it.
    None,
}

impl StartPath {
    /// From the spec as the hook (or an offline check) sees it.
    pub fn from_spec(spec: &Spec, request: &GpuRequest) -> StartPath {
        match request {
            GpuRequest::InjectedByHook { .. } => StartPath::LegacyHook,
            GpuRequest::Cdi { .. } => StartPath::Cdi,
            GpuRequest::SpecDevices if !nvidia_cdi_hooks(spec).is_empty() => StartPath::Cdi,
            GpuRequest::SpecDevices if legacy_hook_in(spec) => StartPath::LegacyHook,
            GpuRequest::SpecDevices => StartPath::ExplicitDevices,
            GpuRequest::None | GpuRequest::EnvOnly { .. } => StartPath::None,
        }
    }

    /// Whether something on this path refuses a start whose `NVIDIA_REQUIRE_*` does not hold.
    pub fn enforces_requirements(&self) -> bool {
        match self {
            StartPath::LegacyHook => true,
            StartPath::NvidiaRuntime { mode } => matches!(mode.as_str(), "legacy" | "csv"),
            StartPath::Cdi | StartPath::ExplicitDevices | StartPath::None => false,
        }
    }

    /// Words for a message: "this CDI start", "this start with explicit --device nodes".
    pub fn describe(&self) -> String {
        match self {
            StartPath::LegacyHook => "this start through NVIDIA's legacy prestart hook".into(),
            StartPath::Cdi => "this CDI start".into(),
            StartPath::ExplicitDevices => {
                "this start with NVIDIA device nodes given explicitly (--device)".into()
            }
            StartPath::NvidiaRuntime { mode } => {
                format!("this start through nvidia-container-runtime in {mode} mode")
            }
            StartPath::None => "this start".into(),
        }
    }
}

/// NVIDIA's legacy hook in any stage (`nvidia-container-runtime-hook`, older installs
/// `nvidia-container-toolkit`).
fn legacy_hook_in(spec: &Spec) -> bool {
    let Some(hooks) = spec.hooks().as_ref() else {
        return false;
    };
    #[allow(deprecated)]
    let lists = [
        hooks.prestart(),
        hooks.create_runtime(),
        hooks.create_container(),
    ];
    lists.into_iter().flatten().flatten().any(|h| {
        h.path().file_name().is_some_and(|n| {
            n == "nvidia-container-runtime-hook" || n == "nvidia-container-toolkit"
        })
    })
}

/// One NVIDIA CDI hook of the spec, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "hook", rename_all = "kebab-case")]
pub enum CdiHook {
    /// `create-symlinks --link TARGET::LINK`: `(target, link)`, the target as written (often
    /// relative to the link's directory).
    CreateSymlinks { links: Vec<(String, PathBuf)> },
    /// `update-ldcache --folder DIR`: the folders added to `ld.so.conf.d` before `ldconfig`.
    UpdateLdcache { folders: Vec<PathBuf> },
    /// `enable-cuda-compat --host-driver-version=V [--host-cuda-version=V]
    /// [--cuda-compat-container-root=DIR]`.
    EnableCudaCompat {
        host_driver_version: Option<String>,
        host_cuda_version: Option<String>,
        compat_root: PathBuf,
    },
    /// Any other subcommand (`disable-device-node-modification`, `chmod`, …).
    Other { name: String },
}

/// The NVIDIA CDI hooks of a spec in the order runc runs them, each with its stage and index
/// in that stage's list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CdiHooks {
    pub hooks: Vec<(Stage, usize, CdiHook)>,
}

impl CdiHooks {
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The links `create-symlinks` will make: `(link, target as written)`.
    pub fn links(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.hooks.iter().flat_map(|(_, _, h)| match h {
            CdiHook::CreateSymlinks { links } => links
                .iter()
                .map(|(t, l)| (l.as_path(), t.as_str()))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    }

    /// The folders `update-ldcache` adds to the container's loader cache.
    pub fn ldcache_folders(&self) -> impl Iterator<Item = &Path> {
        self.hooks.iter().flat_map(|(_, _, h)| match h {
            CdiHook::UpdateLdcache { folders } => {
                folders.iter().map(PathBuf::as_path).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
    }

    pub fn updates_ldcache(&self) -> bool {
        self.hooks
            .iter()
            .any(|(_, _, h)| matches!(h, CdiHook::UpdateLdcache { .. }))
    }

    pub fn enable_cuda_compat(&self) -> Option<&CdiHook> {
        self.hooks
            .iter()
            .map(|(_, _, h)| h)
            .find(|h| matches!(h, CdiHook::EnableCudaCompat { .. }))
    }

    /// The hooks that have not run yet when `cuda-preflight hook` runs at `stage`, as entry
    /// `our_index` of that stage (None: not found in the spec, taken as last). runc runs
    /// `prestart`, then `createRuntime`, then `createContainer`, each list in order.
    pub fn pending_after(&self, stage: Stage, our_index: Option<usize>) -> CdiHooks {
        let rank = |s: Stage| match s {
            Stage::Prestart => 0,
            Stage::CreateRuntime => 1,
            Stage::CreateContainer => 2,
        };
        CdiHooks {
            hooks: self
                .hooks
                .iter()
                .filter(|(s, i, _)| {
                    rank(*s) > rank(stage)
                        || (*s == stage && our_index.is_some_and(|ours| *i > ours))
                })
                .cloned()
                .collect(),
        }
    }

    /// Whether what the probe needs (the `libcuda.so.1` link, the loader cache) is still to be
    /// made by these hooks.
    pub fn makes_libcuda_loadable(&self) -> bool {
        self.updates_ldcache()
            || self
                .links()
                .any(|(l, _)| l.file_name().is_some_and(|n| n == "libcuda.so.1"))
    }

    /// "create-symlinks, update-ldcache" for a message.
    pub fn names(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for (_, _, h) in &self.hooks {
            let n = match h {
                CdiHook::CreateSymlinks { .. } => "create-symlinks",
                CdiHook::UpdateLdcache { .. } => "update-ldcache",
                CdiHook::EnableCudaCompat { .. } => "enable-cuda-compat",
                CdiHook::Other { name } => name.as_str(),
            };
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names.join(", ")
    }
}

/// A flag's values in Go's flag syntax as urfave/cli reads it: `--name VALUE`, `--name=VALUE`,
/// one or two dashes.
fn flag_values(args: &[String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].trim_start_matches('-');
        if args[i].starts_with('-') {
            if a == name {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.clone());
                }
                i += 2;
                continue;
            }
            if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                out.push(v.to_string());
            }
        }
        i += 1;
    }
    out
}

/// Parse one hook entry if it is NVIDIA's: `nvidia-cdi-hook SUBCOMMAND …`, or the older
/// `nvidia-ctk hook SUBCOMMAND …` that specs from toolkit < 1.17 carry.
pub fn parse_cdi_hook(h: &Hook) -> Option<CdiHook> {
    let name = h.path().file_name()?.to_str()?;
    let args: Vec<String> = h.args().clone().unwrap_or_default();
    let rest: &[String] = match name {
        "nvidia-cdi-hook" => args.get(1..)?,
        "nvidia-ctk" if args.get(1).map(String::as_str) == Some("hook") => args.get(2..)?,
        _ => return None,
    };
    let (sub, flags) = rest.split_first()?;
    let one = |n: &str| flag_values(flags, n).pop();
    Some(match sub.as_str() {
        "create-symlinks" => CdiHook::CreateSymlinks {
            links: flag_values(flags, "link")
                .iter()
                .filter_map(|l| {
                    let (t, p) = l.split_once("::")?;
                    Some((t.to_string(), PathBuf::from(p)))
                })
                .collect(),
        },
        "update-ldcache" => CdiHook::UpdateLdcache {
            folders: flag_values(flags, "folder")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        },
        "enable-cuda-compat" => CdiHook::EnableCudaCompat {
            host_driver_version: one("host-driver-version"),
            host_cuda_version: one("host-cuda-version"),
            compat_root: one("cuda-compat-container-root")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/local/cuda/compat")),
        },
        other => CdiHook::Other {
            name: other.to_string(),
        },
    })
}

/// Every NVIDIA CDI hook of the spec.
pub fn nvidia_cdi_hooks(spec: &Spec) -> CdiHooks {
    let mut out = CdiHooks::default();
    let Some(hooks) = spec.hooks().as_ref() else {
        return out;
    };
    #[allow(deprecated)]
    let lists = [
        (Stage::Prestart, hooks.prestart()),
        (Stage::CreateRuntime, hooks.create_runtime()),
        (Stage::CreateContainer, hooks.create_container()),
    ];
    for (stage, list) in lists {
        for (i, h) in list.iter().flatten().enumerate() {
            if let Some(c) = parse_cdi_hook(h) {
                out.hooks.push((stage, i, c));
            }
        }
    }
    out
}

/// Is this hook entry `cuda-preflight hook` (any stage flag)?
pub fn is_our_hook(h: &Hook) -> bool {
    h.path().file_name().is_some_and(|n| n == "cuda-preflight")
        && h.args().as_ref().and_then(|a| a.get(1)).map(String::as_str) == Some("hook")
}

/// The index of our entry in `stage`'s list of the spec, where it is there.
pub fn our_index(spec: &Spec, stage: Stage) -> Option<usize> {
    let hooks = spec.hooks().as_ref()?;
    #[allow(deprecated)]
    let list = match stage {
        Stage::Prestart => hooks.prestart(),
        Stage::CreateRuntime => hooks.create_runtime(),
        Stage::CreateContainer => hooks.create_container(),
    };
    list.as_ref()?.iter().position(is_our_hook)
}

/// `dir/target` with `.` and `..` folded lexically, as `create-symlinks` writes a relative
/// target and the loader follows it from the link's directory.
pub fn link_target(link: &Path, target: &str) -> PathBuf {
    let base = if target.starts_with('/') {
        PathBuf::new()
    } else {
        link.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut out = PathBuf::from("/");
    for c in base.join(target).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Where the container's loader will find `libcuda.so.1` once the pending NVIDIA hooks ran,
/// when it finds none now: a `create-symlinks` link named `libcuda.so.1` in a directory the
/// loader will search (`LD_LIBRARY_PATH`, an `update-ldcache` folder, the image's cache, its
/// `ld.so.conf` directories or the default ones), pointing at a file that exists in the rootfs
/// or that a spec mount puts there (offline, a bundle's rootfs has no mounts). None otherwise:
/// the link would dangle or not be searched.
pub fn predict_libcuda(
    root: &Path,
    env: &[String],
    spec: &Spec,
    hooks: &CdiHooks,
) -> Option<crate::facts::library_loading::loader::Resolved> {
    use crate::facts::library_loading::loader::{Loader, Resolved, Source};
    let ld = crate::input::bundle::env_var(env, "LD_LIBRARY_PATH");
    let mut loader: Option<Loader> = None;
    for (link, target) in hooks.links() {
        if link.file_name().is_none_or(|n| n != "libcuda.so.1") {
            continue;
        }
        let Some(dir) = link.parent() else { continue };
        let in_ld_path = ld.is_some_and(|v| v.split([':', ';']).any(|d| Path::new(d) == dir));
        let via = if in_ld_path {
            Source::LdLibraryPath
        } else if hooks.ldcache_folders().any(|f| f == dir) {
            Source::LdSoCache
        } else {
            let l = loader.get_or_insert_with(|| Loader::from_image(root, ld));
            match l.search_dirs().into_iter().find(|(d, _)| d == dir) {
                Some((_, s)) => s,
                None => continue,
            }
        };
        let real = link_target(link, target);
        let host_path = match crate::facts::image::rootfs::resolve(root, &real) {
            Ok(p) if p.is_file() => Some(p),
            _ => spec
                .mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == &real)
                .and_then(|m| m.source().clone()),
        };
        let Some(host_path) = host_path else { continue };
        return Some(Resolved {
            path_in_image: link.to_path_buf(),
            real_path_in_image: real,
            host_path,
            via,
            unloadable: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored spec `nvidia-ctk cdi generate` wrote on the H100 (driver 580.159.04), as the
    /// NVIDIA runtime or a CDI engine applies it: its hooks, verbatim arguments, abridged links.
    pub(crate) fn h100_cdi_spec() -> Spec {
        let hook = |args: &[&str]| {
            serde_json::json!({"path": "/usr/bin/nvidia-cdi-hook", "args": args,
                               "env": ["NVIDIA_CTK_DEBUG=false"]})
        };
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["NVIDIA_VISIBLE_DEVICES=void"]},
            "hooks": {"createContainer": [
                hook(&["nvidia-cdi-hook", "create-symlinks", "--link",
                       "../libnvidia-allocator.so.1::/usr/local/nvidia/lib64/gbm/nvidia-drm_gbm.so"]),
                hook(&["nvidia-cdi-hook", "create-symlinks",
                       "--link", "libcuda.so.1::/usr/local/nvidia/lib64/libcuda.so",
                       "--link", "libcuda.so.580.159.04::/usr/local/nvidia/lib64/libcuda.so.1",
                       "--link", "libnvidia-ptxjitcompiler.so.580.159.04::/usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1"]),
                hook(&["nvidia-cdi-hook", "enable-cuda-compat", "--host-driver-version=580.159.04"]),
                hook(&["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/local/nvidia/lib64"]),
                hook(&["nvidia-cdi-hook", "disable-device-node-modification"]),
                hook(&["nvidia-cdi-hook", "update-application-profile"]),
            ]},
            "linux": {"devices": [
                {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0},
                {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn parses_the_h100_specs_hooks() {
        let h = nvidia_cdi_hooks(&h100_cdi_spec());
        assert_eq!(h.hooks.len(), 6);
        assert!(h.hooks.iter().all(|(s, _, _)| *s == Stage::CreateContainer));
        let links: Vec<_> = h.links().collect();
        assert!(links.contains(&(
            Path::new("/usr/local/nvidia/lib64/libcuda.so.1"),
            "libcuda.so.580.159.04"
        )));
        assert_eq!(
            h.ldcache_folders().collect::<Vec<_>>(),
            vec![Path::new("/usr/local/nvidia/lib64")]
        );
        assert_eq!(
            h.enable_cuda_compat(),
            Some(&CdiHook::EnableCudaCompat {
                host_driver_version: Some("580.159.04".into()),
                host_cuda_version: None,
                compat_root: "/usr/local/cuda/compat".into()
            })
        );
        assert_eq!(
            h.names(),
            "create-symlinks, enable-cuda-compat, update-ldcache, disable-device-node-modification, update-application-profile"
        );
    }

    #[test]
    fn start_path_table() {
        let legacy: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["NVIDIA_VISIBLE_DEVICES=all"]},
            "hooks": {"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["nvidia-container-runtime-hook", "prestart"]}]}
        }))
        .unwrap();
        let explicit: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"]},
            "linux": {"devices": [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]}
        }))
        .unwrap();
        let cdi = h100_cdi_spec();
        // (spec, path, enforces NVIDIA_REQUIRE_*): only the legacy hook runs nvidia-container-cli
        // --require (cmd/nvidia-container-runtime-hook/main.go); CDI edits and plain --device
        // nodes run nothing that reads the variables (toolkit issue 1470).
        let cases: Vec<(&Spec, StartPath, bool)> = vec![
            (&legacy, StartPath::LegacyHook, true),
            (&cdi, StartPath::Cdi, false),
            (&explicit, StartPath::ExplicitDevices, false),
        ];
        for (spec, want, enforces) in cases {
            let req = crate::facts::container::detect(spec, None);
            let got = StartPath::from_spec(spec, &req);
            assert_eq!(got, want);
            assert_eq!(got.enforces_requirements(), enforces, "{want:?}");
        }
        // In front of the NVIDIA runtime, its mode decides (internal/info/auto.go,
        // internal/modifier/csv.go).
        for (mode, enforces) in [
            ("legacy", true),
            ("csv", true),
            ("cdi", false),
            ("jit-cdi", false),
        ] {
            let p = StartPath::NvidiaRuntime { mode: mode.into() };
            assert_eq!(p.enforces_requirements(), enforces, "{mode}");
        }
    }

    #[test]
    fn pending_hooks_by_stage_and_position() {
        let h = nvidia_cdi_hooks(&h100_cdi_spec());
        assert_eq!(h.pending_after(Stage::CreateRuntime, None).hooks.len(), 6);
        assert_eq!(h.pending_after(Stage::Prestart, Some(0)).hooks.len(), 6);
        assert!(
            h.pending_after(Stage::CreateRuntime, None)
                .makes_libcuda_loadable()
        );
        // Ours appended after NVIDIA's six: nothing left.
        assert!(h.pending_after(Stage::CreateContainer, Some(6)).is_empty());
        // Ours in front of NVIDIA's (an engine that adds CDI hooks after the hooks directory's).
        assert_eq!(
            h.pending_after(Stage::CreateContainer, Some(0)).hooks.len(),
            5
        );
        // Ours not found at createContainer: taken as last.
        assert!(h.pending_after(Stage::CreateContainer, None).is_empty());
    }

    #[test]
    fn flag_syntaxes_and_old_nvidia_ctk_hooks() {
        let hook: Hook = serde_json::from_value(serde_json::json!({
            "path": "/usr/bin/nvidia-ctk",
            "args": ["nvidia-ctk", "hook", "update-ldcache", "--folder=/a", "-folder", "/b"]
        }))
        .unwrap();
        assert_eq!(
            parse_cdi_hook(&hook),
            Some(CdiHook::UpdateLdcache {
                folders: vec!["/a".into(), "/b".into()]
            })
        );
        let other: Hook = serde_json::from_value(serde_json::json!({
            "path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "cdi", "list"]
        }))
        .unwrap();
        assert_eq!(parse_cdi_hook(&other), None);
    }

    #[test]
    fn libcuda_predicted_from_the_links_to_come() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let lib = root.join("usr/local/nvidia/lib64");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libcuda.so.580.159.04"), b"\x7fELF").unwrap();
        let spec = h100_cdi_spec();
        let all = nvidia_cdi_hooks(&spec);
        let r = predict_libcuda(root, &[], &spec, &all).expect("predicted");
        assert_eq!(
            r.path_in_image,
            Path::new("/usr/local/nvidia/lib64/libcuda.so.1")
        );
        assert_eq!(
            r.real_path_in_image,
            Path::new("/usr/local/nvidia/lib64/libcuda.so.580.159.04")
        );
        assert_eq!(
            r.via,
            crate::facts::library_loading::loader::Source::LdSoCache
        );
        // Nothing pending (ours ran after NVIDIA's): no prediction.
        assert!(predict_libcuda(root, &[], &spec, &CdiHooks::default()).is_none());
        // Without update-ldcache the directory must be searched some other way.
        let links_only = CdiHooks {
            hooks: all
                .hooks
                .iter()
                .filter(|(_, _, h)| matches!(h, CdiHook::CreateSymlinks { .. }))
                .cloned()
                .collect(),
        };
        assert!(predict_libcuda(root, &[], &spec, &links_only).is_none());
        let env = ["LD_LIBRARY_PATH=/usr/local/nvidia/lib64".to_string()];
        assert_eq!(
            predict_libcuda(root, &env, &spec, &links_only).map(|r| r.via),
            Some(crate::facts::library_loading::loader::Source::LdLibraryPath)
        );
        // The target neither in the rootfs nor mounted: the link would dangle.
        std::fs::remove_file(lib.join("libcuda.so.580.159.04")).unwrap();
        assert!(predict_libcuda(root, &[], &spec, &all).is_none());
        // Offline: a spec mount puts it there.
        let mut v = serde_json::to_value(&spec).unwrap();
        v["mounts"] = serde_json::json!([{"destination": "/usr/local/nvidia/lib64/libcuda.so.580.159.04",
            "source": "/host/lib/libcuda.so.580.159.04", "type": "bind", "options": ["ro", "rbind"]}]);
        let spec: Spec = serde_json::from_value(v).unwrap();
        let r = predict_libcuda(root, &[], &spec, &all).expect("from the mount");
        assert_eq!(r.host_path, Path::new("/host/lib/libcuda.so.580.159.04"));
    }

    /// `enable-cuda-compat`'s decisions, case by case as its own tests state them
    /// (cmd/nvidia-cdi-hook/cudacompat/cudacompat_test.go): a note supporting branches 535–590 of
    /// CUDA 12.9 on a compat 575.57.08, and the no-note fallback.
    #[test]
    #[allow(clippy::type_complexity)] // a table
    fn enable_cuda_compat_decisions() {
        use crate::formats::compat_note::CompatNote;
        let note = CompatNote {
            cuda_version: Some("12.9".into()),
            driver: vec![535, 550, 560, 565, 570, 575],
            device: vec![],
        };
        // (note, compat, host driver, host cuda, used)
        let cases: &[(bool, &str, Option<&str>, Option<&str>, bool)] = &[
            (true, "575.57.08", None, Some("12.8"), true),
            (true, "575.57.08", None, Some("12.9"), false),
            (true, "575.57.08", None, Some("12.10"), false),
            (true, "575.57.08", Some("590.44.01"), None, false),
            (true, "575.57.08", Some("570.211.01"), None, true),
            (true, "575.57.08", Some("575.10.10"), None, true),
            (true, "575.57.08", Some("575.57.08"), None, false),
            (true, "575.57.08", Some("575.99.99"), None, false),
            // Leading zeros coerced, as Masterminds/semver does: 580.159.04 is 580.159.4.
            (true, "575.57.08", Some("570.211.01"), Some("12.8"), true),
            // No note: the majors decide, and a host CUDA version means no.
            (false, "580.95.05", Some("535.104.05"), None, true),
            (false, "580.95.05", Some("580.65.06"), None, false),
            (false, "580.95.05", Some("535.104.05"), Some("12.2"), false),
            (false, "not.a.version", Some("535.104.05"), None, false),
        ];
        for (with_note, compat, hd, hc, want) in cases {
            let n = with_note.then_some(&note);
            let (got, why) = use_compat(n, compat, *hd, *hc);
            assert_eq!(got, *want, "{with_note} {compat} {hd:?} {hc:?}: {why}");
        }
        assert_eq!(semver("580.159.04"), Some((580, 159, 4)));
        assert_eq!(semver("v12.9"), Some((12, 9, 0)));
        assert_eq!(semver("535.104.05.01"), None);
    }

    #[test]
    fn enable_cuda_compat_predicted_from_the_image() {
        use crate::formats::compat_note::tests::{elf_with_section, note};
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let compat = root.join("usr/local/cuda-13.1/compat");
        std::fs::create_dir_all(&compat).unwrap();
        std::os::unix::fs::symlink("cuda-13.1", root.join("usr/local/cuda")).unwrap();
        let desc = r#"{"Format": 1, "CUDA Version": "13.1", "Driver": [535, 550, 570, 575, 580, 590], "Device": [9, 10]}"#;
        std::fs::write(
            compat.join("libcuda.so.590.44.01"),
            elf_with_section(".note.cuda.fwd_compatibility", 7, &note(desc)),
        )
        .unwrap();
        std::os::unix::fs::symlink("libcuda.so.590.44.01", compat.join("libcuda.so.1")).unwrap();
        let hook = |drv: &str| CdiHook::EnableCudaCompat {
            host_driver_version: Some(drv.into()),
            host_cuda_version: None,
            compat_root: "/usr/local/cuda/compat".into(),
        };
        // The H100's 580.159.04: branch 580 is supported and 590.44.01 is newer.
        let d580 = predict_cuda_compat(root, &hook("580.159.04")).unwrap();
        assert!(d580.use_compat, "{}", d580.why);
        assert_eq!(
            d580.library.as_deref(),
            Some(Path::new(
                "/usr/local/cuda-13.1/compat/libcuda.so.590.44.01"
            ))
        );
        assert_eq!(
            d580.note.as_ref().unwrap().cuda_version.as_deref(),
            Some("13.1")
        );
        // A branch the note does not list.
        assert!(
            !predict_cuda_compat(root, &hook("525.60.13"))
                .unwrap()
                .use_compat
        );
        // No host version in the hook: it does nothing.
        let none = CdiHook::EnableCudaCompat {
            host_driver_version: None,
            host_cuda_version: None,
            compat_root: "/usr/local/cuda/compat".into(),
        };
        assert!(!predict_cuda_compat(root, &none).unwrap().use_compat);
        // Two candidates: the hook uses none.
        std::fs::write(compat.join("libcuda.so.580.95.05"), b"x").unwrap();
        let two = predict_cuda_compat(root, &hook("580.159.04")).unwrap();
        assert!(
            !two.use_compat && two.why.contains("holds 2 files"),
            "{}",
            two.why
        );
        // Not this hook: nothing to predict.
        assert!(
            predict_cuda_compat(
                root,
                &CdiHook::Other {
                    name: "chmod".into()
                }
            )
            .is_none()
        );
    }

    #[test]
    fn link_targets_fold_relative_paths() {
        for (link, target, want) in [
            (
                "/usr/local/nvidia/lib64/libcuda.so.1",
                "libcuda.so.580.159.04",
                "/usr/local/nvidia/lib64/libcuda.so.580.159.04",
            ),
            (
                "/usr/local/nvidia/lib64/gbm/nvidia-drm_gbm.so",
                "../libnvidia-allocator.so.1",
                "/usr/local/nvidia/lib64/libnvidia-allocator.so.1",
            ),
            ("/a/b", "/c/d", "/c/d"),
            ("/a/b", "../../../../x", "/x"),
        ] {
            assert_eq!(link_target(Path::new(link), target), PathBuf::from(want));
        }
    }
}
