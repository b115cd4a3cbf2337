//! The image's CUDA binaries: the libraries with GPU code that the container can load, found
//! inside its rootfs without ever leaving it, within a time, file-count and byte budget.
//!
//! Where: the directories the container's loader searches (`LD_LIBRARY_PATH` of the spec,
//! `ld.so.cache`/`ld.so.conf`, the defaults; [`crate::facts::library_loading::loader`]), `/usr/local/cuda*`
//! (`lib64`, `lib`, `targets/*/lib`), conda (`/opt/conda/lib`, `/opt/conda/envs/*/lib`), and
//! Python packages that ship GPU code (`torch`, `nvidia/*/lib`, CuPy, JAX, Triton, …) in every
//! `site-packages`. Package trees are walked recursively; the others are listed.
//!
//! How: a starting directory is resolved through [`crate::facts::image::rootfs`] (links re-rooted at
//! the rootfs, `..` clamped, loops cut), and below it links to directories are not followed,
//! so nothing outside the rootfs is listed; a link to a library is resolved the same confined
//! way. Only regular files are opened (`lstat` first, then `O_NOFOLLOW|O_NONBLOCK` and `fstat`
//! again), so a FIFO, device or socket is never opened. A candidate is rejected by its ELF
//! header and section table (three `pread`s) unless it has `.nv_fatbin`, `__nv_relfatbin` or
//! `.nvFatBinSegment`; only those are scanned, through the scan cache when it has them.
//!
//! What was not looked at (a budget ran out, a directory could not be listed, a library name
//! that is not a regular file or whose link leads nowhere) is recorded, never dropped silently:
//! the `kernels-scan-incomplete` finding reports it.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::facts::gpu_code::scan_cache::{self, ScanCache};
use crate::facts::image::rootfs;
use crate::facts::library_loading::loader::Loader;
use crate::formats::bytes::Endian;
use crate::formats::elf;
use crate::formats::elf_dynamic::{self, Dynamic};
use crate::formats::fatbin::{self, ScannedFile};

/// Package directories of `site-packages` that ship GPU code, by name prefix.
const GPU_PACKAGES: &[&str] = &[
    "torch",
    "nvidia",
    "cupy",
    "jax",
    "triton",
    "vllm",
    "flash_attn",
    "xformers",
    "tensorrt",
    "tensorflow",
    "onnxruntime",
    "bitsandbytes",
    "transformer_engine",
    "deepspeed",
    "apex",
    "cudf",
    "cuml",
    "rmm",
    "sgl_kernel",
    "flashinfer",
];
/// Subdirectories of package trees that hold no loadable libraries but many files (torch's
/// `include` has ~10k headers).
const SKIP_DIRS: &[&str] = &[
    "__pycache__",
    "include",
    "tests",
    "test",
    "testing",
    "share",
];
/// Subdirectories of the loader's directories that are system plugin stores of their own and
/// never link CUDA: on a Debian host, gconv (253 modules), xtables (122), PAM's security (46) and
/// sasl2 (24) were most of what listing the plugin subdirectories added to a start.
const SKIP_PLUGIN_DIRS: &[&str] = &[
    "gconv",
    "xtables",
    "security",
    "sasl2",
    "perl",
    "perl5",
    "perl-base",
    "gstreamer-1.0",
    "gio",
    "gdk-pixbuf-2.0",
    "girepository-1.0",
    "gtk-3.0",
    "gtk-4.0",
    "qt5",
    "qt6",
    "jvm",
    "valgrind",
    "systemd",
];
/// Package trees are this deep at most (torch/lib is 2, triton/backends/nvidia/lib 4).
const MAX_DEPTH: usize = 8;
/// Packages not known to ship GPU code are walked this deep (their top and one level below, where
/// extension modules and bundled libraries sit: `pkg/_cuda/libpkg_cuda.so`): a large virtual
/// environment has thousands of directories of Python files (measured on the H100 host's: 3044
/// directories and 1510 libraries, 93 ms warm, when every package was walked to full depth).
const OTHER_PACKAGE_DEPTH: usize = 1;
/// Names in one directory; more is not a library directory we judge fully (recorded).
const MAX_DIR_ENTRIES: usize = 20_000;
/// Section tables and section name tables of real libraries are a few KB.
const MAX_SECTIONS: u64 = 1 << 16;
const MAX_SHSTRTAB: u64 = 1 << 20;
/// Examples kept per kind of skip; the counts are exact.
const MAX_EXAMPLES: usize = 5;
const FATBIN_SECTIONS: &[&[u8]] = &[b".nv_fatbin", b"__nv_relfatbin", b".nvFatBinSegment"];
const EM_CUDA: u16 = 190;

/// The walk's budgets and its cache. The budgets are config keys (`scan_budget_ms`,
/// `scan_max_files`, `scan_max_bytes`, `scan_cache_max_bytes`).
#[derive(Debug, Clone)]
pub struct WalkSettings {
    pub budget: Duration,
    /// Library files opened (header read), CUDA or not.
    pub max_files: usize,
    /// Bytes read from the image: headers, cache-key spans, fatbin headers of uncached files.
    pub max_bytes: u64,
    /// `<state_dir>/scan-cache`; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
    /// `<state_dir>/image-cache` ([`crate::facts::image::cache`]); `None`: no image facts cache.
    pub image_cache_dir: Option<PathBuf>,
    /// What scan cache keys are scoped to: the image's identity where the host knows one
    /// ([`crate::facts::image::identity`]); `None`: the file system's device number, stable for a
    /// plain directory rootfs (overlay gives every mount its own).
    pub cache_scope: Option<String>,
}

impl WalkSettings {
    pub fn from_config(c: &crate::config::Config) -> WalkSettings {
        WalkSettings {
            budget: Duration::from_millis(c.scan_budget_ms),
            max_files: c.scan_max_files,
            max_bytes: c.scan_max_bytes,
            cache_dir: Some(c.state_dir.join("scan-cache")),
            cache_max_bytes: c.scan_cache_max_bytes,
            image_cache_dir: Some(c.state_dir.join("image-cache")),
            cache_scope: None,
        }
    }
}

/// What the walk did; goes into the report and `check --json` as `binaries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalkStats {
    pub dirs_listed: usize,
    /// Library files whose ELF header was read.
    pub files_examined: usize,
    /// Of those, files with GPU code.
    pub cuda_files: usize,
    pub cache_hits: usize,
    pub cache_misses: usize,
    pub bytes_read: u64,
    pub elapsed_ms: f64,
    /// Why there was no cache, where there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<String>,
}

/// A kind of thing not scanned: how many, and a few of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Skipped {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Skipped {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BinaryFacts {
    /// Files with GPU code, paths as the container sees them.
    #[serde(skip)]
    pub files: Vec<ScannedFile>,
    /// Files that use CUDA (GPU code, or a CUDA library in `DT_NEEDED`) with their `DT_NEEDED`
    /// ([`elf_dynamic::read_needed`]), for the load facts ([`crate::facts::library_loading::cuda_libraries`]), which read
    /// the rest of their dynamic sections.
    #[serde(skip)]
    pub linked: Vec<LinkedFile>,
    /// Every ELF library the walk examined, as the container sees it.
    #[serde(skip)]
    pub library_names: Vec<PathBuf>,
    pub stats: WalkStats,
    /// The budget that stopped the walk, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Directories (and files) not reached because the walk stopped.
    pub not_walked: Skipped,
    /// Directories that could not be listed.
    pub unreadable_dirs: Skipped,
    /// Library names that are not regular files (FIFO, device, socket, directory).
    pub not_regular: Skipped,
    /// Library names whose link loops or leads nowhere inside the rootfs.
    pub unresolved_links: Skipped,
    /// Files whose ELF header or section table could not be read.
    pub unreadable_files: Skipped,
    /// Whether these facts (and the load facts and toolchains) came from the image facts cache
    /// ([`crate::facts::image::cache`]); set by the hook and `check`, not by the walk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_cache: Option<crate::facts::image::cache::Outcome>,
    /// On an image facts cache hit: `files`' inventories, still packed
    /// ([`crate::facts::image::cache::Packed`]); `files` is then empty. Read through
    /// [`crate::pipeline::run_rules`], which judges them or reads the stored judgement.
    #[serde(skip)]
    pub packed: Option<std::sync::Arc<crate::facts::image::cache::Packed>>,
}

impl BinaryFacts {
    /// Whether anything was left out.
    pub fn incomplete(&self) -> bool {
        self.stopped.is_some()
            || [
                &self.not_walked,
                &self.unreadable_dirs,
                &self.not_regular,
                &self.unresolved_links,
                &self.unreadable_files,
            ]
            .iter()
            .any(|s| s.count > 0)
    }
}

/// An ELF file that uses CUDA and what the loader reads of it.
#[derive(Debug, Clone)]
pub struct LinkedFile {
    pub path: PathBuf,
    pub dynamic: Dynamic,
}

/// A directory to list: as the container sees it, where it is here once resolved, and whether
/// to descend.
struct Dir {
    image: PathBuf,
    host: Option<PathBuf>,
    recursive: bool,
    /// List its subdirectories too, once and not deeper (a loader directory's plugin
    /// subdirectories: `hwloc/`, `gconv/`, whose modules are dlopened by path).
    subdirs: bool,
    depth: usize,
    /// How deep below its starting directory a recursive walk goes.
    max_depth: usize,
}

/// Find and scan the image's CUDA binaries under `root` (the bundle's rootfs, or
/// `/proc/<pid>/root/<rootfs>` at hook time). `env` is the spec's `process.env`.
/// `site_packages`: the image's Python package directories ([`crate::facts::versions::image_cuda::site_packages`]).
pub fn gather(
    root: &Path,
    env: &[String],
    site_packages: &[PathBuf],
    settings: &WalkSettings,
) -> BinaryFacts {
    let started = Instant::now();
    let mut w = Walk {
        root,
        settings,
        started,
        facts: BinaryFacts::default(),
        bytes: Cell::new(0),
        cache: None,
        seen_dirs: HashSet::new(),
        seen_files: HashSet::new(),
        kept: 0,
    };
    w.cache = settings
        .cache_dir
        .as_deref()
        .map(|dir| ScanCache::open(dir, settings.cache_max_bytes));
    let mut queue: VecDeque<Dir> = start_dirs(root, env, site_packages)
        .into_iter()
        .map(|s| Dir {
            image: s.dir,
            host: None,
            recursive: s.recursive,
            subdirs: s.subdirs,
            depth: 0,
            max_depth: s.max_depth,
        })
        .collect();
    while let Some(d) = queue.pop_front() {
        if let Some(why) = w.over_budget() {
            w.stop(why, &d.image, queue.len());
            break;
        }
        if !w.walk_dir(d, &mut queue) {
            break;
        }
    }
    if let Some(c) = &w.cache
        && c.written() > 0
        && let Err(e) = c.prune()
    {
        w.facts.stats.cache_error = Some(e.to_string());
    }
    w.facts.stats.bytes_read = w.bytes.get();
    w.facts.stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    w.facts
}

/// A starting directory of the walk, as the container sees it.
struct Start {
    dir: PathBuf,
    recursive: bool,
    subdirs: bool,
    max_depth: usize,
}

impl Start {
    fn list(dir: PathBuf) -> Start {
        Start {
            dir,
            recursive: false,
            subdirs: false,
            max_depth: 0,
        }
    }

    fn tree(dir: PathBuf, max_depth: usize) -> Start {
        Start {
            dir,
            recursive: true,
            subdirs: false,
            max_depth,
        }
    }
}

/// The starting directories, in the loader's order first.
fn start_dirs(root: &Path, env: &[String], site: &[PathBuf]) -> Vec<Start> {
    let ld_path = crate::input::bundle::env_var(env, "LD_LIBRARY_PATH");
    let mut out: Vec<Start> = Loader::from_image(root, ld_path)
        .search_dirs()
        .into_iter()
        .map(|(d, _)| Start {
            subdirs: true,
            ..Start::list(d)
        })
        .collect();
    let mut tail: Vec<Start> = Vec::new();
    for cuda in names(root, Path::new("/usr/local"))
        .into_iter()
        .filter(|n| n.starts_with("cuda"))
    {
        let d = Path::new("/usr/local").join(cuda);
        out.push(Start::list(d.join("lib64")));
        out.push(Start::list(d.join("lib")));
        for t in names(root, &d.join("targets")) {
            out.push(Start::list(d.join("targets").join(t).join("lib")));
        }
    }
    out.push(Start::list(PathBuf::from("/opt/conda/lib")));
    for env_name in names(root, Path::new("/opt/conda/envs")) {
        let lib = Path::new("/opt/conda/envs").join(env_name).join("lib");
        out.push(Start::list(lib));
    }
    for sp in site {
        let pkgs = names(root, sp);
        if pkgs.is_empty() {
            continue;
        }
        // Top level: extension modules such as flash_attn_2_cuda.*.so live there.
        out.push(Start::list(sp.clone()));
        for p in pkgs {
            if p == "torch" {
                // PyTorch keeps its GPU code in torch/lib (and extension modules at its top);
                // the rest of its tree is thousands of Python files and headers.
                out.push(Start::list(sp.join("torch")));
                out.push(Start::list(sp.join("torch/lib")));
            } else if p.ends_with("-info") || p.ends_with(".data") || p == "__pycache__" {
            } else if GPU_PACKAGES.iter().any(|g| p.starts_with(g)) {
                out.push(Start::tree(sp.join(p), MAX_DEPTH));
            } else {
                // Any package may link CUDA (a model library with its own kernels): walked
                // after the known ones, so the budgets cut these first.
                tail.push(Start::tree(sp.join(p), OTHER_PACKAGE_DEPTH));
            }
        }
    }
    out.extend(tail);
    out
}

/// Names in an image directory, sorted; empty where it is missing or unreadable (the walk
/// itself reports unreadable directories it was meant to list).
fn names(root: &Path, dir: &Path) -> Vec<String> {
    let Ok(host) = rootfs::resolve(root, dir) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(host) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .take(MAX_DIR_ENTRIES)
        .collect();
    out.sort();
    out
}

/// `libfoo.so`, `libfoo.so.12`, `_C.cpython-312-x86_64-linux-gnu.so`.
fn library_name(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

/// The driver's own libraries: the host's, injected at start (or baked into the image, which
/// `image-driver-library` judges). Their GPU code matches the driver, not the image's build.
fn driver_library(name: &str) -> bool {
    [
        "libcuda.so",
        "libnvidia-",
        "libnvcuvid.so",
        "libnvoptix.so",
        "libcudadebugger.so",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

struct Walk<'a> {
    root: &'a Path,
    settings: &'a WalkSettings,
    started: Instant,
    facts: BinaryFacts,
    bytes: Cell<u64>,
    cache: Option<ScanCache>,
    seen_dirs: HashSet<PathBuf>,
    /// (device, inode): within one walk the same file under two names is scanned once.
    seen_files: HashSet<(u64, u64)>,
    /// Bytes the walk keeps for the load facts (names, `DT_NEEDED`), against [`MAX_KEPT_BYTES`].
    kept: u64,
}

/// What the walk may keep in memory: the budgets above count bytes read, and a hostile image
/// reads little but makes much kept (issue 22). A real PyTorch image keeps under 1 MB.
pub const MAX_KEPT_BYTES: u64 = 32 << 20;

/// What the section table says about a candidate.
struct Headers {
    /// Cache key, where the file has fatbin sections.
    key: Option<String>,
}

impl Walk<'_> {
    fn over_budget(&self) -> Option<String> {
        let s = self.settings;
        if self.started.elapsed() >= s.budget {
            Some(format!(
                "time budget of {} ms (scan_budget_ms)",
                s.budget.as_millis()
            ))
        } else if self.facts.stats.files_examined >= s.max_files {
            Some(format!("file budget of {} (scan_max_files)", s.max_files))
        } else if self.bytes.get() >= s.max_bytes {
            Some(format!("byte budget of {} (scan_max_bytes)", s.max_bytes))
        } else if self.kept >= MAX_KEPT_BYTES {
            Some(format!(
                "memory budget of {} MiB of library names and DT_NEEDED kept",
                MAX_KEPT_BYTES >> 20
            ))
        } else {
            None
        }
    }

    fn stop(&mut self, why: String, at: &Path, queued: usize) {
        self.facts.stopped = Some(why);
        self.facts.not_walked.add(at.display().to_string());
        self.facts.not_walked.count += queued;
    }

    /// List one directory and examine its libraries; false once a budget stopped the walk.
    fn walk_dir(&mut self, d: Dir, queue: &mut VecDeque<Dir>) -> bool {
        let host = match d.host {
            Some(h) => h,
            None => match rootfs::resolve(self.root, &d.image) {
                Ok(h) => h,
                // Most starting directories do not exist in a given image: nothing to report.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(e) => {
                    self.facts
                        .unresolved_links
                        .add(format!("{}: {e}", d.image.display()));
                    return true;
                }
            },
        };
        if !self.seen_dirs.insert(host.clone()) {
            return true;
        }
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            // A starting "directory" that is a file or FIFO: not a directory to list.
            Ok(_) => return true,
            Err(_) => return true,
        }
        let rd = match std::fs::read_dir(&host) {
            Ok(rd) => rd,
            Err(e) => {
                self.facts
                    .unreadable_dirs
                    .add(format!("{}: {e}", d.image.display()));
                return true;
            }
        };
        self.facts.stats.dirs_listed += 1;
        let mut entries: Vec<(String, std::fs::FileType)> = Vec::new();
        for e in rd {
            let Ok(e) = e else {
                self.facts
                    .unreadable_dirs
                    .add(format!("{}: entry unreadable", d.image.display()));
                continue;
            };
            if entries.len() >= MAX_DIR_ENTRIES {
                self.facts.not_walked.add(format!(
                    "{}: entries beyond the first {MAX_DIR_ENTRIES}",
                    d.image.display()
                ));
                break;
            }
            let (Ok(name), Ok(ft)) = (e.file_name().into_string(), e.file_type()) else {
                continue;
            };
            // Package trees are mostly Python files: keep only what is looked at further.
            if (ft.is_dir() && (d.recursive || d.subdirs)) || library_name(&name) {
                entries.push((name, ft));
            }
        }
        // Files before links, so a library is named by its real name (`libcufft.so.11`, not
        // the `libcufft.so` link to it) when both are in one directory.
        entries.sort_by(|a, b| (a.1.is_symlink(), &a.0).cmp(&(b.1.is_symlink(), &b.0)));
        let total = entries.len();
        // Opened once per directory: the files below are stat'ed and opened relative to it, a
        // short lookup each instead of the whole path's.
        let mut dir_fd: Option<std::io::Result<File>> = None;
        for (i, (name, ft)) in entries.into_iter().enumerate() {
            let image = d.image.join(&name);
            if ft.is_dir() {
                if d.recursive && d.depth < d.max_depth && !SKIP_DIRS.contains(&name.as_str()) {
                    queue.push_back(Dir {
                        image,
                        host: Some(host.join(&name)),
                        recursive: true,
                        subdirs: false,
                        depth: d.depth + 1,
                        max_depth: d.max_depth,
                    });
                } else if d.subdirs && !d.recursive && !SKIP_PLUGIN_DIRS.contains(&name.as_str()) {
                    queue.push_back(Dir {
                        image,
                        host: Some(host.join(&name)),
                        recursive: false,
                        subdirs: false,
                        depth: d.depth + 1,
                        max_depth: 0,
                    });
                }
                continue;
            }
            if !library_name(&name) {
                continue;
            }
            if let Some(why) = self.over_budget() {
                self.stop(why, &image, queue.len());
                // The rest of this directory was not looked at either.
                self.facts.not_walked.count += total - i - 1;
                return false;
            }
            if ft.is_symlink() {
                self.linked_library(&image);
            } else {
                let fd = dir_fd.get_or_insert_with(|| {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&host)
                });
                match fd {
                    Ok(fd) => self.library_at(&image, fd, &name),
                    Err(e) => self
                        .facts
                        .unreadable_dirs
                        .add(format!("{}: {e}", d.image.display())),
                }
            }
        }
        true
    }

    /// A library name that is a link: resolved inside the rootfs (`/…` targets re-rooted,
    /// loops cut), then examined as the file it leads to.
    fn linked_library(&mut self, image: &Path) {
        let host = match rootfs::resolve(self.root, image) {
            Ok(h) => h,
            Err(e) => {
                if !driver_library(file_name(image)) {
                    self.facts
                        .unresolved_links
                        .add(format!("{}: {e}", image.display()));
                }
                return;
            }
        };
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) => {
                self.facts
                    .unreadable_files
                    .add(format!("{}: {e}", image.display()));
                return;
            }
        };
        if !meta.is_file() {
            self.not_regular(image, meta.mode());
            return;
        }
        if driver_library(file_name(image)) || !self.seen_files.insert((meta.dev(), meta.ino())) {
            return;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&host);
        self.library(image, file);
    }

    /// A library name that is not a link, in the directory open as `dir`.
    #[allow(unsafe_code)]
    fn library_at(&mut self, image: &Path, dir: &File, name: &str) {
        let Ok(cname) = std::ffi::CString::new(name) else {
            return;
        };
        // SAFETY: an all-zero `stat` is a valid value; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory fd, a NUL-terminated name, a pointer to a `stat`.
        let rc = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            self.facts
                .unreadable_files
                .add(format!("{}: {e}", image.display()));
            return;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            self.not_regular(image, st.st_mode);
            return;
        }
        if driver_library(name) || !self.seen_files.insert((st.st_dev, st.st_ino)) {
            return;
        }
        // SAFETY: as above; the fd returned is owned by the File below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        let file = if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: a freshly opened fd nothing else owns.
            Ok(unsafe { File::from_raw_fd(fd) })
        };
        self.library(image, file);
    }

    /// Never opened: a FIFO would block us, a device could do anything.
    fn not_regular(&mut self, image: &Path, mode: u32) {
        self.facts
            .not_regular
            .add(format!("{} ({})", image.display(), kind_of(mode)));
    }

    /// A regular file of the image, opened: reject by headers, else scan (or take from cache).
    fn library(&mut self, image: &Path, file: std::io::Result<File>) {
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                self.facts
                    .unreadable_files
                    .add(format!("{}: {e}", image.display()));
                return;
            }
        };
        // Re-checked on the open file: a file swapped for a FIFO after the lstat is refused.
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            _ => {
                self.facts
                    .not_regular
                    .add(format!("{} (changed while read)", image.display()));
                return;
            }
        };
        self.facts.stats.files_examined += 1;
        let headers = match self.headers(&file, &meta) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                self.facts
                    .unreadable_files
                    .add(format!("{}: {e}", image.display()));
                return;
            }
        };
        self.kept += image.as_os_str().len() as u64 + 32;
        self.facts.library_names.push(image.to_path_buf());
        // What the loader reads: a bad dynamic section is the loader's failure to report, and
        // judged only where the file uses CUDA.
        let dynamic = elf_dynamic::read_needed(&file, meta.len(), &self.bytes)
            .ok()
            .flatten();
        if let Some(why) = dynamic.as_ref().and_then(|d| d.left_out.as_ref()) {
            self.facts
                .unreadable_files
                .add(format!("{}: {why}", image.display()));
        }
        let needs_cuda = dynamic.as_ref().is_some_and(|d| {
            d.needed
                .iter()
                .any(|n| crate::knowledge::cuda_library(n).is_some())
        });
        if let Some(d) = dynamic
            && (needs_cuda || headers.key.is_some())
        {
            self.kept += d.kept_bytes() + image.as_os_str().len() as u64;
            self.facts.linked.push(LinkedFile {
                path: image.to_path_buf(),
                dynamic: d,
            });
        }
        let Some(key) = headers.key else { return };
        self.facts.stats.cuda_files += 1;
        let cached = self.cache.as_ref().and_then(|c| c.get(&key, meta.len()));
        let inventory = match cached {
            Some(inv) => {
                self.facts.stats.cache_hits += 1;
                inv
            }
            None => {
                self.facts.stats.cache_misses += 1;
                let inv = fatbin::read_file_counted(file, &self.bytes).map_err(|e| e.to_string());
                if let Some(c) = &mut self.cache
                    && let Err(e) = c.put(&key, meta.len(), &inv)
                {
                    self.facts.stats.cache_error = Some(e.to_string());
                }
                inv
            }
        };
        self.facts.files.push(ScannedFile {
            path: image.to_path_buf(),
            inventory,
        });
    }

    fn read(&self, f: &File, off: u64, len: u64, size: u64) -> std::io::Result<Vec<u8>> {
        let end = off.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "runs past the end of the file",
            )
        })?;
        let mut buf = vec![0u8; (end - off) as usize];
        f.read_exact_at(&mut buf, off)?;
        self.bytes.set(self.bytes.get() + len);
        Ok(buf)
    }

    /// Read the ELF header and section table. `Ok(None)`: not a host ELF of this machine's byte
    /// order (a linker script named `libc.so`, a cubin); `key: None`: no fatbin section.
    fn headers(&self, f: &File, meta: &std::fs::Metadata) -> std::io::Result<Option<Headers>> {
        let size = meta.len();
        if size < 52 {
            return Ok(None);
        }
        let eh = self.read(f, 0, size.min(64), size)?;
        // Host ELF of this machine's byte order only (a big-endian file is not one we load).
        let Ok(h) = elf::FileHeader::parse(&eh) else {
            return Ok(None);
        };
        if h.endian != Endian::Little {
            return Ok(None);
        }
        let is64 = h.is64;
        if !(1..=3).contains(&h.e_type) || h.machine == EM_CUDA {
            return Ok(None);
        }
        let (shoff, shentsize, mut shnum, mut shstrndx) = (
            h.shoff,
            u64::from(h.shentsize),
            u64::from(h.shnum),
            u64::from(h.shstrndx),
        );
        let want = h.section_header_size() as u64;
        if shoff == 0 || shentsize != want {
            return Ok(Some(Headers { key: None }));
        }
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        // Extended numbering: the real counts live in section 0.
        if shnum == 0 || shstrndx == 0xffff {
            let s0 = self.read(f, shoff, want, size)?;
            let s0 = elf::SectionHeader::parse(&s0, is64, h.endian);
            if shnum == 0 {
                shnum = s0.size;
            }
            if shstrndx == 0xffff {
                shstrndx = s0.link;
            }
        }
        if shnum > MAX_SECTIONS || shstrndx >= shnum {
            return Err(bad("section table out of range"));
        }
        let table = self.read(f, shoff, shnum * want, size)?;
        let shdrs = elf::section_headers(&table, want as usize, &h);
        let strtab = &shdrs[shstrndx as usize];
        if strtab.size > MAX_SHSTRTAB {
            return Err(bad("section name table too large"));
        }
        let names = self.read(f, strtab.offset, strtab.size, size)?;
        let has_fatbin = shdrs.iter().any(|s| {
            s.kind != object::elf::SHT_NOBITS
                && FATBIN_SECTIONS.contains(&elf::name_at(&names, s.name))
        });
        if !has_fatbin {
            return Ok(Some(Headers { key: None }));
        }
        // The key names the file as the host knows it, never by what the image wrote: its inode
        // number and change time (set by the kernel on every write, never by the image; overlay
        // shows the layer file's own), scoped to the image's identity or, for a plain
        // directory, the file system. A file of one image cannot take another file's entry, and
        // a rewritten file is a new key. Size, mtime and the headers read above go in too, so a
        // key is never shared by two versions of a file on a file system that reuses inodes.
        let mut h = Sha256::new();
        h.update(format!(
            "cuda-preflight scan-cache v{}\0",
            scan_cache::VERSION
        ));
        match &self.settings.cache_scope {
            Some(scope) => h.update(format!("image {scope}\0")),
            None => h.update(format!("dev {}\0", meta.dev())),
        }
        for v in [
            meta.ino(),
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
            size,
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
        ] {
            h.update(v.to_le_bytes());
        }
        h.update(&eh);
        h.update(&table);
        h.update(&names);
        let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Some(Headers { key: Some(key) }))
    }
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFDIR => "directory",
        _ => "not a regular file",
    }
}

#[cfg(test)]
mod tests {
    /// The walk with the package directories the image facts would find.
    fn walk(r: &std::path::Path, env: &[String], s: &super::WalkSettings) -> super::BinaryFacts {
        let site = crate::facts::versions::image_cuda::site_packages(r, env, &mut Vec::new());
        super::gather(r, env, &site, s)
    }

    use super::*;
    use crate::formats::fatbin::tests::{container, elf_with_section};
    use std::os::unix::fs::symlink;

    fn settings(cache: Option<PathBuf>) -> WalkSettings {
        WalkSettings {
            budget: Duration::from_secs(10),
            max_files: 1000,
            max_bytes: 1 << 30,
            cache_dir: cache,
            cache_max_bytes: 1 << 20,
            image_cache_dir: None,
            cache_scope: None,
        }
    }

    /// A host ELF whose `.nv_fatbin` holds one sm_80 cubin entry.
    fn cuda_so(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let fat = container(&[(2, 80, 0, 0, 0, b"cubin")]);
        std::fs::write(path, elf_with_section(62, 0, 0, ".nv_fatbin", &fat)).unwrap();
    }

    fn plain_so(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, elf_with_section(62, 0, 0, ".text", b"\x90\x90")).unwrap();
    }

    #[allow(unsafe_code)]
    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    fn paths(b: &BinaryFacts) -> Vec<String> {
        b.files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect()
    }

    #[test]
    fn finds_cuda_libraries_where_images_keep_them_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let sp = "usr/local/lib/python3.12/site-packages";
        cuda_so(&r.join(sp).join("torch/lib/libtorch_cuda.so"));
        cuda_so(&r.join(sp).join("nvidia/cublas/lib/libcublas.so.12"));
        cuda_so(
            &r.join(sp)
                .join("flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so"),
        );
        cuda_so(&r.join("usr/local/cuda-12.4/targets/x86_64-linux/lib/libcufft.so.11"));
        cuda_so(&r.join("opt/conda/envs/ml/lib/libcudnn.so.9"));
        cuda_so(&r.join("opt/app/lib/libmine.so"));
        // Not searched: a directory no loader or package layout names.
        cuda_so(&r.join("srv/elsewhere/libhidden.so"));
        // The same file under two names, and through a linked directory: once.
        symlink("cuda-12.4", r.join("usr/local/cuda")).unwrap();
        symlink(
            "libcufft.so.11",
            r.join("usr/local/cuda-12.4/targets/x86_64-linux/lib/libcufft.so"),
        )
        .unwrap();
        plain_so(&r.join("usr/lib/x86_64-linux-gnu/libz.so.1"));
        std::fs::write(
            r.join("usr/lib/x86_64-linux-gnu/libc.so"),
            "GROUP ( libc.so.6 )",
        )
        .unwrap();
        // Driver libraries are the host's: not judged here.
        cuda_so(&r.join("usr/lib/x86_64-linux-gnu/libcuda.so.580.1"));
        let env = vec!["LD_LIBRARY_PATH=/opt/app/lib".to_string()];
        let b = walk(r, &env, &settings(None));
        let mut got = paths(&b);
        got.sort();
        let mut want: Vec<String> = [
            "/opt/app/lib/libmine.so".to_string(),
            "/usr/local/cuda/targets/x86_64-linux/lib/libcufft.so.11".to_string(),
            "/opt/conda/envs/ml/lib/libcudnn.so.9".to_string(),
            format!("/{sp}/flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so"),
            format!("/{sp}/nvidia/cublas/lib/libcublas.so.12"),
            format!("/{sp}/torch/lib/libtorch_cuda.so"),
        ]
        .to_vec();
        want.sort();
        assert_eq!(got, want);
        assert!(b.files.iter().all(|f| f.inventory.is_ok()));
        assert!(!b.incomplete(), "{b:?}");
        assert_eq!(b.stats.cuda_files, 6);
        assert_eq!(b.stats.files_examined, 8, "{:?}", b.stats);
    }

    #[test]
    fn hostile_trees_stay_inside_and_are_reported() {
        let outside = tempfile::tempdir().unwrap();
        cuda_so(&outside.path().join("libescaped.so"));
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let lib = r.join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&lib).unwrap();
        symlink("libloop2.so", lib.join("libloop1.so")).unwrap();
        symlink("libloop1.so", lib.join("libloop2.so")).unwrap();
        // Absolute links, to a file and to a directory outside: re-rooted, so they miss.
        symlink(outside.path().join("libescaped.so"), lib.join("libout.so")).unwrap();
        std::fs::create_dir_all(r.join("usr/local/cuda-x")).unwrap();
        symlink(outside.path(), r.join("usr/local/cuda-x/lib64")).unwrap();
        symlink("../../../../../..", r.join("usr/lib/x86_64-linux-gnu/up")).unwrap();
        mkfifo(&lib.join("libcuda.so.1"));
        mkfifo(&lib.join("libfifo.so"));
        cuda_so(&lib.join("libgood.so"));
        let b = walk(r, &[], &settings(None));
        assert_eq!(paths(&b), vec!["/usr/lib/x86_64-linux-gnu/libgood.so"]);
        assert_eq!(b.not_regular.count, 2, "{b:?}");
        assert!(
            b.not_regular
                .examples
                .iter()
                .any(|e| e.contains("libfifo.so (FIFO)"))
        );
        assert!(
            b.not_regular
                .examples
                .iter()
                .any(|e| e.contains("libcuda.so.1 (FIFO)"))
        );
        // Two loops and the re-rooted absolute link that leads nowhere.
        assert_eq!(b.unresolved_links.count, 3, "{b:?}");
        assert!(b.incomplete());
    }

    #[test]
    fn budgets_stop_the_walk_and_say_what_was_left() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for i in 0..5 {
            cuda_so(&r.join(format!("usr/lib/libk{i}.so")));
        }
        cuda_so(&r.join("usr/local/cuda-13.0/lib64/libz.so"));
        let mut s = settings(None);
        s.max_files = 2;
        let b = walk(r, &[], &s);
        assert_eq!(b.files.len(), 2);
        assert!(
            b.stopped.as_deref().unwrap().contains("scan_max_files"),
            "{b:?}"
        );
        // The rest of /usr/lib (3) and the cuda directory still queued.
        assert!(b.not_walked.count >= 4, "{b:?}");
        s.max_files = 1000;
        s.budget = Duration::ZERO;
        let b = walk(r, &[], &s);
        assert!(b.files.is_empty());
        assert!(b.stopped.as_deref().unwrap().contains("scan_budget_ms"));
        s.budget = Duration::from_secs(10);
        s.max_bytes = 100;
        let b = walk(r, &[], &s);
        assert!(b.stopped.as_deref().unwrap().contains("scan_max_bytes"));
        assert!(b.files.len() < 6);
    }

    #[test]
    fn second_walk_is_served_from_the_cache_and_a_change_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("rootfs");
        cuda_so(&r.join("usr/lib/libk.so"));
        let s = settings(Some(d.path().join("state/scan-cache")));
        let cold = walk(&r, &[], &s);
        assert_eq!((cold.stats.cache_hits, cold.stats.cache_misses), (0, 1));
        let warm = walk(&r, &[], &s);
        assert_eq!((warm.stats.cache_hits, warm.stats.cache_misses), (1, 0));
        assert_eq!(
            cold.files[0].inventory.as_ref().unwrap().entries[0].arch,
            warm.files[0].inventory.as_ref().unwrap().entries[0].arch
        );
        // A copy elsewhere with the same bytes and mtime is another file to the host (another
        // inode, another change time): a miss, so no file an image writes can take another
        // file's entry by copying its size, mtime and headers.
        let r2 = d.path().join("rootfs2");
        std::fs::create_dir_all(r2.join("usr/lib")).unwrap();
        let st = std::process::Command::new("cp")
            .args(["-p"])
            .arg(r.join("usr/lib/libk.so"))
            .arg(r2.join("usr/lib/libk.so"))
            .status()
            .unwrap();
        assert!(st.success());
        let other = walk(&r2, &[], &s);
        assert_eq!((other.stats.cache_hits, other.stats.cache_misses), (0, 1));
        // The same path scoped to another image identity: a miss too.
        let mut scoped = s.clone();
        scoped.cache_scope = Some("another-image".into());
        let other = walk(&r, &[], &scoped);
        assert_eq!((other.stats.cache_hits, other.stats.cache_misses), (0, 1));
        // Another fatbin in the same place with the same size, its mtime put back: a miss (the
        // change time moved).
        let lib = r.join("usr/lib/libk.so");
        let mtime = std::fs::metadata(&lib).unwrap().modified().unwrap();
        let fat = container(&[(2, 90, 0, 0, 0, b"cubin")]);
        std::fs::write(&lib, elf_with_section(62, 0, 0, ".nv_fatbin", &fat)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&lib)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let changed = walk(&r, &[], &s);
        assert_eq!(changed.stats.cache_misses, 1);
        assert_eq!(
            changed.files[0].inventory.as_ref().unwrap().entries[0]
                .arch
                .sm(),
            90
        );
        // No cache directory possible (a file in its way): the walk goes on without it.
        let mut s2 = s.clone();
        s2.cache_dir = Some(r.join("usr/lib/libk.so/scan-cache"));
        let nocache = walk(&r, &[], &s2);
        assert_eq!(nocache.files.len(), 1);
        assert!(nocache.stats.cache_error.is_some());
    }
}
