//! The image's identity as the host knows it, and what the container changed on top of it: the
//! key of the image facts cache ([`crate::facts::image::cache`]).
//!
//! An image's files cannot name it: sizes, mtimes, headers and contents are all the image's to
//! choose, so two images can be made to look alike by any of them. What the image cannot choose is
//! where the engine unpacked it: an overlay rootfs names its read-only layers (`lowerdir`) as host
//! directories the engine created, and their inode numbers and change times are the host file
//! system's. That list, each directory canonicalised and `stat`ed, is the identity. Two
//! containers of one image share it; a container of another image (even one built `FROM` it, or
//! with identical bytes) has at least one other layer directory.
//!
//! Where the mount table comes from: the container's mount namespace, which holds the rootfs mount
//! and every bind mount the runtime made into it — `/proc/<pid>/mountinfo` for a hook with the
//! container's host pid (`prestart`/`createRuntime`: runc has made every mount and not yet
//! pivoted, so mount points are host paths), `/proc/self/mountinfo` otherwise (a
//! `createContainer` hook runs inside that namespace itself; `check` reads the host's). The entry
//! is the last mount whose mount point is the rootfs path.
//!
//! What the container has on top of its layers — the writable layer (`upperdir`: mount-point
//! stubs, NVIDIA's links and `ld.so.cache`, or a restarted container's writes), Docker's
//! per-container `-init` layer, and bind mounts into the rootfs (injected driver files, volumes) —
//! is the *delta*. It is fingerprinted from host-side facts (file content for the writable layer,
//! mount source and `stat` identity for bind-mounted files), bounded, and goes into the key; a
//! delta that cannot be fingerprinted within bounds (a directory volume where the facts read, a
//! large writable layer) means no cache: the walk runs as before. A plain directory rootfs, vfs,
//! btrfs or zfs have no identity here and are walked as before.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A node's mount table: a few hundred KB with hundreds of containers; beyond this it is not read.
const MAX_MOUNTINFO_BYTES: u64 = 16 << 20;
/// Layers of one image: overlay itself stops at 500.
const MAX_LAYERS: usize = 512;
/// What the delta may hold and still be fingerprinted: a start's writable layer holds tens of
/// mount-point stubs and links; a restarted container's may hold anything.
const MAX_DELTA_ENTRIES: usize = 20_000;
const MAX_DELTA_BYTES: u64 = 8 << 20;
const MAX_DELTA_DEPTH: usize = 64;

/// Paths in the container that no image fact reads: the runtime's and engine's own mounts and
/// stubs live there (`/proc`, `/dev`, `/etc/hosts`, …) and differ between containers.
const IGNORED_TREES: &[&str] = &["proc", "sys", "dev", "run", "var/run"];
const IGNORED_FILES: &[&str] = &[
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    ".dockerenv",
    "etc/mtab",
];
/// Top directories the image facts read whatever the environment says (loader directories and
/// configuration, `/usr/local/cuda*`, conda, virtual environments, `PATH`'s defaults). A
/// directory mount elsewhere (`/data`) does not touch the facts; one in or above these does.
const READ_ROOTS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/app",
    "/workspace",
    "/root",
    "/bin",
    "/sbin",
];
/// Environment variables whose paths the image facts read ([`crate::facts::versions::image_cuda::site_packages`],
/// the loader, toolchains).
const PATH_VARS: &[&str] = &[
    "LD_LIBRARY_PATH",
    "PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "TRITON_PTXAS_PATH",
    "TRITON_PTXAS-BLACKWELL_PATH",
];

/// One line of `mountinfo` (proc(5)), octal escapes undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted file system.
    pub dev: String,
    /// The directory or file of that file system mounted here (a bind mount's source).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// Super options, still escaped: overlay's `lowerdir=` is split before it is unescaped.
    pub super_options: String,
}

/// Undo mountinfo's octal escapes (`\040` space, `\011`, `\012`, `\134`, and overlay's escaped
/// `,` and `:`). A `\` not followed by three octal digits stands for itself.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') as u32 * 64
                + (s[i + 2] - b'0') as u32 * 8
                + (s[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn path_of(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(unescape(b)))
}

/// Parse one `mountinfo` line: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE
/// SOURCE SUPER_OPTIONS`. `None` for a line that does not have that shape.
pub fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    Some(MountEntry {
        dev: String::from_utf8_lossy(fields[2]).into_owned(),
        root: path_of(fields[3]),
        mount_point: path_of(fields[4]),
        fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        super_options: String::from_utf8_lossy(fields[sep + 3]).into_owned(),
    })
}

/// The layers an overlay mount names, top first, and its writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayLayers {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
}

/// `lowerdir=A:B` (a `::` before data-only layers; newer kernels may also show `lowerdir+=`
/// once per layer) and `upperdir=`. Options are split at raw commas and layers at raw colons:
/// the kernel escapes both inside a path, so they are unescaped after splitting.
pub fn overlay_layers(super_options: &str) -> Option<OverlayLayers> {
    let mut lowers = Vec::new();
    let mut upper = None;
    for opt in super_options.as_bytes().split(|&c| c == b',') {
        if let Some(v) = opt.strip_prefix(b"lowerdir=") {
            lowers.extend(
                v.split(|&c| c == b':')
                    .filter(|p| !p.is_empty())
                    .map(path_of),
            );
        } else if let Some(v) = opt.strip_prefix(b"lowerdir+=") {
            lowers.push(path_of(v));
        } else if let Some(v) = opt.strip_prefix(b"upperdir=") {
            upper = Some(path_of(v));
        }
    }
    (!lowers.is_empty()).then_some(OverlayLayers { lowers, upper })
}

/// The image behind a rootfs, as the host knows it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Hex SHA-256 of the canonical layer directories and their `stat` identities.
    pub key: String,
    /// The read-only layers that make the identity, top first, canonical.
    pub layers: Vec<PathBuf>,
    /// Directories whose content is the container's own, not the image's: the writable layer
    /// and a per-container `-init` layer (Docker's overlay2).
    pub delta_dirs: Vec<PathBuf>,
    /// Bind mounts and other mounts below the rootfs, in mount order.
    pub mounts: Vec<MountEntry>,
    /// Where the mount table was read.
    pub source: PathBuf,
    /// The rootfs mount point, canonical (a host path).
    pub mount_point: PathBuf,
}

/// The mount table of the container's mount namespace: `<proc_root>/<pid>/mountinfo` with a
/// host pid, else `<proc_root>/self/mountinfo`.
pub fn mountinfo_path(pid: Option<i32>, proc_root: &Path) -> PathBuf {
    match pid {
        Some(pid) => proc_root.join(pid.to_string()).join("mountinfo"),
        None => proc_root.join("self/mountinfo"),
    }
}

/// The identity of the image mounted at `rootfs` (a host path), from the mount table at
/// `mountinfo`. `Err` says why there is none (not a mount, not overlay, a layer that cannot be
/// `stat`ed): the caller walks as before.
pub fn identify(mountinfo: &Path, rootfs: &Path) -> Result<Identity, String> {
    let rootfs =
        std::fs::canonicalize(rootfs).map_err(|e| format!("rootfs {}: {e}", rootfs.display()))?;
    let table = crate::input::read_capped(mountinfo, MAX_MOUNTINFO_BYTES)
        .map_err(|e| format!("{}: {e}", mountinfo.display()))?;
    let mut root_entry: Option<MountEntry> = None;
    let mut below: Vec<MountEntry> = Vec::new();
    for line in table.split(|&c| c == b'\n') {
        let Some(m) = parse_line(line) else { continue };
        if m.mount_point == rootfs {
            // A later mount at the same point hides the earlier ones (runc bind-mounts the
            // rootfs onto itself: same super options). What was mounted below the hidden one is
            // hidden too.
            root_entry = Some(m);
            below.clear();
        } else if m.mount_point.starts_with(&rootfs) {
            below.push(m);
        }
    }
    // Reasons name no host path: they go into reports, and tests compare those.
    let Some(entry) = root_entry else {
        return Err("the rootfs is not a mount point (a plain directory)".into());
    };
    if entry.fstype != "overlay" {
        return Err(format!("the rootfs is {}, not overlay", entry.fstype));
    }
    if entry.root != Path::new("/") {
        return Err("the rootfs mounts a subdirectory of an overlay".into());
    }
    let layers = overlay_layers(&entry.super_options)
        .ok_or_else(|| "the rootfs is an overlay without lowerdir".to_string())?;
    if layers.lowers.len() > MAX_LAYERS {
        return Err(format!("{} layers", layers.lowers.len()));
    }
    let mut h = Sha256::new();
    h.update(b"cuda-preflight image identity v1\0");
    let mut image_layers = Vec::new();
    if layers.upper.as_ref().is_some_and(|u| !u.is_absolute()) {
        return Err("the rootfs overlay names its writable layer by a relative path".into());
    }
    let mut delta_dirs: Vec<PathBuf> = layers.upper.into_iter().collect();
    for (i, l) in layers.lowers.iter().enumerate() {
        // A relative path is relative to the mounter's working directory, not ours: resolving
        // it here could name other directories, so such a mount has no identity.
        if !l.is_absolute() {
            return Err("the rootfs overlay names a layer by a relative path".into());
        }
        // Engines name layers through short links (`l/ABC` → `../<id>/diff`); the directory
        // they lead to is the layer.
        let real = std::fs::canonicalize(l).map_err(|e| format!("layer {}: {e}", l.display()))?;
        let meta =
            std::fs::metadata(&real).map_err(|e| format!("layer {}: {e}", real.display()))?;
        // Docker's overlay2 puts a per-container `<id>-init` layer (mount-point stubs) on top of
        // the image's: it is the container's, so it is part of the delta, not the identity.
        if i == 0 && per_container_layer(&real) {
            delta_dirs.push(real);
            continue;
        }
        // An empty layer adds nothing to the tree: Podman mounts a one-layer image
        // (`podman image mount`) over an `empty` directory its containers do not have, and
        // leaving it out gives `check --rootfs` of that mount the containers' identity.
        if std::fs::read_dir(&real).is_ok_and(|mut d| d.next().is_none()) {
            continue;
        }
        h.update(real.as_os_str().as_bytes());
        h.update(b"\0");
        for v in [
            meta.dev(),
            meta.ino(),
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            h.update(v.to_le_bytes());
        }
        if let Ok(t) = meta.created()
            && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
        {
            h.update(d.as_nanos().to_le_bytes());
        }
        image_layers.push(real);
    }
    if image_layers.is_empty() {
        return Err("no image layer below the container's own".into());
    }
    Ok(Identity {
        key: hex(&h.finalize()),
        layers: image_layers,
        delta_dirs,
        mounts: below,
        source: mountinfo.to_path_buf(),
        mount_point: rootfs,
    })
}

/// Docker's overlay2 layout: `/var/lib/docker/overlay2/<id>-init/diff`.
fn per_container_layer(real: &Path) -> bool {
    real.file_name().is_some_and(|n| n == "diff")
        && real
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("-init"))
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn ignored(rel: &Path) -> bool {
    IGNORED_TREES.iter().any(|t| rel.starts_with(t))
        || IGNORED_FILES.iter().any(|f| rel == Path::new(f))
}

/// Directories the image facts read: [`READ_ROOTS`] and the absolute paths of [`PATH_VARS`].
fn read_roots(env: &[String]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = READ_ROOTS.iter().map(PathBuf::from).collect();
    for k in PATH_VARS {
        if let Some(v) = crate::input::bundle::env_var(env, k) {
            out.extend(
                v.split(':')
                    .filter(|p| p.starts_with('/') && *p != "/")
                    .map(PathBuf::from),
            );
        }
    }
    out
}

/// Fingerprint of the delta: every entry of the delta directories (path, kind, content hash of
/// regular files, link target, whiteouts and opaque directories) and every mount below the rootfs
/// (source device and path, `stat` identity of a mounted file), outside [`IGNORED_TREES`].
/// `view` is the rootfs as the container sees it (mounts included). `Err`: the delta cannot be
/// fingerprinted within its bounds, or a directory mount covers what the facts read.
pub fn delta_fingerprint(id: &Identity, view: &Path, env: &[String]) -> Result<String, String> {
    let mut h = Sha256::new();
    h.update(b"cuda-preflight delta v1\0");
    let mut budget = Budget {
        entries: 0,
        bytes: 0,
    };
    for (i, d) in id.delta_dirs.iter().enumerate() {
        h.update(format!("layer {i}\0").as_bytes());
        fingerprint_dir(d, Path::new(""), 0, &mut h, &mut budget)?;
    }
    let roots = read_roots(env);
    for m in &id.mounts {
        let Ok(rel) = m.mount_point.strip_prefix(&id.mount_point) else {
            continue;
        };
        let rel = rel.to_path_buf();
        if ignored(&rel) {
            continue;
        }
        let inside = Path::new("/").join(&rel);
        let at = view.join(&rel);
        let meta = std::fs::symlink_metadata(&at)
            .map_err(|e| format!("mount {}: {e}", inside.display()))?;
        if meta.is_dir() {
            if roots
                .iter()
                .any(|r| r.starts_with(&inside) || inside.starts_with(r))
            {
                return Err(format!(
                    "a directory is mounted at {}, where the image facts read",
                    inside.display()
                ));
            }
            continue;
        }
        h.update(b"mount\0");
        h.update(rel.as_os_str().as_bytes());
        h.update(b"\0");
        h.update(m.dev.as_bytes());
        h.update(b"\0");
        h.update(m.root.as_os_str().as_bytes());
        h.update(b"\0");
        h.update(m.fstype.as_bytes());
        for v in [
            meta.mode() as u64,
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            h.update(v.to_le_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

struct Budget {
    entries: usize,
    bytes: u64,
}

fn fingerprint_dir(
    dir: &Path,
    rel: &Path,
    depth: usize,
    h: &mut Sha256,
    b: &mut Budget,
) -> Result<(), String> {
    if depth > MAX_DELTA_DEPTH {
        return Err(format!(
            "the container's layer is deeper than {MAX_DELTA_DEPTH}"
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        b.entries += 1;
        if b.entries > MAX_DELTA_ENTRIES {
            return Err(format!(
                "the container's layer holds more than {MAX_DELTA_ENTRIES} entries"
            ));
        }
        names.push(e.file_name());
    }
    // Directory order differs between two writable layers with the same content.
    let in_conf_d = rel == Path::new("etc/ld.so.conf.d");
    let mut names: Vec<(std::ffi::OsString, std::ffi::OsString)> = names
        .into_iter()
        .map(|n| {
            (
                if in_conf_d {
                    conf_d_name(&n)
                } else {
                    n.clone()
                },
                n,
            )
        })
        .collect();
    names.sort();
    for (hashed, name) in names {
        let r = rel.join(&name);
        if ignored(&r) {
            continue;
        }
        let p = dir.join(&name);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let ft = meta.file_type();
        h.update(rel.join(&hashed).as_os_str().as_bytes());
        h.update(b"\0");
        h.update((meta.mode() & 0o170777).to_le_bytes());
        if ft.is_dir() {
            h.update(opaque(&p).as_bytes());
            fingerprint_dir(&p, &r, depth + 1, h, b)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            h.update(t.as_os_str().as_bytes());
        } else if ft.is_file() {
            b.bytes += meta.size();
            if b.bytes > MAX_DELTA_BYTES {
                return Err(format!(
                    "the container's layer holds more than {MAX_DELTA_BYTES} bytes of files"
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            // Re-checked on the open file: one swapped for a device or FIFO after the lstat is
            // not read (a restarted container wrote this layer).
            if !f.metadata().is_ok_and(|m| m.is_file()) {
                return Err(format!("{}: changed while read", p.display()));
            }
            let mut buf = Vec::with_capacity(meta.size() as usize);
            (&mut f)
                .take(meta.size() + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            h.update((buf.len() as u64).to_le_bytes());
            h.update(Sha256::digest(&buf));
        } else if ft.is_char_device() || ft.is_block_device() {
            // A whiteout is a 0:0 character device.
            h.update(meta.rdev().to_le_bytes());
        }
        h.update(b"\n");
    }
    Ok(())
}

/// NVIDIA's `update-ldcache` hook names its `ld.so.conf.d` files with a random number per
/// container (`00-nvcr-4044456331.conf`, `zz-nvcr-2675183836.conf`, seen with the real hook);
/// the loader reads them in name order, which the number does not change across the `00-`/`zz-`
/// prefixes, so it is left out (their content is hashed as it is).
fn conf_d_name(n: &std::ffi::OsStr) -> std::ffi::OsString {
    let b = n.as_bytes();
    if let Some(i) = b.windows(5).position(|w| w == b"nvcr-")
        && let Some(digits) = b[i + 5..].strip_suffix(b".conf")
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
    {
        let mut out = b[..i + 5].to_vec();
        out.extend_from_slice(b"N.conf");
        return std::ffi::OsString::from_vec(out);
    }
    n.to_os_string()
}

/// Overlay's opaque-directory mark (`trusted.` as root, `user.` with `userxattr`): an opaque
/// directory hides the layers' content below it.
#[allow(unsafe_code)]
fn opaque(p: &Path) -> String {
    let Ok(cp) = CString::new(p.as_os_str().as_bytes()) else {
        return String::new();
    };
    let mut out = String::new();
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        let mut v = [0u8; 8];
        // SAFETY: valid NUL-terminated strings and a buffer of the length given.
        let n =
            unsafe { libc::lgetxattr(cp.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if n > 0 {
            out.push_str(&String::from_utf8_lossy(&v[..n as usize]));
        }
        out.push('|');
    }
    out
}

/// Identity of the running binary: a new build is a new cache.
pub fn exe_identity() -> String {
    match std::fs::metadata("/proc/self/exe") {
        Ok(m) => format!(
            "{}|{}|{}|{}|{}.{}",
            env!("CARGO_PKG_VERSION"),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        type Case<'a> = (&'a str, &'a [u8], Option<(&'a str, &'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "overlay rootfs",
                b"870 790 0:95 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/u,workdir=/w",
                Some(("/var/lib/docker/overlay2/abc/merged", "/", "overlay")),
            ),
            (
                "optional fields before the separator",
                b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue",
                Some(("/mnt2", "/mnt1", "ext3")),
            ),
            (
                "escaped space in the mount point",
                b"40 30 0:40 / /run/my\\040root rw - overlay overlay rw,lowerdir=/l",
                Some(("/run/my root", "/", "overlay")),
            ),
            ("no separator", b"36 35 98:0 /mnt1 /mnt2 rw", None),
            ("too short", b"36 35 - ext4", None),
            ("empty", b"", None),
        ];
        for (name, line, want) in cases {
            let got = parse_line(line).map(|m| {
                (
                    m.mount_point.display().to_string(),
                    m.root.display().to_string(),
                    m.fstype,
                )
            });
            let want = want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn overlay_options() {
        type Case<'a> = (&'a str, &'a str, Option<(Vec<&'a str>, Option<&'a str>)>);
        let cases: Vec<Case> = vec![
            (
                "two layers and an upper",
                "rw,lowerdir=/a:/b,upperdir=/u,workdir=/w",
                Some((vec!["/a", "/b"], Some("/u"))),
            ),
            (
                "data-only layers after ::",
                "ro,lowerdir=/a:/b::/c",
                Some((vec!["/a", "/b", "/c"], None)),
            ),
            (
                "one option per layer",
                "rw,lowerdir+=/a,lowerdir+=/b,upperdir=/u",
                Some((vec!["/a", "/b"], Some("/u"))),
            ),
            (
                "escaped comma and colon stay inside a path",
                "rw,lowerdir=/x\\054y:/p\\072q,upperdir=/u",
                Some((vec!["/x,y", "/p:q"], Some("/u"))),
            ),
            ("no lowerdir", "rw,upperdir=/u", None),
        ];
        for (name, opts, want) in cases {
            let got = overlay_layers(opts).map(|o| {
                (
                    o.lowers
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>(),
                    o.upper.map(|p| p.display().to_string()),
                )
            });
            let want = want.map(|(l, u)| {
                (
                    l.into_iter().map(String::from).collect::<Vec<_>>(),
                    u.map(String::from),
                )
            });
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(unescape(b"a\\134b\\0"), b"a\\b\\0");
    }

    #[test]
    fn a_plain_directory_has_no_identity() {
        let d = tempfile::tempdir().unwrap();
        let e = identify(Path::new("/proc/self/mountinfo"), d.path()).unwrap_err();
        assert!(e.contains("not a mount point"), "{e}");
        let e = identify(Path::new("/nonexistent/mountinfo"), d.path()).unwrap_err();
        assert!(e.contains("/nonexistent/mountinfo"), "{e}");
    }

    #[test]
    fn nvidia_ld_so_conf_d_numbers_are_left_out() {
        use std::ffi::OsStr;
        for (name, want) in [
            ("00-nvcr-4044456331.conf", "00-nvcr-N.conf"),
            ("zz-nvcr-2675183836.conf", "zz-nvcr-N.conf"),
            ("zz-nvcr-.conf", "zz-nvcr-.conf"),
            ("zz-nvcr-12x.conf", "zz-nvcr-12x.conf"),
            ("libc.conf", "libc.conf"),
        ] {
            assert_eq!(conf_d_name(OsStr::new(name)), OsStr::new(want), "{name}");
        }
    }

    #[test]
    fn docker_init_layer_is_the_containers() {
        assert!(per_container_layer(Path::new(
            "/var/lib/docker/overlay2/0a1b-init/diff"
        )));
        assert!(!per_container_layer(Path::new(
            "/var/lib/docker/overlay2/0a1b/diff"
        )));
        assert!(!per_container_layer(Path::new("/x-init")));
    }
}
