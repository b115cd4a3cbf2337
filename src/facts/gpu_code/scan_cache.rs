//! The fatbin inventory cache in `<state_dir>/scan-cache/`: one file per library content key, so
//! the same library in a second container of the same image costs a `stat` and a header read.
//!
//! The key is computed by [`crate::facts::gpu_code::binaries`] from what the host knows of the file and the
//! image cannot choose: its inode number and change time, scoped to the image's identity
//! ([`crate::facts::image::identity`]: the engine's layer directories) or, for a plain directory
//! rootfs, the file system's device number (overlay gives each mount its own device number, but
//! shows the layer file's inode and change time). Version 1 keyed by size, mtime and a hash of
//! headers — all written by the image, so a crafted library could take a real one's entry.
//!
//! Files are written to a temporary name and renamed into place, so a reader (another hook
//! racing on the same key) sees no entry or a whole one; two writers of one key write the same
//! inventory, and the last rename wins. A file that does not parse, names another key or another
//! size is a miss, never an error. The directory is pruned, oldest first, beyond a byte budget.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::formats::fatbin::{Arch, Container, Entry, EntryKind, Format, Inventory, Variant};

/// Bumped whenever the entry layout or what the key covers changes: old entries become misses.
pub const VERSION: u32 = 2;
/// An entry is a few hundred KB for the largest real library (libcublasLt: 5666 entries).
const MAX_ENTRY_BYTES: u64 = 32 << 20;
/// Temporary files older than this were left by a hook that died mid-write.
pub(crate) const STALE_TMP_SECS: u64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("scan cache {dir}: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
}

type Result<T> = std::result::Result<T, CacheError>;

/// One entry as stored: `[kind, sm, variant, ptx_isa, compressed, container]`. Offsets and sizes
/// are left out: the rules judge kind, architecture, ISA and module only.
#[derive(Debug, Serialize, Deserialize)]
struct CompactEntry(u16, u32, u8, Option<(u16, u16)>, bool, usize);

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    v: u32,
    key: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    #[serde(default)]
    containers: usize,
    #[serde(default)]
    entries: Vec<CompactEntry>,
    /// Why the reader refused the file; cached too, so a broken library costs one read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub struct ScanCache {
    dir: PathBuf,
    max_bytes: u64,
    written: usize,
}

impl ScanCache {
    /// The cache in `dir`. The directory is created (mode 0700) on the first write, so a run
    /// that finds no CUDA binary (`check` of a plain image) leaves the state directory alone.
    pub fn open(dir: &Path, max_bytes: u64) -> ScanCache {
        ScanCache {
            dir: dir.to_path_buf(),
            max_bytes,
            written: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The cached inventory for `key` of a file of `size` bytes; `None` is a miss (absent,
    /// unreadable, corrupt, or another file's).
    pub fn get(&self, key: &str, size: u64) -> Option<std::result::Result<Inventory, String>> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.path(key))
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
        let s: Stored = serde_json::from_slice(&bytes).ok()?;
        if s.v != VERSION || s.key != key || s.size != size {
            return None;
        }
        if let Some(e) = s.error {
            return Some(Err(e));
        }
        let format = parse_format(s.format.as_deref()?)?;
        let mut entries = Vec::with_capacity(s.entries.len());
        for CompactEntry(kind, sm, variant, ptx_isa, compressed, container) in s.entries {
            if container >= s.containers {
                return None;
            }
            let variant = match variant {
                0 => Variant::Plain,
                1 => Variant::Specific,
                2 => Variant::Family,
                _ => return None,
            };
            entries.push(Entry {
                kind: match kind {
                    1 => EntryKind::Ptx,
                    2 => EntryKind::Sass,
                    k => EntryKind::Other(k),
                },
                arch: Arch::from_sm(sm, variant),
                ptx_isa,
                compressed,
                offset: 0,
                header_size: 0,
                payload_size: 0,
                uncompressed_size: None,
                container,
            });
        }
        Some(Ok(Inventory {
            format,
            containers: vec![Container { offset: 0, size: 0 }; s.containers],
            entries,
        }))
    }

    /// Store an inventory (or the reader's error) under `key`: temporary file, then rename.
    pub fn put(
        &mut self,
        key: &str,
        size: u64,
        inv: &std::result::Result<Inventory, String>,
    ) -> Result<()> {
        let stored = match inv {
            Ok(inv) => Stored {
                v: VERSION,
                key: key.to_string(),
                size,
                format: Some(inv.format.as_str().to_string()),
                containers: inv.containers.len(),
                entries: inv
                    .entries
                    .iter()
                    .map(|e| {
                        CompactEntry(
                            match e.kind {
                                EntryKind::Ptx => 1,
                                EntryKind::Sass => 2,
                                EntryKind::Other(k) => k,
                            },
                            e.arch.sm(),
                            match e.arch.variant {
                                Variant::Plain => 0,
                                Variant::Specific => 1,
                                Variant::Family => 2,
                            },
                            e.ptx_isa,
                            e.compressed,
                            e.container,
                        )
                    })
                    .collect(),
                error: None,
            },
            Err(e) => Stored {
                v: VERSION,
                key: key.to_string(),
                size,
                format: None,
                containers: 0,
                entries: Vec::new(),
                error: Some(e.clone()),
            },
        };
        let bytes = serde_json::to_vec(&stored).expect("a Stored always serializes");
        let io = |source| CacheError::Io {
            dir: self.dir.clone(),
            error: source,
        };
        let tmp = self.dir.join(tmp_name());
        let result = (|| {
            if self.written == 0 {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
            }
            let mut f: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            // No fsync: a torn entry after a crash parses as a miss, and the hook's time is
            // worth more than durability of a cache.
            std::fs::rename(&tmp, self.path(key))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)?;
        self.written += 1;
        Ok(())
    }

    /// Entries written through this handle.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Remove the oldest entries (by mtime) until the directory holds at most 3/4 of its byte
    /// budget, once it is over; and temporary files a dead writer left. Returns entries removed.
    pub fn prune(&self) -> Result<usize> {
        prune_dir(&self.dir, self.max_bytes, |name| name.ends_with(".json")).map_err(|source| {
            CacheError::Io {
                dir: self.dir.clone(),
                error: source,
            }
        })
    }
}

/// The one pruning of a cache directory (this scan cache, the image facts cache): remove the
/// oldest entries (by mtime) until `dir` holds at most 3/4 of `max_bytes`, once it is over, and
/// temporary files a dead writer left (`.tmp-*`, older than [`STALE_TMP_SECS`]). `is_entry` says
/// which file names count. Returns the files removed.
pub(crate) fn prune_dir(
    dir: &Path,
    max_bytes: u64,
    is_entry: impl Fn(&str) -> bool,
) -> std::io::Result<usize> {
    let now = std::time::SystemTime::now();
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    let mut total = 0u64;
    let mut removed = 0;
    for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let Ok(meta) = e.metadata() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if name.starts_with(".tmp-") {
            let age = now.duration_since(mtime).unwrap_or_default().as_secs();
            if age > STALE_TMP_SECS && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
            continue;
        }
        if !is_entry(&name) || !meta.is_file() {
            continue;
        }
        total += meta.len();
        entries.push((mtime, meta.len(), e.path()));
    }
    if total <= max_bytes {
        return Ok(removed);
    }
    entries.sort();
    let target = max_bytes / 4 * 3;
    for (_, len, path) in entries {
        if total <= target {
            break;
        }
        // Another hook may have removed it already: either way it is gone.
        let _ = std::fs::remove_file(&path);
        total = total.saturating_sub(len);
        removed += 1;
    }
    Ok(removed)
}

pub(crate) fn parse_format(s: &str) -> Option<Format> {
    [
        Format::Elf,
        Format::ElfRelocatable,
        Format::ElfNoCuda,
        Format::Fatbin,
        Format::Cubin,
        Format::Ptx,
    ]
    .into_iter()
    .find(|f| f.as_str() == s)
}

/// Unique per process and call: two hooks (or two threads) never share a temporary file.
fn tmp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        let e = |kind, sm, variant, isa, container| Entry {
            kind,
            arch: Arch::from_sm(sm, variant),
            ptx_isa: isa,
            compressed: true,
            offset: 0,
            header_size: 0,
            payload_size: 0,
            uncompressed_size: None,
            container,
        };
        Inventory {
            format: Format::Elf,
            containers: vec![Container { offset: 0, size: 0 }; 2],
            entries: vec![
                e(EntryKind::Sass, 90, Variant::Specific, None, 0),
                e(EntryKind::Ptx, 80, Variant::Plain, Some((9, 0)), 1),
                e(EntryKind::Other(8), 100, Variant::Family, None, 1),
            ],
        }
    }

    #[test]
    fn round_trip_and_misses() {
        let d = tempfile::tempdir().unwrap();
        let mut c = ScanCache::open(&d.path().join("scan-cache"), 1 << 20);
        assert!(c.get("k1", 10).is_none());
        c.put("k1", 10, &Ok(inv())).unwrap();
        assert_eq!(c.get("k1", 10).unwrap().unwrap(), inv());
        // Another size under the same key is another file: a miss.
        assert!(c.get("k1", 11).is_none());
        c.put("k2", 5, &Err("malformed".into())).unwrap();
        assert_eq!(c.get("k2", 5).unwrap().unwrap_err(), "malformed");
        // Corrupt and truncated entries are misses, never panics.
        let p = c.path("k1");
        let whole = std::fs::read(&p).unwrap();
        for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&p, &whole[..cut]).unwrap();
            assert!(c.get("k1", 10).is_none(), "cut at {cut}");
        }
        std::fs::write(&p, r#"{"v":1,"key":"k1","size":10,"format":"elf","containers":1,"entries":[[2,90,7,null,false,0]]}"#).unwrap();
        assert!(c.get("k1", 10).is_none(), "bad variant");
        std::fs::write(&p, r#"{"v":1,"key":"k1","size":10,"format":"elf","containers":1,"entries":[[2,90,0,null,false,5]]}"#).unwrap();
        assert!(c.get("k1", 10).is_none(), "container out of range");
        // An entry copied under another key's name is not that key's.
        std::fs::copy(c.path("k2"), c.path("k3")).unwrap();
        assert!(c.get("k3", 5).is_none());
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(c.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
    }

    #[test]
    fn racing_writers_leave_a_whole_entry() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut c = ScanCache::open(&dir, 1 << 20);
                    for _ in 0..50 {
                        c.put("same", 10, &Ok(inv())).unwrap();
                        // A reader between renames sees a whole entry, never a part.
                        assert_eq!(c.get("same", 10).unwrap().unwrap(), inv());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["same.json".to_string()]);
    }

    #[test]
    fn prune_keeps_the_directory_under_its_budget() {
        let d = tempfile::tempdir().unwrap();
        let mut c = ScanCache::open(d.path(), 2000);
        for i in 0..40 {
            c.put(&format!("k{i:02}"), 1, &Ok(inv())).unwrap();
        }
        assert!(c.prune().unwrap() > 0);
        let total: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 1500, "{total}");
        // The newest entry survives.
        assert!(c.get("k39", 1).is_some());
    }
}
