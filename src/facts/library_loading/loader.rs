//! Which file the container's dynamic loader will load for a library name.
//!
//! Order, as glibc's `ld.so` searches for a name without a slash (DT_RPATH/DT_RUNPATH belong to
//! the requesting object and are not known here): `LD_LIBRARY_PATH`, then `/etc/ld.so.cache`,
//! then the default directories. `ld.so` itself never reads `/etc/ld.so.conf`; `ldconfig` builds
//! the cache from it, and the NVIDIA hook runs `ldconfig` in the container after injecting the
//! driver. So where the image has no usable cache, the directories of `ld.so.conf` stand in for
//! the cache that `ldconfig` would write. Every file of the image is reached through
//! [`crate::facts::image::rootfs`].

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::image::rootfs;
use crate::formats::bytes::le_u16;
use crate::formats::ld_so_cache::{
    CacheEntry, MAX_CACHE_ENTRIES, MAX_CACHE_KEPT_BYTES, MAX_CACHE_SCAN_BYTES, MAX_CACHE_STRING,
    parse_ld_so_cache_bounded,
};

/// Real caches are tens to hundreds of KB; a few MB covers images with thousands of libraries.
const MAX_CACHE_BYTES: u64 = 16 << 20;
const MAX_CONF_BYTES: u64 = 1 << 20;
/// `include` nesting and the number of conf files read, so a hostile image cannot loop us.
const MAX_INCLUDE_DEPTH: usize = 8;
const MAX_CONF_FILES: usize = 256;
const MAX_DIRS: usize = 1024;
/// The default directories, after the cache (Debian multiarch and the lib64 layouts).
pub const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// `FLAG_ELF_LIBC6` with the architecture this binary runs as (the container's: it shares our
/// kernel and, for the images we judge, our architecture).
#[cfg(target_arch = "aarch64")]
const NATIVE_FLAGS: i32 = 0x0a03; // FLAG_AARCH64_LIB64 | FLAG_ELF_LIBC6
#[cfg(not(target_arch = "aarch64"))]
const NATIVE_FLAGS: i32 = 0x0303; // FLAG_X8664_LIB64 | FLAG_ELF_LIBC6
/// `e_machine` of this machine's objects: EM_X86_64 (62), EM_AARCH64 (183).
#[cfg(target_arch = "aarch64")]
const NATIVE_MACHINE: u16 = 183;
#[cfg(not(target_arch = "aarch64"))]
const NATIVE_MACHINE: u16 = 62;

/// Where the loader found a library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `DT_RPATH` of the object that needs the library.
    Rpath,
    LdLibraryPath,
    /// `DT_RUNPATH` of the object that needs the library.
    Runpath,
    /// A `DT_NEEDED` name with a `/`: opened as it is.
    Path,
    LdSoCache,
    /// A directory of `ld.so.conf`, standing in for a missing or unreadable cache.
    LdSoConf,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The path the loader opens, as the container sees it (`/usr/local/cuda/compat/libcuda.so.1`).
    pub path_in_image: PathBuf,
    /// The file it ends at after links, as the container sees it
    /// (`/usr/local/cuda-13.0/compat/libcuda.so.580.95.05`).
    pub real_path_in_image: PathBuf,
    /// The same file on this host (under the rootfs).
    pub host_path: PathBuf,
    pub via: Source,
    /// Where the loader stops at this file with an error of its own ("invalid ELF header",
    /// "file too short": a Git LFS pointer named like the library), it is found but unloadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unloadable: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Loader {
    root: PathBuf,
    ld_library_path: Vec<PathBuf>,
    cache: Option<Vec<CacheEntry>>,
    /// Indices of the cache's native, non-hwcap entries sorted by name (then cache order): a
    /// lookup is a binary search, not a pass over every entry.
    by_name: Vec<u32>,
    conf_dirs: Vec<PathBuf>,
    notes: Vec<String>,
    /// Search directory (as the image names it) → where it is on this host, resolved inside the
    /// rootfs once: most candidates are absent, and one `lstat` says so.
    dirs: std::cell::RefCell<std::collections::HashMap<PathBuf, Option<PathBuf>>>,
}

impl Loader {
    /// Read the image's loader configuration. Never fails: what cannot be read is recorded in
    /// [`Loader::notes`] and that source is left out, as `ld.so` would skip it.
    pub fn from_image(rootfs: &Path, env_ld_library_path: Option<&str>) -> Loader {
        let mut notes = Vec::new();
        let ld_library_path = env_ld_library_path
            .map(|v| split_ld_library_path(v, &mut notes))
            .unwrap_or_default();
        let cache = match read_image_file(rootfs, Path::new("/etc/ld.so.cache"), MAX_CACHE_BYTES) {
            Ok(bytes) => match parse_ld_so_cache_bounded(&bytes) {
                Ok(c) => {
                    if c.left_out > 0 {
                        notes.push(format!(
                            "/etc/ld.so.cache: {} entries not read (bounds: {MAX_CACHE_ENTRIES} entries, {} MiB of names kept, {} MiB looked at)",
                            c.left_out,
                            MAX_CACHE_KEPT_BYTES >> 20,
                            MAX_CACHE_SCAN_BYTES >> 20
                        ));
                    }
                    if c.too_long > 0 {
                        notes.push(format!(
                            "/etc/ld.so.cache: {} entries skipped (a name or path longer than {MAX_CACHE_STRING} bytes)",
                            c.too_long
                        ));
                    }
                    Some(c.entries)
                }
                Err(e) => {
                    notes.push(format!("/etc/ld.so.cache ignored: {e}"));
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                notes.push(format!("/etc/ld.so.cache unreadable: {e}"));
                None
            }
        };
        // Read even with a cache: an image that added an `ld.so.conf.d` file without running
        // ldconfig gets its cache rebuilt at start (the NVIDIA hook and CDI's update-ldcache run
        // ldconfig), so its directories are searched after the cache's entries.
        let mut conf_dirs = Vec::new();
        let mut files = 0;
        read_conf(
            rootfs,
            Path::new("/etc/ld.so.conf"),
            0,
            &mut files,
            &mut conf_dirs,
            &mut notes,
        );
        let mut by_name: Vec<u32> = cache
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| e.flags == NATIVE_FLAGS && e.hwcap == 0)
            .map(|(i, _)| i as u32)
            .collect();
        if let Some(c) = &cache {
            // Stable: entries of one name keep the cache's order, which is the loader's.
            by_name.sort_by(|a, b| c[*a as usize].name.cmp(&c[*b as usize].name));
        }
        Loader {
            root: rootfs.to_path_buf(),
            ld_library_path,
            cache,
            by_name,
            conf_dirs,
            notes,
            dirs: Default::default(),
        }
    }

    /// Problems met while reading the configuration.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether the image's `ld.so.cache` was read.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// The directories searched, in order, with the cache's place taken by the directories of
    /// its entries (or of `ld.so.conf` where there is no cache).
    pub fn search_dirs(&self) -> Vec<(PathBuf, Source)> {
        // A set beside the list: a hostile cache with 25,000 distinct directories made the
        // linear `contains` quadratic (12.5 s, issue 22).
        let mut out: Vec<(PathBuf, Source)> = Vec::new();
        let mut seen: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        let mut push = |p: PathBuf, s: Source| {
            if seen.insert(p.clone()) {
                out.push((p, s));
            }
        };
        for d in &self.ld_library_path {
            push(d.clone(), Source::LdLibraryPath);
        }
        if let Some(c) = &self.cache {
            for e in c.iter().filter(|e| e.flags == NATIVE_FLAGS) {
                if let Some(parent) = Path::new(&e.path).parent() {
                    push(parent.to_path_buf(), Source::LdSoCache);
                }
            }
        }
        for d in &self.conf_dirs {
            push(d.clone(), Source::LdSoConf);
        }
        for d in DEFAULT_DIRS {
            push(PathBuf::from(d), Source::Default);
        }
        out
    }

    /// Resolve a library name (`libcuda.so.1`) as the loader would; `None` if it finds nothing.
    pub fn resolve(&self, name: &str) -> Option<Resolved> {
        if name.is_empty() || name.contains('/') {
            return None;
        }
        for d in &self.ld_library_path {
            if let Some(r) = self.try_dir(d, name, Source::LdLibraryPath, false) {
                return Some(r);
            }
        }
        self.resolve_system(name, false, false, &mut Vec::new())
    }

    /// Resolve `name`, needed by an object at `origin` (its directory as the container sees
    /// it) with the search paths of its dynamic section, in glibc's order: without `DT_RUNPATH`,
    /// its `DT_RPATH` and then `chain` (the `DT_RPATH` directories of the objects that loaded it,
    /// up to the executable); `LD_LIBRARY_PATH`; `DT_RUNPATH`; then unless `nodeflib` the cache
    /// and the default directories. Also returns where it looked, for a message.
    pub fn resolve_needed(
        &self,
        name: &str,
        origin: &Path,
        rpath: &[String],
        runpath: &[String],
        nodeflib: bool,
        chain: &[PathBuf],
    ) -> (Option<Resolved>, Vec<String>) {
        let mut searched: Vec<String> = Vec::new();
        if name.is_empty() {
            return (None, searched);
        }
        if name.contains('/') {
            // `$ORIGIN/…` is expanded as in search paths; a relative name is opened from the
            // working directory, unknown here.
            let path = expand_origin(name, origin);
            searched.push(
                path.as_ref()
                    .map_or(name.to_string(), |p| p.display().to_string()),
            );
            let r = path.and_then(|p| self.try_path(&p, Source::Path, true));
            return (r, searched);
        }
        let dirs = |list: &[String], via: Source, label: &str, searched: &mut Vec<String>| {
            for entry in list.iter().take(MAX_DIRS) {
                let Some(dir) = expand_origin(entry, origin) else {
                    searched.push(format!("{label} {entry} (not followed)"));
                    continue;
                };
                searched.push(format!("{label} {}", dir.display()));
                if let Some(r) = self.try_dir(&dir, name, via, true) {
                    return Some(r);
                }
            }
            None
        };
        if runpath.is_empty() {
            if let Some(r) = dirs(rpath, Source::Rpath, "RPATH", &mut searched) {
                return (Some(r), searched);
            }
            for d in chain.iter().take(MAX_DIRS) {
                searched.push(format!("RPATH of its loader {}", d.display()));
                if let Some(r) = self.try_dir(d, name, Source::Rpath, true) {
                    return (Some(r), searched);
                }
            }
        }
        for d in &self.ld_library_path {
            searched.push(format!("LD_LIBRARY_PATH {}", d.display()));
            if let Some(r) = self.try_dir(d, name, Source::LdLibraryPath, true) {
                return (Some(r), searched);
            }
        }
        if let Some(r) = dirs(runpath, Source::Runpath, "RUNPATH", &mut searched) {
            return (Some(r), searched);
        }
        let r = self.resolve_system(name, nodeflib, true, &mut searched);
        (r, searched)
    }

    /// The cache, the `ld.so.conf` directories, and the default directories. With `nodeflib`
    /// (`-z nodefaultlib`), glibc still takes cache entries outside the default directories
    /// and skips the default directories themselves.
    fn resolve_system(
        &self,
        name: &str,
        nodeflib: bool,
        strict: bool,
        searched: &mut Vec<String>,
    ) -> Option<Resolved> {
        let system = |p: &str| {
            DEFAULT_DIRS
                .iter()
                .any(|d| Path::new(p).parent() == Some(Path::new(d)))
        };
        if let Some(c) = &self.cache {
            searched.push(if nodeflib {
                "/etc/ld.so.cache (DF_1_NODEFLIB: entries outside the default directories)"
                    .to_string()
            } else {
                "/etc/ld.so.cache".to_string()
            });
            // The cache is searched by name; hwcap subdirectory entries (hwcap != 0) need CPU
            // feature matching, which CUDA libraries do not use, so only plain entries count.
            let first = self
                .by_name
                .partition_point(|i| c[*i as usize].name.as_str() < name);
            for e in self.by_name[first..]
                .iter()
                .map(|i| &c[*i as usize])
                .take_while(|e| e.name == name)
                .filter(|e| !(nodeflib && system(&e.path)))
            {
                if let Some(r) = self.try_path(Path::new(&e.path), Source::LdSoCache, strict) {
                    return Some(r);
                }
            }
        }
        for d in &self.conf_dirs {
            searched.push(format!("ld.so.conf {}", d.display()));
            if let Some(r) = self.try_dir(d, name, Source::LdSoConf, strict) {
                return Some(r);
            }
        }
        if nodeflib {
            searched.push("(DF_1_NODEFLIB: no default directories)".to_string());
            return None;
        }
        for d in DEFAULT_DIRS {
            searched.push(d.to_string());
            if let Some(r) = self.try_dir(Path::new(d), name, Source::Default, strict) {
                return Some(r);
            }
        }
        None
    }

    fn try_dir(&self, dir: &Path, name: &str, via: Source, strict: bool) -> Option<Resolved> {
        let host_dir = self
            .dirs
            .borrow_mut()
            .entry(dir.to_path_buf())
            .or_insert_with(|| rootfs::resolve(&self.root, dir).ok().filter(|h| h.is_dir()))
            .clone()?;
        // Absent here is absent: the full confined resolution runs only for names that exist.
        std::fs::symlink_metadata(host_dir.join(name)).ok()?;
        self.try_path(&dir.join(name), via, strict)
    }

    /// A candidate counts if it resolves inside the rootfs to a 64-bit ELF file: `ld.so` skips a
    /// file of the wrong class and goes on searching.
    fn try_path(&self, path: &Path, via: Source, strict: bool) -> Option<Resolved> {
        let host = rootfs::resolve(&self.root, path).ok()?;
        let (mut f, meta) = rootfs::open_regular(&self.root, path).ok()?;
        let mut head = Vec::with_capacity(20);
        (&mut f).take(20).read_to_end(&mut head).ok()?;
        let real = Path::new("/").join(host.strip_prefix(&self.root).ok()?);
        let found = |unloadable: Option<&str>| Resolved {
            path_in_image: path.to_path_buf(),
            real_path_in_image: real.clone(),
            host_path: host.clone(),
            via,
            unloadable: unloadable.map(String::from),
        };
        // glibc's open_verify: a file that is not ELF at all, or shorter than an ELF header,
        // ends the search with an error; `strict` says so (dependency lookups), the plain lookup
        // keeps searching. (Stand-in files of the tests are shorter than a header.)
        if strict && meta.len() < 64 {
            return Some(found(Some("file too short")));
        }
        if strict && &head[..4] != b"\x7fELF" {
            return Some(found(Some("invalid ELF header")));
        }
        // Another class or machine: skipped, the search goes on.
        if head.len() < 5 || &head[..4] != b"\x7fELF" || head[4] != 2 {
            return None;
        }
        if head.len() == 20 && le_u16(&head, 18) != NATIVE_MACHINE {
            return None;
        }
        Some(found(None))
    }
}

/// A `DT_RPATH`/`DT_RUNPATH` entry with `$ORIGIN` (or `${ORIGIN}`) replaced by the needing
/// object's directory. Other tokens (`$LIB`, `$PLATFORM`) depend on how the image's glibc was
/// built and a relative entry on the working directory: `None`, not followed.
pub fn expand_origin(entry: &str, origin: &Path) -> Option<PathBuf> {
    let o = origin.to_str()?;
    let e = entry.replace("${ORIGIN}", o).replace("$ORIGIN", o);
    (e.starts_with('/') && !e.contains('$')).then(|| PathBuf::from(e))
}

/// glibc splits `LD_LIBRARY_PATH` at `:` and `;`. Empty and relative entries depend on the
/// working directory and `$ORIGIN`-style tokens on the loading object; both are left out.
fn split_ld_library_path(v: &str, notes: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in v.split([':', ';']).filter(|p| !p.is_empty()) {
        if !p.starts_with('/') || p.contains('$') {
            notes.push(format!(
                "LD_LIBRARY_PATH entry {p:?} not followed (relative or $TOKEN)"
            ));
            continue;
        }
        if out.len() < MAX_DIRS {
            out.push(PathBuf::from(p));
        }
    }
    out
}

pub(crate) fn read_image_file(root: &Path, path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let (f, _) = rootfs::open_regular(root, path)?;
    crate::input::read_capped_from(f, cap)
}

/// Collect the directories of an `ld.so.conf`, following `include` (with `*` globs in the file
/// name, relative paths against the including file's directory, as ldconfig does).
fn read_conf(
    root: &Path,
    file: &Path,
    depth: usize,
    files: &mut usize,
    dirs: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) {
    if depth > MAX_INCLUDE_DEPTH || *files >= MAX_CONF_FILES {
        notes.push(format!("{}: include limit reached", file.display()));
        return;
    }
    *files += 1;
    let text = match read_image_file(root, file, MAX_CONF_BYTES) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            notes.push(format!("{}: {e}", file.display()));
            return;
        }
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pat) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pat in pat.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    PathBuf::from(pat)
                } else {
                    file.parent().unwrap_or(Path::new("/etc")).join(pat)
                };
                for f in glob_file_name(root, &pat) {
                    read_conf(root, &f, depth + 1, files, dirs, notes);
                }
            }
            continue;
        }
        // A line may list several directories; `dir=TYPE` is a legacy form.
        for d in line
            .split([' ', '\t', ',', ':'])
            .filter(|d| d.starts_with('/'))
        {
            let d = PathBuf::from(d.split('=').next().unwrap_or(d));
            if dirs.len() < MAX_DIRS && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
}

/// Expand a `*` in the last component of `pattern` (the form `ld.so.conf` uses), sorted as
/// ldconfig sorts glob results.
fn glob_file_name(root: &Path, pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (
        pattern.parent(),
        pattern.file_name().and_then(|n| n.to_str()),
    ) else {
        return Vec::new();
    };
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let Ok(host_dir) = rootfs::resolve(root, dir) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(&host_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| wildcard_match(name, n))
        .take(MAX_CONF_FILES)
        .map(|n| dir.join(n))
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters; everything else matches itself. Dot files are not matched
/// by a leading `*`, as glob(3) does.
fn wildcard_match(pat: &str, s: &str) -> bool {
    if pat.starts_with('*') && s.starts_with('.') {
        return false;
    }
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::ld_so_cache::{
        LoaderError, NEW_ENTRY_LEN, NEW_HEADER_LEN, NEW_MAGIC, OLD_ENTRY_LEN, OLD_MAGIC,
        parse_ld_so_cache,
    };
    use std::os::unix::fs::symlink;

    /// Build a new-format cache the way ldconfig lays it out: header, entries, strings.
    pub(crate) fn build_cache(entries: &[(i32, &str, &str)]) -> Vec<u8> {
        let strings_start = NEW_HEADER_LEN + entries.len() * NEW_ENTRY_LEN;
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for (flags, name, path) in entries {
            let k = strings_start + strings.len();
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            let v = strings_start + strings.len();
            strings.extend_from_slice(path.as_bytes());
            strings.push(0);
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&(k as u32).to_le_bytes());
            table.extend_from_slice(&(v as u32).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        let mut d = NEW_MAGIC.to_vec();
        d.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.extend_from_slice(&[2, 0, 0, 0]);
        d.extend_from_slice(&[0u8; 16]);
        d.extend(table);
        d.extend(strings);
        d
    }

    pub(crate) fn elf64(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"\x7fELF\x02\x01\x01rest").unwrap();
    }

    #[test]
    fn parses_this_machines_cache() {
        // A real cache written by this machine's ldconfig, where there is one.
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let c = parse_ld_so_cache(&bytes).unwrap();
        assert!(!c.is_empty());
        assert!(
            c.iter()
                .any(|e| e.name.starts_with("libc.so.") && e.path.starts_with('/'))
        );
    }

    #[test]
    fn hostile_caches_keep_bounded_memory_and_say_what_was_left() {
        // Entries naming strings longer than PATH_MAX are skipped, not copied.
        let long = "a".repeat(10_000);
        let entries: Vec<(i32, &str, &str)> = (0..100)
            .map(|_| (NATIVE_FLAGS, "libx.so", long.as_str()))
            .collect();
        let c = parse_ld_so_cache_bounded(&build_cache(&entries)).unwrap();
        assert_eq!((c.entries.len(), c.too_long), (0, 100));
        // Many entries of 4 KB paths: kept up to the byte bound, the rest counted.
        let path = format!("/{}", "p".repeat(4000));
        let entries: Vec<(i32, &str, &str)> = (0..3000)
            .map(|_| (NATIVE_FLAGS, "liby.so", path.as_str()))
            .collect();
        let c = parse_ld_so_cache_bounded(&build_cache(&entries)).unwrap();
        let kept: usize = c.entries.iter().map(|e| e.name.len() + e.path.len()).sum();
        assert!(kept <= MAX_CACHE_KEPT_BYTES + 5000, "{kept}");
        assert_eq!(c.entries.len() + c.left_out, 3000);
        assert!(c.left_out > 0);
    }

    #[test]
    fn search_dirs_of_many_cache_directories_are_unique_and_fast() {
        let names: Vec<(String, String)> = (0..20_000)
            .map(|i| (format!("libq{i}.so"), format!("/q/d{i}/libq{i}.so")))
            .collect();
        let entries: Vec<(i32, &str, &str)> = names
            .iter()
            .map(|(n, p)| (NATIVE_FLAGS, n.as_str(), p.as_str()))
            .collect();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/ld.so.cache"), build_cache(&entries)).unwrap();
        let l = Loader::from_image(d.path(), None);
        let t = std::time::Instant::now();
        let dirs = l.search_dirs();
        // Quadratic was 200 million comparisons of paths here: seconds, not milliseconds.
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(dirs.len(), 20_000 + DEFAULT_DIRS.len());
    }

    #[test]
    fn corrupt_caches_are_errors() {
        let good = build_cache(&[(
            0x0303,
            "libcuda.so.1",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        )]);
        assert_eq!(parse_ld_so_cache(&good).unwrap().len(), 1);
        // Every truncation of a good cache, and a few poisoned fields, fail cleanly.
        for n in 0..good.len() {
            assert!(parse_ld_so_cache(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_ld_so_cache(&huge).is_err());
        let mut off = good.clone();
        off[NEW_HEADER_LEN + 4..NEW_HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_ld_so_cache(&off).is_err());
        let mut be = good.clone();
        be[28] = 3;
        assert!(matches!(
            parse_ld_so_cache(&be),
            Err(LoaderError::ForeignEndian)
        ));
        assert!(parse_ld_so_cache(b"garbage").is_err());
        assert!(parse_ld_so_cache(b"ld.so-1.7.0\0\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn old_format_prefix_is_skipped() {
        let new = build_cache(&[(0x0303, "libz.so.1", "/lib/libz.so.1")]);
        let mut d = OLD_MAGIC.to_vec();
        d.push(0);
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&[0u8; OLD_ENTRY_LEN]);
        while !d.len().is_multiple_of(8) {
            d.push(0);
        }
        d.extend(new);
        assert_eq!(parse_ld_so_cache(&d).unwrap()[0].name, "libz.so.1");
    }

    #[test]
    fn nodeflib_keeps_cache_entries_outside_the_default_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        elf64(&r.join("usr/local/cuda/lib64/libcudart.so.12"));
        elf64(&r.join("usr/lib/x86_64-linux-gnu/libcublas.so.12"));
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.cache"),
            build_cache(&[
                (
                    0x0303,
                    "libcudart.so.12",
                    "/usr/local/cuda/lib64/libcudart.so.12",
                ),
                (
                    0x0303,
                    "libcublas.so.12",
                    "/usr/lib/x86_64-linux-gnu/libcublas.so.12",
                ),
            ]),
        )
        .unwrap();
        let l = Loader::from_image(r, None);
        let o = Path::new("/opt/app");
        // glibc's _dl_map_object: with -z nodefaultlib a cache hit under a system directory is
        // dropped, others kept; the default directories are not searched.
        let (hit, _) = l.resolve_needed("libcudart.so.12", o, &[], &[], true, &[]);
        assert_eq!(hit.unwrap().via, Source::LdSoCache);
        let (miss, searched) = l.resolve_needed("libcublas.so.12", o, &[], &[], true, &[]);
        assert!(miss.is_none(), "{searched:?}");
        let (plain, _) = l.resolve_needed("libcublas.so.12", o, &[], &[], false, &[]);
        assert!(plain.is_some());
    }

    #[test]
    fn origin_in_a_needed_path_and_the_loader_chain() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        elf64(&r.join("opt/app/lib/libcudart.so.12"));
        elf64(&r.join("opt/conda/lib/libcublas.so.12"));
        let l = Loader::from_image(r, None);
        let o = Path::new("/opt/app/lib");
        let (hit, _) = l.resolve_needed("$ORIGIN/libcudart.so.12", o, &[], &[], false, &[]);
        assert_eq!(
            hit.unwrap().path_in_image,
            PathBuf::from("/opt/app/lib/libcudart.so.12")
        );
        let chain = [PathBuf::from("/opt/conda/lib")];
        let (via_chain, _) = l.resolve_needed("libcublas.so.12", o, &[], &[], false, &chain);
        assert_eq!(via_chain.unwrap().via, Source::Rpath);
        // An object with DT_RUNPATH gets no RPATH, its loaders' included.
        let (none, _) = l.resolve_needed(
            "libcublas.so.12",
            o,
            &[],
            &["/nowhere".into()],
            false,
            &chain,
        );
        assert!(none.is_none());
    }

    #[test]
    fn order_is_ld_library_path_then_cache_then_defaults() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        elf64(&r.join("usr/local/nvidia/lib64/libcuda.so.580.159.04"));
        symlink(
            "libcuda.so.580.159.04",
            r.join("usr/local/nvidia/lib64/libcuda.so.1"),
        )
        .unwrap();
        elf64(&r.join("usr/local/cuda-13.0/compat/libcuda.so.580.95.05"));
        symlink(
            "libcuda.so.580.95.05",
            r.join("usr/local/cuda-13.0/compat/libcuda.so.1"),
        )
        .unwrap();
        symlink("cuda-13.0", r.join("usr/local/cuda")).unwrap();
        elf64(&r.join("usr/lib/x86_64-linux-gnu/libz.so.1"));
        std::fs::write(
            r.join("usr/lib/x86_64-linux-gnu/libnot.so.1"),
            b"not an elf",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.cache"),
            build_cache(&[
                (
                    0x0303,
                    "libcuda.so.1",
                    "/usr/local/cuda/compat/libcuda.so.1",
                ),
                (0x0003, "libz.so.1", "/usr/lib32/libz.so.1"), // 32-bit entry: not ours
            ]),
        )
        .unwrap();

        // The cache picks the compat library.
        let l = Loader::from_image(r, None);
        let got = l.resolve("libcuda.so.1").unwrap();
        assert_eq!(got.via, Source::LdSoCache);
        assert_eq!(
            got.path_in_image,
            Path::new("/usr/local/cuda/compat/libcuda.so.1")
        );
        assert_eq!(
            got.real_path_in_image,
            Path::new("/usr/local/cuda-13.0/compat/libcuda.so.580.95.05")
        );
        assert_eq!(
            got.host_path,
            r.join("usr/local/cuda-13.0/compat/libcuda.so.580.95.05")
        );
        // Default dirs after the cache; non-ELF files are skipped.
        assert_eq!(l.resolve("libz.so.1").unwrap().via, Source::Default);
        assert!(l.resolve("libnot.so.1").is_none());
        assert!(l.resolve("../../etc/passwd").is_none());

        // LD_LIBRARY_PATH wins over the cache.
        let l = Loader::from_image(
            r,
            Some("relative:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"),
        );
        let got = l.resolve("libcuda.so.1").unwrap();
        assert_eq!(got.via, Source::LdLibraryPath);
        assert_eq!(
            got.real_path_in_image,
            Path::new("/usr/local/nvidia/lib64/libcuda.so.580.159.04")
        );
        assert_eq!(l.notes().len(), 1, "{:?}", l.notes());
        let dirs = l.search_dirs();
        assert_eq!(
            dirs[0],
            (
                PathBuf::from("/usr/local/nvidia/lib"),
                Source::LdLibraryPath
            )
        );
        assert!(dirs.contains(&(PathBuf::from("/usr/local/cuda/compat"), Source::LdSoCache)));
        assert!(!dirs.iter().any(|(p, _)| p == Path::new("/usr/lib32")));
    }

    #[test]
    fn without_cache_ld_so_conf_stands_in() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        elf64(&r.join("usr/local/cuda-12.8/compat/libcuda.so.570.124.06"));
        symlink(
            "libcuda.so.570.124.06",
            r.join("usr/local/cuda-12.8/compat/libcuda.so.1"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "# comment\ninclude /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf.d/000_cuda.conf"),
            "/usr/local/cuda-12.8/compat\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/.hidden.conf"), "/nope\n").unwrap();
        // A self-include must stop at the limit, not loop.
        std::fs::write(r.join("etc/ld.so.conf.d/loop.conf"), "include loop.conf\n").unwrap();
        std::fs::write(r.join("etc/ld.so.cache"), b"corrupt").unwrap();
        let l = Loader::from_image(r, None);
        assert!(!l.has_cache());
        assert!(
            l.notes().iter().any(|n| n.contains("ld.so.cache ignored")),
            "{:?}",
            l.notes()
        );
        let got = l.resolve("libcuda.so.1").unwrap();
        assert_eq!(got.via, Source::LdSoConf);
        assert!(l.search_dirs().iter().all(|(p, _)| p != Path::new("/nope")));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "cuda.conf"));
        assert!(!wildcard_match("*.conf", ".x.conf"));
        assert!(!wildcard_match("*.conf", "cuda.conf.bak"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "ac"));
    }
}
