//! Image load facts: what the container's dynamic loader will do with the image's CUDA-using
//! libraries, found without running anything from the image.
//!
//! Start from every ELF the binary walk found that uses CUDA (GPU code, or a `DT_NEEDED` CUDA
//! library; [`crate::facts::binaries`]). For each, resolve its CUDA `DT_NEEDED` names the way
//! glibc does ([`Loader::resolve_needed`]: `DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH` with
//! `$ORIGIN`, the image's cache, the default directories), follow the CUDA libraries found to
//! their own dependencies, and compare the `GLIBC_*`/`GLIBCXX_*`/`CXXABI_*`/`GCC_*` versions
//! each requires (`DT_VERNEED`) with what the library it resolves to defines (`DT_VERDEF`).
//! The `libcudart` each object resolves to is the runtime the workload really loads.
//!
//! Every file is opened through [`crate::facts::rootfs`] (links re-rooted, loops cut, regular
//! files only), each file is read once per gather, and the number of objects is bounded.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::facts::binaries::{BinaryFacts, LinkedFile};
use crate::facts::elf_dynamic::{self, Dynamic};
use crate::facts::image::{ImageFacts, read_version_py};
use crate::facts::loader::{Loader, Resolved, Source};
use crate::facts::rootfs;
use crate::knowledge::cuda::Version;
use crate::knowledge::{LibraryKind, cuda_library};

/// Objects followed in one gather: a PyTorch image has a few hundred.
const MAX_OBJECTS: usize = 20_000;
/// Consumers named per finding; the count is exact.
const MAX_NAMED: usize = 5;
/// Symbol-version families the loader checks that images get wrong.
const CHECKED_VERSIONS: &[&str] = &["GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_"];

/// A CUDA library that resolves nowhere.
#[derive(Debug, Clone, Serialize)]
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
}

/// A symbol version an object requires that the library it resolves to does not define.
#[derive(Debug, Clone, Serialize)]
pub struct MissingVersion {
    pub version: String,
    /// The library as `DT_NEEDED` names it (`libstdc++.so.6`).
    pub library: String,
    /// The file the loader opens for it, as the container sees it.
    pub provider: PathBuf,
    pub required_by: PathBuf,
    /// Other copies of that library in the image that define the version.
    pub defined_elsewhere: Vec<PathBuf>,
    pub framework: Option<String>,
}

/// A CUDA runtime some object of the image loads.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
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

/// One object to link: as the container sees it, and its dynamic section.
struct Node {
    path: PathBuf,
    dynamic: Dynamic,
}

/// Gather the load facts of `root` (the rootfs as the container sees it). `binaries` is the
/// walk over the same root; `image` supplies the runtime versions read from wheel metadata.
pub fn gather(
    root: &Path,
    env: &[String],
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
        verdefs: HashMap::new(),
        resolved: HashMap::new(),
    };
    // Every file of a library name the walk saw, for "found elsewhere" in a miss.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut queue: VecDeque<Node> = VecDeque::new();
    for LinkedFile { path, dynamic } in &binaries.linked {
        if let Ok(h) = rootfs::resolve(root, path)
            && seen.insert(h)
        {
            queue.push_back(Node {
                path: path.clone(),
                dynamic: dynamic.clone(),
            });
        }
    }
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
            let Some(lib) = cuda_library(name) else {
                continue;
            };
            if lib.kind == LibraryKind::Driver {
                // Mounted from the host at start; the device and probe rules judge it.
                continue;
            }
            let (r, searched) = g.resolve(name, &origin, &node.dynamic);
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
                    });
                m.needed_by_count += 1;
                if m.needed_by.len() < MAX_NAMED {
                    m.needed_by.push(node.path.clone());
                }
                m.cuda_major = m.cuda_major.or(cuda_major);
                m.framework = m.framework.clone().or_else(|| framework_of(&node.path));
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
                });
            }
        }
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
            let (Some(r), _) = g.resolve(&need.file, &origin, &node.dynamic) else {
                continue; // not found at all: the loader's own "cannot open" comes first
            };
            let Some(defs) = g.verdefs_of(&r) else {
                continue;
            };
            for v in wanted {
                if defs.iter().any(|d| d == v) {
                    continue;
                }
                f.missing_versions.push(MissingVersion {
                    version: v.to_string(),
                    library: need.file.clone(),
                    provider: r.path_in_image.clone(),
                    required_by: node.path.clone(),
                    defined_elsewhere: Vec::new(),
                    framework: framework_of(&node.path),
                });
            }
        }
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
            let r = Resolved {
                path_in_image: c.clone(),
                real_path_in_image: c.clone(),
                host_path: host,
                via: Source::Path,
            };
            if g.verdefs_of(&r).is_some_and(|d| d.contains(&mv.version)) {
                mv.defined_elsewhere.push(c);
            }
        }
    }
    f.missing = missing.into_values().collect();
    f.frameworks = frameworks(root, &cudart_of, &runtimes);
    f.runtimes_in_use = runtimes.into_values().map(|(r, _)| r).collect();
    f.nvcc = rootfs::lstat(root, Path::new("/usr/local/cuda/bin/nvcc"))
        .is_ok()
        .then(|| PathBuf::from("/usr/local/cuda/bin/nvcc"));
    f.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    f
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
    let ver = crate::facts::image::cudart_soname_version(
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
    cudart_of: &HashMap<PathBuf, PathBuf>,
    runtimes: &BTreeMap<PathBuf, (RuntimeInUse, PathBuf)>,
) -> Vec<Framework> {
    let mut out = Vec::new();
    for sp in crate::facts::image::site_packages(root, &mut Vec::new()) {
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

/// (name, origin, rpath, runpath, nodeflib).
type ResolveKey = (String, PathBuf, Vec<String>, Vec<String>, bool);

/// Reads and resolutions of one gather, each done once.
struct Gather<'a> {
    root: &'a Path,
    loader: &'a Loader,
    bytes: &'a Cell<u64>,
    verdefs: HashMap<PathBuf, Option<Vec<String>>>,
    /// (name, origin, rpath, runpath, nodeflib) → result: every library of torch/lib shares one
    /// RUNPATH and directory.
    resolved: HashMap<ResolveKey, (Option<Resolved>, Vec<String>)>,
}

impl Gather<'_> {
    fn resolve(
        &mut self,
        name: &str,
        origin: &Path,
        d: &Dynamic,
    ) -> (Option<Resolved>, Vec<String>) {
        let key = (
            name.to_string(),
            origin.to_path_buf(),
            d.rpath.clone(),
            d.runpath.clone(),
            d.nodeflib,
        );
        if let Some(r) = self.resolved.get(&key) {
            return r.clone();
        }
        let r = self
            .loader
            .resolve_needed(name, origin, &d.rpath, &d.runpath, d.nodeflib);
        self.resolved.insert(key, r.clone());
        r
    }

    /// The dynamic section of a resolved library; `None` if it cannot be read (the loader would
    /// fail on it too, and that is not what these facts judge).
    fn dynamic(&self, r: &Resolved) -> Option<Dynamic> {
        let (file, meta) = rootfs::open_regular(self.root, &r.real_path_in_image).ok()?;
        elf_dynamic::read(&file, meta.len(), self.bytes)
            .ok()
            .flatten()
    }

    fn verdefs_of(&mut self, r: &Resolved) -> Option<&Vec<String>> {
        if !self.verdefs.contains_key(&r.host_path) {
            let defs = self.dynamic(r).map(|d| d.verdef);
            self.verdefs.insert(r.host_path.clone(), defs);
        }
        self.verdefs.get(&r.host_path).and_then(|d| d.as_ref())
    }
}
