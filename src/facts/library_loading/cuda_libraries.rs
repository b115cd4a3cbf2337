//! Image load facts: what the container's dynamic loader will do with the image's CUDA-using
//! libraries, found without running anything from the image.
//!
//! Start from every ELF the binary walk found that uses CUDA (GPU code, or a `DT_NEEDED` CUDA
//! library; [`crate::facts::gpu_code::binaries`]). For each, resolve its CUDA `DT_NEEDED` names the way
//! glibc does ([`Loader::resolve_needed`]: `DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH` with
//! `$ORIGIN`, the image's cache, the default directories), follow the CUDA libraries found to
//! their own dependencies, and compare the `GLIBC_*`/`GLIBCXX_*`/`CXXABI_*`/`GCC_*` versions
//! each requires (`DT_VERNEED`) with what the library it resolves to defines (`DT_VERDEF`).
//! The `libcudart` each object resolves to is the runtime the workload really loads.
//!
//! Every file is opened through [`crate::facts::image::rootfs`] (links re-rooted, loops cut, regular
//! files only), each file is read once per gather, and the number of objects is bounded.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::facts::gpu_code::binaries::{BinaryFacts, LinkedFile};
use crate::facts::image::rootfs;
use crate::facts::library_loading::loader::{Loader, Resolved, Source, expand_origin};
use crate::facts::versions::image_cuda::{ImageFacts, read_version_py};
use crate::formats::elf_dynamic::{self, Dynamic};
use crate::knowledge::cuda::Version;
use crate::knowledge::{LibraryKind, cuda_library};

/// Objects followed in one gather: a PyTorch image has a few hundred.
const MAX_OBJECTS: usize = 20_000;
/// Consumers named per finding; the count is exact.
const MAX_NAMED: usize = 5;
/// Symbol-version families the loader checks that images get wrong.
const CHECKED_VERSIONS: &[&str] = &["GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_"];

/// A CUDA library that resolves nowhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingLibrary {
    /// As `DT_NEEDED` names it (`libcudart.so.12`).
    pub library: String,
    /// Objects that need it (first few), as the container sees them.
    pub needed_by: Vec<PathBuf>,
    pub needed_by_count: usize,
    /// Where the loader looks, for the first object that needs it.
    pub searched: Vec<String>,
    /// Files of that name elsewhere in the image, off the loader's path.
    pub elsewhere: Vec<PathBuf>,
    /// The CUDA major the needing objects are built for, where known (for the wheel to name).
    pub cuda_major: Option<u64>,
    /// Whether a framework's own library needs it (its import fails).
    pub framework: Option<String>,
    /// Found, but the loader stops at that file with an error (`invalid ELF header`, `file too
    /// short`): the file as the container sees it, and the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unloadable: Option<(PathBuf, String)>,
}

/// A symbol version an object requires that the library it resolves to does not define.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingVersion {
    pub version: String,
    /// The library as `DT_NEEDED` names it (`libstdc++.so.6`).
    pub library: String,
    /// The file the loader opens for it, as the container sees it.
    pub provider: PathBuf,
    pub required_by: PathBuf,
    /// Other copies of that library in the image that define the version.
    pub defined_elsewhere: Vec<PathBuf>,
    /// Copies that define it but would not load themselves, and why.
    pub unusable_elsewhere: Vec<String>,
    pub framework: Option<String>,
}

/// A CUDA runtime some object of the image loads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInUse {
    /// The file the loader ends at, as the container sees it.
    pub path: PathBuf,
    pub version: Option<Version>,
    /// False when only the major is known (from the soname).
    pub exact: bool,
    pub via: Source,
    pub loaded_by: Vec<PathBuf>,
    pub loaded_by_count: usize,
    /// Top-level Python packages whose libraries load it (`torch`, `cupy`).
    pub packages: Vec<String>,
}

/// A framework found in the image and the runtime it will load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Framework {
    pub name: String,
    pub version: Option<String>,
    /// The CUDA it was built with (`torch/version.py`'s `cuda`).
    pub built_for_cuda: Option<Version>,
    pub path: PathBuf,
    /// The runtime its core library resolves to, if it loads one.
    pub runtime: Option<PathBuf>,
    pub runtime_version: Option<Version>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadFacts {
    /// CUDA-using objects the walk found.
    pub consumers: usize,
    /// Objects whose dependencies were resolved (consumers and the CUDA libraries they load).
    pub objects: usize,
    pub missing: Vec<MissingLibrary>,
    pub missing_versions: Vec<MissingVersion>,
    pub runtimes_in_use: Vec<RuntimeInUse>,
    pub frameworks: Vec<Framework>,
    /// `/usr/local/cuda/bin/nvcc`, when the image has a compiler (PyTorch builds extensions with
    /// the toolkit under `CUDA_HOME`, `/usr/local/cuda` by default).
    pub nvcc: Option<PathBuf>,
    /// Whether the walk left libraries out (its own finding says which).
    pub walk_incomplete: bool,
    pub notes: Vec<String>,
    pub elapsed_ms: f64,
}

/// A framework's core library: its import loads it, so what it cannot load fails the import.
/// `(package, library file name prefix)`.
const FRAMEWORK_CORE: &[(&str, &str)] = &[
    ("torch", "libtorch_cuda"),
    ("torch", "libc10_cuda"),
    ("tensorflow", "libtensorflow_framework"),
    ("jax", "xla_cuda_plugin"),
    ("jaxlib", "xla_cuda_plugin"),
];

/// The top-level package of a path under a `site-packages`/`dist-packages` directory.
fn package_of(path: &Path) -> Option<String> {
    let mut comps = path.components().map(|c| c.as_os_str().to_string_lossy());
    comps.find(|c| c == "site-packages" || c == "dist-packages")?;
    let pkg = comps.next()?;
    // An extension module at the top (`foo.cpython-311-x86_64-linux-gnu.so`) names itself.
    Some(pkg.split('.').next().unwrap_or(&pkg).to_string())
}

fn framework_of(path: &Path) -> Option<String> {
    let pkg = package_of(path)?;
    let name = path.file_name()?.to_str()?;
    FRAMEWORK_CORE
        .iter()
        .find(|(p, lib)| pkg.starts_with(p) && name.starts_with(lib))
        .map(|(p, _)| p.to_string())
}

/// One object to link: as the container sees it, its dynamic section, and the `DT_RPATH`
/// directories of the objects that load it up to the executable (glibc searches them, in that
/// order, for an object without `DT_RUNPATH`).
struct Node {
    path: PathBuf,
    dynamic: Dynamic,
    chain: Vec<PathBuf>,
    /// The framework whose core library this object was loaded for, if any.
    framework: Option<String>,
}

impl Node {
    /// The `chain` of the objects this one loads: its own `DT_RPATH` first.
    fn chain_for_children(&self) -> Vec<PathBuf> {
        let origin = self.path.parent().unwrap_or(Path::new("/"));
        // glibc ignores an object's DT_RPATH when it has DT_RUNPATH, for its children too.
        let own: &[String] = if self.dynamic.runpath.is_empty() {
            &self.dynamic.rpath
        } else {
            &[]
        };
        let mut out: Vec<PathBuf> = own
            .iter()
            .filter_map(|e| expand_origin(e, origin))
            .collect();
        out.extend(self.chain.iter().cloned());
        out.dedup();
        out
    }
}

/// Gather the load facts of `root` (the rootfs as the container sees it). `binaries` is the
/// walk over the same root; `image` supplies the runtime versions read from wheel metadata.
pub fn gather(
    root: &Path,
    env: &[String],
    executable: Option<&str>,
    binaries: &BinaryFacts,
    image: &ImageFacts,
) -> LoadFacts {
    let started = Instant::now();
    let mut f = LoadFacts {
        consumers: binaries.linked.len(),
        walk_incomplete: binaries.incomplete(),
        ..LoadFacts::default()
    };
    let loader = Loader::from_image(root, crate::input::bundle::env_var(env, "LD_LIBRARY_PATH"));
    let bytes = Cell::new(0u64);
    let mut g = Gather {
        root,
        loader: &loader,
        bytes: &bytes,
        dynamics: HashMap::new(),
        resolved: HashMap::new(),
        exe_rpaths: HashMap::new(),
        kept: 0,
        over_budget: 0,
    };
    let args0 = executable.and_then(|e| executable_path(root, e, env));
    // Every file of a library name the walk saw, for "found elsewhere" in a miss.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut queue: VecDeque<Node> = VecDeque::new();
    for LinkedFile { path, .. } in &binaries.linked {
        if let Ok(h) = rootfs::resolve(root, path)
            && seen.insert(h.clone())
        {
            // The walk read only DT_NEEDED; the search paths and version tables now.
            let Some(dynamic) = g.dynamic(&found_at(path, h)) else {
                continue;
            };
            // The executable: the Python of the prefix a module is installed in (conda's has
            // DT_RPATH $ORIGIN/../lib), else the container's `process.args[0]`.
            let exe = python_of(path).or_else(|| args0.clone());
            queue.push_back(Node {
                path: path.clone(),
                dynamic,
                chain: exe.map(|e| g.exe_rpath(&e)).unwrap_or_default(),
                framework: framework_of(path),
            });
        }
    }
    // Version providers (libstdc++, libc) whose own needs were checked, by host path.
    let mut providers_checked: HashSet<PathBuf> = HashSet::new();
    let mut missing: BTreeMap<String, MissingLibrary> = BTreeMap::new();
    let mut runtimes: BTreeMap<PathBuf, (RuntimeInUse, PathBuf)> = BTreeMap::new();
    // consumer path → the libcudart it resolves to (host path).
    let mut cudart_of: HashMap<PathBuf, PathBuf> = HashMap::new();
    while let Some(node) = queue.pop_front() {
        f.objects += 1;
        if f.objects > MAX_OBJECTS {
            f.notes.push(format!(
                "more than {MAX_OBJECTS} objects to link; the rest were not followed"
            ));
            break;
        }
        let origin = node.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let cuda_major = node_cuda_major(&node);
        for name in &node.dynamic.needed {
            // `$ORIGIN/libcudart.so.12` or an absolute path: the file name says which library.
            let base = name.rsplit('/').next().unwrap_or(name);
            let Some(lib) = cuda_library(base) else {
                continue;
            };
            if lib.kind == LibraryKind::Driver {
                // Mounted from the host at start; the device and probe rules judge it.
                continue;
            }
            let (r, searched) = g.resolve(name, &origin, &node.dynamic, &node.chain);
            let bad = r
                .as_ref()
                .and_then(|r| Some((r.path_in_image.clone(), r.unloadable.clone()?)));
            let r = r.filter(|r| r.unloadable.is_none());
            let Some(r) = r else {
                let m = missing
                    .entry(name.clone())
                    .or_insert_with(|| MissingLibrary {
                        library: name.clone(),
                        needed_by: Vec::new(),
                        needed_by_count: 0,
                        searched,
                        elsewhere: Vec::new(),
                        cuda_major,
                        framework: None,
                        unloadable: None,
                    });
                m.unloadable = m.unloadable.clone().or(bad);
                m.needed_by_count += 1;
                if m.needed_by.len() < MAX_NAMED {
                    m.needed_by.push(node.path.clone());
                }
                m.cuda_major = m.cuda_major.or(cuda_major);
                m.framework = m.framework.clone().or_else(|| node.framework.clone());
                continue;
            };
            if lib.kind == LibraryKind::Runtime {
                cudart_of.insert(node.path.clone(), r.host_path.clone());
                let entry = runtimes.entry(r.host_path.clone()).or_insert_with(|| {
                    let (version, exact) = runtime_version(root, &r, image);
                    (
                        RuntimeInUse {
                            path: r.real_path_in_image.clone(),
                            version,
                            exact,
                            via: r.via,
                            loaded_by: Vec::new(),
                            loaded_by_count: 0,
                            packages: Vec::new(),
                        },
                        r.host_path.clone(),
                    )
                });
                entry.0.loaded_by_count += 1;
                if entry.0.loaded_by.len() < MAX_NAMED {
                    entry.0.loaded_by.push(node.path.clone());
                }
                if let Some(p) = package_of(&node.path)
                    && !entry.0.packages.contains(&p)
                {
                    entry.0.packages.push(p);
                }
            }
            if seen.insert(r.host_path.clone())
                && let Some(d) = g.dynamic(&r)
            {
                queue.push_back(Node {
                    path: r.path_in_image.clone(),
                    dynamic: d,
                    chain: node.chain_for_children(),
                    framework: node.framework.clone(),
                });
            }
        }
        check_versions(
            &mut g,
            &node,
            &mut f.missing_versions,
            &mut providers_checked,
        );
    }

    // Misses: copies of the same name elsewhere in the image (another site-packages that
    // Python's own preloading may find), and the same for versions.
    let all_files: Vec<&PathBuf> = binaries.library_names.iter().collect();
    for m in missing.values_mut() {
        m.elsewhere = all_files
            .iter()
            .filter(|p| named(p, &m.library))
            .take(MAX_NAMED)
            .map(|p| (*p).clone())
            .collect();
    }
    for mv in &mut f.missing_versions {
        let copies: Vec<PathBuf> = all_files
            .iter()
            .filter(|p| named(p, &mv.library) && **p != &mv.provider)
            .map(|p| (*p).clone())
            .collect();
        for c in copies.into_iter().take(MAX_NAMED) {
            let Ok(host) = rootfs::resolve(root, &c) else {
                continue;
            };
            let r = found_at(&c, host);
            if g.verdefs_of(&r).is_some_and(|d| d.contains(&mv.version)) {
                // A copy that would not load itself (built for a newer glibc) is no cure.
                let node = g.dynamic(&r).map(|d| Node {
                    path: c.clone(),
                    dynamic: d,
                    chain: Vec::new(),
                    framework: None,
                });
                let mut own = Vec::new();
                if let Some(n) = node {
                    check_versions(&mut g, &n, &mut own, &mut HashSet::new());
                }
                match own.first() {
                    None => mv.defined_elsewhere.push(c),
                    Some(o) => mv.unusable_elsewhere.push(format!(
                        "{} (itself needs {} of {}, which {} does not define)",
                        c.display(),
                        o.version,
                        o.library,
                        o.provider.display()
                    )),
                }
            }
        }
    }
    if g.over_budget > 0 {
        // Not followed is not judged: a miss is then never certain (no block from it).
        f.walk_incomplete = true;
        f.notes.push(format!(
            "{} libraries not read: {} MiB of dynamic sections already kept",
            g.over_budget,
            MAX_KEPT_BYTES >> 20
        ));
    }
    f.missing = missing.into_values().collect();
    f.frameworks = frameworks(root, &image.site_packages, &cudart_of, &runtimes);
    f.runtimes_in_use = runtimes.into_values().map(|(r, _)| r).collect();
    f.nvcc = rootfs::lstat(root, Path::new("/usr/local/cuda/bin/nvcc"))
        .is_ok()
        .then(|| PathBuf::from("/usr/local/cuda/bin/nvcc"));
    f.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    f
}

/// A file the walk named, as a resolved library (its image path, where it is on this host).
fn found_at(path: &Path, host: PathBuf) -> Resolved {
    Resolved {
        path_in_image: path.to_path_buf(),
        real_path_in_image: path.to_path_buf(),
        host_path: host,
        via: Source::Path,
        unloadable: None,
    }
}

/// Check `node`'s symbol-version requirements against the libraries they resolve to, and (once
/// each) those libraries' own: a newer libstdc++ on the path that needs a newer glibc than the
/// image's fails the load just the same.
fn check_versions(
    g: &mut Gather,
    node: &Node,
    out: &mut Vec<MissingVersion>,
    providers_checked: &mut HashSet<PathBuf>,
) {
    let origin = node.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    for need in &node.dynamic.verneed {
        let wanted: Vec<&str> = need
            .versions
            .iter()
            .filter(|(v, weak)| !weak && CHECKED_VERSIONS.iter().any(|p| v.starts_with(p)))
            .map(|(v, _)| v.as_str())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let (Some(r), _) = g.resolve(&need.file, &origin, &node.dynamic, &node.chain) else {
            continue; // not found at all: the loader's own "cannot open" comes first
        };
        if r.unloadable.is_some() {
            continue; // the loader stops at that file before any version check
        }
        let Some(defs) = g.verdefs_of(&r) else {
            continue;
        };
        for v in wanted {
            if defs.iter().any(|d| d == v) {
                continue;
            }
            out.push(MissingVersion {
                version: v.to_string(),
                library: need.file.clone(),
                provider: r.path_in_image.clone(),
                required_by: node.path.clone(),
                defined_elsewhere: Vec::new(),
                unusable_elsewhere: Vec::new(),
                framework: node.framework.clone(),
            });
        }
        if providers_checked.insert(r.host_path.clone())
            && let Some(d) = g.dynamic(&r)
        {
            let provider = Node {
                path: r.path_in_image.clone(),
                dynamic: d,
                chain: node.chain_for_children(),
                framework: node.framework.clone(),
            };
            check_versions(g, &provider, out, providers_checked);
        }
    }
}

/// The Python interpreter of the prefix a module is installed under:
/// `<prefix>/lib/python3.N/site-packages/…` → `<prefix>/bin/python3.N`.
fn python_of(path: &Path) -> Option<PathBuf> {
    let comps: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect();
    let i = comps
        .iter()
        .position(|c| *c == "site-packages" || *c == "dist-packages")?;
    let py = comps.get(i.checked_sub(1)?)?;
    if !py.starts_with("python3") || comps.get(i.checked_sub(2)?) != Some(&"lib") {
        return None;
    }
    let prefix: PathBuf = comps[..i - 2].iter().collect();
    Some(prefix.join("bin").join(py))
}

/// The container's `process.args[0]` as the runtime executes it: absolute, or looked up in the
/// spec's `PATH` inside the rootfs.
fn executable_path(root: &Path, args0: &str, env: &[String]) -> Option<PathBuf> {
    if args0.starts_with('/') {
        return Some(PathBuf::from(args0));
    }
    if args0.contains('/') {
        return None; // relative to the working directory
    }
    let path = crate::input::bundle::env_var(env, "PATH").unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(args0))
        .find(|p| rootfs::open_regular(root, p).is_ok())
}

/// Whether `path` is a file of library `name`: the name itself, or its fuller version
/// (`libstdc++.so.6.0.33`, `libcudart.so.12.4.127`). The walk names a library by its real file
/// when a link and its target share a directory, so the link's name alone finds no copy in
/// conda's or NVIDIA's layouts.
fn named(path: &Path, name: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == name || n.strip_prefix(name).is_some_and(|r| r.starts_with('.')))
}

/// The CUDA major an object is built for, from the sonames it needs (`libcudart.so.12`).
fn node_cuda_major(node: &Node) -> Option<u64> {
    node.dynamic.needed.iter().find_map(|n| {
        let lib = cuda_library(n)?;
        (lib.kind == LibraryKind::Runtime)
            .then(|| n.split_once(".so.")?.1.split('.').next()?.parse().ok())
            .flatten()
    })
}

/// The runtime's version: from its file name (`libcudart.so.12.4.127`), else from the image's
/// runtime facts (wheel metadata) for the same file, else the soname's major.
fn runtime_version(root: &Path, r: &Resolved, image: &ImageFacts) -> (Option<Version>, bool) {
    let name = r
        .real_path_in_image
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let ver = crate::facts::versions::image_cuda::cudart_soname_version(
        name.split_once(".so.").map(|x| x.1).unwrap_or(""),
    );
    if ver.contains('.')
        && let Some(v) = Version::parse(ver)
    {
        return (Some(v), true);
    }
    for rt in &image.runtimes {
        if rootfs::resolve(root, &rt.path).ok().as_ref() == Some(&r.host_path) {
            return (Some(rt.version.clone()), rt.exact);
        }
    }
    (Version::parse(ver), false)
}

fn frameworks(
    root: &Path,
    site_packages: &[PathBuf],
    cudart_of: &HashMap<PathBuf, PathBuf>,
    runtimes: &BTreeMap<PathBuf, (RuntimeInUse, PathBuf)>,
) -> Vec<Framework> {
    let mut out = Vec::new();
    for sp in site_packages {
        let torch = sp.join("torch");
        let Some(vp) = read_version_py(root, &torch.join("version.py")) else {
            continue;
        };
        // The runtime libtorch_cuda.so resolves to (CUDA builds); CPU builds have none.
        let core = cudart_of
            .iter()
            .find(|(p, _)| p.starts_with(&torch) && framework_of(p).as_deref() == Some("torch"))
            .and_then(|(_, host)| runtimes.get(host));
        out.push(Framework {
            name: "torch".to_string(),
            version: vp.version,
            built_for_cuda: vp.cuda.as_deref().and_then(Version::parse),
            path: torch,
            runtime: core.map(|(r, _)| r.path.clone()),
            runtime_version: core.and_then(|(r, _)| r.version.clone()),
        });
    }
    out
}

/// (name, origin, rpath, runpath, nodeflib, loader chain's rpath).
type ResolveKey = (
    String,
    PathBuf,
    Vec<String>,
    Vec<String>,
    bool,
    Vec<PathBuf>,
);

/// Reads and resolutions of one gather, each done once.
struct Gather<'a> {
    root: &'a Path,
    loader: &'a Loader,
    bytes: &'a Cell<u64>,
    /// Host path → its dynamic section (`None`: unreadable).
    dynamics: HashMap<PathBuf, Option<Dynamic>>,
    /// (name, origin, rpath, runpath, nodeflib) → result: every library of torch/lib shares one
    /// RUNPATH and directory.
    resolved: HashMap<ResolveKey, (Option<Resolved>, Vec<String>)>,
    /// Executable (as the container sees it) → its expanded `DT_RPATH`.
    exe_rpaths: HashMap<PathBuf, Vec<PathBuf>>,
    /// Bytes of dynamic sections kept in `dynamics`, against [`MAX_KEPT_BYTES`]; files not kept
    /// because of it are counted in `over_budget`.
    kept: u64,
    over_budget: usize,
}

/// What the load facts may keep of dynamic sections: each file is bounded by
/// [`elf_dynamic::MAX_KEPT_PER_FILE`], and this bounds their sum (issue 22).
pub const MAX_KEPT_BYTES: u64 = 32 << 20;

impl Gather<'_> {
    fn resolve(
        &mut self,
        name: &str,
        origin: &Path,
        d: &Dynamic,
        chain: &[PathBuf],
    ) -> (Option<Resolved>, Vec<String>) {
        let key = (
            name.to_string(),
            origin.to_path_buf(),
            d.rpath.clone(),
            d.runpath.clone(),
            d.nodeflib,
            chain.to_vec(),
        );
        if let Some(r) = self.resolved.get(&key) {
            return r.clone();
        }
        let r = self
            .loader
            .resolve_needed(name, origin, &d.rpath, &d.runpath, d.nodeflib, chain);
        self.resolved.insert(key, r.clone());
        r
    }

    /// The dynamic section of a resolved library; `None` if it cannot be read (the loader would
    /// fail on it too, and that is not what these facts judge).
    /// Each file is read once per gather: consumers, the libraries they load and the version
    /// providers (libc, libstdc++) are often the same files.
    fn dynamic(&mut self, r: &Resolved) -> Option<Dynamic> {
        if let Some(d) = self.dynamics.get(&r.host_path) {
            return d.clone();
        }
        if self.kept >= MAX_KEPT_BYTES {
            self.over_budget += 1;
            return None;
        }
        let d = rootfs::open_regular(self.root, &r.real_path_in_image)
            .ok()
            .and_then(|(file, meta)| elf_dynamic::read(&file, meta.len(), self.bytes).ok())
            .flatten();
        self.kept += d.as_ref().map_or(0, |d| d.kept_bytes()) + 64;
        self.dynamics.insert(r.host_path.clone(), d.clone());
        d
    }

    /// The executable's `DT_RPATH` directories (none where it has `DT_RUNPATH`, is missing, or is
    /// not a dynamic ELF).
    fn exe_rpath(&mut self, exe: &Path) -> Vec<PathBuf> {
        if let Some(v) = self.exe_rpaths.get(exe) {
            return v.clone();
        }
        let dirs = (|| {
            // The executable's $ORIGIN comes from /proc/self/exe, with links resolved (a venv's
            // bin/python3 → conda's); a library's is the path it was found at.
            let host = rootfs::resolve(self.root, exe).ok()?;
            let real = Path::new("/").join(host.strip_prefix(self.root).ok()?);
            let (file, meta) = rootfs::open_regular(self.root, &real).ok()?;
            let d = elf_dynamic::read(&file, meta.len(), self.bytes).ok()??;
            if !d.runpath.is_empty() {
                return None;
            }
            let origin = real.parent()?;
            Some(
                d.rpath
                    .iter()
                    .filter_map(|e| expand_origin(e, origin))
                    .collect::<Vec<_>>(),
            )
        })()
        .unwrap_or_default();
        self.exe_rpaths.insert(exe.to_path_buf(), dirs.clone());
        dirs
    }

    /// The versions a library defines; `None` where it has no `DT_VERDEF` or cannot be read.
    fn verdefs_of(&mut self, r: &Resolved) -> Option<Vec<String>> {
        self.dynamic(r).filter(|d| d.versioned).map(|d| d.verdef)
    }
}
