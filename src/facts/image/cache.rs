//! The image facts cache in `<state_dir>/image-cache/`: what the walk, the load checks and the
//! toolchain reads found in a container's rootfs, stored under a key of everything those facts
//! rest on, so a second container of the same image reads one file instead of the image.
//!
//! The key ([`key`]) is the image's identity as the host knows it (the engine's layer
//! directories, [`crate::facts::image::identity`]), the fingerprint of what the container has on
//! top of them (its writable layer, per-container layer and mounts), the process environment the
//! facts read and its executable, and this binary's own identity. None of it is chosen by image
//! content: an entry written for one image's containers is never read for another image's.
//!
//! An entry is one file, `<key>.bin`: a magic line, a JSON part (everything but the fatbin
//! inventories) and the inventories packed, 17 bytes an entry (`libcublasLt` has 5666), so a hit
//! costs a read and a parse of well under a millisecond, not the JSON of every entry. Written to
//! a temporary name (mode 0600, in a 0700 directory owned by this user) and renamed; read only
//! when it is a regular file owned by this user, no larger than [`MAX_ENTRY_BYTES`], of this
//! layout and key: anything else is a miss, and the next store replaces it. The directory is
//! pruned oldest first beyond its byte budget.
//!
//! A hit reads the magic and the JSON part and checks that the file holds exactly the packed
//! entries the JSON counts; the inventories themselves ([`Packed`]) are read and checked entry by
//! entry only where the rules need them: they run once per host and their findings are kept
//! beside the entry (`<key>.<host>.judged`, [`Judged`], [`host_key`]), under the same rules of
//! ownership, for the next hit to read. An entry whose inventories turn out damaged then is
//! removed (the next start walks) and its kernels are said not judged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::facts::gpu_code::binaries::{BinaryFacts, LinkedFile};
use crate::facts::library_loading::cuda_libraries::LoadFacts;
use crate::facts::toolchains::ToolchainFacts;
use crate::formats::elf_dynamic::Dynamic;
use crate::formats::fatbin::{Arch, Container, Entry, EntryKind, Inventory, ScannedFile, Variant};

/// Bumped whenever the layout or what the key covers changes: old entries become misses.
pub const VERSION: u32 = 1;
const MAGIC: &[u8] = b"cuda-preflight image-cache v1\n";
/// A real PyTorch image's entry is a few hundred KB.
pub const MAX_ENTRY_BYTES: u64 = 32 << 20;
const PACKED: usize = 17;

/// The facts a hit hands back. On a hit `binaries.files` is empty and the fatbin inventories
/// are in `binaries.packed` ([`Packed`]), read and unpacked only where no judgement of them for
/// this host is stored ([`Judged`]).
#[derive(Debug, Clone)]
pub struct Cached {
    pub binaries: BinaryFacts,
    pub load: Option<LoadFacts>,
    pub toolchains: Option<ToolchainFacts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFile {
    path: PathBuf,
    format: Option<String>,
    containers: usize,
    /// Entries packed in the binary part, in file order.
    entries: usize,
    error: Option<String>,
}

/// What is written: [`Stored`] by reference (`BinaryFacts` serializes without its files, links
/// and names, which are stored beside it).
#[derive(Serialize)]
struct StoredRef<'a> {
    v: u32,
    key: &'a str,
    binaries: &'a BinaryFacts,
    files: Vec<StoredFile>,
    linked: Vec<(&'a Path, &'a Dynamic)>,
    library_names: &'a [PathBuf],
    load: Option<&'a LoadFacts>,
    toolchains: Option<&'a ToolchainFacts>,
}

#[derive(Deserialize)]
struct Stored {
    v: u32,
    key: String,
    binaries: BinaryFacts,
    files: Vec<StoredFile>,
    linked: Vec<(PathBuf, Dynamic)>,
    library_names: Vec<PathBuf>,
    load: Option<LoadFacts>,
    toolchains: Option<ToolchainFacts>,
}

/// The key of a container's image facts. `identity`: [`crate::facts::image::identity::Identity`]'s
/// key; `delta`: its [`crate::facts::image::identity::delta_fingerprint`]; `env` and `args0`: the
/// spec's process environment (less `HOSTNAME`, which engines set per container and no fact reads)
/// and executable.
pub fn key(identity: &str, delta: &str, env: &[String], args0: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(format!("cuda-preflight image-cache v{VERSION}\0").as_bytes());
    h.update(crate::facts::image::identity::exe_identity().as_bytes());
    h.update(b"\0");
    h.update(identity.as_bytes());
    h.update(b"\0");
    h.update(delta.as_bytes());
    h.update(b"\0");
    // The environment as the process gets it (the last of a name wins), in name order: Podman
    // writes it in a different order on every start.
    let mut vars: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for e in env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        vars.insert(k, v);
    }
    vars.remove("HOSTNAME");
    for (k, v) in vars {
        for part in [k, v] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    h.update(b"\0args0\0");
    h.update(args0.unwrap_or("").as_bytes());
    crate::facts::image::identity::hex(&h.finalize())
}

pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ImageCache {
    pub fn open(dir: &Path, max_bytes: u64) -> ImageCache {
        ImageCache {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }

    /// The directory is ours: owned by this user and writable by nobody else. Anything else
    /// (made by someone else, or loosened) is neither read nor written.
    fn dir_is_private(&self) -> bool {
        std::fs::symlink_metadata(&self.dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid() && m.mode() & 0o022 == 0)
    }

    /// The facts under `key`; `None` is a miss (absent, not ours, corrupt, another key's).
    pub fn get(&self, key: &str) -> Option<Cached> {
        if !self.dir_is_private() {
            return None;
        }
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.path(key))
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file()
            || meta.len() > MAX_ENTRY_BYTES
            || meta.uid() != euid()
            || meta.mode() & 0o077 != 0
        {
            return None;
        }
        // The magic, the JSON's length and the JSON: the packed inventories after them are read
        // only where no judgement of them is kept for this host ([`Packed::unpack`]).
        let mut head = [0u8; MAGIC.len() + 8];
        f.read_exact_at(&mut head, 0).ok()?;
        let len = u64::from_le_bytes(head.strip_prefix(MAGIC)?.try_into().ok()?);
        if len > meta.len() {
            return None;
        }
        let mut json = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut json, head.len() as u64).ok()?;
        let at = head.len() as u64 + len;
        let mut hit = decode(&json, key, meta.len().checked_sub(at)?)?;
        if let Some(p) = &mut hit.binaries.packed {
            let p = std::sync::Arc::make_mut(p);
            p.dir = self.dir.clone();
            // The judgements kept for this entry are of this file: one stored again under the
            // same key (a new inode) has none until it is judged.
            p.stamp = format!(
                "{}:{}:{}.{}:{}",
                meta.dev(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.len()
            );
            // This open file, not the name: another start may store the key again meanwhile.
            p.file = Some(std::sync::Arc::new(f));
            p.at = at;
        }
        Some(hit)
    }

    fn judged_path(&self, key: &str, host: &str) -> PathBuf {
        self.dir
            .join(format!("{key}.{}.judged", &host[..host.len().min(32)]))
    }

    /// Store `facts` under `key`: temporary file, then rename. Best effort for the caller: an
    /// error costs the next start a walk.
    pub fn put(&self, key: &str, facts: &Cached) -> std::io::Result<()> {
        let bytes = encode(key, facts)?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("entry of {} bytes is over the limit", bytes.len()),
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        if !self.dir_is_private() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a directory only this user can write",
                    self.dir.display()
                ),
            ));
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            &key[..key.len().min(16)]
        ));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let mut f: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            // No fsync: a torn entry after a crash is a miss, and the hook's time is worth more
            // than a cache's durability.
            std::fs::rename(&tmp, self.path(key))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Remove the oldest entries until the directory holds at most 3/4 of its budget, once it is
    /// over; and temporary files a dead writer left.
    pub fn prune(&self) -> std::io::Result<usize> {
        // Entries and the judgements kept beside them.
        crate::facts::gpu_code::scan_cache::prune_dir(&self.dir, self.max_bytes, |name| {
            name.ends_with(".bin") || name.ends_with(".judged")
        })
    }
}

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn encode(key: &str, facts: &Cached) -> std::io::Result<Vec<u8>> {
    let b = &facts.binaries;
    let mut packed: Vec<u8> = Vec::new();
    let mut files = Vec::with_capacity(b.files.len());
    for f in &b.files {
        match &f.inventory {
            Ok(inv) => {
                for e in &inv.entries {
                    pack(e, &mut packed);
                }
                files.push(StoredFile {
                    path: f.path.clone(),
                    format: Some(inv.format.as_str().to_string()),
                    containers: inv.containers.len(),
                    entries: inv.entries.len(),
                    error: None,
                });
            }
            Err(e) => files.push(StoredFile {
                path: f.path.clone(),
                format: None,
                containers: 0,
                entries: 0,
                error: Some(e.clone()),
            }),
        }
    }
    let stored = StoredRef {
        v: VERSION,
        key,
        binaries: b,
        files,
        linked: b
            .linked
            .iter()
            .map(|l| (l.path.as_path(), &l.dynamic))
            .collect(),
        library_names: &b.library_names,
        load: facts.load.as_ref(),
        toolchains: facts.toolchains.as_ref(),
    };
    let json = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + json.len() + packed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&packed);
    Ok(out)
}

/// The entry whose JSON part is `json`, stored under `key`, with `packed_len` bytes after it.
/// Those must be exactly the packed entries the JSON counts (a torn or lengthened file is a
/// miss); their content is checked entry by entry when they are unpacked ([`Packed::unpack`]).
fn decode(json: &[u8], key: &str, packed_len: u64) -> Option<Cached> {
    let s: Stored = serde_json::from_slice(json).ok()?;
    if s.v != VERSION || s.key != key {
        return None;
    }
    let mut want: usize = 0;
    for f in &s.files {
        match (&f.error, &f.format) {
            (Some(_), _) => {}
            (None, Some(fmt)) => {
                crate::facts::gpu_code::scan_cache::parse_format(fmt)?;
                want = want.checked_add(f.entries.checked_mul(PACKED)?)?;
            }
            (None, None) => return None,
        }
    }
    if want as u64 != packed_len {
        return None;
    }
    let mut binaries = s.binaries;
    binaries.packed = Some(std::sync::Arc::new(Packed {
        dir: PathBuf::new(),
        key: key.to_string(),
        stamp: String::new(),
        files: s.files,
        file: None,
        at: 0,
        len: want,
    }));
    binaries.linked = s
        .linked
        .into_iter()
        .map(|(path, dynamic)| LinkedFile { path, dynamic })
        .collect();
    binaries.library_names = s.library_names;
    Some(Cached {
        binaries,
        load: s.load,
        toolchains: s.toolchains,
    })
}

fn unpack_files(stored: Vec<StoredFile>, mut packed: &[u8]) -> Option<Vec<ScannedFile>> {
    let mut files = Vec::with_capacity(stored.len());
    for f in stored {
        let inventory = match (f.error, f.format) {
            (Some(e), _) => Err(e),
            (None, Some(fmt)) => {
                let format = crate::facts::gpu_code::scan_cache::parse_format(&fmt)?;
                let n = f.entries;
                let take = n.checked_mul(PACKED)?;
                let chunk = packed.get(..take)?;
                packed = &packed[take..];
                let mut entries = Vec::with_capacity(n);
                for c in chunk.chunks_exact(PACKED) {
                    let e = unpack(c)?;
                    if e.container >= f.containers {
                        return None;
                    }
                    entries.push(e);
                }
                Ok(Inventory {
                    format,
                    containers: vec![Container { offset: 0, size: 0 }; f.containers],
                    entries,
                })
            }
            (None, None) => return None,
        };
        files.push(ScannedFile {
            path: f.path,
            inventory,
        });
    }
    // Every packed byte belongs to a file: anything left over is a corrupt entry.
    if !packed.is_empty() {
        return None;
    }
    Some(files)
}

/// A hit's fatbin inventories as the entry stores them (checked when read), with where the
/// judgements of them are kept.
#[derive(Clone, Default)]
pub struct Packed {
    dir: PathBuf,
    key: String,
    stamp: String,
    files: Vec<StoredFile>,
    /// The entry file as opened by [`ImageCache::get`], and where in it the packed entries
    /// (`len` bytes) start.
    file: Option<std::sync::Arc<File>>,
    at: u64,
    len: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Packed {{ {} files, {} bytes }}",
            self.files.len(),
            self.len
        )
    }
}

/// What the rules that read the fatbin inventories found: the kernel rules'
/// ([`crate::rules::gpu_code::image_findings`]) and the PTX JIT variables'
/// ([`crate::rules::container::cuda_env::ptx_jit`]). A function of the entry and of [`host_key`]'s
/// inputs only, so it is stored beside the entry: a later hit on the same host reads it
/// instead of unpacking and judging every entry again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub kernels: Vec<crate::finding::Finding>,
    pub ptx_jit: Vec<crate::finding::Finding>,
}

#[derive(Serialize, Deserialize)]
struct StoredJudged {
    v: u32,
    key: String,
    stamp: String,
    host: String,
    judged: Judged,
}

const JUDGED_MAX_BYTES: u64 = 4 << 20;

/// The key of everything [`Judged`] depends on besides the entry: the GPUs judged against (all
/// their fields), the driver's CUDA version and the container's `CUDA_*` variables (the
/// entry's key covers them too; kept here so a judgement never rests on that alone).
pub fn host_key(gpus: &[crate::facts::host::Gpu], driver_cuda: &str, env: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(format!("cuda-preflight judged v{VERSION}\0").as_bytes());
    h.update(serde_json::to_vec(gpus).unwrap_or_default());
    h.update(b"\0");
    h.update(driver_cuda.as_bytes());
    h.update(b"\0");
    for e in env.iter().filter(|e| e.starts_with("CUDA_")) {
        h.update((e.len() as u64).to_le_bytes());
        h.update(e.as_bytes());
    }
    crate::facts::image::identity::hex(&h.finalize())
}

impl Packed {
    /// The inventories as the walk gave them. `None` cannot happen for a [`Packed`] that
    /// [`ImageCache::get`] made (it checked every entry).
    /// `None`: the packed part does not read back or holds an entry no walk writes (the file was
    /// damaged after it was stored); the entry is then removed, so the next start walks.
    pub fn unpack(&self) -> Option<Vec<ScannedFile>> {
        let got = self.file.as_ref().and_then(|f| {
            let mut bytes = vec![0u8; self.len];
            f.read_exact_at(&mut bytes, self.at).ok()?;
            unpack_files(self.files.clone(), &bytes)
        });
        if got.is_none() && self.file.is_some() {
            let c = ImageCache::open(&self.dir, 0);
            // Only the file that was read: a newer one stored under the key stays.
            let same = |m: &std::fs::Metadata| {
                self.file
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .is_some_and(|o| o.dev() == m.dev() && o.ino() == m.ino())
            };
            if std::fs::symlink_metadata(c.path(&self.key)).is_ok_and(|m| same(&m)) {
                let _ = std::fs::remove_file(c.path(&self.key));
            }
        }
        got
    }

    /// The judgement stored for `host` ([`host_key`]); `None`: none, or not one to trust (not
    /// ours, corrupt, another key's).
    pub fn judged(&self, host: &str) -> Option<Judged> {
        let c = ImageCache::open(&self.dir, 0);
        if !c.dir_is_private() {
            return None;
        }
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(c.judged_path(&self.key, host))
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file()
            || meta.len() > JUDGED_MAX_BYTES
            || meta.uid() != euid()
            || meta.mode() & 0o077 != 0
        {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.take(JUDGED_MAX_BYTES).read_to_end(&mut bytes).ok()?;
        let s: StoredJudged = serde_json::from_slice(&bytes).ok()?;
        (s.v == VERSION && s.key == self.key && s.stamp == self.stamp && s.host == host)
            .then_some(s.judged)
    }

    /// Keep `judged` for `host`: best effort (a failure costs the next hit an unpacking).
    pub fn store_judged(&self, host: &str, judged: &Judged) {
        let c = ImageCache::open(&self.dir, 0);
        if !c.dir_is_private() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&StoredJudged {
            v: VERSION,
            key: self.key.clone(),
            stamp: self.stamp.clone(),
            host: host.to_string(),
            judged: judged.clone(),
        }) else {
            return;
        };
        if bytes.len() as u64 > JUDGED_MAX_BYTES {
            return;
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-j{}",
            std::process::id(),
            &host[..host.len().min(16)]
        ));
        let _ = std::fs::remove_file(&tmp);
        let ok = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| std::fs::rename(&tmp, c.judged_path(&self.key, host)));
        if ok.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// `kind u16, sm u32, variant u8, has_isa u8, isa major u16, isa minor u16, compressed u8,
/// container u32`, little-endian. Offsets and sizes are left out: the rules judge kind,
/// architecture, ISA and module only (as the scan cache).
fn pack(e: &Entry, out: &mut Vec<u8>) {
    let kind: u16 = match e.kind {
        EntryKind::Ptx => 1,
        EntryKind::Sass => 2,
        EntryKind::Other(k) => k,
    };
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&e.arch.sm().to_le_bytes());
    out.push(match e.arch.variant {
        Variant::Plain => 0,
        Variant::Specific => 1,
        Variant::Family => 2,
    });
    let (has, ma, mi) = match e.ptx_isa {
        Some((a, b)) => (1u8, a, b),
        None => (0, 0, 0),
    };
    out.push(has);
    out.extend_from_slice(&ma.to_le_bytes());
    out.extend_from_slice(&mi.to_le_bytes());
    out.push(e.compressed as u8);
    out.extend_from_slice(&(e.container as u32).to_le_bytes());
}

fn unpack(c: &[u8]) -> Option<Entry> {
    // As an array: the offsets below are then checked at compile time, not per byte (21,000
    // entries a hit in a torch image).
    let c: &[u8; PACKED] = c.try_into().ok()?;
    let u16at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
    let u32at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
    let kind = match u16at(0) {
        1 => EntryKind::Ptx,
        2 => EntryKind::Sass,
        k => EntryKind::Other(k),
    };
    let variant = match c[6] {
        0 => Variant::Plain,
        1 => Variant::Specific,
        2 => Variant::Family,
        _ => return None,
    };
    let ptx_isa = match c[7] {
        0 => None,
        1 => Some((u16at(8), u16at(10))),
        _ => return None,
    };
    let compressed = match c[12] {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(Entry {
        kind,
        arch: Arch::from_sm(u32at(2), variant),
        ptx_isa,
        compressed,
        offset: 0,
        header_size: 0,
        payload_size: 0,
        uncompressed_size: None,
        container: u32at(13) as usize,
    })
}

/// What the cache did for one container, for the report (`image_cache`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `hit`: the facts came from the cache; `stored`: gathered and stored; `miss`: gathered,
    /// not stored (`reason`); `off`: no identity or no usable delta (`reason`), gathered as before.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The first 16 hex digits of the image identity, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Identity, fingerprint and (on a hit) the entry's read and parse.
    pub ms: f64,
}

/// A container's place in the cache: its key where it has one.
pub struct Lookup {
    pub key: Option<String>,
    /// The identity key, for the scan cache's scope ([`crate::facts::gpu_code::binaries::WalkSettings`]).
    pub scope: Option<String>,
    pub outcome: Outcome,
}

/// Find the key of the rootfs mounted at `rootfs` (a host path) whose mount table is
/// `mountinfo` and which the container sees at `view`.
pub fn lookup(
    mountinfo: &Path,
    rootfs: &Path,
    view: &Path,
    env: &[String],
    args0: Option<&str>,
) -> Lookup {
    use crate::facts::image::identity as ident;
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let id = match ident::identify(mountinfo, rootfs) {
        Ok(id) => id,
        Err(reason) => {
            return Lookup {
                key: None,
                scope: None,
                outcome: Outcome {
                    result: "off".into(),
                    reason: Some(reason),
                    identity: None,
                    ms: ms(),
                },
            };
        }
    };
    let short = Some(id.key[..16].to_string());
    match ident::delta_fingerprint(&id, view, env) {
        Ok(delta) => Lookup {
            key: Some(key(&id.key, &delta, env, args0)),
            scope: Some(id.key),
            outcome: Outcome {
                result: "miss".into(),
                reason: None,
                identity: short,
                ms: ms(),
            },
        },
        Err(reason) => Lookup {
            key: None,
            scope: Some(id.key),
            outcome: Outcome {
                result: "off".into(),
                reason: Some(reason),
                identity: short,
                ms: ms(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container;
    use crate::facts::gpu_code::binaries::WalkSettings;
    use crate::finding::Severity;
    use crate::formats::fatbin::tests::{container as fatbin, elf_with_section};
    use crate::pipeline::{self, Input, Scope, Where};
    use std::process::Command;
    use std::time::Duration;

    /// A real overlay mount (tests run as root), unmounted on drop.
    struct Overlay {
        merged: PathBuf,
    }

    impl Overlay {
        fn mount(lowers: &[&Path], upper: &Path, work: &Path, merged: &Path) -> Overlay {
            for d in [upper, work, merged] {
                std::fs::create_dir_all(d).unwrap();
            }
            let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
            let o = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    upper.display(),
                    work.display()
                ))
                .arg(merged)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "mount overlay (these tests need root): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Overlay {
                merged: merged.to_path_buf(),
            }
        }
    }

    impl Drop for Overlay {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        }
    }

    /// A library whose `.nv_fatbin` holds an sm_80 entry, then `middle`'s entry, then another
    /// sm_80 entry, each padded past the 4 KiB the old scan-cache key read at the section's
    /// head and tail: two such files differing in `middle` had one old key.
    fn library(middle_sm: u32) -> Vec<u8> {
        let pad = vec![0x5au8; 6000];
        let fat = fatbin(&[
            (2, 80, 0, 0, 0, &pad),
            (2, middle_sm, 0, 0, 0, b"cubin-middle"),
            (2, 80, 0, 0, 0, &pad),
        ]);
        elf_with_section(62, 0, 0, ".nv_fatbin", &fat)
    }

    fn bundle(dir: &Path, rootfs: &Path) -> crate::input::bundle::Bundle {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["python3"], "cwd": "/",
                        "env": ["PATH=/usr/bin:/bin", "HOSTNAME=differs-per-container"]},
            "root": {"path": rootfs},
            "linux": {
                "devices": [
                    {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                    {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                    {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}
                ],
                "resources": {"devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 195, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 238, "access": "rwm"}
                ]}
            }
        });
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        crate::input::bundle::Bundle::load(dir).unwrap()
    }

    /// The hook's facts for a container of the rootfs mounted at `merged`, read as the hook
    /// reads them (through `/proc/<pid>/root` and `/proc/<pid>/mountinfo`, this process standing
    /// in for the container's), and whether the rules block it on an H100 with driver 580.
    fn judge(
        dir: &Path,
        merged: &Path,
        state: &Path,
    ) -> (
        bool,
        Vec<String>,
        Outcome,
        crate::facts::gpu_code::binaries::WalkStats,
    ) {
        let (findings, outcome, stats) = judge_all(dir, merged, state);
        let blocked: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == Severity::Block)
            .map(|f| f.id.to_string())
            .collect();
        (
            blocked.iter().any(|id| id == "kernel-image-missing"),
            blocked,
            outcome,
            stats,
        )
    }

    /// Every finding of the rules for a container of the rootfs mounted at `merged`.
    fn judge_all(
        dir: &Path,
        merged: &Path,
        state: &Path,
    ) -> (
        Vec<crate::finding::Finding>,
        Outcome,
        crate::facts::gpu_code::binaries::WalkStats,
    ) {
        judge_on(dir, merged, state, "h100-580.json")
    }

    /// The same on the host of `examples/hosts/<profile>`.
    fn judge_on(
        dir: &Path,
        merged: &Path,
        state: &Path,
        profile: &str,
    ) -> (
        Vec<crate::finding::Finding>,
        Outcome,
        crate::facts::gpu_code::binaries::WalkStats,
    ) {
        let b = bundle(dir, merged);
        let request = container::detect(&b.spec, None);
        let mut walk = WalkSettings::from_config(&crate::config::Config::default());
        walk.cache_dir = Some(state.join("scan-cache"));
        walk.image_cache_dir = Some(state.join("image-cache"));
        walk.budget = Duration::from_secs(30);
        let config = crate::config::Config::default();
        let facts = pipeline::gather(Input {
            at: Where::Hook {
                stage: crate::facts::start_path::Stage::CreateRuntime,
                pid: Some(std::process::id() as i32),
                proc_root: Path::new("/proc"),
            },
            host_root: Path::new("/"),
            walk,
            ..Input::new(&b, request, &config)
        });
        let host = crate::facts::host::HostProfile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/hosts")
                .join(profile),
        )
        .unwrap();
        let findings = pipeline::run_rules::run(&facts, &host, Scope::All, false);
        let bin = facts.binaries.unwrap();
        (findings, bin.image_cache.clone().unwrap(), bin.stats)
    }

    /// A hit judges what the walk judged: the findings of a cached start are those of the
    /// start that walked the image and stored the entry, finding for finding (a block, a
    /// warning with its GPU modules counted, an unreadable file, an info), in the same order.
    #[test]
    fn a_hit_gives_the_findings_the_walk_gave() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        let layer = t.join("layers/image");
        std::fs::create_dir_all(layer.join("usr/lib")).unwrap();
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        // Blocks on the H100 (sm_86 SASS only in one module).
        std::fs::write(layer.join("usr/lib/libkern.so"), library(86)).unwrap();
        // Loads (sm_90 SASS), and one whose module has PTX only: a JIT warning.
        std::fs::write(layer.join("usr/lib/libgood.so"), library(90)).unwrap();
        // Two modules: sm_90 SASS, and PTX (ISA 8.0) only.
        let ptx = [
            fatbin(&[(2, 90, 0, 0, 0, b"cubin")]),
            fatbin(&[(1, 80, 0, 0, 8, b"ptx-text")]),
        ]
        .concat();
        std::fs::write(
            layer.join("usr/lib/libjit.so"),
            elf_with_section(62, 0, 0, ".nv_fatbin", &ptx),
        )
        .unwrap();
        // A fatbin section that does not parse: an unreadable file.
        std::fs::write(
            layer.join("usr/lib/libbroken.so"),
            elf_with_section(62, 0, 0, ".nv_fatbin", b"not a fatbin at all, truncated"),
        )
        .unwrap();
        let state = t.join("state");
        let start_on = |n: u32, profile: &str| {
            let c = t.join(format!("containers/c{n}"));
            let _m = Overlay::mount(
                &[&layer],
                &c.join("upper"),
                &c.join("work"),
                &c.join("merged"),
            );
            judge_on(&c.join("bundle"), &c.join("merged"), &state, profile)
        };
        let start = |n: u32| start_on(n, "h100-580.json");
        let judged = || -> Vec<PathBuf> {
            std::fs::read_dir(state.join("image-cache"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "judged"))
                .collect()
        };
        let (walked, o, _) = start(1);
        assert_eq!(o.result, "stored", "{o:?}");
        let ids: Vec<&str> = walked.iter().map(|f| f.id.as_str()).collect();
        assert!(ids.contains(&"kernel-image-missing"), "{ids:?}");
        assert!(ids.contains(&"kernel-ptx-jit-only"), "{ids:?}");
        // Start 2 unpacks and judges the entry and keeps the judgement; start 3 reads it.
        for n in 2..4 {
            let (hit, o, s) = start(n);
            assert_eq!(o.result, "hit", "{o:?}");
            assert!(o.ms > 0.0, "{s:?}");
            assert_eq!(
                hit, walked,
                "start {n}: a hit's findings differ from the walk's"
            );
            assert_eq!(judged().len(), 1);
        }
        // A corrupt judgement is not one: judged again, the same findings.
        for p in judged() {
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&p, bytes).unwrap();
        }
        let (hit, o, _) = start(4);
        assert_eq!(o.result, "hit", "{o:?}");
        assert_eq!(hit, walked);
        // Another host (A100: the sm_80 SASS loads there): the H100's judgement is not its.
        let (a100_hit, o, _) = start_on(5, "a100-535.json");
        assert_eq!(o.result, "hit", "{o:?}");
        assert_ne!(a100_hit, walked);
        assert_eq!(judged().len(), 2);
        // And walks with no cache at all (the entry removed) find the same again, per host.
        std::fs::remove_dir_all(state.join("image-cache")).unwrap();
        let (again, o, _) = start(6);
        assert_eq!(o.result, "stored", "{o:?}");
        assert_eq!(again, walked);
        std::fs::remove_dir_all(state.join("image-cache")).unwrap();
        let (a100_walked, o, _) = start_on(7, "a100-535.json");
        assert_eq!(o.result, "stored", "{o:?}");
        assert_eq!(a100_hit, a100_walked);
    }

    /// A hit reads the packed inventories only to judge them: one damaged in place after it was
    /// stored (length intact) is found then, said (`kernels-skipped`, never "no GPU code"), and
    /// removed, so the next start walks and stores it again.
    #[test]
    fn a_damaged_inventory_is_found_when_judged_and_walked_again() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        let layer = t.join("layers/image");
        std::fs::create_dir_all(layer.join("usr/lib")).unwrap();
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(layer.join("usr/lib/libkern.so"), library(86)).unwrap();
        let state = t.join("state");
        let start_on = |n: u32, profile: &str| {
            let c = t.join(format!("containers/c{n}"));
            let _m = Overlay::mount(
                &[&layer],
                &c.join("upper"),
                &c.join("work"),
                &c.join("merged"),
            );
            judge_on(&c.join("bundle"), &c.join("merged"), &state, profile)
        };
        let (walked, o, _) = start_on(1, "h100-580.json");
        assert_eq!(o.result, "stored", "{o:?}");
        assert!(walked.iter().any(|f| f.id == "kernel-image-missing"));
        let entry = std::fs::read_dir(state.join("image-cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "bin"))
            .unwrap();
        let mut bytes = std::fs::read(&entry).unwrap();
        let len = u64::from_le_bytes(bytes[MAGIC.len()..MAGIC.len() + 8].try_into().unwrap());
        let packed_at = MAGIC.len() + 8 + len as usize;
        assert!(bytes.len() > packed_at + PACKED);
        // The first entry's variant: no walk writes 7.
        bytes[packed_at + 6] = 7;
        std::fs::write(&entry, &bytes).unwrap();
        let (hit, o, _) = start_on(2, "a100-535.json");
        assert_eq!(o.result, "hit", "{o:?}");
        assert!(
            hit.iter().any(|f| f.id == "kernels-skipped"),
            "{:?}",
            hit.iter().map(|f| &f.id).collect::<Vec<_>>()
        );
        assert!(!entry.exists(), "the damaged entry was kept");
        let (again, o, _) = start_on(3, "h100-580.json");
        assert_eq!(o.result, "stored", "{o:?}");
        assert_eq!(again, walked);
    }

    /// Image "good" has sm_90 SASS in its library (runs on the H100); image "crafted" has a
    /// library of the same path, size, mtime, ELF headers and first and last 4 KiB of fatbin —
    /// everything the old scan-cache key covered — with sm_86 in its place (209 on the H100).
    /// Whatever order their containers start in, and however often, each gets its own verdict.
    #[test]
    fn a_crafted_image_cannot_change_another_images_verdict() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        let rel = "usr/lib/libkern.so";
        let good = library(90);
        let crafted = library(86);
        assert_eq!(good.len(), crafted.len());
        assert_ne!(good, crafted);
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, bytes) in [("good", &good), ("crafted", &crafted)] {
            // A shared base layer (the same directory in both images) and a top layer each.
            let base = t.join("layers/base");
            std::fs::create_dir_all(base.join("usr/lib")).unwrap();
            std::fs::create_dir_all(base.join("etc")).unwrap();
            let top = t.join(format!("layers/{name}"));
            std::fs::create_dir_all(top.join("usr/lib")).unwrap();
            std::fs::write(top.join(rel), bytes).unwrap();
            std::fs::File::options()
                .write(true)
                .open(top.join(rel))
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        // What the old key read is the same in both files.
        let span = 4096;
        assert_eq!(good[..span], crafted[..span]);
        assert_eq!(good[good.len() - span..], crafted[crafted.len() - span..]);

        let state = t.join("state");
        let start = |image: &str, n: u32| {
            let c = t.join(format!("containers/{image}-{n}"));
            let _m = Overlay::mount(
                &[&t.join(format!("layers/{image}")), &t.join("layers/base")],
                &c.join("upper"),
                &c.join("work"),
                &c.join("merged"),
            );
            judge(&c.join("bundle"), &c.join("merged"), &state)
        };
        // The crafted image first: its entries are written before the good image is seen.
        let (blocked, ids, o, _) = start("crafted", 1);
        assert!(blocked, "{ids:?}");
        assert_eq!(o.result, "stored", "{o:?}");
        let (blocked, ids, o, s) = start("good", 1);
        assert!(
            !blocked,
            "the crafted image's entries changed the good image's verdict: {ids:?}"
        );
        assert_eq!(o.result, "stored", "{o:?}");
        assert_eq!((s.cache_hits, s.cache_misses), (0, 1), "{s:?}");
        // Second containers of each: hits, each its own verdict.
        let (blocked, _, o, _) = start("good", 2);
        assert!(!blocked);
        assert_eq!(o.result, "hit", "{o:?}");
        let (blocked, _, o, _) = start("crafted", 2);
        assert!(blocked);
        assert_eq!(o.result, "hit", "{o:?}");

        // A container that brings its own copy of the library in its writable layer (a
        // restarted container, or one whose engine wrote there): another delta, not a hit on
        // the image's entry, and judged by what it has.
        let c = t.join("containers/good-3");
        std::fs::create_dir_all(c.join("upper/usr/lib")).unwrap();
        std::fs::write(c.join("upper").join(rel), &crafted).unwrap();
        let _m = Overlay::mount(
            &[&t.join("layers/good"), &t.join("layers/base")],
            &c.join("upper"),
            &c.join("work"),
            &c.join("merged"),
        );
        let (blocked, _, o, s) = judge(&c.join("bundle"), &c.join("merged"), &state);
        assert!(blocked);
        assert_eq!(o.result, "stored", "{o:?}");
        assert_eq!(s.cache_misses, 1, "{s:?}");
        drop(_m);

        // A corrupt entry is a miss, replaced; never trusted.
        for e in std::fs::read_dir(state.join("image-cache")).unwrap() {
            let p = e.unwrap().path();
            let mut bytes = std::fs::read(&p).unwrap();
            let n = bytes.len();
            bytes.truncate(n - 3);
            std::fs::write(&p, &bytes).unwrap();
        }
        let (blocked, _, o, _) = start("good", 4);
        assert!(!blocked);
        assert_eq!(o.result, "stored", "{o:?}");
        let (_, _, o, _) = start("good", 5);
        assert_eq!(o.result, "hit", "{o:?}");
    }

    #[test]
    fn entries_round_trip_and_refuse_what_is_not_theirs() {
        use crate::formats::fatbin::Format;
        let d = tempfile::tempdir().unwrap();
        let c = ImageCache::open(&d.path().join("image-cache"), 1 << 20);
        let inv = Inventory {
            format: Format::Elf,
            containers: vec![Container { offset: 0, size: 0 }; 2],
            entries: vec![
                unpack(&{
                    let mut v = Vec::new();
                    pack(
                        &Entry {
                            kind: EntryKind::Ptx,
                            arch: Arch::from_sm(90, Variant::Specific),
                            ptx_isa: Some((8, 7)),
                            compressed: true,
                            offset: 0,
                            header_size: 0,
                            payload_size: 0,
                            uncompressed_size: None,
                            container: 1,
                        },
                        &mut v,
                    );
                    v
                })
                .unwrap(),
            ],
        };
        let mut b = BinaryFacts::default();
        b.files.push(ScannedFile {
            path: "/usr/lib/libx.so".into(),
            inventory: Ok(inv.clone()),
        });
        b.files.push(ScannedFile {
            path: "/usr/lib/liby.so".into(),
            inventory: Err("malformed".into()),
        });
        b.library_names.push("/usr/lib/libx.so".into());
        b.stats.files_examined = 7;
        let facts = Cached {
            binaries: b,
            load: Some(LoadFacts {
                consumers: 3,
                ..Default::default()
            }),
            toolchains: None,
        };
        c.put("k1", &facts).unwrap();
        let got = c.get("k1").unwrap();
        assert!(got.binaries.files.is_empty());
        let files = got.binaries.packed.as_ref().unwrap().unpack().unwrap();
        assert_eq!(files[0].inventory.as_ref().unwrap(), &inv);
        assert_eq!(files[1].inventory.as_ref().unwrap_err(), "malformed");
        assert_eq!(got.binaries.stats.files_examined, 7);
        assert_eq!(got.load.unwrap().consumers, 3);
        let p = c.path("k1");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(d.path().join("image-cache"))
                .unwrap()
                .mode()
                & 0o777,
            0o700
        );
        // Under another key's name: a miss.
        std::fs::copy(&p, c.path("k2")).unwrap();
        std::fs::set_permissions(
            c.path("k2"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(c.get("k2").is_none());
        // Every truncation, and trailing bytes, are misses.
        let whole = std::fs::read(&p).unwrap();
        for cut in [0, 5, MAGIC.len() + 4, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&p, &whole[..cut]).unwrap();
            assert!(c.get("k1").is_none(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert!(c.get("k1").is_none());
        // Readable by others, or a directory others can write: not trusted.
        std::fs::write(&p, &whole).unwrap();
        assert!(c.get("k1").is_some());
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(c.get("k1").is_none());
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(
            d.path().join("image-cache"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        assert!(c.get("k1").is_none());
        assert!(c.put("k1", &facts).is_err());
    }
}
