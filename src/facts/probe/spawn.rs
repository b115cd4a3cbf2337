//! Starting the probe child (`cuda-preflight probe-child`) and waiting for it.
//!
//! Where the container has a cgroup v2 directory the child is created in it by
//! `clone3(CLONE_INTO_CGROUP)` (Linux ≥ 5.7): joining later by writing `cgroup.procs` takes the
//! cgroup core's thread-group lock for writing, which waits for an RCU grace period (measured at
//! 0.1 or 20–25 ms on the H100), while a clone into a cgroup takes it only for reading. Where that
//! is refused (an older kernel, a v1-only host, a cgroup that takes no process) the child is
//! started without it and joins by `cgroup.procs` as before. The hook may have threads, so
//! between the clone and the `execve` the child makes system calls only, on values prepared
//! before the clone (as `posix_spawn` does). `CLONE_PIDFD` gives a pidfd to wait on with a
//! deadline instead of polling.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;

/// How the child ended.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A started child, reaped only here.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    done: Option<Status>,
}

pub struct Spawned {
    pub child: Child,
    pub stdin: File,
    pub stdout: File,
    /// Started by `clone3` (else by `std::process::Command`).
    pub clone3: bool,
    /// Started inside the cgroup asked for.
    pub into_cgroup: bool,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The fds the child puts at 0, 1, 2, and the pipe it reports a failed `execve` on.
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Start `exe probe-child` with no environment, in `/`, stdin and stdout pipes, stderr
/// /dev/null; in `cgroup` (a cgroup v2 directory) where the kernel allows.
pub fn spawn(exe: &Path, cgroup: Option<&Path>) -> Result<Spawned, String> {
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    // The child's fds must not be 0-2 already (dup2 would clobber one with another); std's
    // spawn handles that case.
    let low = [in_r.as_raw_fd(), out_w.as_raw_fd(), devnull.as_raw_fd()]
        .iter()
        .any(|fd| *fd < 3);
    if !low {
        let cg = cgroup.and_then(|d| {
            nix::fcntl::open(
                d,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
            .map(owned)
        });
        let path = CString::new(exe.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let attempts: Vec<Option<RawFd>> = match &cg {
            Some(fd) => vec![Some(fd.as_raw_fd()), None],
            None => vec![None],
        };
        for cgfd in attempts {
            let (rep_r, rep_w) = pipe()?;
            let fds = ChildFds {
                stdin: in_r.as_raw_fd(),
                stdout: out_w.as_raw_fd(),
                stderr: devnull.as_raw_fd(),
                report: rep_w.as_raw_fd(),
            };
            match clone3_exec(&path, cgfd, &fds) {
                // Refused with the cgroup: try without it; refused at all: std's spawn.
                Err(Errno::ENOSYS) => break,
                Err(_) if cgfd.is_some() => continue,
                Err(e) => return Err(format!("clone3: {e}")),
                Ok((pid, pidfd)) => {
                    drop(rep_w);
                    let mut child = Child {
                        pid,
                        pidfd: Some(pidfd),
                        done: None,
                    };
                    // The report pipe closes on a successful execve; an errno otherwise.
                    let mut err = [0u8; 4];
                    let n = nix::unistd::read(rep_r.as_raw_fd(), &mut err).unwrap_or(0);
                    if n == 4 {
                        child.wait();
                        return Err(Errno::from_raw(i32::from_ne_bytes(err)).to_string());
                    }
                    return Ok(Spawned {
                        child,
                        stdin: File::from(in_w),
                        stdout: File::from(out_r),
                        clone3: true,
                        into_cgroup: cgfd.is_some(),
                    });
                }
            }
        }
    }
    let c = std::process::Command::new(exe)
        .arg("probe-child")
        .env_clear()
        .current_dir("/")
        .stdin(std::process::Stdio::from(in_r))
        .stdout(std::process::Stdio::from(out_w))
        .stderr(std::process::Stdio::from(devnull))
        .spawn()
        .map_err(|e| e.to_string())?;
    // Reaped here by pid (dropping a std Child neither waits nor kills).
    let pid = c.id() as libc::pid_t;
    drop(c);
    Ok(Spawned {
        child: Child {
            pid,
            pidfd: None,
            done: None,
        },
        stdin: File::from(in_w),
        stdout: File::from(out_r),
        clone3: false,
        into_cgroup: false,
    })
}

/// An fd a system call just returned.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: only called on a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `clone3` (fork-style, not vfork: a child that stalls before its `execve` — born into a frozen
/// cgroup — must not hold this thread where the hook's deadline cannot reach it; the caller
/// learns the exec's outcome from the report pipe, in an interruptible read) then, in the child,
/// `execve(path, [path, "probe-child"], [])` with `fds` at 0, 1, 2.
#[allow(unsafe_code)]
fn clone3_exec(
    path: &CString,
    cgroup: Option<RawFd>,
    fds: &ChildFds,
) -> Result<(libc::pid_t, OwnedFd), Errno> {
    // Prepared before the clone: the child allocates nothing.
    let arg1 = c"probe-child";
    let argv: [*const libc::c_char; 3] = [path.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let root = c"/";
    // The child starts with no signal blocked, as std's spawn gives it (a mask is inherited
    // across execve).
    let empty = nix::sys::signal::SigSet::empty();
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        pidfd: (&mut pidfd as *mut libc::c_int) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid, fully initialised clone_args of the size passed, no CLONE_VM
    // and no stack: the child runs on a copy of this address space, like fork(2). In the child
    // only async-signal-safe system calls follow, on the values prepared above, ending in
    // execve or _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    if r == 0 {
        // SAFETY: the child of the clone above: system calls only (see there).
        unsafe {
            let ok = [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)]
                .iter()
                .all(|&(from, to)| libc::dup2(from, to) == to)
                && libc::chdir(root.as_ptr()) == 0
                && libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut()) == 0;
            if ok {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            let e = (*libc::__errno_location()).to_ne_bytes();
            libc::write(fds.report, e.as_ptr().cast(), 4);
            libc::_exit(127);
        }
    }
    // CLONE_PIDFD stored a new pidfd that nothing else owns.
    Ok((r as libc::pid_t, owned(pidfd)))
}

impl Child {
    fn reap(&mut self, flags: Option<nix::sys::wait::WaitPidFlag>) -> Option<Status> {
        use nix::sys::wait::{WaitStatus, waitpid};
        if let Some(s) = self.done {
            return Some(s);
        }
        let s = loop {
            match waitpid(nix::unistd::Pid::from_raw(self.pid), flags) {
                Ok(WaitStatus::Exited(_, c)) => {
                    break Status {
                        code: Some(c),
                        signal: None,
                    };
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    break Status {
                        code: None,
                        signal: Some(sig as i32),
                    };
                }
                Ok(WaitStatus::StillAlive) => return None,
                Ok(_) | Err(Errno::EINTR) => continue,
                // Not our child any more (reaped elsewhere): nothing left to wait for.
                Err(_) => {
                    break Status {
                        code: None,
                        signal: None,
                    };
                }
            }
        };
        self.done = Some(s);
        Some(s)
    }

    /// Wait until the child has ended or `until`; `None` if it is still running then.
    pub fn wait_until(&mut self, until: Instant) -> Option<Status> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        loop {
            if let Some(s) = self.reap(Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                return Some(s);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match &self.pidfd {
                // Readable once the process has ended.
                Some(fd) => {
                    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
    }

    pub fn wait(&mut self) -> Status {
        self.reap(None).unwrap_or(Status {
            code: None,
            signal: None,
        })
    }

    /// Signal the child unless it has been reaped (its pid is ours until then).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if self.done.is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A script the child runs as `exe probe-child`: prints its cgroups and environment.
    fn script(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("child.sh");
        std::fs::write(
            &p,
            "#!/bin/sh\ncat /proc/self/cgroup\necho env=$(env | wc -l) cwd=$(pwd) arg=$1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    fn output(mut s: Spawned) -> (String, Status) {
        drop(s.stdin);
        let mut out = String::new();
        s.stdout.read_to_string(&mut out).unwrap();
        let st = s
            .child
            .wait_until(Instant::now() + Duration::from_secs(10))
            .unwrap();
        (out, st)
    }

    /// The cgroup v2 hierarchy of this host (pure v2, or hybrid's `unified`).
    fn v2_root() -> std::path::PathBuf {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists() && super::super::is_cgroup2(p))
            .expect("a cgroup v2 hierarchy (the test needs one, as the probe's clone does)")
    }

    #[test]
    fn the_child_is_born_in_the_cgroup_asked_for_with_nothing_of_ours() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(d.path());
        let name = format!("cpf-spawn-test-{}", std::process::id());
        let cg = v2_root().join(&name);
        std::fs::create_dir(&cg).unwrap();
        let s = spawn(&exe, Some(&cg)).unwrap();
        assert!(s.clone3 && s.into_cgroup);
        let (out, st) = output(s);
        let _ = std::fs::remove_dir(&cg);
        assert_eq!(st.code, Some(0), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&name)),
            "{out}"
        );
        // No environment (the shell adds PWD, SHLVL and _ of its own), in /, one argument.
        assert!(out.contains("cwd=/ arg=probe-child"), "{out}");
        let n: usize = out
            .split("env=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n <= 3, "{out}");
    }

    #[test]
    fn a_directory_that_is_no_cgroup_falls_back_to_a_plain_start() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(d.path());
        let s = spawn(&exe, Some(d.path())).unwrap();
        assert!(s.clone3 && !s.into_cgroup);
        let (out, st) = output(s);
        assert_eq!(st.code, Some(0), "{out}");
    }

    #[test]
    fn a_failed_exec_is_an_error_and_a_signal_is_a_status() {
        let e = spawn(Path::new("/nonexistent/cuda-preflight"), None)
            .err()
            .unwrap();
        assert!(e.contains("ENOENT"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hang.sh");
        std::fs::write(&p, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut s = spawn(&p, None).unwrap();
        assert!(
            s.child
                .wait_until(Instant::now() + Duration::from_millis(50))
                .is_none()
        );
        s.child.signal(nix::sys::signal::Signal::SIGKILL);
        let st = s
            .child
            .wait_until(Instant::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(st.signal, Some(libc::SIGKILL));
    }
}
