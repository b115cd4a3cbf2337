//! JIT toolchains of the image: the `ptxas` binaries (Triton's bundled one, the CUDA toolkit's,
//! NVIDIA's wheels') and NVRTC libraries, each with the CUDA version read from the file itself.
//!
//! Nothing here runs an image file. The version comes from the banner every CUDA compiler
//! component embeds ("Cuda compilation tools, release 12.4, V12.4.99" — the line `ptxas
//! --version` prints, and the same string in `libnvrtc.so`), found by a chunked read of the ELF
//! `.rodata` section (5-8 MB of a 30-60 MB file), not of the whole file. Every path goes
//! through [`crate::facts::image::rootfs`]: links resolve inside the rootfs and only regular files are
//! opened.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::image::rootfs;
use crate::facts::library_loading::loader::{Loader, read_image_file};
use crate::facts::versions::image_cuda::list;
use crate::formats::cuda_banner::{BANNER, BANNER_TAIL, find_release};
use crate::knowledge::cuda::Version;

/// Read size of the scan. 1 MiB keeps the buffer small and the syscall count low.
const CHUNK: usize = 1 << 20;
/// Most bytes read from one file. A ptxas is 30-50 MB and its `.rodata` 5-7 MB; a file that
/// is not ELF is scanned whole up to this.
const MAX_SCAN_BYTES: u64 = 256 << 20;
const MAX_INIT_PY_BYTES: u64 = 256 << 10;
/// The whole toolchain search: bytes read, files examined and time. A real image has one to four
/// toolchains read in tens of ms; these were unbounded in sum (a file could be read 256 MB, and an
/// image may hold any number of `/usr/local/cuda*` directories: issue 22). What the budget leaves
/// out is a toolchain without a version, which `toolchain-version-skipped` names.
pub const MAX_TOTAL_SCAN_BYTES: u64 = 512 << 20;
pub const MAX_TOOLCHAIN_FILES: usize = 32;
pub const TOOLCHAIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(2000);
/// Toolchains left out by the budget that are still listed (each becomes a skipped finding);
/// the rest are counted in a note.
const MAX_LISTED_LEFT_OUT: usize = 3;
/// NVRTC sonames the loader is asked for (CUDA 11.2+ uses `libnvrtc.so.11.2`).
const NVRTC_SONAMES: &[&str] = &["libnvrtc.so.11.2", "libnvrtc.so.12", "libnvrtc.so.13"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ptxas,
    Nvrtc,
}

/// Who put the toolchain there: it decides what the fix names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Triton's bundled ptxas; `version` from `triton/__init__.py`.
    Triton { version: Option<String> },
    /// A CUDA toolkit directory (`/usr/local/cuda-12.4`).
    Toolkit,
    /// An NVIDIA wheel (`nvidia-cuda-nvcc-cu12`, `nvidia-cuda-nvrtc`, …).
    Wheel,
    /// Found only where the container's loader looks (`LD_LIBRARY_PATH`, `ld.so.cache`).
    Loader,
    /// Named by `TRITON_PTXAS_PATH` (or Triton 3.3's `TRITON_PTXAS-BLACKWELL_PATH`) in the
    /// container's environment.
    TritonPtxasPath { variable: String },
}

/// Which GPUs a toolchain compiles for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsedFor {
    AllGpus,
    /// Triton 3.3's `ptxas` beside a `ptxas-blackwell`.
    BelowSm100,
    /// Triton 3.3's `ptxas-blackwell`.
    Sm100AndNewer,
}

impl UsedFor {
    /// Whether this toolchain compiles for a GPU of compute capability `major`.
    pub fn covers(self, cc_major: u64) -> bool {
        match self {
            UsedFor::AllGpus => true,
            UsedFor::BelowSm100 => cc_major < 10,
            UsedFor::Sm100AndNewer => cc_major >= 10,
        }
    }
}

/// Where the CUDA version was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The embedded "Cuda compilation tools, release …" banner.
    Banner,
    /// The file name (`libnvrtc.so.12.4.127`).
    FileName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    pub kind: Kind,
    /// As the container sees it.
    pub path: PathBuf,
    pub origin: Origin,
    /// The CUDA release of the toolchain (`12.4.99`), if it could be read.
    pub cuda: Option<Version>,
    pub version_source: Option<VersionSource>,
    /// Why the version could not be read.
    pub error: Option<String>,
    /// Set on Triton's bundled ptxas when `TRITON_PTXAS_PATH` names another one: Triton then
    /// never runs the bundled file.
    pub overridden_by: Option<PathBuf>,
    pub used_for: UsedFor,
    /// Bytes read to find the version.
    pub bytes_read: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolchainFacts {
    pub toolchains: Vec<Toolchain>,
    pub notes: Vec<String>,
}

/// Find the image's ptxas binaries and NVRTC libraries and read their versions.
/// `sps`: the image's Python package directories ([`crate::facts::versions::image_cuda::site_packages`]).
pub fn gather(root: &Path, env: &[String], sps: &[PathBuf]) -> ToolchainFacts {
    let mut f = ToolchainFacts::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut budget = Budget {
        started: std::time::Instant::now(),
        bytes: 0,
        files: 0,
        left_out: 0,
    };
    let mut add = |f: &mut ToolchainFacts, kind: Kind, path: PathBuf, origin: Origin| -> bool {
        // The same file under several names (`/usr/local/cuda` → `cuda-12.4`) counts once; a
        // name that does not resolve to a regular file is not a toolchain.
        let Ok(host) = rootfs::resolve(root, &path) else {
            return false;
        };
        if !seen.insert(host) {
            return false;
        }
        if let Some(why) = budget.spent() {
            budget.left_out += 1;
            if budget.left_out <= MAX_LISTED_LEFT_OUT {
                let mut t = Toolchain::unread(kind, path, origin);
                t.error = Some(format!("not read: {why}"));
                f.toolchains.push(t);
                return true;
            }
            return false;
        }
        budget.files += 1;
        let left = MAX_TOTAL_SCAN_BYTES.saturating_sub(budget.bytes);
        let until = budget.started + TOOLCHAIN_BUDGET;
        match examine(root, kind, path, origin, left, until) {
            Some(t) => {
                budget.bytes += t.bytes_read;
                f.toolchains.push(t);
                true
            }
            None => false,
        }
    };

    for sp in sps {
        let triton = sp.join("triton");
        if rootfs::resolve(root, &triton).is_ok_and(|h| h.is_dir()) {
            triton_ptxas(root, env, &triton, &mut f, &mut add);
        }
        for pkg in ["cuda_nvcc", "cu13"] {
            add(
                &mut f,
                Kind::Ptxas,
                sp.join("nvidia").join(pkg).join("bin/ptxas"),
                Origin::Wheel,
            );
        }
        for pkg in ["cuda_nvrtc", "cu13"] {
            let dir = sp.join("nvidia").join(pkg).join("lib");
            for name in nvrtc_names(root, &dir, &mut f.notes) {
                add(&mut f, Kind::Nvrtc, dir.join(name), Origin::Wheel);
            }
        }
    }

    let mut cudas: Vec<String> = list(root, Path::new("/usr/local"), &mut f.notes)
        .into_iter()
        .filter(|n| n.starts_with("cuda"))
        .collect();
    // Versioned directories first: `/usr/local/cuda` is usually a link to one of them, and the
    // versioned name says more in a message.
    cudas.sort_by_key(|n| n == "cuda");
    for cuda in cudas {
        let cuda = Path::new("/usr/local").join(cuda);
        add(&mut f, Kind::Ptxas, cuda.join("bin/ptxas"), Origin::Toolkit);
        // targets/*/lib first: lib64 is usually a link to it.
        let mut dirs: Vec<PathBuf> = list(root, &cuda.join("targets"), &mut f.notes)
            .into_iter()
            .map(|t| cuda.join("targets").join(t).join("lib"))
            .collect();
        dirs.push(cuda.join("lib64"));
        for dir in dirs {
            for name in nvrtc_names(root, &dir, &mut f.notes) {
                add(&mut f, Kind::Nvrtc, dir.join(name), Origin::Toolkit);
            }
        }
    }

    let ld_path = crate::input::bundle::env_var(env, "LD_LIBRARY_PATH");
    let loader = Loader::from_image(root, ld_path);
    for soname in NVRTC_SONAMES {
        if let Some(r) = loader.resolve(soname) {
            add(&mut f, Kind::Nvrtc, r.path_in_image, Origin::Loader);
        }
    }
    if budget.left_out > MAX_LISTED_LEFT_OUT {
        f.notes.push(format!(
            "{} more toolchain files not read: the toolchain budget was spent",
            budget.left_out - MAX_LISTED_LEFT_OUT
        ));
    }
    f
}

/// What the toolchain search has spent.
struct Budget {
    started: std::time::Instant,
    bytes: u64,
    files: usize,
    left_out: usize,
}

impl Budget {
    fn spent(&self) -> Option<String> {
        if self.started.elapsed() >= TOOLCHAIN_BUDGET {
            Some(format!(
                "the toolchain search's {} ms were spent",
                TOOLCHAIN_BUDGET.as_millis()
            ))
        } else if self.bytes >= MAX_TOTAL_SCAN_BYTES {
            Some(format!(
                "the toolchain search's {} MiB were read",
                MAX_TOTAL_SCAN_BYTES >> 20
            ))
        } else if self.files >= MAX_TOOLCHAIN_FILES {
            Some(format!(
                "the toolchain search's {MAX_TOOLCHAIN_FILES} files were examined"
            ))
        } else {
            None
        }
    }
}

/// Triton's ptxas binaries, as its `backends/nvidia/compiler.py` picks them: Triton 3.3 ships
/// `ptxas` (CUDA 12.4) and `ptxas-blackwell` (12.8) and runs the second for sm_100 and newer
/// (`get_ptxas(arch)`); a `TRITON_<NAME>_PATH` variable naming an existing file wins over the
/// bundled one (`_path_to_binary`). Triton 2.x keeps ptxas in `third_party/cuda/bin`.
fn triton_ptxas(
    root: &Path,
    env: &[String],
    triton: &Path,
    f: &mut ToolchainFacts,
    add: &mut impl FnMut(&mut ToolchainFacts, Kind, PathBuf, Origin) -> bool,
) {
    let version = triton_version(root, &triton.join("__init__.py"));
    let bin = triton.join("backends/nvidia/bin");
    let split = rootfs::resolve(root, &bin.join("ptxas-blackwell")).is_ok_and(|h| h.is_file());
    let names: &[(&str, UsedFor)] = if split {
        &[
            ("ptxas", UsedFor::BelowSm100),
            ("ptxas-blackwell", UsedFor::Sm100AndNewer),
        ]
    } else {
        &[("ptxas", UsedFor::AllGpus)]
    };
    for (name, used_for) in names {
        let var = format!("TRITON_{}_PATH", name.to_ascii_uppercase());
        let over = crate::input::bundle::env_var(env, &var)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let mut overridden_by = None;
        if let Some(p) = over {
            let before = f.toolchains.len();
            add(
                f,
                Kind::Ptxas,
                p.clone(),
                Origin::TritonPtxasPath { variable: var },
            );
            // Triton falls back to the bundled file when the variable names no file.
            if rootfs::open_regular(root, &p).is_ok() {
                overridden_by = Some(p);
            }
            if let Some(t) = f.toolchains.get_mut(before) {
                t.used_for = *used_for;
            }
        }
        let mut paths = vec![bin.join(name)];
        if *name == "ptxas" {
            paths.push(triton.join("third_party/cuda/bin/ptxas"));
        }
        for path in paths {
            let before = f.toolchains.len();
            add(
                f,
                Kind::Ptxas,
                path,
                Origin::Triton {
                    version: version.clone(),
                },
            );
            if let Some(t) = f.toolchains.get_mut(before) {
                t.used_for = *used_for;
                t.overridden_by = overridden_by.clone();
            }
        }
    }
}

/// `libnvrtc.so.*` names of a directory, the fullest version first, so that a link and its
/// target count as the target (which carries the version in its name).
fn nvrtc_names(root: &Path, dir: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = list(root, dir, notes)
        .into_iter()
        .filter(|n| n.starts_with("libnvrtc.so."))
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.matches('.').count()));
    names
}

impl Toolchain {
    fn unread(kind: Kind, path: PathBuf, origin: Origin) -> Toolchain {
        Toolchain {
            kind,
            path,
            origin,
            cuda: None,
            version_source: None,
            error: None,
            overridden_by: None,
            used_for: UsedFor::AllGpus,
            bytes_read: 0,
        }
    }
}

fn examine(
    root: &Path,
    kind: Kind,
    path: PathBuf,
    origin: Origin,
    max_bytes: u64,
    until: std::time::Instant,
) -> Option<Toolchain> {
    let mut t = Toolchain::unread(kind, path, origin);
    let (file, meta) = match rootfs::open_regular(root, &t.path) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            t.error = Some(format!("not read: {e}"));
            return Some(t);
        }
    };
    match scan_file_within(&file, meta.len(), max_bytes, until) {
        Ok((v, n, cut)) => {
            t.bytes_read = n;
            t.cuda = v;
            if cut && t.cuda.is_none() {
                t.error = Some(format!(
                    "banner scan cut after {n} bytes by the toolchain search's budget"
                ));
            }
        }
        Err(e) => t.error = Some(format!("read error: {e}")),
    }
    if t.cuda.is_some() {
        t.version_source = Some(VersionSource::Banner);
    } else if let Some(v) = file_name_version(&t.path) {
        t.cuda = Some(v);
        t.version_source = Some(VersionSource::FileName);
        t.error = None;
    } else if t.error.is_none() {
        t.error = Some(format!(
            "no \"Cuda compilation tools, release\" banner in {} bytes read",
            t.bytes_read
        ));
    }
    Some(t)
}

/// `libnvrtc.so.12.4.127` → 12.4.127: only a name with major, minor and build says the release
/// (`libnvrtc.so.12` and CUDA 11's `libnvrtc.so.11.2` do not).
fn file_name_version(path: &Path) -> Option<Version> {
    let name = path.file_name()?.to_str()?;
    let v = Version::parse(name.strip_prefix("libnvrtc.so.")?)?;
    (name.matches('.').count() >= 4).then_some(v)
}

/// Find the banner in an open file: the ELF `.rodata` section where the file is ELF (the string
/// lives there), else the whole file, up to [`MAX_SCAN_BYTES`], in [`CHUNK`]s that overlap by
/// the banner's length so a banner across a chunk border is still found. Returns the version
/// and the bytes read.
pub fn scan_file(file: &File, len: u64) -> std::io::Result<(Option<Version>, u64)> {
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    scan_file_within(file, len, MAX_SCAN_BYTES, far).map(|(v, n, _)| (v, n))
}

/// [`scan_file`] reading at most `max_bytes` and stopping at `until`; the flag says a budget
/// cut the scan short.
pub fn scan_file_within(
    file: &File,
    len: u64,
    max_bytes: u64,
    until: std::time::Instant,
) -> std::io::Result<(Option<Version>, u64, bool)> {
    let (start, end) = rodata_range(file).unwrap_or((0, len));
    let whole = end.min(len).min(start.saturating_add(MAX_SCAN_BYTES));
    let end = whole.min(start.saturating_add(max_bytes));
    let overlap = BANNER.len() + BANNER_TAIL;
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut pos = start;
    let mut read = 0u64;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = read_full_at(file, &mut buf[..want], pos)?;
        read += n as u64;
        if n == 0 {
            break;
        }
        if let Some(v) = find_release(&buf[..n]) {
            return Ok((Some(v), read, false));
        }
        if pos + (n as u64) >= end {
            break;
        }
        if std::time::Instant::now() >= until {
            return Ok((None, read, true));
        }
        pos += (n - overlap.min(n - 1)) as u64;
    }
    Ok((None, read, end < whole))
}

fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The file range of the ELF `.rodata` section, if the file is ELF and has one.
fn rodata_range(file: &File) -> Option<(u64, u64)> {
    use object::{Object, ObjectSection};
    let cache = object::read::ReadCache::new(file.try_clone().ok()?);
    let obj = object::File::parse(&cache).ok()?;
    let (off, size) = obj.section_by_name(".rodata")?.file_range()?;
    Some((off, off.checked_add(size)?))
}

/// `__version__ = '3.0.0'` of `triton/__init__.py`.
fn triton_version(root: &Path, init: &Path) -> Option<String> {
    let bytes = read_image_file(root, init, MAX_INIT_PY_BYTES).ok()?;
    parse_dunder_version(&String::from_utf8_lossy(&bytes))
}

fn parse_dunder_version(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("__version__")?.trim_start();
        let v = rest.strip_prefix('=')?.trim();
        let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let v = v[1..].split(q).next()?;
        (!v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)))
        .then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    /// The toolchains with the package directories the image facts would find.
    fn find(r: &std::path::Path, env: &[String]) -> super::ToolchainFacts {
        let site = crate::facts::versions::image_cuda::site_packages(r, env, &mut Vec::new());
        super::gather(r, env, &site)
    }

    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn banner_versions() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"Cuda compilation tools, release 12.4, V12.4.99\0", Some("12.4.99")),
            (b"Cuda compilation tools, release 13.5, V13.5.37\n", Some("13.5.37")),
            (b"Cuda compilation tools, release 12.4, V12.4.127", Some("12.4.127")),
            // The format string comes first in some files: skipped, the real one is read.
            (
                b"Cuda compilation tools, release %d.%d, V%d.%d.%d\0Cuda compilation tools, release 12.8, V12.8.93",
                Some("12.8.93"),
            ),
            // A V-version that disagrees with the release is not trusted; the release is.
            (b"Cuda compilation tools, release 12.4, V11.0.1", Some("12.4")),
            (b"Cuda compilation tools, release 12.3,", Some("12.3")),
            (b"Cuda compilation tools, release 12, V12.0.1", None),
            (b"Cuda compilation tools, release 12.4.1, V12.4.1", None),
            (b"Cuda compilation tools, release 0.0, V0.0.1", None),
            (b"Cuda compilation tools, release ", None),
            (b"", None),
            (b"Cuda compilation tools, release 12.4 V12.4.99", None),
        ];
        for (data, want) in cases {
            assert_eq!(
                find_release(data).map(|v| v.to_string()).as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn chunked_scan_finds_a_banner_across_a_chunk_border() {
        let d = tempfile::tempdir().unwrap();
        let banner = b"Cuda compilation tools, release 12.4, V12.4.99\0";
        for at in [0, CHUNK - 20, CHUNK - 1, CHUNK, 3 * CHUNK + 7] {
            let mut data = vec![0u8; 4 * CHUNK];
            data[at..at + banner.len()].copy_from_slice(banner);
            let p = d.path().join("f");
            std::fs::write(&p, &data).unwrap();
            let f = File::open(&p).unwrap();
            let (v, _) = scan_file(&f, data.len() as u64).unwrap();
            assert_eq!(v.unwrap().to_string(), "12.4.99", "banner at {at}");
        }
        let p = d.path().join("none");
        std::fs::write(&p, vec![b'C'; 2 * CHUNK + 5]).unwrap();
        let (v, n) = scan_file(&File::open(&p).unwrap(), (2 * CHUNK + 5) as u64).unwrap();
        assert!(v.is_none());
        assert!(n >= (2 * CHUNK + 5) as u64);
    }

    #[test]
    fn dunder_version() {
        for (text, want) in [
            ("__version__ = '3.0.0'\n", Some("3.0.0")),
            ("x = 1\n__version__ = \"3.5.1\"\n", Some("3.5.1")),
            ("__version__ = '3.2.0+git1234'", Some("3.2.0+git1234")),
            ("__version__ = get()", None),
            ("__version__ = ''", None),
            ("__version__ = '$(rm -rf /)'", None),
        ] {
            assert_eq!(parse_dunder_version(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn file_names() {
        let v = |s: &str| file_name_version(Path::new(s)).map(|v| v.to_string());
        assert_eq!(v("/x/libnvrtc.so.12.4.127").as_deref(), Some("12.4.127"));
        assert_eq!(v("/x/libnvrtc.so.12"), None);
        assert_eq!(v("/x/libnvrtc.so.11.2"), None);
        assert_eq!(v("/x/libnvrtc-builtins.so.12.4"), None);
    }

    fn banner_file(p: &Path, v: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let (mm, _) = v.rsplit_once('.').unwrap();
        std::fs::write(
            p,
            format!("\x7fnot-elf\0Cuda compilation tools, release {mm}, V{v}\0"),
        )
        .unwrap();
    }

    #[test]
    fn finds_each_location_once() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let sp = r.join("usr/local/lib/python3.11/site-packages");
        banner_file(&sp.join("triton/backends/nvidia/bin/ptxas"), "12.4.99");
        std::fs::write(sp.join("triton/__init__.py"), "__version__ = '3.0.0'\n").unwrap();
        banner_file(&sp.join("nvidia/cuda_nvcc/bin/ptxas"), "12.9.86");
        banner_file(&sp.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"), "12.4.127");
        banner_file(&r.join("usr/local/cuda-12.8/bin/ptxas"), "12.8.93");
        // No banner: the file name says the version.
        let lib = r.join("usr/local/cuda-12.8/targets/x86_64-linux/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libnvrtc.so.12.8.93"), b"\x7fELF").unwrap();
        symlink("libnvrtc.so.12.8.93", lib.join("libnvrtc.so.12")).unwrap();
        symlink(
            "targets/x86_64-linux/lib",
            r.join("usr/local/cuda-12.8/lib64"),
        )
        .unwrap();
        symlink("cuda-12.8", r.join("usr/local/cuda")).unwrap();
        // No banner and no version in the name: found, version unknown.
        banner_file(&r.join("usr/local/cuda-11.8/bin/x"), "11.8.89");
        std::fs::write(r.join("usr/local/cuda-11.8/bin/ptxas"), b"garbage").unwrap();

        let f = find(r, &["LD_LIBRARY_PATH=/usr/local/cuda/lib64".to_string()]);
        let got: Vec<(String, Option<String>, Option<VersionSource>)> = f
            .toolchains
            .iter()
            .map(|t| {
                (
                    t.path.display().to_string(),
                    t.cuda.as_ref().map(|v| v.to_string()),
                    t.version_source,
                )
            })
            .collect();
        let s = |p: &str, v: Option<&str>, src| (p.to_string(), v.map(String::from), src);
        use VersionSource::*;
        assert_eq!(
            got,
            [
                s(
                    "/usr/local/lib/python3.11/site-packages/triton/backends/nvidia/bin/ptxas",
                    Some("12.4.99"),
                    Some(Banner)
                ),
                s(
                    "/usr/local/lib/python3.11/site-packages/nvidia/cuda_nvcc/bin/ptxas",
                    Some("12.9.86"),
                    Some(Banner)
                ),
                s(
                    "/usr/local/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
                    Some("12.4.127"),
                    Some(Banner)
                ),
                s("/usr/local/cuda-11.8/bin/ptxas", None, None),
                s(
                    "/usr/local/cuda-12.8/bin/ptxas",
                    Some("12.8.93"),
                    Some(Banner)
                ),
                s(
                    "/usr/local/cuda-12.8/targets/x86_64-linux/lib/libnvrtc.so.12.8.93",
                    Some("12.8.93"),
                    Some(FileName)
                ),
            ]
        );
        assert_eq!(
            f.toolchains[0].origin,
            Origin::Triton {
                version: Some("3.0.0".into())
            }
        );
        assert!(f.toolchains[3].error.as_deref().unwrap().contains("banner"));

        // TRITON_PTXAS_PATH: that ptxas is found, and the bundled one is marked overridden.
        let f = find(
            r,
            &["TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas".to_string()],
        );
        assert_eq!(
            f.toolchains[0].origin,
            Origin::TritonPtxasPath {
                variable: "TRITON_PTXAS_PATH".into()
            }
        );
        assert_eq!(f.toolchains[0].path, Path::new("/usr/local/cuda/bin/ptxas"));
        assert_eq!(
            f.toolchains[1].overridden_by.as_deref(),
            Some(Path::new("/usr/local/cuda/bin/ptxas"))
        );
    }

    /// Triton 3.3: `ptxas` below sm_100, `ptxas-blackwell` from sm_100; an override that names
    /// no file leaves the bundled one in use, as Triton falls back to it.
    #[test]
    fn triton_33_split_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let bin = r.join("usr/lib/python3.12/dist-packages/triton/backends/nvidia/bin");
        banner_file(&bin.join("ptxas"), "12.4.99");
        banner_file(&bin.join("ptxas-blackwell"), "12.8.61");
        let f = find(r, &["TRITON_PTXAS_PATH=/nowhere/ptxas".to_string()]);
        let got: Vec<(String, UsedFor, bool)> = f
            .toolchains
            .iter()
            .map(|t| {
                (
                    t.cuda.as_ref().unwrap().to_string(),
                    t.used_for,
                    t.overridden_by.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("12.4.99".to_string(), UsedFor::BelowSm100, false),
                ("12.8.61".to_string(), UsedFor::Sm100AndNewer, false)
            ]
        );
        assert!(UsedFor::Sm100AndNewer.covers(12) && !UsedFor::Sm100AndNewer.covers(9));
    }

    #[test]
    #[allow(unsafe_code)]
    fn hostile_names_stay_inside_and_do_not_block() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let outside = tempfile::tempdir().unwrap();
        banner_file(&outside.path().join("ptxas"), "12.4.99");
        let sp = r.join("usr/local/lib/python3.11/site-packages");
        let bin = sp.join("triton/backends/nvidia/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // An absolute link re-roots at the rootfs: the host's file is never read.
        symlink(outside.path().join("ptxas"), bin.join("ptxas")).unwrap();
        let fifo = sp.join("triton/third_party/cuda/bin/ptxas");
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::fs::create_dir_all(r.join("usr/local/cuda/bin")).unwrap();
        symlink("ptxas", r.join("usr/local/cuda/bin/ptxas")).unwrap();
        let f = find(r, &[]);
        assert!(f.toolchains.iter().all(|t| t.cuda.is_none()), "{f:?}");
        // The FIFO is found and refused unopened; the loop does not resolve; the link out is
        // missing inside the rootfs.
        assert_eq!(f.toolchains.len(), 1, "{f:?}");
        assert!(
            f.toolchains[0]
                .error
                .as_deref()
                .unwrap()
                .contains("not a regular file")
        );
    }
}
