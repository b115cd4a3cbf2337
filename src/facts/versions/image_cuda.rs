//! Image facts: what the container's environment and rootfs say about its CUDA versions.
//!
//! Every file is read through [`crate::facts::image::rootfs`], every directory listing is bounded, and
//! nothing here fails: a problem becomes a note (and, where a rule needs the fact, a field that
//! says why it is missing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::image::rootfs;
use crate::facts::library_loading::loader::{Loader, Resolved, read_image_file};
use crate::input::bundle::Bundle;
use crate::knowledge::cuda::Version;

/// Entries read from one directory; an image directory with more is not one we judge fully.
const MAX_DIR_ENTRIES: usize = 4096;
const MAX_VERSION_JSON_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The variable, e.g. `NVIDIA_REQUIRE_CUDA`.
    pub name: String,
    pub value: String,
}

/// A CUDA runtime library found in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CudaRuntime {
    /// As the container sees it.
    pub path: PathBuf,
    /// From the file name (`libcudart.so.12.4.127` → 12.4.127) or, for Python wheels that ship
    /// only `libcudart.so.12`, from the wheel's `.dist-info` name.
    pub version: Version,
    /// False when only the major is known (`libcudart.so.12` with no wheel metadata).
    pub exact: bool,
}

/// A forward-compatibility `libcuda.so.<driver version>` of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatLib {
    pub path: PathBuf,
    /// `None` when the name after `libcuda.so.` is not a version.
    pub version: Option<Version>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageFacts {
    /// `CUDA_VERSION` from the spec's environment.
    pub cuda_version: Option<String>,
    /// Every `NVIDIA_REQUIRE_*` variable, by name.
    pub requires: Vec<Requirement>,
    /// `NVIDIA_DISABLE_REQUIRE` as set (raw), if set.
    pub disable_require: Option<String>,
    /// Whether the rootfs could be read at all.
    pub rootfs_read: bool,
    /// Every CUDA runtime library on disk in the usual places.
    pub runtimes: Vec<CudaRuntime>,
    /// Python package directories ([`site_packages`]), found once for every part that needs them
    /// (the binary walk, toolchains, frameworks).
    #[serde(skip)]
    pub site_packages: Vec<PathBuf>,
    /// The runtimes the image's CUDA-using libraries resolve to (`facts::library_loading::cuda_libraries`); where
    /// there are any, they are what must fit the driver.
    pub loaded_runtimes: Vec<CudaRuntime>,
    /// `cuda.version` of `/usr/local/cuda/version.json`.
    pub toolkit_version: Option<Version>,
    /// Why `version.json` exists but could not be used.
    pub toolkit_version_error: Option<String>,
    pub compat_libs: Vec<CompatLib>,
    /// Where the container's loader finds `libcuda.so.1`, if anywhere.
    pub libcuda: Option<Resolved>,
    /// The compat library the loader picks for `libcuda.so.1`, if it picks one.
    pub compat_in_use: Option<CompatLib>,
    pub notes: Vec<String>,
    /// `cuda_version` as rules read it, parsed once (not in the JSON).
    #[doc(hidden)]
    #[serde(skip)]
    pub parsed: ImageParsed,
}

/// The image's typed facts, parsed from its strings on first use: see
/// [`ParsedOnce`](crate::formats::version::ParsedOnce).
#[derive(Debug, Clone, Default)]
pub struct ImageParsed {
    cuda_version: crate::formats::version::ParsedOnce<Option<Version>>,
}

impl ImageFacts {
    /// `CUDA_VERSION` as a dotted [`Version`]; `None` where unset or not a version.
    pub fn cuda_env_version(&self) -> Option<Version> {
        let s = self.cuda_version.as_deref()?;
        self.parsed.cuda_version.get(s, Version::parse)
    }

    /// Go's `strconv.ParseBool` truth values, which nvidia-container-toolkit applies to
    /// `NVIDIA_DISABLE_REQUIRE`; any other value leaves the checks on.
    pub fn require_disabled(&self) -> bool {
        matches!(
            self.disable_require.as_deref(),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

/// Gather the image facts of a bundle: its spec environment and its rootfs.
pub fn gather(bundle: &Bundle) -> ImageFacts {
    let env: Vec<String> = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let rootfs = match bundle.require_rootfs() {
        Ok(()) => Some(bundle.rootfs.as_path()),
        Err(e) => {
            let mut f = gather_env(&env);
            f.notes.push(e.to_string());
            return f;
        }
    };
    gather_rootfs(rootfs.expect("checked above"), &env)
}

/// The facts of an environment (`KEY=VALUE` list, later entries win) alone.
pub fn gather_env(env: &[String]) -> ImageFacts {
    let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            vars.insert(k, v);
        }
    }
    let requires = vars
        .iter()
        .filter(|(k, _)| k.starts_with("NVIDIA_REQUIRE_"))
        .map(|(k, v)| Requirement {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect();
    ImageFacts {
        cuda_version: vars.get("CUDA_VERSION").map(|s| s.to_string()),
        requires,
        disable_require: vars.get("NVIDIA_DISABLE_REQUIRE").map(|s| s.to_string()),
        ..ImageFacts::default()
    }
}

/// The facts of an environment and a rootfs directory (`check --rootfs`, tests).
pub fn gather_rootfs(root: &Path, env: &[String]) -> ImageFacts {
    let mut f = gather_env(env);
    if !root.is_dir() {
        f.notes
            .push(format!("{}: rootfs is not a directory", root.display()));
        return f;
    }
    f.rootfs_read = true;
    let ld_path = crate::input::bundle::env_var(env, "LD_LIBRARY_PATH");
    let loader = Loader::from_image(root, ld_path);
    f.notes.extend(loader.notes().iter().cloned());

    let cuda_dirs = cuda_dirs(root, &mut f.notes);
    let mut lib_dirs: Vec<PathBuf> = Vec::new();
    for d in &cuda_dirs {
        lib_dirs.push(d.join("lib64"));
        for t in list(root, &d.join("targets"), &mut f.notes) {
            lib_dirs.push(d.join("targets").join(t).join("lib"));
        }
    }
    lib_dirs.push(PathBuf::from("/opt/conda/lib"));
    let mut wheel_versions: Vec<Version> = Vec::new();
    f.site_packages = site_packages(root, env, &mut f.notes);
    for sp in f.site_packages.clone() {
        for pkg in list(root, &sp.join("nvidia"), &mut f.notes) {
            lib_dirs.push(sp.join("nvidia").join(pkg).join("lib"));
        }
        lib_dirs.push(sp.join("torch/lib"));
        for e in list(root, &sp, &mut f.notes) {
            if let Some(v) = runtime_wheel_version(&e) {
                wheel_versions.push(v);
            }
        }
    }
    f.runtimes = find_runtimes(root, &lib_dirs, &wheel_versions, &mut f.notes);

    match read_image_file(
        root,
        Path::new("/usr/local/cuda/version.json"),
        MAX_VERSION_JSON_BYTES,
    ) {
        Ok(bytes) => match parse_version_json(&bytes) {
            Ok(v) => f.toolkit_version = Some(v),
            Err(e) => f.toolkit_version_error = Some(format!("/usr/local/cuda/version.json: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => f.toolkit_version_error = Some(format!("/usr/local/cuda/version.json: {e}")),
    }

    let mut seen_hosts: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut compat_hosts: Vec<(PathBuf, CompatLib)> = Vec::new();
    for d in &cuda_dirs {
        let dir = d.join("compat");
        for name in list(root, &dir, &mut f.notes) {
            let Some(rest) = name.strip_prefix("libcuda.so.") else {
                continue;
            };
            let path = dir.join(&name);
            // libcuda.so.1 is the link to the versioned file; judge files, once each.
            let Ok(meta) = rootfs::lstat(root, &path) else {
                continue;
            };
            if !meta.file_type().is_file() {
                continue;
            }
            let Ok(host) = rootfs::resolve(root, &path) else {
                continue;
            };
            if !seen_hosts.insert(host.clone()) {
                continue;
            }
            let lib = CompatLib {
                path,
                version: Version::parse(rest),
            };
            compat_hosts.push((host, lib.clone()));
            f.compat_libs.push(lib);
        }
    }

    f.libcuda = loader.resolve("libcuda.so.1");
    if let Some(r) = &f.libcuda {
        f.compat_in_use = compat_hosts
            .iter()
            .find(|(h, _)| *h == r.host_path)
            .map(|(_, l)| l.clone())
            .or_else(|| {
                // A compat directory outside /usr/local/cuda* (copied elsewhere) still counts.
                let in_compat_dir = r.real_path_in_image.parent().and_then(|p| p.file_name())
                    == Some("compat".as_ref());
                let name = r.real_path_in_image.file_name()?.to_str()?;
                in_compat_dir.then(|| CompatLib {
                    path: r.real_path_in_image.clone(),
                    version: name.strip_prefix("libcuda.so.").and_then(Version::parse),
                })
            });
    }
    f
}

/// `/usr/local/cuda` and every `/usr/local/cuda*` directory, as the container sees them.
fn cuda_dirs(root: &Path, notes: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = list(root, Path::new("/usr/local"), notes)
        .into_iter()
        .filter(|n| n.starts_with("cuda"))
        .map(|n| Path::new("/usr/local").join(n))
        .collect();
    out.sort();
    out
}

/// Python package directories of the usual interpreters and conda/venv prefixes.
/// Python package directories, as the container sees them: the usual interpreters' and conda's,
/// every conda env, the virtual environments and prefixes the spec's environment names
/// (`VIRTUAL_ENV`, `CONDA_PREFIX`, each `PATH` entry's `…/bin` parent, `PYTHONPATH` entries),
/// and virtual environments one level under `/opt`, `/app`, `/workspace` and `/root`
/// (`/opt/torch/.venv`). Only directories that exist, each once.
pub(crate) fn site_packages(root: &Path, env: &[String], notes: &mut Vec<String>) -> Vec<PathBuf> {
    let var = |k: &str| crate::input::bundle::env_var(env, k).filter(|v| !v.is_empty());
    let mut prefixes: Vec<PathBuf> = [
        "/usr/local",
        "/usr",
        "/opt/conda",
        "/opt/venv",
        "/root/.local",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for e in list(root, Path::new("/opt/conda/envs"), notes) {
        prefixes.push(Path::new("/opt/conda/envs").join(e));
    }
    for k in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = var(k).filter(|v| v.starts_with('/')) {
            prefixes.push(PathBuf::from(v));
        }
    }
    for d in var("PATH").unwrap_or_default().split(':') {
        if let Some(prefix) = d
            .strip_suffix("/bin")
            .filter(|p| p.starts_with('/') && !p.is_empty())
        {
            prefixes.push(PathBuf::from(prefix));
        }
    }
    for top in ["/opt", "/app", "/workspace", "/root"] {
        for name in list(root, Path::new(top), notes) {
            let dir = Path::new(top).join(&name);
            for venv in [dir.join(".venv"), dir.join("venv"), dir.clone()] {
                prefixes.push(venv);
            }
        }
    }
    let mut out = vec![PathBuf::from("/usr/lib/python3/dist-packages")];
    for d in var("PYTHONPATH").unwrap_or_default().split(':') {
        if d.starts_with('/') {
            out.push(PathBuf::from(d));
        }
    }
    let mut seen = std::collections::HashSet::new();
    prefixes.retain(|p| seen.insert(p.clone()));
    for prefix in prefixes {
        let lib = prefix.join("lib");
        for py in list(root, &lib, notes)
            .into_iter()
            .filter(|n| n.starts_with("python3"))
        {
            for sub in ["site-packages", "dist-packages"] {
                out.push(lib.join(&py).join(sub));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| rootfs::resolve(root, p).is_ok_and(|h| h.is_dir() && seen.insert(h)));
    out
}

/// `nvidia_cuda_runtime_cu12-12.4.127.dist-info` and `nvidia_cuda_runtime-13.0.96.dist-info`.
fn runtime_wheel_version(entry: &str) -> Option<Version> {
    let stem = entry.strip_suffix(".dist-info")?;
    let (name, ver) = stem.rsplit_once('-')?;
    (name == "nvidia_cuda_runtime" || name.starts_with("nvidia_cuda_runtime_cu")).then_some(())?;
    Version::parse(ver)
}

fn find_runtimes(
    root: &Path,
    dirs: &[PathBuf],
    wheels: &[Version],
    notes: &mut Vec<String>,
) -> Vec<CudaRuntime> {
    let mut out: Vec<CudaRuntime> = Vec::new();
    // Sets, not linear scans: a hostile image with thousands of libcudart names per directory
    // made this quadratic (seconds per start; tests/it/hostile.rs, 200,000 files).
    let mut seen_hosts: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut seen_runtimes: std::collections::HashSet<(PathBuf, [u64; 8])> =
        std::collections::HashSet::new();
    for dir in dirs {
        // libcudart.so.12.4.127, libcudart.so.12, torch's libcudart-<hash>.so.11.0; the fullest
        // version first, so a link (.so.12) and its target (.so.12.4.127) count as the target.
        let mut names: Vec<(String, String, Version)> = list(root, dir, notes)
            .into_iter()
            .filter(|n| n.starts_with("libcudart"))
            .filter_map(|n| {
                let ver = cudart_soname_version(n.split_once(".so.")?.1).to_string();
                let v = Version::parse(&ver)?;
                Some((n, ver, v))
            })
            .collect();
        names.sort_by_key(|(_, ver, _)| std::cmp::Reverse(ver.matches('.').count()));
        for (name, ver, v) in names {
            let ver = ver.as_str();
            let path = dir.join(&name);
            let Ok(host) = rootfs::resolve(root, &path) else {
                continue;
            };
            if seen_hosts.contains(&host) || !host.is_file() {
                continue;
            }
            seen_hosts.insert(host);
            let (version, exact) = if ver.contains('.') {
                (v, true)
            } else {
                match wheels.iter().filter(|w| w.major() == v.major()).max() {
                    Some(w) => (w.clone(), true),
                    None => (v, false),
                }
            };
            // The same runtime under several names (libcudart.so.12 → .so.12.4.127) counts once.
            // Versions compare with missing components as 0 (12.4 == 12.4.0), as the key does.
            let key: [u64; 8] = std::array::from_fn(|i| version.part(i));
            if seen_runtimes.insert((dir.clone(), key)) {
                out.push(CudaRuntime {
                    path,
                    version,
                    exact,
                });
            }
        }
    }
    out
}

/// The version a libcudart file name's suffix tells: every CUDA 11.x runtime has the soname
/// `libcudart.so.11.0` (NVIDIA's cu11 wheel ships only that name, for 11.8.89), so "11.0" names
/// the major alone; `12.4.127`, `12` and CUDA 10's `10.1` mean what they say.
pub fn cudart_soname_version(suffix: &str) -> &str {
    if suffix == "11.0" { "11" } else { suffix }
}

/// What `torch/version.py` says: `__version__ = '2.7.0+cu128'`, `cuda = '12.8'` (or
/// `cuda: Optional[str] = '12.8'`, `None` for CPU builds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionPy {
    pub version: Option<String>,
    pub cuda: Option<String>,
}

const MAX_VERSION_PY_BYTES: u64 = 64 << 10;

/// Read a framework's `version.py` (never imported: read as text). `None` if it is missing.
pub(crate) fn read_version_py(root: &Path, path: &Path) -> Option<VersionPy> {
    let bytes = read_image_file(root, path, MAX_VERSION_PY_BYTES).ok()?;
    Some(parse_version_py(&String::from_utf8_lossy(&bytes)))
}

pub fn parse_version_py(text: &str) -> VersionPy {
    let value = |line: &str, key: &str| -> Option<Option<String>> {
        let rest = line.strip_prefix(key)?;
        // `cuda = '12.8'`, `cuda: Optional[str] = '12.8'`, not `cuda_version = …`.
        if !(rest.starts_with(' ') || rest.starts_with('=') || rest.starts_with(':')) {
            return None;
        }
        let (_, v) = rest.split_once('=')?;
        let v = v.trim();
        if v == "None" {
            return Some(None);
        }
        let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &v[1..];
        Some(Some(inner[..inner.find(q)?].to_string()))
    };
    let mut out = VersionPy::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = value(line, "__version__") {
            out.version = v;
        } else if let Some(v) = value(line, "cuda") {
            out.cuda = v;
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum VersionJsonError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("no cuda.version string")]
    NoVersion,
    #[error("cuda.version {0:?} is not a version")]
    BadVersion(String),
}

// By hand, not `#[from]`: the text carries the cause (crate docs, "Errors").
impl From<serde_json::Error> for VersionJsonError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// `{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}, …}`
pub fn parse_version_json(bytes: &[u8]) -> Result<Version, VersionJsonError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let s = v
        .get("cuda")
        .and_then(|c| c.get("version"))
        .and_then(|s| s.as_str())
        .ok_or(VersionJsonError::NoVersion)?;
    Version::parse(s).ok_or_else(|| VersionJsonError::BadVersion(s.to_string()))
}

/// Names in an image directory (following links inside the rootfs), bounded and sorted; a
/// missing directory is simply empty.
pub(crate) fn list(root: &Path, dir: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let Ok(host) = rootfs::resolve(root, dir) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(&host) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        if out.len() >= MAX_DIR_ENTRIES {
            notes.push(format!(
                "{}: more than {MAX_DIR_ENTRIES} entries, rest not read",
                dir.display()
            ));
            break;
        }
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::library_loading::loader::tests::{build_cache, elf64};
    use std::os::unix::fs::symlink;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn environment_facts() {
        let f = gather_env(&env(&[
            "PATH=/bin",
            "CUDA_VERSION=12.4.1",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471",
            "NVIDIA_REQUIRE_ARCH=arch>=8.0",
            "NVIDIA_REQUIRE_ARCH=arch>=9.0",
            "NVIDIA_DISABLE_REQUIRE=true",
        ]));
        assert_eq!(f.cuda_version.as_deref(), Some("12.4.1"));
        assert_eq!(f.requires.len(), 2);
        assert_eq!(
            f.requires[0],
            Requirement {
                name: "NVIDIA_REQUIRE_ARCH".into(),
                value: "arch>=9.0".into()
            }
        );
        assert!(f.require_disabled());
        assert!(!gather_env(&env(&["NVIDIA_DISABLE_REQUIRE=no"])).require_disabled());
        assert!(!gather_env(&env(&[])).require_disabled());
    }

    /// An nvidia/cuda-like 13.0 image with the compat package, a PyTorch wheel set, and bad input.
    #[test]
    fn rootfs_facts() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        elf64(&r.join("usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13.0.96"));
        symlink(
            "libcudart.so.13.0.96",
            r.join("usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13"),
        )
        .unwrap();
        symlink(
            "targets/x86_64-linux/lib",
            r.join("usr/local/cuda-13.0/lib64"),
        )
        .unwrap();
        symlink("cuda-13.0", r.join("usr/local/cuda")).unwrap();
        std::fs::write(
            r.join("usr/local/cuda-13.0/version.json"),
            r#"{"cuda":{"name":"CUDA SDK","version":"13.0.2"}}"#,
        )
        .unwrap();
        let compat = r.join("usr/local/cuda-13.0/compat");
        elf64(&compat.join("libcuda.so.580.95.05"));
        symlink("libcuda.so.580.95.05", compat.join("libcuda.so.1")).unwrap();
        std::fs::write(compat.join("libcuda.so.latest"), b"x").unwrap();
        let sp = r.join("usr/local/lib/python3.12/dist-packages");
        elf64(&sp.join("nvidia/cuda_runtime/lib/libcudart.so.12"));
        std::fs::create_dir_all(sp.join("nvidia_cuda_runtime_cu12-12.8.90.dist-info")).unwrap();
        elf64(&sp.join("torch/lib/libcudart-9335f6a2.so.11.0"));
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.cache"),
            build_cache(&[(
                0x0303,
                "libcuda.so.1",
                "/usr/local/cuda/compat/libcuda.so.1",
            )]),
        )
        .unwrap();

        let f = gather_rootfs(
            r,
            &env(&[
                "CUDA_VERSION=13.0.2",
                "LD_LIBRARY_PATH=/usr/local/nvidia/lib64",
            ]),
        );
        assert!(f.rootfs_read);
        let mut got: Vec<(String, bool)> = f
            .runtimes
            .iter()
            .map(|r| (r.version.to_string(), r.exact))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                // torch's bundled libcudart-<hash>.so.11.0: the soname of every 11.x, major only.
                ("11".to_string(), false),
                ("12.8.90".into(), true),
                ("13.0.96".into(), true)
            ]
        );
        assert_eq!(f.toolkit_version, Some(Version::parse("13.0.2").unwrap()));
        // One compat lib (cuda and cuda-13.0 are the same directory) plus the non-version name.
        assert_eq!(f.compat_libs.len(), 2, "{:?}", f.compat_libs);
        assert!(f.compat_libs.iter().any(|c| c.version.is_none()));
        let used = f.compat_in_use.as_ref().unwrap();
        assert_eq!(used.version, Some(Version::parse("580.95.05").unwrap()));
        assert_eq!(
            f.libcuda.as_ref().unwrap().via,
            crate::facts::library_loading::loader::Source::LdSoCache
        );

        // The host driver injected into LD_LIBRARY_PATH wins: compat no longer in use.
        elf64(&r.join("usr/local/nvidia/lib64/libcuda.so.1"));
        let f = gather_rootfs(r, &env(&["LD_LIBRARY_PATH=/usr/local/nvidia/lib64"]));
        assert!(f.compat_in_use.is_none());

        // An unreadable version.json is recorded, not fatal.
        std::fs::write(r.join("usr/local/cuda-13.0/version.json"), b"{not json").unwrap();
        let f = gather_rootfs(r, &[]);
        assert!(f.toolkit_version.is_none());
        assert!(
            f.toolkit_version_error
                .as_deref()
                .unwrap()
                .contains("not JSON")
        );
    }

    #[test]
    fn version_json_errors() {
        assert!(matches!(
            parse_version_json(b"{}"),
            Err(VersionJsonError::NoVersion)
        ));
        assert!(matches!(
            parse_version_json(br#"{"cuda":{"version":"twelve"}}"#),
            Err(VersionJsonError::BadVersion(_))
        ));
        assert_eq!(
            parse_version_json(br#"{"cuda":{"version":"12.4.1"}}"#)
                .unwrap()
                .to_string(),
            "12.4.1"
        );
    }

    #[test]
    fn gather_from_a_bundle() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],
               "env":["CUDA_VERSION=12.8.1","NVIDIA_REQUIRE_CUDA=cuda>=12.8","LD_LIBRARY_PATH=/usr/local/nvidia/lib64"]}}"#,
        )
        .unwrap();
        let b = Bundle::load(d.path()).unwrap();
        // No rootfs yet: the environment facts still come through, with a note.
        let f = gather(&b);
        assert!(!f.rootfs_read);
        assert_eq!(f.requires[0].value, "cuda>=12.8");
        assert!(
            f.notes[0].contains("rootfs does not exist"),
            "{:?}",
            f.notes
        );
        elf64(&d.path().join("rootfs/usr/local/nvidia/lib64/libcuda.so.1"));
        elf64(
            &d.path()
                .join("rootfs/usr/local/cuda-12.8/lib64/libcudart.so.12.8.90"),
        );
        let f = gather(&b);
        assert!(f.rootfs_read);
        assert_eq!(f.runtimes[0].version.to_string(), "12.8.90");
        assert_eq!(
            f.libcuda.unwrap().via,
            crate::facts::library_loading::loader::Source::LdLibraryPath
        );
    }

    #[test]
    fn missing_rootfs_is_a_note() {
        let f = gather_rootfs(
            Path::new("/nonexistent/rootfs"),
            &env(&["CUDA_VERSION=12.0.0"]),
        );
        assert!(!f.rootfs_read);
        assert_eq!(f.cuda_version.as_deref(), Some("12.0.0"));
        assert_eq!(f.notes.len(), 1);
    }

    #[test]
    fn site_packages_of_venvs_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "opt/torch/.venv/lib/python3.12/site-packages",
            "srv/env/lib/python3.11/site-packages",
            "usr/local/lib/python3.10/dist-packages",
            "data/extra",
            "work/py/lib/python3.9/site-packages",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let got = |e: &[&str]| site_packages(root, &env(e), &mut Vec::new());
        let plain = got(&[]);
        assert!(
            plain.contains(&PathBuf::from(
                "/opt/torch/.venv/lib/python3.12/site-packages"
            )),
            "{plain:?}"
        );
        assert!(plain.contains(&PathBuf::from("/usr/local/lib/python3.10/dist-packages")));
        assert!(
            !plain
                .iter()
                .any(|p| p.starts_with("/srv") || p.starts_with("/work")),
            "{plain:?}"
        );
        let with_env = got(&[
            "PATH=/srv/env/bin:/usr/bin",
            "PYTHONPATH=/data/extra:rel",
            "VIRTUAL_ENV=/work/py",
        ]);
        for want in [
            "/srv/env/lib/python3.11/site-packages",
            "/data/extra",
            "/work/py/lib/python3.9/site-packages",
        ] {
            assert!(
                with_env.contains(&PathBuf::from(want)),
                "{want}: {with_env:?}"
            );
        }
        // Each directory once, only existing ones.
        let mut uniq = with_env.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), with_env.len());
        assert!(!with_env.contains(&PathBuf::from("/usr/lib/python3/dist-packages")));
    }
}
