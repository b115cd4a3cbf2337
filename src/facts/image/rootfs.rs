//! Paths inside a container rootfs, resolved inside it.
//!
//! An image is untrusted: `/usr/lib/libcuda.so.1 -> /etc/shadow` or `../../../../etc` must
//! resolve to the *image's* `/etc/shadow`, never the host's. Resolution walks one component at a
//! time, reads each symlink itself and re-roots absolute targets at the rootfs, clamps `..` at
//! the rootfs, and gives up after a fixed number of links (as the kernel does with ELOOP).
//! Everything that later opens a file of the image goes through here, and opens only regular
//! files (no FIFO, device or socket can stall or harm us).

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The kernel's own limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// Resolve `path` (as the container sees it; absolute or relative to `/`) inside `root`.
/// Returns the host path of the final component. A missing component is an error
/// (`NotFound`); too many links is `ELOOP`.
pub fn resolve(root: &Path, path: &Path) -> io::Result<PathBuf> {
    // `stack` holds the components still to walk, last component on top.
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut stack, path);
    let mut inside: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(comp) = stack.pop() {
        if comp == OsStr::new("..") {
            inside.pop();
            continue;
        }
        if comp == OsStr::new(".") || comp.is_empty() {
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(inside.iter());
        candidate.push(&comp);
        let meta = std::fs::symlink_metadata(&candidate)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                inside.clear();
            }
            push_components(&mut stack, &target);
        } else {
            inside.push(comp);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(inside.iter());
    Ok(out)
}

fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    let comps: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// Open a regular file of the image for reading. Refuses FIFOs, devices and sockets without
/// opening them (opening a FIFO blocks), and re-checks after opening with `O_NOFOLLOW`, so a file
/// swapped for a link in between is refused too.
pub fn open_regular(root: &Path, path: &Path) -> io::Result<(File, Metadata)> {
    let host = resolve(root, path)?;
    let meta = std::fs::symlink_metadata(&host)?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&host)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((f, meta))
}

/// Metadata of `path` inside `root` with the final component not followed (a device node
/// `/dev/nvidia0` is judged as itself).
pub fn lstat(root: &Path, path: &Path) -> io::Result<Metadata> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dir = resolve(root, parent)?;
    std::fs::symlink_metadata(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), "image").unwrap();
        std::fs::write(r.join("usr/lib/libcuda.so.1.0"), "lib").unwrap();
        symlink("libcuda.so.1.0", r.join("usr/lib/libcuda.so.1")).unwrap();
        symlink("/etc/passwd", r.join("usr/lib/abs")).unwrap();
        symlink("../../../../../../etc/passwd", r.join("usr/lib/dotdot")).unwrap();
        symlink("loop2", r.join("usr/lib/loop1")).unwrap();
        symlink("loop1", r.join("usr/lib/loop2")).unwrap();
        symlink("/proc/self/root/etc/passwd", r.join("usr/lib/procroot")).unwrap();
        d
    }

    #[test]
    fn links_stay_inside_the_rootfs() {
        let d = tree();
        let r = d.path();
        let cases: &[(&str, Option<&str>)] = &[
            ("/usr/lib/libcuda.so.1", Some("usr/lib/libcuda.so.1.0")),
            ("usr/lib/abs", Some("etc/passwd")),
            ("/usr/lib/dotdot", Some("etc/passwd")),
            ("/../../etc/passwd", Some("etc/passwd")),
            ("/usr/lib/procroot", None), // /proc does not exist in the image: not the host's
            ("/usr/lib/loop1", None),
        ];
        for (p, want) in cases {
            let got = resolve(r, Path::new(p));
            match want {
                Some(w) => assert_eq!(got.unwrap(), r.join(w), "{p}"),
                None => assert!(got.is_err(), "{p} resolved to {:?}", got),
            }
        }
        let e = resolve(r, Path::new("/usr/lib/loop1")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let (mut f, _) = open_regular(r, Path::new("/usr/lib/abs")).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "image");
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tree();
        let p = d.path().join("usr/lib/fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = open_regular(d.path(), Path::new("/usr/lib/fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
