//! The probe: create and destroy a real CUDA context inside the container — confined as the
//! container's own process will be (`docs/probe.md`) — before the workload does.
//!
//! The parent (the hook) spawns a fresh copy of this binary (`cuda-preflight probe-child`) with
//! no environment: a new process has no threads to make `fork` unsafe and no state from the hook,
//! and a deadline can end it and everything below it without harming the hook. The child reads a
//! [`ProbeSpec`] on stdin, becomes the container (see `probe_child`), loads the container's
//! `libcuda.so.1` by the path the container's loader would pick (resolved here, inside the
//! rootfs: the child's own loader must not choose), calls the driver and writes a
//! [`ProbeOutcome`] as JSON on stdout — untrusted data from then on, bounded on the way in.

#![deny(unsafe_code)]

pub mod answer;
pub mod cache;
pub mod child;
pub mod seccomp;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Starting the child: `clone3` into the container's cgroup where there is one, else a plain
/// spawn; waiting on a pidfd.
mod spawn;

/// What the child needs; built by the hook from the spec and `/proc/<pid>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// PTX text loaded with `cuModuleLoadData` in the first context: exercises the JIT compiler
    /// library (`libnvidia-ptxjitcompiler`) that PTX-only kernels need.
    #[serde(default)]
    pub ptx_canary: Option<String>,
    /// The container's CUDA environment (`CUDA_*`, `NVIDIA_*`, `LD_LIBRARY_PATH`), set with
    /// `setenv` inside the container before libcuda is loaded: data, never the child's own
    /// environment (the host's loader would read it).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Companion libraries (paths inside the rootfs) the container's `LD_LIBRARY_PATH` resolves
    /// differently from the cache and default directories: loaded by path before libcuda.
    #[serde(default)]
    pub preload: Vec<PathBuf>,
    /// The spec's `linux.maskedPaths`, `linux.readonlyPaths` and `root.readonly`, applied in the
    /// probe's private mount namespace.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    #[serde(default)]
    pub root_readonly: bool,
    /// The spec's `process.rlimits`.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// The spec's seccomp filter, compiled to classic BPF programs (`code, jt, jf, k`), applied
    /// in order.
    #[serde(default)]
    pub seccomp: Vec<Vec<[u32; 4]>>,
    /// The spec's `process.apparmorProfile`, where AppArmor is enabled on the host
    /// ([`lsm_labels`]).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// The spec's `process.selinuxLabel`, where SELinux is enabled on the host.
    #[serde(default)]
    pub selinux_label: Option<String>,
}

/// Which Linux security modules the host has enabled, as runc judges it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostLsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostLsm {
    /// runc's tests: AppArmor when `/sys/kernel/security/apparmor` exists and
    /// `/sys/module/apparmor/parameters/enabled` starts with `Y` (`libcontainer/apparmor`);
    /// SELinux when selinuxfs is mounted at `/sys/fs/selinux`.
    pub fn of_host(root: &Path) -> HostLsm {
        let apparmor = root.join("sys/kernel/security/apparmor").exists()
            && std::fs::read(root.join("sys/module/apparmor/parameters/enabled"))
                .is_ok_and(|b| b.first() == Some(&b'Y'));
        let selinux = root.join("sys/fs/selinux/enforce").exists();
        HostLsm { apparmor, selinux }
    }
}

/// The labels the probe applies to the process that loads image code: the spec's, for the
/// modules the host has enabled. Where a module is off there is nothing to apply (runc then
/// refuses such a container itself: an SELinux label without SELinux fails its validation, an
/// AppArmor profile without AppArmor fails its attribute write). `unconfined` is no label.
pub fn lsm_labels(
    apparmor_profile: Option<&str>,
    selinux_label: Option<&str>,
    host: HostLsm,
) -> (Option<String>, Option<String>) {
    let aa = apparmor_profile
        .filter(|p| host.apparmor && !p.is_empty() && *p != "unconfined")
        .map(String::from);
    let se = selinux_label
        .filter(|l| host.selinux && !l.is_empty())
        .map(String::from);
    (aa, se)
}

/// One `process.rlimits` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, …
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// The call name under which the canary's load is recorded.
pub const CANARY_CALL: &str = "cuModuleLoadData(ptx canary)";

/// A minimal PTX module for `target` (e.g. `sm_90`) at PTX ISA `isa` (e.g. `9.0`).
pub fn ptx_canary(isa: &str, target: &str) -> String {
    format!(
        ".version {isa}\n.target {target}\n.address_size 64\n\n.visible .entry cuda_preflight_canary()\n{{\n\tret;\n}}\n"
    )
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
    /// The container's mount namespace the probe entered (`readlink /proc/self/ns/mnt` there),
    /// before it took a private copy to mount the spec's confinement in.
    pub mnt_ns: Option<String>,
    /// The container's pid namespace, whose /proc the driver reads; the probe runs as pid 1 of
    /// a namespace of its own below it.
    pub pid_ns: Option<String>,
    pub cgroup: Option<String>,
    /// `Seccomp:` of /proc/self/status: 2 when a filter binds the probe.
    #[serde(default)]
    pub seccomp: Option<u32>,
    /// The probe's own (private) mount and (nested) pid namespaces.
    #[serde(default)]
    pub own_mnt_ns: Option<String>,
    #[serde(default)]
    pub own_pid_ns: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Set when the child could not enter the container (our failure, not the driver's).
    pub setup_error: Option<String>,
    pub identity: Identity,
    pub libcuda: PathBuf,
    /// Set when the container's libcuda could not be loaded or lacks the driver API.
    pub load_error: Option<String>,
    /// Time the child spent becoming the container, by step (`cgroup`, `setns`, `fork`, `user`),
    /// and loading libcuda (`dlopen`): the probe's cost beyond the driver's own.
    #[serde(default)]
    pub setup_ms: Vec<(String, f64)>,
    pub calls: Vec<Call>,
    pub driver_version: Option<i64>,
    pub device_count: Option<i64>,
}

/// Calls kept from one answer at most (the probe makes 3 + 4 per GPU for 16 GPUs).
const MAX_CALLS: usize = 80;
/// Characters kept of any string in an answer.
const MAX_TEXT: usize = 4096;

fn clip(s: &mut String) {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl ProbeOutcome {
    /// The answer as data from an untrusted process: every list and string bounded.
    pub fn bounded(mut self) -> Self {
        self.calls.truncate(MAX_CALLS);
        for c in &mut self.calls {
            clip(&mut c.call);
            if let Some(n) = &mut c.name {
                clip(n);
            }
        }
        self.setup_ms.truncate(16);
        for (s, _) in &mut self.setup_ms {
            clip(s);
        }
        for s in [&mut self.setup_error, &mut self.load_error]
            .into_iter()
            .flatten()
        {
            clip(s);
        }
        let id = &mut self.identity;
        id.groups.truncate(64);
        for s in [
            &mut id.cap_eff,
            &mut id.cap_bnd,
            &mut id.mnt_ns,
            &mut id.pid_ns,
            &mut id.cgroup,
            &mut id.own_mnt_ns,
            &mut id.own_pid_ns,
        ]
        .into_iter()
        .flatten()
        {
            clip(s);
        }
        self
    }

    /// The first call of the init → context chain that failed (the canary is judged apart).
    pub fn first_failure(&self) -> Option<&Call> {
        self.calls
            .iter()
            .find(|c| c.code != 0 && c.call != CANARY_CALL)
    }

    /// A setup that worked, a driver that loaded, a context on every GPU and a working canary:
    /// the only kind of answer the cache keeps.
    pub fn is_clean(&self) -> bool {
        self.setup_error.is_none()
            && self.load_error.is_none()
            && self.first_failure().is_none()
            && self.device_count.is_some_and(|n| n > 0)
            && self.canary().is_none_or(|c| c.code == 0)
    }

    pub fn canary(&self) -> Option<&Call> {
        self.calls.iter().find(|c| c.call == CANARY_CALL)
    }
}

/// What the parent saw.
// One per hook run: the size of the finished answer is no cost worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ProbeResult {
    Finished {
        outcome: ProbeOutcome,
        ms: f64,
        /// Answered from the probe cache (`ms` is then the lookup's time).
        #[serde(default)]
        cached: bool,
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

/// How the child's output ended.
enum OutputEnd {
    Eof,
    Deadline,
    TooBig,
}

/// Run the probe child with a deadline. The child starts with no environment, in `/`, with only
/// stdin (its spec), stdout (its answer) and stderr (/dev/null); every process it starts has ended
/// when this returns, within `deadline` (plus `REAP_GRACE` to reap them after a kill).
///
/// Where the container has a cgroup v2 directory the child is started in it by
/// `clone3(CLONE_INTO_CGROUP)` and does not join it itself: writing `cgroup.procs` takes the
/// cgroup core's thread-group lock for writing, which waits for an RCU grace period (0.1 or
/// 20-25 ms on the H100), while a clone into a cgroup takes it only for reading. The first entry
/// of the answer's `setup_ms` says how the child was started and what that cost here.
pub fn run(spec: &ProbeSpec, child_exe: &Path, deadline: Duration) -> ProbeResult {
    let started = Instant::now();
    let mut spec = spec.clone();
    let into = spec
        .cgroup_procs
        .iter()
        .position(|f| f.parent().is_some_and(is_cgroup2));
    let spawned = match spawn::spawn(child_exe, into.and_then(|i| spec.cgroup_procs[i].parent())) {
        Ok(s) => s,
        Err(e) => {
            return ProbeResult::Failed {
                error: format!("starting {}: {e}", child_exe.display()),
            };
        }
    };
    let spawn_ms = started.elapsed().as_secs_f64() * 1000.0;
    let spawn_step = if spawned.into_cgroup {
        if let Some(i) = into {
            // Already a member: the child writes only the v1 hierarchies' files.
            spec.cgroup_procs.remove(i);
        }
        "spawn: clone3 CLONE_INTO_CGROUP"
    } else if spawned.clone3 {
        "spawn: clone3, cgroup.procs"
    } else {
        "spawn: fork+exec, cgroup.procs"
    };
    let spawn::Spawned {
        mut child,
        stdin,
        mut stdout,
        ..
    } = spawned;
    let input = match serde_json::to_vec(&spec) {
        Ok(i) => i,
        Err(e) => {
            end_all(&mut child);
            return ProbeResult::Failed {
                error: format!("encoding the probe's spec: {e}"),
            };
        }
    };
    {
        let mut stdin = stdin;
        let _ = stdin.write_all(&input);
    }
    let mut buf = Vec::new();
    let end = read_until_deadline(&mut stdout, &mut buf, started, deadline);
    drop(stdout);
    let timed_out = || ProbeResult::TimedOut {
        deadline_ms: deadline.as_millis() as u64,
    };
    match end {
        OutputEnd::Deadline => {
            end_all(&mut child);
            return timed_out();
        }
        OutputEnd::TooBig => {
            end_all(&mut child);
            return ProbeResult::Crashed {
                signal: None,
                exit_code: None,
            };
        }
        OutputEnd::Eof => {}
    }
    // The output ended: the child ends at once after its answer (it skips the driver's teardown
    // at exit). Image code that closed stdout and hangs is cut at the deadline.
    let status = match child.wait_until(started + deadline) {
        Some(s) => s,
        None => {
            end_all(&mut child);
            return timed_out();
        }
    };
    if let Ok(outcome) = serde_json::from_slice::<ProbeOutcome>(&buf) {
        let mut outcome = outcome.bounded();
        outcome.setup_ms.truncate(15);
        // The hook's own measurement, first (the rest is the child's word).
        outcome
            .setup_ms
            .insert(0, (spawn_step.to_string(), spawn_ms));
        return ProbeResult::Finished {
            outcome,
            ms: started.elapsed().as_secs_f64() * 1000.0,
            cached: false,
        };
    }
    ProbeResult::Crashed {
        signal: status.signal,
        exit_code: status.code,
    }
}

/// Whether `dir` is on a cgroup v2 file system.
fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// How long the tree gets to end after SIGTERM before A is SIGKILLed (a process stuck in the
/// kernel, such as a driver call on a hung GPU, cannot die sooner anyway). The hook keeps this
/// much of its own deadline free (`commands::hook`).
pub const REAP_GRACE: Duration = Duration::from_millis(300);

/// End the child and everything below it: SIGTERM, which the child passes down as SIGKILL to the
/// process that runs image code (pid 1 of its own pid namespace, so the kernel ends all it
/// forked) and reaps; SIGKILL after `REAP_GRACE` if that did not happen (each process below then
/// dies with its parent).
fn end_all(child: &mut spawn::Child) {
    child.signal(nix::sys::signal::Signal::SIGTERM);
    if child.wait_until(Instant::now() + REAP_GRACE).is_none() {
        child.signal(nix::sys::signal::Signal::SIGKILL);
        child.wait();
    }
}

/// Read the child's stdout to EOF, the deadline, or `MAX_OUTPUT`.
fn read_until_deadline(
    r: &mut std::fs::File,
    buf: &mut Vec<u8>,
    started: Instant,
    deadline: Duration,
) -> OutputEnd {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return OutputEnd::Deadline;
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return OutputEnd::Eof,
            Ok(0) => continue,
            Ok(_) => {}
        }
        match r.read(&mut chunk) {
            Ok(0) => return OutputEnd::Eof,
            Ok(k) => {
                if buf.len() + k > MAX_OUTPUT {
                    return OutputEnd::TooBig;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return OutputEnd::Eof,
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

    #[test]
    fn an_answer_is_bounded_and_only_a_clean_one_is_clean() {
        let call = |c: &str, code| Call {
            call: c.into(),
            code,
            name: Some("N".repeat(100_000)),
            ms: 1.0,
        };
        let mut o = ProbeOutcome {
            calls: (0..1000).map(|_| call("cuInit", 0)).collect(),
            device_count: Some(1),
            ..ProbeOutcome::default()
        };
        o.identity.cgroup = Some("x".repeat(1 << 20));
        let b = o.clone().bounded();
        assert_eq!(b.calls.len(), MAX_CALLS);
        assert!(
            b.calls
                .iter()
                .all(|c| c.name.as_ref().unwrap().len() <= MAX_TEXT)
        );
        assert_eq!(b.identity.cgroup.unwrap().len(), MAX_TEXT);
        let clean = ProbeOutcome {
            calls: vec![
                call("cuInit", 0),
                call("cuCtxCreate(0)", 0),
                call(CANARY_CALL, 0),
            ],
            device_count: Some(1),
            ..ProbeOutcome::default()
        };
        assert!(clean.is_clean());
        for (what, o) in [
            (
                "failed init",
                ProbeOutcome {
                    calls: vec![call("cuInit", 803)],
                    ..clean.clone()
                },
            ),
            (
                "failed canary",
                ProbeOutcome {
                    calls: vec![call("cuInit", 0), call(CANARY_CALL, 221)],
                    ..clean.clone()
                },
            ),
            (
                "no device",
                ProbeOutcome {
                    device_count: Some(0),
                    ..clean.clone()
                },
            ),
            (
                "setup",
                ProbeOutcome {
                    setup_error: Some("x".into()),
                    ..clean.clone()
                },
            ),
            (
                "load",
                ProbeOutcome {
                    load_error: Some("x".into()),
                    ..clean.clone()
                },
            ),
        ] {
            assert!(!o.is_clean(), "{what}");
        }
    }

    #[test]
    fn lsm_labels_only_for_modules_the_host_has_enabled() {
        let both = HostLsm {
            apparmor: true,
            selinux: true,
        };
        let none = HostLsm::default();
        let se = "system_u:system_r:container_t:s0:c1,c2";
        for (aa, sel, host, want) in [
            (
                Some("docker-default"),
                Some(se),
                both,
                (Some("docker-default"), Some(se)),
            ),
            (Some("docker-default"), Some(se), none, (None, None)),
            (
                Some("docker-default"),
                None,
                HostLsm {
                    apparmor: true,
                    selinux: false,
                },
                (Some("docker-default"), None),
            ),
            (Some("unconfined"), None, both, (None, None)),
            (Some(""), Some(""), both, (None, None)),
            (None, Some(se), both, (None, Some(se))),
        ] {
            let got = lsm_labels(aa, sel, host);
            assert_eq!(
                (got.0.as_deref(), got.1.as_deref()),
                want,
                "{aa:?} {sel:?} {host:?}"
            );
        }
    }

    #[test]
    fn the_hosts_lsms_are_read_as_runc_reads_them() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(HostLsm::of_host(d.path()), HostLsm::default());
        std::fs::create_dir_all(d.path().join("sys/module/apparmor/parameters")).unwrap();
        std::fs::write(
            d.path().join("sys/module/apparmor/parameters/enabled"),
            "Y\n",
        )
        .unwrap();
        // The parameter alone is not enough: securityfs must show the module too.
        assert!(!HostLsm::of_host(d.path()).apparmor);
        std::fs::create_dir_all(d.path().join("sys/kernel/security/apparmor")).unwrap();
        assert!(HostLsm::of_host(d.path()).apparmor);
        std::fs::write(
            d.path().join("sys/module/apparmor/parameters/enabled"),
            "N\n",
        )
        .unwrap();
        assert!(!HostLsm::of_host(d.path()).apparmor);
        std::fs::create_dir_all(d.path().join("sys/fs/selinux")).unwrap();
        assert!(!HostLsm::of_host(d.path()).selinux);
        std::fs::write(d.path().join("sys/fs/selinux/enforce"), "1").unwrap();
        assert!(HostLsm::of_host(d.path()).selinux);
    }
}
