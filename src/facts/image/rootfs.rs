//! Paths inside a container rootfs, resolved inside it.
//!
//! An image is untrusted: `/usr/lib/libcuda.so.1 -> /etc/shadow` or `../../../../etc` must
//! resolve to the *image's* `/etc/shadow`, never the host's. Resolution walks one component at a
//! time, reads each symlink itself and re-roots absolute targets at the rootfs, clamps `..` at
//! the rootfs, and gives up after a fixed number of links (as the kernel does with ELOOP). A path
//! with no link and no `..` on the way is answered by one kernel lookup that refuses both
//! (`openat2` beneath the rootfs), which gives the same answer.
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
    if let Some(r) = resolve_plain(root, path) {
        return r;
    }
    resolve_walk(root, path)
}

/// The common case in one lookup: a path without `..` none of whose components is a symlink.
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the rootfs succeeds only then (a
/// trailing link too is refused: no `O_NOFOLLOW`), and the answer is the rootfs joined with the
/// path, as the walk would give it. `ENOENT` means every component before the missing one is a
/// directory that is no link, where the walk stops with `NotFound` too. Anything else (a link on
/// the way, `ENOTDIR`, a kernel without openat2) is `None`: the walk decides. A hit reads some 150
/// paths of the image through `/proc/<pid>/root`, and the walk `lstat`s every prefix of each from
/// the host's `/`.
#[allow(unsafe_code)]
fn resolve_plain(root: &Path, path: &Path) -> Option<io::Result<PathBuf>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => rel.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if rel.as_os_str().is_empty() {
        return None;
    }
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
    };
    let held = HELD.with(|h| {
        h.borrow()
            .as_ref()
            .filter(|(p, _)| p == root)
            .map(|(_, fd)| openat2(fd.as_raw_fd(), rel.as_path(), how()))
    });
    let found = match held {
        Some(r) => r,
        None => openat2(open_dir(root)?.as_raw_fd(), rel.as_path(), how()),
    };
    match found {
        Ok(fd) => {
            // SAFETY: openat2 returned a new fd that nothing else owns; closed here.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Some(Ok(root.join(rel)))
        }
        Err(nix::errno::Errno::ENOENT) => Some(Err(io::Error::from_raw_os_error(libc::ENOENT))),
        Err(_) => None,
    }
}

#[allow(unsafe_code)]
fn open_dir(root: &Path) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    // SAFETY: `open` returned a new fd that nothing else owns.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

thread_local! {
    /// The rootfs held open by [`hold`], with the path it was opened by.
    static HELD: std::cell::RefCell<Option<(PathBuf, std::os::fd::OwnedFd)>> =
        const { std::cell::RefCell::new(None) };
}

/// While the returned guard lives, [`resolve`] on this thread looks paths up from `root` opened
/// once here, not by its path each time (through `/proc/<pid>/root`, a walk of its own). For
/// the span of one container's facts, where the rootfs does not change: a long-lived process
/// (the NRI plugin) must not keep a directory a later container's path would name. Nested
/// guards restore the outer one.
pub struct Held {
    outer: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

pub fn hold(root: &Path) -> Held {
    let fd = open_dir(root);
    let outer = HELD.with(|h| h.replace(fd.map(|fd| (root.to_path_buf(), fd))));
    Held { outer }
}

impl Drop for Held {
    fn drop(&mut self) {
        let outer = self.outer.take();
        HELD.with(|h| h.replace(outer));
    }
}

/// Component by component: every link read here and re-rooted at the rootfs.
fn resolve_walk(root: &Path, path: &Path) -> io::Result<PathBuf> {
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

    /// The one-lookup path gives what the walk gives, answer and error kind, for plain paths,
    /// links at the end or on the way, `..`, a file in the middle, and what is missing.
    #[test]
    fn the_plain_lookup_agrees_with_the_walk() {
        let d = tree();
        let r = d.path();
        symlink("/usr", r.join("usrlink")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/sub")).unwrap();
        // (path, answered in one lookup)
        let cases = [
            ("/usr/lib/libcuda.so.1.0", true),
            ("usr/lib", true),
            ("/usr/lib/sub", true),
            ("/./usr//lib/./sub", true),
            ("/etc/passwd", true),
            ("/usr/lib/missing", true),
            ("/missing/lib", true),
            ("/usr/lib/libcuda.so.1", false),
            ("/usrlink/lib/libcuda.so.1.0", false),
            ("/usr/lib/abs", false),
            ("/usr/lib/sub/../libcuda.so.1.0", false),
            ("/usr/lib/libcuda.so.1.0/x", false),
            ("/usrlink/missing", false),
            ("/usr/lib/loop1", false),
            ("/", false),
            ("", false),
        ];
        // Opening the rootfs per lookup, and with it held open.
        let unheld = cases.map(|c| (c, false));
        let held = cases.map(|c| (c, true));
        for ((p, plain), hold_it) in unheld.into_iter().chain(held) {
            let _h = hold_it.then(|| hold(r));
            let walked = resolve_walk(r, Path::new(p));
            let got = resolve(r, Path::new(p));
            match (&got, &walked) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{p}"),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{p}: {a} vs {b}"),
                _ => panic!("{p}: {got:?} vs the walk's {walked:?}"),
            }
            assert_eq!(resolve_plain(r, Path::new(p)).is_some(), plain, "{p}");
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn fifo_is_refused_without_blocking() {
        let d = tree();
        let p = d.path().join("usr/lib/fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = open_regular(d.path(), Path::new("/usr/lib/fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
