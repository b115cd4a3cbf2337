//! The probe child (`cuda-preflight probe-child`, started only by the probe): becomes the
//! container — its cgroup, every namespace, its rootfs with the spec's masked and read-only paths
//! and read-only root, its rlimits, user and groups, no capabilities, no-new-privs, its seccomp
//! filter — and only then loads the container's `libcuda.so.1` and asks the driver.
//!
//! Three processes, so that image code can outlive nothing and reach nothing:
//!
//! * **A** (exec'd by the hook, empty environment, fds above 2 closed): joins the cgroups, enters
//!   every namespace but the mount namespace, forks B and waits for it.
//! * **B** (in the container's pid namespace): opens a fresh pid namespace below the container's
//!   and forks C into it; waits for C.
//! * **C** (pid 1 of that namespace): enters the container's mount namespace, takes a private copy
//!   of it where the spec's confinement is mounted, chroots, takes the rlimits and the user,
//!   drops every capability, sets the container's CUDA environment, applies the seccomp filter,
//!   loads libcuda. When C ends, the kernel kills every process image code forked; each of A, B,
//!   C dies with its parent (`PR_SET_PDEATHSIG`), and a SIGTERM to A is passed down as SIGKILL to
//!   C, so the hook's deadline ends all of them.
//!
//! Nothing of the image reaches the host's loader: A is started with no environment, and the
//! container's environment is data in the [`ProbeSpec`], set with `setenv` in C after the chroot.
//! Library directories the container's `LD_LIBRARY_PATH` names (which glibc reads only at process
//! start) are honoured by loading the companion libraries the hook resolved, by path.
//!
//! The order of the steps is the point of this file; it is written once, against [`Sys`], and a
//! unit test pins it.
#![deny(unsafe_code)] // allowed only on the few functions below that need it, each `SAFETY:`-commented

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use crate::facts::probe::{Call, Identity, ProbeOutcome, ProbeSpec, Rlimit};

/// The system calls of becoming the container, one method per step, so the order can be
/// checked without privilege.
pub trait Sys {
    fn close_fds_above_stderr(&mut self) -> Result<(), String>;
    /// Die with our parent: set now, and again after a change of credentials clears it.
    fn die_with_parent(&mut self) -> Result<(), String>;
    fn join_cgroup(&mut self, procs: &Path) -> Result<(), String>;
    fn open_ns(&mut self, path: &Path) -> Result<OwnedFd, String>;
    fn setns(&mut self, fd: &OwnedFd, kind: &str) -> Result<(), String>;
    /// `readlink /proc/self/ns/<kind>` while the host's /proc is there.
    fn ns_link(&mut self, kind: &str) -> Option<String>;
    /// Fork; the parent waits for the child and ends as it ended (never returns); the child
    /// returns.
    fn fork_and_wait(&mut self, what: &str) -> Result<(), String>;
    fn unshare(&mut self, kind: &str) -> Result<(), String>;
    fn make_mounts_private(&mut self) -> Result<(), String>;
    fn root_readonly(&mut self, rootfs: &Path) -> Result<(), String>;
    fn mask(&mut self, rootfs: &Path, path: &str) -> Result<(), String>;
    fn readonly(&mut self, rootfs: &Path, path: &str) -> Result<(), String>;
    fn mount_proc(&mut self, rootfs: &Path) -> Result<(), String>;
    fn chroot(&mut self, rootfs: &Path) -> Result<(), String>;
    fn set_rlimit(&mut self, r: &Rlimit) -> Result<(), String>;
    fn drop_bounding_set(&mut self) -> Result<(), String>;
    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), String>;
    fn clear_capabilities(&mut self) -> Result<(), String>;
    fn no_new_privs(&mut self) -> Result<(), String>;
    fn set_env(&mut self, key: &str, value: &str);
    fn seccomp(&mut self, program: &[[u32; 4]]) -> Result<(), String>;
    /// Put this process under the container's AppArmor profile or SELinux label now
    /// ([`lsm_attr`] says how).
    fn apply_lsm(&mut self, lsm: Lsm, label: &str) -> Result<(), String>;
}

/// A Linux security module whose label the container's process runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lsm {
    AppArmor,
    SeLinux,
}

/// The procfs attribute file and the value that put the calling thread under `label` at once,
/// and `apparmor_dir`: whether the kernel has the per-module `attr/apparmor/` directory (else
/// the shared `attr/` files, as runc falls back). runc writes the *exec* attributes ("exec
/// <profile>", the SELinux exec label) because an `execve` of the workload follows; the probe
/// loads image code with `dlopen` in the same process, so it changes its *current* label, which
/// is what libapparmor's `aa_change_profile` and SELinux's `setcon` write.
pub fn lsm_attr(lsm: Lsm, label: &str, apparmor_dir: bool) -> (&'static str, String) {
    match (lsm, apparmor_dir) {
        (Lsm::AppArmor, true) => (
            "/proc/thread-self/attr/apparmor/current",
            format!("changeprofile {label}"),
        ),
        (Lsm::AppArmor, false) => (
            "/proc/thread-self/attr/current",
            format!("changeprofile {label}"),
        ),
        (Lsm::SeLinux, _) => ("/proc/thread-self/attr/current", label.to_string()),
    }
}

/// What C learnt while the host's /proc was still there.
#[derive(Debug, Default)]
pub struct Joined {
    pub mnt_ns: Option<String>,
    pub pid_ns: Option<String>,
}

fn ns_flag(kind: &str) -> nix::sched::CloneFlags {
    use nix::sched::CloneFlags as F;
    match kind {
        "user" => F::CLONE_NEWUSER,
        "cgroup" => F::CLONE_NEWCGROUP,
        "ipc" => F::CLONE_NEWIPC,
        "uts" => F::CLONE_NEWUTS,
        "net" => F::CLONE_NEWNET,
        "pid" => F::CLONE_NEWPID,
        _ => F::CLONE_NEWNS,
    }
}

/// Every step from the hook's child to the confined process that may load image code. Any
/// failure stops before image code is loaded.
pub fn become_the_container(
    sys: &mut dyn Sys,
    spec: &ProbeSpec,
    steps: &mut Vec<(String, f64)>,
) -> Result<Joined, String> {
    let mut t = Instant::now();
    let mut step = |name: &str, t: &mut Instant| {
        steps.push((name.to_string(), t.elapsed().as_secs_f64() * 1000.0));
        *t = Instant::now();
    };
    sys.die_with_parent()?;
    // 0. The container's rlimits, here while we are still root in the host's user namespace:
    //    raising a hard limit needs CAP_SYS_RESOURCE there (as runc sets them from outside for a
    //    user-namespaced container); every process below inherits them.
    for r in &spec.rlimits {
        sys.set_rlimit(r)?;
    }
    // 1. The container's cgroups: its device rules and pids/memory limits bind us.
    for f in &spec.cgroup_procs {
        sys.join_cgroup(f)?;
    }
    step("cgroup", &mut t);
    // 2. Every namespace fd first (they are reached through the host's /proc); the mount
    //    namespace is entered last, by C.
    let mut fds = Vec::new();
    for ns in &spec.namespaces {
        let p = spec.proc_root.join(format!("{}/ns/{ns}", spec.pid));
        fds.push((ns.clone(), sys.open_ns(&p)?));
    }
    let (mnt, others): (Vec<_>, Vec<_>) = fds.into_iter().partition(|(ns, _)| ns == "mnt");
    for (ns, fd) in &others {
        sys.setns(fd, ns)?;
    }
    drop(others);
    step("setns", &mut t);
    // 3. B: inside the container's pid namespace (setns applies to children only).
    sys.fork_and_wait("pid")?;
    sys.die_with_parent()?;
    let pid_ns = sys.ns_link("pid");
    // 4. C: pid 1 of a namespace of its own below the container's, so that everything image code
    //    forks dies with it. /proc/self still works there: the container's procfs shows C too.
    sys.unshare("pid")?;
    sys.fork_and_wait("nested pid")?;
    sys.die_with_parent()?;
    step("fork", &mut t);
    // 5. The container's mount namespace, and a private copy of it where the spec's confinement
    //    is mounted (runc applies it only after the createRuntime hooks); nothing propagates out.
    for (ns, fd) in &mnt {
        sys.setns(fd, ns)?;
    }
    drop(mnt);
    let mnt_ns = sys.ns_link("mnt");
    sys.unshare("mnt")?;
    sys.make_mounts_private()?;
    if spec.root_readonly {
        sys.root_readonly(&spec.rootfs)?;
    }
    // A procfs of C's own pid namespace over the container's /proc, before the masks (they
    // cover it as they will cover the workload's). The driver reads /proc/<getpid()>: through
    // the container's procfs that is its pid 1, runc init, and cuInit fails with 304
    // CUDA_ERROR_OPERATING_SYSTEM (measured on the H100; the workload is pid 1 of the procfs it
    // sees, so for it the two agree).
    sys.mount_proc(&spec.rootfs)?;
    for p in &spec.masked_paths {
        sys.mask(&spec.rootfs, p)?;
    }
    for p in &spec.readonly_paths {
        sys.readonly(&spec.rootfs, p)?;
    }
    sys.chroot(&spec.rootfs)?;
    step("mnt", &mut t);
    // 6. The user; the bounding set is emptied while CAP_SETPCAP is still ours; no capability in
    //    any set, no way back.
    sys.drop_bounding_set()?;
    sys.set_ids(spec.uid, spec.gid, &spec.additional_gids)?;
    sys.clear_capabilities()?;
    sys.no_new_privs()?;
    sys.die_with_parent()?;
    sys.close_fds_above_stderr()?;
    // 7. The container's AppArmor profile and SELinux label, once nothing is left to do that
    //    they could refuse (the hook passes only those of modules the host has enabled); one
    //    that cannot be applied stops the probe here, before image code.
    if let Some(p) = &spec.apparmor_profile {
        sys.apply_lsm(Lsm::AppArmor, p)?;
    }
    if let Some(l) = &spec.selinux_label {
        sys.apply_lsm(Lsm::SeLinux, l)?;
    }
    // 8. The container's CUDA environment, as data.
    for (k, v) in &spec.env {
        sys.set_env(k, v);
    }
    // 9. Its seccomp filter, last: from here on only what the container's process may do.
    for program in &spec.seccomp {
        sys.seccomp(program)?;
    }
    step("user+caps+seccomp", &mut t);
    Ok(Joined { mnt_ns, pid_ns })
}

/// The process `fork_and_wait` is waiting for, and the signal a SIGTERM is passed on as.
static WAITING_FOR: AtomicI32 = AtomicI32::new(0);
static PASS_ON: AtomicI32 = AtomicI32::new(0);
static TERM_PENDING: AtomicI32 = AtomicI32::new(0);

#[allow(unsafe_code)]
extern "C" fn on_term(_: libc::c_int) {
    // Async-signal-safe: atomics and kill(2) only.
    let pid = WAITING_FOR.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our own child.
        unsafe { libc::kill(pid, PASS_ON.load(Ordering::SeqCst)) };
    } else {
        TERM_PENDING.store(1, Ordering::SeqCst);
    }
}

/// The real system calls.
pub struct Real {
    /// The pid namespace level: 0 in A, 1 in B, 2 in C.
    level: u8,
}

fn errno(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Open `path` inside `rootfs` as the container would resolve it (symlinks stay inside the
/// rootfs), O_PATH. `None` when it does not exist (runc skips those too).
#[allow(unsafe_code)]
fn resolve_in_root(rootfs: &Path, path: &str) -> Result<Option<OwnedFd>, String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| errno(&format!("opening {}", rootfs.display()), e))?;
    // SAFETY: `open` returned a new fd that nothing else owns.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(root.as_raw_fd(), path.trim_start_matches('/'), how) {
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno(&format!("resolving {path} in the rootfs"), e)),
    }
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The flags a bind remount must keep (a mount locked by a user namespace refuses to lose them).
fn kept_flags(target: &str) -> nix::mount::MsFlags {
    use nix::mount::MsFlags as M;
    use nix::sys::statvfs::FsFlags as S;
    let Ok(st) = nix::sys::statvfs::statvfs(target) else {
        return M::empty();
    };
    let f = st.flags();
    let mut out = M::empty();
    for (s, m) in [
        (S::ST_NOSUID, M::MS_NOSUID),
        (S::ST_NODEV, M::MS_NODEV),
        (S::ST_NOEXEC, M::MS_NOEXEC),
        (S::ST_NOATIME, M::MS_NOATIME),
        (S::ST_NODIRATIME, M::MS_NODIRATIME),
        (S::ST_RELATIME, M::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

fn remount_readonly(target: &str) -> Result<(), String> {
    use nix::mount::{MsFlags as M, mount};
    let flags = M::MS_BIND | M::MS_REMOUNT | M::MS_RDONLY | kept_flags(target);
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| errno("read-only remount", e))
}

fn bind_self(target: &str) -> Result<(), String> {
    use nix::mount::{MsFlags as M, mount};
    mount(
        Some(target),
        target,
        None::<&str>,
        M::MS_BIND | M::MS_REC,
        None::<&str>,
    )
    .map_err(|e| errno("bind mount", e))
}

fn resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

impl Sys for Real {
    #[allow(unsafe_code)]
    fn close_fds_above_stderr(&mut self) -> Result<(), String> {
        // SAFETY: close_range(2) closes fds; nothing of ours above stderr is in use here.
        let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if r != 0 {
            return Err(errno("close_range", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn die_with_parent(&mut self) -> Result<(), String> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| errno("PR_SET_PDEATHSIG", e))?;
        // Our parent may have died before the line above: then we are an orphan already.
        // (In a new pid namespace the parent is outside it and getppid() is 0.)
        if nix::unistd::getppid().as_raw() == 1 && self.level == 0 {
            return Err("the hook ended before the probe started".into());
        }
        Ok(())
    }

    fn join_cgroup(&mut self, procs: &Path) -> Result<(), String> {
        std::fs::write(procs, std::process::id().to_string())
            .map_err(|e| errno(&format!("joining {}", procs.display()), e))
    }

    fn open_ns(&mut self, path: &Path) -> Result<OwnedFd, String> {
        std::fs::File::open(path)
            .map(OwnedFd::from)
            .map_err(|e| errno(&format!("opening {}", path.display()), e))
    }

    fn setns(&mut self, fd: &OwnedFd, kind: &str) -> Result<(), String> {
        nix::sched::setns(fd, ns_flag(kind))
            .map_err(|e| errno(&format!("entering the container's {kind} namespace"), e))
    }

    fn ns_link(&mut self, kind: &str) -> Option<String> {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .ok()
            .map(|p| p.display().to_string())
    }

    #[allow(unsafe_code)]
    fn fork_and_wait(&mut self, what: &str) -> Result<(), String> {
        // SAFETY: this process is single-threaded (a fresh exec that starts no thread), so the
        // child may run any code after fork.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(errno(&format!("fork into the {what} namespace"), e)),
            Ok(nix::unistd::ForkResult::Child) => {
                self.level += 1;
                WAITING_FOR.store(0, Ordering::SeqCst);
                Ok(())
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // A passes SIGTERM on as SIGTERM (B then kills C and waits for the namespace to
                // empty); B passes it on as SIGKILL to C.
                let pass_on = if self.level == 0 {
                    libc::SIGTERM
                } else {
                    libc::SIGKILL
                };
                wait_and_mirror(child.as_raw(), pass_on)
            }
        }
    }

    fn unshare(&mut self, kind: &str) -> Result<(), String> {
        nix::sched::unshare(ns_flag(kind)).map_err(|e| errno(&format!("a new {kind} namespace"), e))
    }

    fn make_mounts_private(&mut self) -> Result<(), String> {
        use nix::mount::{MsFlags as M, mount};
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            M::MS_REC | M::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| errno("making the probe's mounts private", e))
    }

    fn root_readonly(&mut self, rootfs: &Path) -> Result<(), String> {
        let r = rootfs.display().to_string();
        bind_self(&r).map_err(|e| format!("{r}: {e}"))?;
        remount_readonly(&r).map_err(|e| format!("{r}: {e}"))
    }

    fn mask(&mut self, rootfs: &Path, path: &str) -> Result<(), String> {
        use nix::mount::{MsFlags as M, mount};
        let Some(fd) = resolve_in_root(rootfs, path)? else {
            return Ok(());
        };
        let target = fd_path(&fd);
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| errno(&format!("masking {path}"), e))?;
        let r = if is_dir {
            mount(
                Some("tmpfs"),
                target.as_str(),
                Some("tmpfs"),
                M::MS_RDONLY,
                Some("size=0"),
            )
        } else {
            mount(
                Some("/dev/null"),
                target.as_str(),
                None::<&str>,
                M::MS_BIND,
                None::<&str>,
            )
        };
        r.map_err(|e| errno(&format!("masking {path}"), e))
    }

    fn readonly(&mut self, rootfs: &Path, path: &str) -> Result<(), String> {
        let Some(fd) = resolve_in_root(rootfs, path)? else {
            return Ok(());
        };
        bind_self(&fd_path(&fd)).map_err(|e| format!("{path}: {e}"))?;
        // The new mount is on top: resolve again to reach it.
        let Some(top) = resolve_in_root(rootfs, path)? else {
            return Err(format!("{path} vanished while made read-only"));
        };
        remount_readonly(&fd_path(&top)).map_err(|e| format!("{path}: {e}"))
    }

    fn mount_proc(&mut self, rootfs: &Path) -> Result<(), String> {
        use nix::mount::{MsFlags as M, mount};
        let Some(fd) = resolve_in_root(rootfs, "/proc")? else {
            return Err("the rootfs has no /proc to mount the probe's procfs on".into());
        };
        // What the container has mounted below its /proc (an lxcfs file, the legacy NVIDIA
        // hook's tmpfs over /proc/driver/nvidia) is cloned now and put back on the fresh procfs,
        // so the driver reads what the workload will read.
        let dir = std::fs::read_link(fd_path(&fd))
            .map_err(|e| errno("reading where the container's /proc is", e))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| errno("reading the mount table", e))?;
        let mut trees = Vec::new();
        for rel in proc_submounts(&mountinfo, &dir.display().to_string()) {
            let tree = clone_mount(&dir.join(&rel))
                .map_err(|e| format!("cloning the container's /proc/{rel}: {e}"))?;
            trees.push((rel, tree));
        }
        mount(
            Some("proc"),
            fd_path(&fd).as_str(),
            Some("proc"),
            M::MS_NOSUID | M::MS_NODEV | M::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| errno("mounting the probe's own /proc", e))?;
        for (rel, tree) in trees {
            // A path of another pid namespace's procfs (/proc/<pid>/…) is not in ours.
            let Some(target) = resolve_in_root(rootfs, &format!("/proc/{rel}"))? else {
                continue;
            };
            move_mount(&tree, &target)
                .map_err(|e| format!("putting the container's /proc/{rel} back: {e}"))?;
        }
        Ok(())
    }

    fn chroot(&mut self, rootfs: &Path) -> Result<(), String> {
        nix::unistd::chroot(rootfs)
            .map_err(|e| errno(&format!("chroot {}", rootfs.display()), e))?;
        nix::unistd::chdir("/").map_err(|e| errno("chdir /", e))
    }

    fn set_rlimit(&mut self, r: &Rlimit) -> Result<(), String> {
        let res = resource(&r.kind).ok_or_else(|| format!("unknown rlimit {}", r.kind))?;
        nix::sys::resource::setrlimit(res, r.soft, r.hard)
            .map_err(|e| errno(&format!("setrlimit {}", r.kind), e))
    }

    fn drop_bounding_set(&mut self) -> Result<(), String> {
        for cap in caps::all() {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
        Ok(())
    }

    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
        use nix::unistd::{Gid, Uid};
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| errno("setgroups", e))?;
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(|e| errno("setresgid", e))?;
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(|e| errno("setresuid", e))
    }

    fn clear_capabilities(&mut self) -> Result<(), String> {
        for set in [
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
            caps::CapSet::Inheritable,
            caps::CapSet::Ambient,
        ] {
            caps::clear(None, set).map_err(|e| format!("clearing {set:?} capabilities: {e}"))?;
        }
        Ok(())
    }

    fn no_new_privs(&mut self) -> Result<(), String> {
        nix::sys::prctl::set_no_new_privs().map_err(|e| errno("PR_SET_NO_NEW_PRIVS", e))
    }

    #[allow(unsafe_code)]
    fn set_env(&mut self, key: &str, value: &str) {
        // SAFETY: C is single-threaded here (no thread has been started, no image code loaded).
        unsafe { std::env::set_var(key, value) };
    }

    fn seccomp(&mut self, program: &[[u32; 4]]) -> Result<(), String> {
        let prog: seccompiler::BpfProgram = program
            .iter()
            .map(|[code, jt, jf, k]| seccompiler::sock_filter {
                code: *code as u16,
                jt: *jt as u8,
                jf: *jf as u8,
                k: *k,
            })
            .collect();
        seccompiler::apply_filter(&prog).map_err(|e| errno("applying the seccomp filter", e))
    }

    fn apply_lsm(&mut self, lsm: Lsm, label: &str) -> Result<(), String> {
        let dir = Path::new("/proc/thread-self/attr/apparmor").is_dir();
        let (path, value) = lsm_attr(lsm, label, dir);
        let what = match lsm {
            Lsm::AppArmor => "AppArmor profile",
            Lsm::SeLinux => "SELinux label",
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
            .map_err(|e| format!("applying the container's {what} {label:?} ({path}): {e}"))
    }
}

/// The mounts directly below the procfs mounted at `proc_dir` in a `/proc/self/mountinfo` text,
/// as paths relative to it, in mount order (each is cloned with what is mounted below it).
/// systemd's automount point for binfmt_misc (`autofs`, on a host's /proc) is left out: it
/// cannot be cloned without its daemon and no driver reads it.
pub fn proc_submounts(mountinfo: &str, proc_dir: &str) -> Vec<String> {
    // Fields: id, parent, major:minor, root, mount point, …; octal escapes for space and the like.
    let unescape = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let entries: Vec<(&str, &str, String, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?;
            let parent = f.next()?;
            let point = unescape(f.nth(2)?);
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            Some((id, parent, point, fstype))
        })
        .collect();
    // The topmost mount at proc_dir is the container's /proc.
    let Some(proc_id) = entries
        .iter()
        .rev()
        .find(|(_, _, point, _)| point == proc_dir)
        .map(|(id, _, _, _)| *id)
    else {
        return Vec::new();
    };
    let prefix = format!("{}/", proc_dir.trim_end_matches('/'));
    entries
        .iter()
        .filter(|(_, parent, point, fstype)| {
            *parent == proc_id && point.starts_with(&prefix) && *fstype != "autofs"
        })
        .map(|(_, _, point, _)| point[prefix.len()..].to_string())
        .collect()
}

/// A detached copy of the mount at `path` and everything below it (`open_tree`).
#[allow(unsafe_code)]
fn clone_mount(path: &Path) -> Result<OwnedFd, String> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_NO_AUTOMOUNT as libc::c_uint
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    let p = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: open_tree(2) with a NUL-terminated path; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Attach the detached mount `tree` at `target` (an O_PATH fd), `move_mount`.
#[allow(unsafe_code)]
fn move_mount(tree: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    // SAFETY: move_mount(2) on two fds we own, with empty NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// Wait for `child` and end the same way: its exit code, or its signal (so a crash in the driver
/// reads as a crash to the hook). A SIGTERM is passed on to the child as `pass_on`, so it is
/// reaped here and never left behind.
#[allow(unsafe_code)]
fn wait_and_mirror(child: libc::pid_t, pass_on: libc::c_int) -> ! {
    use nix::sys::wait::{WaitStatus, waitpid};
    PASS_ON.store(pass_on, Ordering::SeqCst);
    WAITING_FOR.store(child, Ordering::SeqCst);
    if TERM_PENDING.load(Ordering::SeqCst) != 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::try_from(pass_on).ok(),
        );
    }
    // The child writes the answer; our copy of stdout would keep the hook from seeing its end.
    let _ = nix::unistd::close(1);
    let code = loop {
        match waitpid(nix::unistd::Pid::from_raw(child), None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                // SAFETY: restoring the default action, then ending of the same signal.
                unsafe {
                    let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
                }
                let _ = nix::sys::signal::raise(sig);
                break 3;
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 3,
        }
    };
    // SAFETY: ending this process without running Rust's or libc's exit handlers.
    unsafe { libc::_exit(code) }
}

/// Who we are after the setup, read through the container's /proc (C is pid 1 of a namespace
/// below the container's, so the container's procfs shows it).
fn identity(joined: &Joined) -> Identity {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let link = |p: &str| std::fs::read_link(p).ok().map(|l| l.display().to_string());
    let status = read("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    Identity {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default(),
        cap_eff: field("CapEff:"),
        cap_bnd: field("CapBnd:"),
        no_new_privs: field("NoNewPrivs:").map(|v| v == "1"),
        mnt_ns: joined.mnt_ns.clone(),
        pid_ns: joined.pid_ns.clone(),
        cgroup: read("/proc/self/cgroup"),
        seccomp: field("Seccomp:").and_then(|v| v.parse().ok()),
        own_mnt_ns: link("/proc/self/ns/mnt"),
        own_pid_ns: link("/proc/self/ns/pid"),
    }
}

type CuInit = unsafe extern "C" fn(libc::c_uint) -> libc::c_int;
type CuIntOut = unsafe extern "C" fn(*mut libc::c_int) -> libc::c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut libc::c_int, libc::c_int) -> libc::c_int;
type CuCtxCreate =
    unsafe extern "C" fn(*mut *mut libc::c_void, libc::c_uint, libc::c_int) -> libc::c_int;
type CuCtxDestroy = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type CuModuleLoadData =
    unsafe extern "C" fn(*mut *mut libc::c_void, *const libc::c_void) -> libc::c_int;
type CuModuleUnload = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type CuGetErrorName = unsafe extern "C" fn(libc::c_int, *mut *const libc::c_char) -> libc::c_int;

/// GPUs asked for a context at most; more would only cost time.
const MAX_DEVICES: i64 = 16;

/// Load a library by path, as the container's process would (`RTLD_NOW | RTLD_LOCAL`).
#[allow(unsafe_code)]
fn load(path: &Path) -> Result<libloading::os::unix::Library, String> {
    // SAFETY: running the library's initialisers is the point; we are confined as the container
    // is (see `become_the_container`).
    unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| e.to_string())
}

#[allow(unsafe_code)]
fn drive(
    outcome: &mut ProbeOutcome,
    libcuda: &Path,
    preload: &[std::path::PathBuf],
    canary: Option<&str>,
) -> Result<(), String> {
    let t = Instant::now();
    // Companions the container's LD_LIBRARY_PATH points to: glibc reads that variable only at
    // process start, so they are loaded by path now and libcuda's own dlopen by soname finds
    // them loaded. One that does not load is left to libcuda's own search.
    let _companions: Vec<_> = preload.iter().filter_map(|p| load(p).ok()).collect();
    let lib = load(libcuda).map_err(|e| format!("dlopen {}: {e}", libcuda.display()))?;
    outcome
        .setup_ms
        .push(("dlopen".into(), t.elapsed().as_secs_f64() * 1000.0));
    let sym = |name: &[u8]| -> Result<*mut libc::c_void, String> {
        // SAFETY: reading a symbol's address; it is given a type below.
        unsafe { lib.get::<*mut libc::c_void>(name) }
            .map(|s| *s)
            .map_err(|_| {
                format!(
                    "{} has no {}",
                    libcuda.display(),
                    String::from_utf8_lossy(&name[..name.len().saturating_sub(1)])
                )
            })
    };
    // SAFETY (all transmutes below): the CUDA driver API's published signatures.
    // SAFETY: each symbol is the driver API function of that name, with its published signature.
    let (cu_init, cu_version, cu_count, cu_dev, cu_ctx, cu_destroy): (
        CuInit,
        CuIntOut,
        CuIntOut,
        CuDeviceGet,
        CuCtxCreate,
        CuCtxDestroy,
    ) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, CuInit>(sym(b"cuInit\0")?),
            std::mem::transmute::<*mut libc::c_void, CuIntOut>(sym(b"cuDriverGetVersion\0")?),
            std::mem::transmute::<*mut libc::c_void, CuIntOut>(sym(b"cuDeviceGetCount\0")?),
            std::mem::transmute::<*mut libc::c_void, CuDeviceGet>(sym(b"cuDeviceGet\0")?),
            std::mem::transmute::<*mut libc::c_void, CuCtxCreate>(sym(b"cuCtxCreate_v2\0")?),
            std::mem::transmute::<*mut libc::c_void, CuCtxDestroy>(sym(b"cuCtxDestroy_v2\0")?),
        )
    };
    let module_load: Option<(CuModuleLoadData, CuModuleUnload)> =
        match (sym(b"cuModuleLoadData\0"), sym(b"cuModuleUnload\0")) {
            // SAFETY: the driver API's published signatures.
            (Ok(l), Ok(u)) => Some(unsafe {
                (
                    std::mem::transmute::<*mut libc::c_void, CuModuleLoadData>(l),
                    std::mem::transmute::<*mut libc::c_void, CuModuleUnload>(u),
                )
            }),
            _ => None,
        };
    let canary = canary.and_then(|c| CString::new(c).ok());
    // SAFETY: the driver API's published signature.
    let get_name: Option<CuGetErrorName> = sym(b"cuGetErrorName\0")
        .ok()
        .map(|p| unsafe { std::mem::transmute::<*mut libc::c_void, CuGetErrorName>(p) });
    let name_of = |code: libc::c_int| -> Option<String> {
        let f = get_name?;
        let mut s: *const libc::c_char = std::ptr::null();
        // SAFETY: the driver returns a static NUL-terminated string; bounded below.
        (unsafe { f(code, &mut s) } == 0 && !s.is_null()).then(|| {
            // SAFETY: as above, a NUL-terminated string the driver keeps.
            let name = unsafe { CStr::from_ptr(s) }.to_string_lossy();
            name.chars().take(64).collect()
        })
    };
    let mut timed = |call: String, f: &mut dyn FnMut() -> libc::c_int| -> libc::c_int {
        let t = Instant::now();
        let code = f();
        outcome.calls.push(Call {
            call,
            code: code as i64,
            name: name_of(code),
            ms: t.elapsed().as_secs_f64() * 1000.0,
        });
        code
    };
    // Every driver call below: the published signature, with out-pointers to live locals.
    // SAFETY: as said above.
    if timed("cuInit".into(), &mut || unsafe { cu_init(0) }) != 0 {
        return Ok(());
    }
    let mut v = 0;
    // SAFETY: as said above.
    if timed("cuDriverGetVersion".into(), &mut || unsafe {
        cu_version(&mut v)
    }) == 0
    {
        outcome.driver_version = Some(v as i64);
    }
    let mut n = 0;
    // SAFETY: as said above.
    if timed("cuDeviceGetCount".into(), &mut || unsafe {
        cu_count(&mut n)
    }) != 0
    {
        return Ok(());
    }
    outcome.device_count = Some(n as i64);
    for i in 0..(n as i64).min(MAX_DEVICES) {
        let mut dev = 0;
        // SAFETY: as said above.
        if timed(format!("cuDeviceGet({i})"), &mut || unsafe {
            cu_dev(&mut dev, i as libc::c_int)
        }) != 0
        {
            return Ok(());
        }
        let mut ctx: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: as said above.
        if timed(format!("cuCtxCreate({i})"), &mut || unsafe {
            cu_ctx(&mut ctx, 0, dev)
        }) != 0
        {
            return Ok(());
        }
        if i == 0
            && let (Some((load, unload)), Some(ptx)) = (module_load, canary.as_ref())
        {
            let mut module: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: as said above.
            let code = timed(crate::facts::probe::CANARY_CALL.into(), &mut || unsafe {
                load(&mut module, ptx.as_ptr().cast())
            });
            if code == 0 {
                // SAFETY: a module this context loaded.
                unsafe { unload(module) };
            }
        }
        // SAFETY: as said above.
        timed(format!("cuCtxDestroy({i})"), &mut || unsafe {
            cu_destroy(ctx)
        });
    }
    // The library stays mapped until _exit: unloading image code gains nothing.
    std::mem::forget(lib);
    Ok(())
}

/// The child's whole life: read the spec, become the container, ask the driver, print JSON, end.
/// Returns the exit code where it returns at all.
#[allow(unsafe_code)]
pub fn main(stdin: impl Read) -> i32 {
    let mut sys = Real { level: 0 };
    // Nothing the hook's runtime left open survives into image code.
    if sys.close_fds_above_stderr().is_err() {
        return 2;
    }
    // SAFETY: installing a handler that only uses atomics and kill(2).
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::SigHandler::Handler(on_term),
        );
    }
    let mut input = Vec::new();
    if stdin.take(1 << 20).read_to_end(&mut input).is_err() {
        return 2;
    }
    let Ok(spec) = serde_json::from_slice::<ProbeSpec>(&input) else {
        return 2;
    };
    drop(input);
    let mut outcome = ProbeOutcome {
        libcuda: spec.libcuda.clone(),
        ..ProbeOutcome::default()
    };
    let mut steps = Vec::new();
    let setup = become_the_container(&mut sys, &spec, &mut steps);
    outcome.setup_ms = steps;
    match setup {
        Err(e) => outcome.setup_error = Some(e),
        Ok(joined) => {
            outcome.identity = identity(&joined);
            if let Err(e) = drive(
                &mut outcome,
                &spec.libcuda,
                &spec.preload,
                spec.ptx_canary.as_deref(),
            ) {
                outcome.load_error = Some(e);
            }
        }
    }
    finish(&outcome)
}

/// Write the answer and end at once: the driver's own teardown at exit is skipped (the kernel
/// releases the GPU as the process ends), and image code gets no more time.
#[allow(unsafe_code)]
fn finish(outcome: &ProbeOutcome) -> i32 {
    let json = serde_json::to_vec(outcome).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, &json);
    let _ = std::io::Write::flush(&mut out);
    drop(out);
    // The hook's read ends here, not when the exit has closed every fd (the driver's fds first
    // tear the GPU context down).
    let _ = nix::unistd::close(1);
    // SAFETY: ending the process without exit handlers (image code may have registered some).
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each step; forks return as the child (the path that reaches image code).
    #[derive(Default)]
    struct Record(Vec<String>);

    impl Sys for Record {
        fn close_fds_above_stderr(&mut self) -> Result<(), String> {
            self.0.push("close_fds".into());
            Ok(())
        }
        fn die_with_parent(&mut self) -> Result<(), String> {
            self.0.push("pdeathsig".into());
            Ok(())
        }
        fn join_cgroup(&mut self, p: &Path) -> Result<(), String> {
            self.0.push(format!("cgroup {}", p.display()));
            Ok(())
        }
        fn open_ns(&mut self, p: &Path) -> Result<OwnedFd, String> {
            self.0.push(format!("open {}", p.display()));
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| e.to_string())
        }
        fn setns(&mut self, _: &OwnedFd, kind: &str) -> Result<(), String> {
            self.0.push(format!("setns {kind}"));
            Ok(())
        }
        fn ns_link(&mut self, kind: &str) -> Option<String> {
            self.0.push(format!("link {kind}"));
            None
        }
        fn fork_and_wait(&mut self, what: &str) -> Result<(), String> {
            self.0.push(format!("fork {what}"));
            Ok(())
        }
        fn unshare(&mut self, kind: &str) -> Result<(), String> {
            self.0.push(format!("unshare {kind}"));
            Ok(())
        }
        fn make_mounts_private(&mut self) -> Result<(), String> {
            self.0.push("private".into());
            Ok(())
        }
        fn root_readonly(&mut self, _: &Path) -> Result<(), String> {
            self.0.push("root ro".into());
            Ok(())
        }
        fn mask(&mut self, _: &Path, p: &str) -> Result<(), String> {
            self.0.push(format!("mask {p}"));
            Ok(())
        }
        fn readonly(&mut self, _: &Path, p: &str) -> Result<(), String> {
            self.0.push(format!("ro {p}"));
            Ok(())
        }
        fn mount_proc(&mut self, _: &Path) -> Result<(), String> {
            self.0.push("proc".into());
            Ok(())
        }
        fn chroot(&mut self, _: &Path) -> Result<(), String> {
            self.0.push("chroot".into());
            Ok(())
        }
        fn set_rlimit(&mut self, r: &Rlimit) -> Result<(), String> {
            self.0.push(format!("rlimit {}", r.kind));
            Ok(())
        }
        fn drop_bounding_set(&mut self) -> Result<(), String> {
            self.0.push("bounding".into());
            Ok(())
        }
        fn set_ids(&mut self, uid: u32, _: u32, _: &[u32]) -> Result<(), String> {
            self.0.push(format!("ids {uid}"));
            Ok(())
        }
        fn clear_capabilities(&mut self) -> Result<(), String> {
            self.0.push("caps".into());
            Ok(())
        }
        fn no_new_privs(&mut self) -> Result<(), String> {
            self.0.push("nnp".into());
            Ok(())
        }
        fn set_env(&mut self, k: &str, _: &str) {
            self.0.push(format!("env {k}"));
        }
        fn seccomp(&mut self, _: &[[u32; 4]]) -> Result<(), String> {
            self.0.push("seccomp".into());
            Ok(())
        }
        fn apply_lsm(&mut self, lsm: Lsm, label: &str) -> Result<(), String> {
            self.0.push(format!("lsm {lsm:?} {label}"));
            Ok(())
        }
    }

    #[test]
    fn the_steps_run_in_the_order_that_keeps_image_code_confined() {
        let spec = ProbeSpec {
            pid: 42,
            proc_root: "/proc".into(),
            cgroup_procs: vec!["/sys/fs/cgroup/c/cgroup.procs".into()],
            namespaces: ["user", "pid", "mnt"].map(String::from).to_vec(),
            rootfs: "/b/rootfs".into(),
            libcuda: "/usr/lib/libcuda.so.1".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
            ptx_canary: None,
            env: vec![("CUDA_VISIBLE_DEVICES".into(), "0".into())],
            preload: vec![],
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            root_readonly: true,
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 1024,
            }],
            seccomp: vec![vec![[6, 0, 0, 0x7fff_0000]]],
            apparmor_profile: Some("docker-default".into()),
            selinux_label: Some("system_u:system_r:container_t:s0:c1,c2".into()),
        };
        let mut r = Record::default();
        let mut steps = Vec::new();
        become_the_container(&mut r, &spec, &mut steps).unwrap();
        let want = [
            "pdeathsig",
            "rlimit RLIMIT_NOFILE",
            "cgroup /sys/fs/cgroup/c/cgroup.procs",
            "open /proc/42/ns/user",
            "open /proc/42/ns/pid",
            "open /proc/42/ns/mnt",
            "setns user",
            "setns pid",
            "fork pid",
            "pdeathsig",
            "link pid",
            "unshare pid",
            "fork nested pid",
            "pdeathsig",
            "setns mnt",
            "link mnt",
            "unshare mnt",
            "private",
            "root ro",
            "proc",
            "mask /proc/kcore",
            "ro /proc/sys",
            "chroot",
            "bounding",
            "ids 1000",
            "caps",
            "nnp",
            "pdeathsig",
            "close_fds",
            "lsm AppArmor docker-default",
            "lsm SeLinux system_u:system_r:container_t:s0:c1,c2",
            "env CUDA_VISIBLE_DEVICES",
            "seccomp",
        ];
        assert_eq!(r.0, want);
    }

    #[test]
    fn a_failed_step_stops_before_anything_later() {
        struct FailChroot(Record);
        // Delegate everything, fail at chroot.
        impl Sys for FailChroot {
            fn close_fds_above_stderr(&mut self) -> Result<(), String> {
                self.0.close_fds_above_stderr()
            }
            fn die_with_parent(&mut self) -> Result<(), String> {
                self.0.die_with_parent()
            }
            fn join_cgroup(&mut self, p: &Path) -> Result<(), String> {
                self.0.join_cgroup(p)
            }
            fn open_ns(&mut self, p: &Path) -> Result<OwnedFd, String> {
                self.0.open_ns(p)
            }
            fn setns(&mut self, f: &OwnedFd, k: &str) -> Result<(), String> {
                self.0.setns(f, k)
            }
            fn ns_link(&mut self, k: &str) -> Option<String> {
                self.0.ns_link(k)
            }
            fn fork_and_wait(&mut self, w: &str) -> Result<(), String> {
                self.0.fork_and_wait(w)
            }
            fn unshare(&mut self, k: &str) -> Result<(), String> {
                self.0.unshare(k)
            }
            fn make_mounts_private(&mut self) -> Result<(), String> {
                self.0.make_mounts_private()
            }
            fn root_readonly(&mut self, p: &Path) -> Result<(), String> {
                self.0.root_readonly(p)
            }
            fn mount_proc(&mut self, r: &Path) -> Result<(), String> {
                self.0.mount_proc(r)
            }
            fn mask(&mut self, r: &Path, p: &str) -> Result<(), String> {
                self.0.mask(r, p)
            }
            fn readonly(&mut self, r: &Path, p: &str) -> Result<(), String> {
                self.0.readonly(r, p)
            }
            fn chroot(&mut self, _: &Path) -> Result<(), String> {
                Err("chroot refused".into())
            }
            fn set_rlimit(&mut self, r: &Rlimit) -> Result<(), String> {
                self.0.set_rlimit(r)
            }
            fn drop_bounding_set(&mut self) -> Result<(), String> {
                self.0.drop_bounding_set()
            }
            fn set_ids(&mut self, u: u32, g: u32, gs: &[u32]) -> Result<(), String> {
                self.0.set_ids(u, g, gs)
            }
            fn clear_capabilities(&mut self) -> Result<(), String> {
                self.0.clear_capabilities()
            }
            fn no_new_privs(&mut self) -> Result<(), String> {
                self.0.no_new_privs()
            }
            fn set_env(&mut self, k: &str, v: &str) {
                self.0.set_env(k, v)
            }
            fn seccomp(&mut self, p: &[[u32; 4]]) -> Result<(), String> {
                self.0.seccomp(p)
            }
            fn apply_lsm(&mut self, l: Lsm, v: &str) -> Result<(), String> {
                self.0.apply_lsm(l, v)
            }
        }
        let spec: ProbeSpec = serde_json::from_value(serde_json::json!({
            "pid": 1, "proc_root": "/proc", "cgroup_procs": [], "namespaces": [],
            "rootfs": "/r", "libcuda": "/l", "uid": 0, "gid": 0, "additional_gids": [],
            "env": [["CUDA_VISIBLE_DEVICES", "0"]]
        }))
        .unwrap();
        let mut f = FailChroot(Record::default());
        let e = become_the_container(&mut f, &spec, &mut Vec::new()).unwrap_err();
        assert_eq!(e, "chroot refused");
        assert!(!f.0.0.iter().any(|s| s.starts_with("env") || s == "ids 0"));
    }

    #[test]
    fn the_lsm_attribute_and_value_are_those_that_change_the_current_label() {
        for (lsm, dir, path, value) in [
            (
                Lsm::AppArmor,
                true,
                "/proc/thread-self/attr/apparmor/current",
                "changeprofile docker-default",
            ),
            (
                Lsm::AppArmor,
                false,
                "/proc/thread-self/attr/current",
                "changeprofile docker-default",
            ),
            (
                Lsm::SeLinux,
                true,
                "/proc/thread-self/attr/current",
                "docker-default",
            ),
        ] {
            assert_eq!(
                lsm_attr(lsm, "docker-default", dir),
                (path, value.to_string()),
                "{lsm:?} {dir}"
            );
        }
    }

    #[test]
    fn a_label_that_cannot_be_applied_stops_the_probe_before_image_code() {
        struct Refuse(Record);
        impl Sys for Refuse {
            fn close_fds_above_stderr(&mut self) -> Result<(), String> {
                self.0.close_fds_above_stderr()
            }
            fn die_with_parent(&mut self) -> Result<(), String> {
                self.0.die_with_parent()
            }
            fn join_cgroup(&mut self, p: &Path) -> Result<(), String> {
                self.0.join_cgroup(p)
            }
            fn open_ns(&mut self, p: &Path) -> Result<OwnedFd, String> {
                self.0.open_ns(p)
            }
            fn setns(&mut self, f: &OwnedFd, k: &str) -> Result<(), String> {
                self.0.setns(f, k)
            }
            fn ns_link(&mut self, k: &str) -> Option<String> {
                self.0.ns_link(k)
            }
            fn fork_and_wait(&mut self, w: &str) -> Result<(), String> {
                self.0.fork_and_wait(w)
            }
            fn unshare(&mut self, k: &str) -> Result<(), String> {
                self.0.unshare(k)
            }
            fn make_mounts_private(&mut self) -> Result<(), String> {
                self.0.make_mounts_private()
            }
            fn root_readonly(&mut self, p: &Path) -> Result<(), String> {
                self.0.root_readonly(p)
            }
            fn mount_proc(&mut self, r: &Path) -> Result<(), String> {
                self.0.mount_proc(r)
            }
            fn mask(&mut self, r: &Path, p: &str) -> Result<(), String> {
                self.0.mask(r, p)
            }
            fn readonly(&mut self, r: &Path, p: &str) -> Result<(), String> {
                self.0.readonly(r, p)
            }
            fn chroot(&mut self, r: &Path) -> Result<(), String> {
                self.0.chroot(r)
            }
            fn set_rlimit(&mut self, r: &Rlimit) -> Result<(), String> {
                self.0.set_rlimit(r)
            }
            fn drop_bounding_set(&mut self) -> Result<(), String> {
                self.0.drop_bounding_set()
            }
            fn set_ids(&mut self, u: u32, g: u32, gs: &[u32]) -> Result<(), String> {
                self.0.set_ids(u, g, gs)
            }
            fn clear_capabilities(&mut self) -> Result<(), String> {
                self.0.clear_capabilities()
            }
            fn no_new_privs(&mut self) -> Result<(), String> {
                self.0.no_new_privs()
            }
            fn set_env(&mut self, k: &str, v: &str) {
                self.0.set_env(k, v)
            }
            fn seccomp(&mut self, p: &[[u32; 4]]) -> Result<(), String> {
                self.0.seccomp(p)
            }
            fn apply_lsm(&mut self, _: Lsm, label: &str) -> Result<(), String> {
                Err(format!("no profile {label}"))
            }
        }
        let spec: ProbeSpec = serde_json::from_value(serde_json::json!({
            "pid": 1, "proc_root": "/proc", "cgroup_procs": [], "namespaces": [],
            "rootfs": "/r", "libcuda": "/l", "uid": 0, "gid": 0, "additional_gids": [],
            "env": [["CUDA_VISIBLE_DEVICES", "0"]],
            "seccomp": [[[6, 0, 0, 2147418112]]],
            "apparmor_profile": "missing-profile"
        }))
        .unwrap();
        let mut f = Refuse(Record::default());
        let e = become_the_container(&mut f, &spec, &mut Vec::new()).unwrap_err();
        assert_eq!(e, "no profile missing-profile");
        assert!(f.0.0.contains(&"nnp".to_string()));
        assert!(
            !f.0.0.iter().any(|s| s.starts_with("env") || s == "seccomp"),
            "{:?}",
            f.0.0
        );
    }

    #[test]
    fn a_profile_the_kernel_does_not_know_is_an_error_that_names_it() {
        // A profile no host has: refused whether or not AppArmor is on (ENOENT, or EINVAL
        // where no module takes the attribute), so this process stays as it was.
        let e = Real { level: 0 }
            .apply_lsm(Lsm::AppArmor, "cuda-preflight-no-such-profile")
            .unwrap_err();
        assert!(e.contains("cuda-preflight-no-such-profile"), "{e}");
        assert!(e.contains("/proc/thread-self/attr/"), "{e}");
    }

    #[test]
    fn submounts_of_the_containers_proc_are_those_mounted_directly_on_it() {
        let mountinfo = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
300 200 8:1 / /b/root\\040fs rw - ext4 /dev/sda1 rw
301 300 0:50 / /b/root\\040fs/proc rw,nosuid - proc proc rw
302 301 0:51 / /b/root\\040fs/proc/driver/nvidia rw - tmpfs tmpfs rw
303 302 0:51 /gpus /b/root\\040fs/proc/driver/nvidia/gpus ro - tmpfs tmpfs rw
304 301 8:1 /lxcfs/uptime /b/root\\040fs/proc/uptime ro - fuse lxcfs rw
305 300 0:52 / /b/root\\040fs/procfoo rw - tmpfs tmpfs rw
306 22 0:53 / /proc/sys/fs/binfmt_misc rw - autofs systemd-1 rw
";
        assert_eq!(
            proc_submounts(mountinfo, "/b/root fs/proc"),
            vec!["driver/nvidia", "uptime"]
        );
        // systemd's binfmt_misc automount point on a host's /proc is left out.
        assert_eq!(proc_submounts(mountinfo, "/proc"), Vec::<String>::new());
        let bind = format!("{mountinfo}308 22 0:55 / /proc/sys/kernel/x rw - tmpfs tmpfs rw\n");
        assert_eq!(proc_submounts(&bind, "/proc"), vec!["sys/kernel/x"]);
        assert_eq!(
            proc_submounts(mountinfo, "/nowhere/proc"),
            Vec::<String>::new()
        );
        // A second procfs stacked on the first: its children are the ones seen.
        let stacked = format!("{mountinfo}307 301 0:54 / /b/root\\040fs/proc rw - proc proc rw\n");
        assert_eq!(
            proc_submounts(&stacked, "/b/root fs/proc"),
            Vec::<String>::new()
        );
    }
}
