//! The probe: create and destroy a real CUDA context inside the container — its cgroup, its
//! namespaces, its rootfs, its user, no capabilities — before the workload does.
//!
//! The parent (the hook) spawns a fresh copy of this binary (`cuda-preflight probe-child`): a new
//! process has no threads to make `fork` unsafe and no state from the hook, and a deadline can
//! kill it without harming the hook. The child reads a [`ProbeSpec`] on stdin, sets itself up
//! (see `probe_child`), loads the container's `libcuda.so.1` by the path the container's loader
//! would pick (resolved here, inside the rootfs: the child's own loader has the host's
//! `ld.so.cache` mapped and must not choose), calls the driver and writes a [`ProbeOutcome`] as
//! JSON on stdout.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the child needs; built by the hook from the spec and `/proc/<pid>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub pid: i32,
    pub proc_root: PathBuf,
    /// `cgroup.procs` files (host paths) the child writes itself into, so the container's device
    /// rules bind it too.
    pub cgroup_procs: Vec<PathBuf>,
    /// Namespace kinds to enter (`user`, `cgroup`, `ipc`, `uts`, `net`, `pid`, `mnt`), those
    /// where the container's differ from the hook's, in that order. The pid namespace matters:
    /// the container's /proc belongs to it, and the driver reads /proc/self (measured on the H100:
    /// outside it `cuInit` fails with 304 CUDA_ERROR_OPERATING_SYSTEM).
    pub namespaces: Vec<String>,
    /// The rootfs as the container's mount namespace names it (runc mounts it at its own path).
    pub rootfs: PathBuf,
    /// `libcuda.so.1` as the container's loader resolves it, a path inside the rootfs.
    pub libcuda: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// One driver call's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub call: String,
    pub code: i64,
    /// `cuGetErrorName`'s answer, where the driver gave one.
    pub name: Option<String>,
    pub ms: f64,
}

/// Who and where the child was when it loaded the driver: the evidence that image code ran with
/// no more privilege than the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `CapEff`, `CapBnd` of /proc/self/status, hex as the kernel prints them.
    pub cap_eff: Option<String>,
    pub cap_bnd: Option<String>,
    pub no_new_privs: Option<bool>,
    /// `readlink /proc/self/ns/mnt` inside the container, where its /proc is mounted.
    pub mnt_ns: Option<String>,
    /// `readlink /proc/self/ns/pid`: the container's pid namespace, whose /proc the driver reads.
    pub pid_ns: Option<String>,
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Set when the child could not enter the container (our failure, not the driver's).
    pub setup_error: Option<String>,
    pub identity: Identity,
    pub libcuda: PathBuf,
    /// Set when the container's libcuda could not be loaded or lacks the driver API.
    pub load_error: Option<String>,
    pub calls: Vec<Call>,
    pub driver_version: Option<i64>,
    pub device_count: Option<i64>,
}

impl ProbeOutcome {
    /// The first driver call that failed.
    pub fn first_failure(&self) -> Option<&Call> {
        self.calls.iter().find(|c| c.code != 0)
    }
}

/// What the parent saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ProbeResult {
    Finished {
        outcome: ProbeOutcome,
        ms: f64,
    },
    TimedOut {
        deadline_ms: u64,
    },
    /// Killed by a signal (a crash in the driver or the image's library) or exited without an
    /// answer.
    Crashed {
        signal: Option<i32>,
        exit_code: Option<i32>,
    },
    /// The child could not be started or its answer not read.
    Failed {
        error: String,
    },
}

/// Children's output is a few KB; a child that writes more is not our child.
const MAX_OUTPUT: usize = 1 << 20;

/// Run the probe child with a deadline.
pub fn run(
    spec: &ProbeSpec,
    child_exe: &Path,
    ld_library_path: Option<&str>,
    deadline: Duration,
) -> ProbeResult {
    let started = Instant::now();
    let mut cmd = Command::new(child_exe);
    cmd.arg("probe-child")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());

    // Read by the child's loader at start, applied to paths inside the chroot when libcuda pulls
    // in its companions (libnvidia-ptxjitcompiler, …) by soname.
    if let Some(p) = ld_library_path {
        cmd.env("LD_LIBRARY_PATH", p);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProbeResult::Failed {
                error: format!("starting {}: {e}", child_exe.display()),
            };
        }
    };
    let input = serde_json::to_vec(spec).expect("ProbeSpec serialises");
    let _ = child.stdin.take().expect("piped").write_all(&input);
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = Vec::new();
    let timed_out = read_until_deadline(&mut stdout, &mut buf, started, deadline);
    if timed_out {
        // SIGTERM first: the child kills and reaps the process it forked inside the container's
        // pid namespace (an orphan there would be left to the container's init, which does not
        // reap before exec), then dies of SIGKILL itself. SIGKILL if it does not within 1 s.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            if let Ok(Some(_)) = child.try_wait() {
                return ProbeResult::TimedOut { deadline_ms: deadline.as_millis() as u64 };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        return ProbeResult::TimedOut {
            deadline_ms: deadline.as_millis() as u64,
        };
    }
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            return ProbeResult::Failed {
                error: format!("waiting for the probe: {e}"),
            };
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match serde_json::from_slice::<ProbeOutcome>(&buf) {
        Ok(outcome) if status.signal().is_none() => ProbeResult::Finished {
            outcome,
            ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        _ => ProbeResult::Crashed {
            signal: status.signal(),
            exit_code: status.code(),
        },
    }
}

/// Read the child's stdout to EOF, or until the deadline; true when the deadline passed.
fn read_until_deadline(
    r: &mut std::process::ChildStdout,
    buf: &mut Vec<u8>,
    started: Instant,
    deadline: Duration,
) -> bool {
    let fd = r.as_raw_fd();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if n == 0 {
            return true;
        }
        match r.read(&mut chunk) {
            Ok(0) => return false,
            Ok(k) => {
                if buf.len() + k > MAX_OUTPUT {
                    return false;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The `cgroup.procs` files of the process's cgroups: v2 `0::/path`, and for v1 each hierarchy
/// that holds a controller (the devices hierarchy is the one that matters for GPU access).
pub fn cgroup_procs_files(proc_cgroup: &str, cgroup_root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let dir = if ctrls.is_empty() {
            // cgroup v2: the root itself, or `unified/` beside the v1 hierarchies (hybrid mode).
            let v2 = cgroup_root.join(rel);
            if cgroup_root.join("cgroup.controllers").exists() {
                v2
            } else {
                cgroup_root.join("unified").join(rel)
            }
        } else if let Some(name) = ctrls.strip_prefix("name=") {
            cgroup_root.join(name).join(rel)
        } else {
            cgroup_root.join(ctrls).join(rel)
        };
        let f = dir.join("cgroup.procs");
        if f.exists() {
            out.push(f);
        }
    }
    out
}

/// Namespaces of `pid` that differ from ours, in the order the child enters them: the user
/// namespace first (entering it grants the capabilities needed for the others it owns), the
/// mount namespace last (after it, `/proc` paths of the host are gone).
pub fn namespaces_to_enter(pid: i32, proc_root: &Path) -> Vec<String> {
    ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"]
        .into_iter()
        .filter(|ns| {
            let theirs = std::fs::read_link(proc_root.join(format!("{pid}/ns/{ns}")));
            let ours = std::fs::read_link(proc_root.join(format!("self/ns/{ns}")));
            matches!((theirs, ours), (Ok(a), Ok(b)) if a != b)
        })
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_for_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        for p in ["devices/c1", "cpu,cpuacct/c1", "systemd/c1", "unified/x"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
            std::fs::write(d.path().join(p).join("cgroup.procs"), "").unwrap();
        }
        let text = "5:devices:/c1\n2:cpu,cpuacct:/c1\n1:name=systemd:/c1\n9:memory:/missing\n";
        let got = cgroup_procs_files(text, d.path());
        assert_eq!(
            got,
            vec![
                d.path().join("devices/c1/cgroup.procs"),
                d.path().join("cpu,cpuacct/c1/cgroup.procs"),
                d.path().join("systemd/c1/cgroup.procs")
            ]
        );
        // Hybrid: the v2 line goes to unified/.
        let hybrid = cgroup_procs_files("0::/x\n", d.path());
        assert_eq!(hybrid, vec![d.path().join("unified/x/cgroup.procs")]);
        // Pure v2: the root has cgroup.controllers.
        std::fs::write(d.path().join("unified/cgroup.controllers"), "").unwrap();
        let v2 = cgroup_procs_files("0::/x\n", &d.path().join("unified"));
        assert_eq!(v2, vec![d.path().join("unified/x/cgroup.procs")]);
    }
}
