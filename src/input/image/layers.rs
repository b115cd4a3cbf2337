//! Applying image layers to a private directory: in order, with OCI whiteouts, keeping only the
//! files the rules read ([`wanted`]).
//!
//! Layer entries are untrusted. Every write goes to a path built from normal components under the
//! directory, with each parent checked to be a real directory there (a symlinked parent is
//! resolved by [`crate::facts::image::rootfs::resolve`], which keeps it inside), and files are created
//! with `O_EXCL | O_NOFOLLOW`, so neither `../` nor a link planted by an earlier entry leads out.
//! Devices, FIFOs and sockets are never created; symlinks are recreated verbatim, since they are
//! only ever followed later through `rootfs.rs`, which confines them.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::facts::image::rootfs;

/// The refused entries listed by name in a finding; more are counted.
const MAX_LISTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {layer}")]
    Read { layer: usize, source: io::Error },
    #[error("writing under {dir}")]
    Write { dir: PathBuf, source: io::Error },
}

/// What applying the layers did.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub files: usize,
    pub bytes: u64,
    /// Entries that would reach outside the image or are special files where a library is
    /// expected, as `layer N: path: why`.
    pub refused: Vec<String>,
    pub refused_total: usize,
    /// Entries skipped for a reason that is no attack (a hard link whose target was not kept).
    pub notes: Vec<String>,
}

impl Applied {
    fn refuse(&mut self, layer: usize, path: &[u8], why: &str) {
        self.refused_total += 1;
        if self.refused.len() < MAX_LISTED {
            self.refused.push(format!(
                "layer {layer}: {}: {why}",
                String::from_utf8_lossy(path)
            ));
        }
    }
}

/// The files `check --image` copies out of an image: exactly what the rules read.
///
/// * the loader's configuration: `/etc/ld.so.cache`, `/etc/ld.so.conf`, `/etc/ld.so.conf.d/*`;
/// * shared libraries, `lib*.so` and `lib*.so.*` anywhere (driver, runtime and math libraries;
///   the loader and the fatbin walk look them up by name in directories only known at run time:
///   `LD_LIBRARY_PATH`, `ld.so.conf`, wheels);
/// * every `*.so` / `*.so.*` under `site-packages` or `dist-packages` (Python extension modules
///   such as CuPy's carry GPU code too);
/// * `/usr/local/cuda*/version.json` and everything in `/usr/local/cuda*/compat/`.
///
/// Symlinks are kept wherever they are (no data; resolution needs them) and `*.dist-info`
/// directories are created empty (their names carry the wheel versions).
pub fn wanted(comps: &[OsString]) -> bool {
    let s = |i: usize| comps.get(i).map(|c| c.as_bytes()).unwrap_or(b"");
    let Some(name) = comps.last().map(|c| c.as_bytes()) else {
        return false;
    };
    if s(0) == b"etc" {
        return (comps.len() == 2 && (name == b"ld.so.cache" || name == b"ld.so.conf"))
            || (comps.len() == 3 && s(1) == b"ld.so.conf.d");
    }
    if s(0) == b"usr" && s(1) == b"local" && s(2).starts_with(b"cuda") {
        if comps.len() == 4 && name == b"version.json" {
            return true;
        }
        if comps.len() >= 5 && s(3) == b"compat" {
            return true;
        }
    }
    let shared = name.ends_with(b".so") || contains(name, b".so.");
    if !shared {
        return false;
    }
    name.starts_with(b"lib")
        || comps
            .iter()
            .any(|c| c.as_bytes() == b"site-packages" || c.as_bytes() == b"dist-packages")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A tar path as normal components: `./` and a leading `/` dropped (an absolute entry name means
/// the same as a relative one in a layer); `None` when a component is `..`.
fn components(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Some(out)
}

/// A layer blob, decompressed by its magic bytes (gzip, zstd, or plain tar), whatever the
/// manifest's media type says: Docker's archives name no media type at all.
pub fn decompress<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// The real directory for `comps` under `root`, creating missing ones when `create`. A
/// component that is a symlink is resolved inside `root`; one that is a file is replaced when
/// creating (a later layer turned it into a directory), an error otherwise.
fn dir_in_root(
    root: &Path,
    comps: &[OsString],
    create: bool,
    made: &mut HashSet<PathBuf>,
) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in comps {
        let cand = cur.join(c);
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.is_dir() => cur = cand,
            Ok(m) if m.file_type().is_symlink() => {
                let inside = cand.strip_prefix(root).expect("built under root");
                let r = rootfs::resolve(root, inside)?;
                if !fs::symlink_metadata(&r)?.is_dir() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                cur = r;
            }
            Ok(_) if create => {
                fs::remove_file(&cand)?;
                fs::create_dir(&cand)?;
                made.insert(cand.clone());
                cur = cand;
            }
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cand)?;
                made.insert(cand.clone());
                cur = cand;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Remove whatever is at `p`, never following it.
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// An opaque directory hides everything lower layers put in it: remove what this layer did not
/// create, keeping directories that hold this layer's files.
fn prune(dir: &Path, keep: &HashSet<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if keep.contains(&p) {
            continue;
        }
        let m = fs::symlink_metadata(&p)?;
        if m.is_dir() {
            prune(&p, keep)?;
            if fs::read_dir(&p)?.next().is_none() {
                fs::remove_dir(&p)?;
            }
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Apply one layer (a tar stream, already decompressed) to `root`. `layer` counts from 1 and
/// names the layer in messages.
pub fn apply(root: &Path, layer: usize, r: impl Read, out: &mut Applied) -> Result<(), LayerError> {
    let read_err = |source| LayerError::Read { layer, source };
    let mut ar = tar::Archive::new(r);
    let mut made: HashSet<PathBuf> = HashSet::new();
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let Some(comps) = components(&raw) else {
            out.refuse(layer, &raw, "`..` in the path leads out of the image");
            continue;
        };
        let Some((name, parent)) = comps.split_last() else {
            continue; // the root directory itself
        };
        let name_b = name.as_bytes();
        if let Some(hidden) = name_b.strip_prefix(b".wh.") {
            whiteout(root, layer, &raw, parent, hidden, &mut made, out)?;
            continue;
        }
        let want = wanted(&comps);
        use tar::EntryType as T;
        let res = match kind {
            T::Regular | T::Continuous | T::GNUSparse if want => {
                write_file(root, parent, name, &mut entry, &mut made).map(|n| {
                    out.files += 1;
                    out.bytes += n;
                })
            }
            T::Symlink => match entry.link_name_bytes() {
                Some(t) if !t.is_empty() && !t.contains(&0) => {
                    let t = OsStr::from_bytes(&t).to_os_string();
                    place(root, parent, name, &mut made, |dest| {
                        std::os::unix::fs::symlink(&t, dest)
                    })
                }
                _ => {
                    out.refuse(layer, &raw, "symlink without a target");
                    Ok(())
                }
            },
            T::Link if want => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                match target.as_deref().and_then(components) {
                    None => {
                        out.refuse(layer, &raw, "hard link leads out of the image");
                        Ok(())
                    }
                    Some(t) => hard_link(root, layer, &raw, parent, name, &t, &mut made, out),
                }
            }
            T::Directory if want_dir(&comps) => {
                dir_in_root(root, &comps, true, &mut made).map(|_| ())
            }
            T::Directory => replace_non_dir(root, &comps, &mut made),
            T::Char | T::Block | T::Fifo if want => {
                out.refuse(
                    layer,
                    &raw,
                    "a device or FIFO where a file the rules read belongs; not created",
                );
                Ok(())
            }
            // PAX/GNU metadata entries describe the next entry; they are no file.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => Ok(()),
            // An unwanted file or a device elsewhere: not kept, but it still hides what a lower
            // layer had at that path (a symlink we kept, say).
            _ => match dir_in_root(root, parent, false, &mut made) {
                Ok(dir) => remove_any(&dir.join(name)),
                Err(_) => Ok(()),
            },
        };
        match res {
            Ok(()) => {}
            // A full disk or a read-only temp dir is ours, not the image's.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSPC | libc::EROFS | libc::EDQUOT)
                ) =>
            {
                return Err(LayerError::Write {
                    dir: root.to_path_buf(),
                    source: e,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(read_err(e)),
            Err(e) => out.notes.push(format!(
                "layer {layer}: {}: not kept: {e}",
                String::from_utf8_lossy(&raw)
            )),
        }
    }
    Ok(())
}

/// `*.dist-info` directories under Python package directories: their names carry the wheels'
/// versions (`nvidia_cuda_runtime_cu12-12.4.127.dist-info`).
fn want_dir(comps: &[OsString]) -> bool {
    comps
        .last()
        .is_some_and(|n| n.as_bytes().ends_with(b".dist-info"))
        && comps
            .iter()
            .any(|c| c.as_bytes() == b"site-packages" || c.as_bytes() == b"dist-packages")
}

/// A directory entry over a symlink or file of a lower layer replaces it (as overlayfs shows
/// it); otherwise directories are created only when something is put in them.
fn replace_non_dir(root: &Path, comps: &[OsString], made: &mut HashSet<PathBuf>) -> io::Result<()> {
    let (name, parent) = comps.split_last().expect("non-empty");
    let Ok(dir) = dir_in_root(root, parent, false, made) else {
        return Ok(());
    };
    let p = dir.join(name);
    match fs::symlink_metadata(&p) {
        Ok(m) if !m.is_dir() => {
            fs::remove_file(&p)?;
            fs::create_dir(&p)?;
            made.insert(p);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Put a new entry at `parent/name`: whatever is there goes first (never followed), then `make`
/// creates it. What this layer created is remembered for opaque directories.
fn place(
    root: &Path,
    parent: &[OsString],
    name: &OsStr,
    made: &mut HashSet<PathBuf>,
    make: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = dir_in_root(root, parent, true, made)?;
    let dest = dir.join(name);
    remove_any(&dest)?;
    make(&dest)?;
    made.insert(dest);
    Ok(())
}

fn write_file(
    root: &Path,
    parent: &[OsString],
    name: &OsStr,
    entry: &mut impl Read,
    made: &mut HashSet<PathBuf>,
) -> io::Result<u64> {
    let mut n = 0;
    place(root, parent, name, made, |dest| {
        // O_EXCL and O_NOFOLLOW: a link that appeared at `dest` is not followed.
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dest)?;
        // io::copy reads straight into a BufWriter's buffer: 1 MiB writes, not 8 KiB ones, for
        // the 0.5 GB libraries of a PyTorch image.
        let mut w = io::BufWriter::with_capacity(1 << 20, f);
        n = io::copy(entry, &mut w)?;
        io::Write::flush(&mut w)?;
        Ok(())
    })?;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn hard_link(
    root: &Path,
    layer: usize,
    raw: &[u8],
    parent: &[OsString],
    name: &OsStr,
    target: &[OsString],
    made: &mut HashSet<PathBuf>,
    out: &mut Applied,
) -> io::Result<()> {
    let Some((tname, tparent)) = target.split_last() else {
        out.refuse(layer, raw, "hard link to the root directory");
        return Ok(());
    };
    // The target is a member of the image: looked up inside the directory, never followed at
    // its last component (a hard link names the entry itself).
    let src = match dir_in_root(root, tparent, false, made) {
        Ok(d) => d.join(tname),
        Err(_) => PathBuf::from("/nonexistent"),
    };
    match fs::symlink_metadata(&src) {
        Ok(m) if m.is_file() && src.starts_with(root) => {
            place(root, parent, name, made, |dest| fs::hard_link(&src, dest))
        }
        Ok(m) if m.file_type().is_symlink() => {
            let t = fs::read_link(&src)?;
            place(root, parent, name, made, |dest| {
                std::os::unix::fs::symlink(&t, dest)
            })
        }
        _ => {
            out.notes.push(format!(
                "layer {layer}: {}: hard link to a file not kept ({}); left out",
                String::from_utf8_lossy(raw),
                PathBuf::from_iter(target).display()
            ));
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn whiteout(
    root: &Path,
    layer: usize,
    raw: &[u8],
    parent: &[OsString],
    hidden: &[u8],
    made: &mut HashSet<PathBuf>,
    out: &mut Applied,
) -> Result<(), LayerError> {
    let dir = match dir_in_root(root, parent, false, made) {
        Ok(d) => d,
        Err(_) => return Ok(()), // nothing of it was kept
    };
    let res = if hidden == b".wh..opq" {
        prune(&dir, made)
    } else if hidden.starts_with(b".wh.") {
        Ok(()) // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): no file of the image
    } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
        out.refuse(
            layer,
            raw,
            "whiteout of the directory itself or its parent; ignored",
        );
        Ok(())
    } else {
        remove_any(&dir.join(OsStr::from_bytes(hidden)))
    };
    res.map_err(|source| LayerError::Write {
        dir: dir.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        components(s.as_bytes()).unwrap()
    }

    #[test]
    fn the_filter_keeps_what_the_rules_read() {
        let cases: &[(&str, bool)] = &[
            ("etc/ld.so.cache", true),
            ("./etc/ld.so.conf", true),
            ("etc/ld.so.conf.d/nvidia.conf", true),
            ("etc/passwd", false),
            ("usr/local/cuda-12.4/version.json", true),
            ("usr/local/cuda/compat/libcuda.so.550.54.15", true),
            ("usr/local/cuda/bin/nvcc", false),
            ("usr/lib/x86_64-linux-gnu/libcuda.so.1", true),
            (
                "usr/local/cuda/targets/x86_64-linux/lib/libcudart.so.12.4.127",
                true,
            ),
            (
                "opt/conda/lib/python3.11/site-packages/cupy/_core/core.cpython-311-x86_64-linux-gnu.so",
                true,
            ),
            (
                "usr/local/lib/python3.10/dist-packages/torch/lib/libtorch_cuda.so",
                true,
            ),
            ("usr/share/doc/libfoo/README", false),
            ("usr/bin/python3", false),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", true),
            ("usr/lib/x86_64-linux-gnu/libsomething.a", false),
        ];
        for (p, want) in cases {
            assert_eq!(wanted(&comps(p)), *want, "{p}");
        }
        assert!(components(b"a/../../etc").is_none());
        assert_eq!(comps("/abs/./x"), comps("abs/x"));
    }

    fn layer(entries: &[(tar::EntryType, &str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (kind, name, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_path(name).unwrap();
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_mode(0o644);
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"data"
            } else {
                b""
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if m.is_dir() {
                    stack.push(p);
                } else if m.file_type().is_symlink() {
                    out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }

    /// Whiteouts hide lower layers only: an opaque marker after this layer's own file in the
    /// same directory keeps that file; a later layer's unkept file still hides a kept link.
    #[test]
    fn whiteouts_apply_to_lower_layers_in_order() {
        use tar::EntryType as T;
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let mut a = Applied::default();
        let l1 = layer(&[
            (T::Directory, "usr/lib/", ""),
            (T::Regular, "usr/lib/libold.so.1", ""),
            (T::Symlink, "usr/lib/liblink.so", "libold.so.1"),
            (
                T::Regular,
                "usr/local/cuda-12.4/lib64/libcudart.so.12.4.127",
                "",
            ),
            (T::Regular, "usr/local/cuda-12.4/lib64/libgone.so.1", ""),
            (T::Symlink, "usr/local/cuda", "cuda-12.4"),
            (T::Symlink, "usr/bin/python3", "python3.11"),
            (T::Regular, "usr/share/doc/README", ""),
        ]);
        apply(root, 1, &l1[..], &mut a).unwrap();
        let l2 = layer(&[
            (T::Regular, "usr/lib/libnew.so.1", ""),
            (T::Regular, "usr/lib/.wh..wh..opq", ""),
            // Through the kept /usr/local/cuda link, resolved inside the directory.
            (T::Regular, "usr/local/cuda/lib64/.wh.libgone.so.1", ""),
            (T::Regular, "usr/local/cuda/lib64/libcublas.so.12", ""),
            // A file the rules do not read replaces the lower layer's link.
            (T::Regular, "usr/bin/python3", ""),
        ]);
        apply(root, 2, &l2[..], &mut a).unwrap();
        assert_eq!(
            tree(root),
            [
                "usr/lib/libnew.so.1",
                "usr/local/cuda -> cuda-12.4",
                "usr/local/cuda-12.4/lib64/libcublas.so.12",
                "usr/local/cuda-12.4/lib64/libcudart.so.12.4.127",
            ]
        );
        assert_eq!(a.refused_total, 0, "{:?}", a.refused);
        assert_eq!((a.files, a.bytes), (5, 20));
    }

    #[test]
    fn layers_are_recognised_by_their_magic_bytes() {
        use std::io::Write;
        let tar = layer(&[(tar::EntryType::Regular, "usr/lib/libz.so.1", "")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (what, blob) in [("plain", &tar), ("gzip", &gz), ("zstd", &zst)] {
            let mut out = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, tar, "{what}");
        }
    }
}
