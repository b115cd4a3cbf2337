//! The probe child (`cuda-preflight probe-child`, started only by the probe): becomes the
//! container — its cgroup, namespaces, rootfs and user, with every capability dropped and
//! no-new-privs set — and only then loads the container's `libcuda.so.1` and asks the driver.
//!
//! Order matters and is the point of this file: privilege is needed to join the cgroup and the
//! namespaces and to change user; it is all given up before the first byte of image code runs.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use crate::facts::probe::{Call, Identity, ProbeOutcome, ProbeSpec};

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn ns_flag(kind: &str) -> libc::c_int {
    match kind {
        "user" => libc::CLONE_NEWUSER,
        "cgroup" => libc::CLONE_NEWCGROUP,
        "ipc" => libc::CLONE_NEWIPC,
        "uts" => libc::CLONE_NEWUTS,
        "net" => libc::CLONE_NEWNET,
        "pid" => libc::CLONE_NEWPID,
        _ => libc::CLONE_NEWNS,
    }
}

/// Join, enter, confine, drop. Any failure stops before image code is loaded. Returns our
/// `/proc/self` of the host's procfs, for the identity.
fn become_the_container(spec: &ProbeSpec) -> Result<std::fs::File, String> {
    // 1. The container's cgroups: its device rules must bind us, or a denied device would look
    //    allowed (entering the cgroup namespace does not move a process).
    let me = std::process::id().to_string();
    for f in &spec.cgroup_procs {
        std::fs::write(f, &me).map_err(|e| format!("joining {}: {e}", f.display()))?;
    }
    // 2. Open every namespace first: after the mount namespace, the host's /proc is gone. The
    //    mount namespace is entered last, after the fork into the pid namespace.
    let mut fds: Vec<(String, OwnedFd)> = Vec::new();
    for ns in &spec.namespaces {
        let p = spec.proc_root.join(format!("{}/ns/{ns}", spec.pid));
        let f = std::fs::File::open(&p).map_err(|e| format!("opening {}: {e}", p.display()))?;
        fds.push((ns.clone(), f.into()));
    }
    let (mnt, others): (Vec<_>, Vec<_>) = fds.into_iter().partition(|(ns, _)| ns == "mnt");
    for (ns, fd) in &others {
        // SAFETY: a valid namespace fd.
        if unsafe { libc::setns(fd.as_raw_fd(), ns_flag(ns)) } != 0 {
            return Err(os_err(&format!("entering the container's {ns} namespace")));
        }
    }
    drop(others);
    if spec.namespaces.iter().any(|n| n == "pid") {
        // setns on a pid namespace applies to children only: the probe goes on in a child,
        // inside it; this process waits and ends as that child ends. Single-threaded (a fresh
        // exec), so fork is safe.
        // SAFETY: fork in a single-threaded process.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(os_err("fork into the container's pid namespace"));
        }
        if child > 0 {
            wait_and_mirror(child);
        }
    }
    // Our own /proc entry, through the host's procfs, while it is still reachable: the
    // container's /proc may not be mounted yet, and the identity is read through this.
    let proc_self = std::fs::File::open("/proc/self").map_err(|e| format!("/proc/self: {e}"))?;
    for (ns, fd) in &mnt {
        // SAFETY: a valid namespace fd.
        if unsafe { libc::setns(fd.as_raw_fd(), ns_flag(ns)) } != 0 {
            return Err(os_err(&format!("entering the container's {ns} namespace")));
        }
    }
    drop(mnt);
    // 3. The rootfs as that mount namespace has it (before pivot_root, at its own path).
    let root = CString::new(spec.rootfs.as_os_str().as_encoded_bytes())
        .map_err(|_| "rootfs path has a NUL".to_string())?;
    // SAFETY: NUL-terminated paths.
    if unsafe { libc::chroot(root.as_ptr()) } != 0 {
        return Err(os_err(&format!("chroot {}", spec.rootfs.display())));
    }
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(os_err("chdir /"));
    }
    // 4. Empty the bounding set while we still hold CAP_SETPCAP, then take the container's user.
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap)
            .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
    }
    let groups: Vec<libc::gid_t> = spec.additional_gids.clone();
    // SAFETY: plain credential syscalls with valid arguments.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(os_err("setgroups"));
        }
        if libc::setresgid(spec.gid, spec.gid, spec.gid) != 0 {
            return Err(os_err("setresgid"));
        }
        if libc::setresuid(spec.uid, spec.uid, spec.uid) != 0 {
            return Err(os_err("setresuid"));
        }
    }
    // 5. No capability left in any set (a uid-0 container keeps none either), and no way back.
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        caps::clear(None, set).map_err(|e| format!("clearing {set:?} capabilities: {e}"))?;
    }
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("PR_SET_NO_NEW_PRIVS"));
    }
    Ok(proc_self)
}

static PROBING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn kill_probing(_: libc::c_int) {
    // Async-signal-safe: kill(2) only.
    let pid = PROBING.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Wait for the process that probes and end the same way: its exit code, or its signal (so a
/// crash in the driver reads as a crash to the parent). SIGTERM (the parent's deadline) kills
/// it first, so it is reaped here and never left in the container's pid namespace.
fn wait_and_mirror(child: libc::pid_t) -> ! {
    PROBING.store(child, std::sync::atomic::Ordering::SeqCst);
    let mut status = 0;
    // SAFETY: a handler that only calls kill(2); waiting for our own child; then exiting.
    unsafe {
        libc::signal(libc::SIGTERM, kill_probing as *const () as libc::sighandler_t);
        while libc::waitpid(child, &mut status, 0) < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(3);
            }
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 3 })
    }
}

/// Who we are after the setup, read through the host's `/proc/self` (opened before entering the
/// mount namespace: the container's /proc belongs to its pid namespace, where we have no pid).
fn identity(proc_self: &std::fs::File) -> Identity {
    let dir = proc_self.as_raw_fd();
    let read_at = |name: &std::ffi::CStr| -> Option<String> {
        // SAFETY: openat relative to a directory fd we own; the fd is handed to a File.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut s = String::new();
        f.read_to_string(&mut s).ok().map(|_| s)
    };
    let link_at = |name: &std::ffi::CStr| -> Option<String> {
        let mut buf = [0u8; 256];
        // SAFETY: readlinkat into a sized buffer.
        let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
    };
    let status = read_at(c"status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    // SAFETY: getuid/getgid/getgroups never fail with a correctly sized buffer.
    let (uid, gid, groups) = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut g = vec![0; n.max(0) as usize];
        let n = libc::getgroups(g.len() as libc::c_int, g.as_mut_ptr());
        g.truncate(n.max(0) as usize);
        (libc::getuid(), libc::getgid(), g)
    };
    Identity {
        uid,
        gid,
        groups,
        cap_eff: field("CapEff:"),
        cap_bnd: field("CapBnd:"),
        no_new_privs: field("NoNewPrivs:").map(|v| v == "1"),
        mnt_ns: link_at(c"ns/mnt"),
        pid_ns: link_at(c"ns/pid"),
        cgroup: read_at(c"cgroup"),
    }
}

type CuInit = unsafe extern "C" fn(libc::c_uint) -> libc::c_int;
type CuIntOut = unsafe extern "C" fn(*mut libc::c_int) -> libc::c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut libc::c_int, libc::c_int) -> libc::c_int;
type CuCtxCreate =
    unsafe extern "C" fn(*mut *mut libc::c_void, libc::c_uint, libc::c_int) -> libc::c_int;
type CuCtxDestroy = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type CuGetErrorName = unsafe extern "C" fn(libc::c_int, *mut *const libc::c_char) -> libc::c_int;

/// GPUs asked for a context at most; more would only cost time.
const MAX_DEVICES: i64 = 16;

fn drive(outcome: &mut ProbeOutcome, libcuda: &std::path::Path) -> Result<(), String> {
    let path = CString::new(libcuda.as_os_str().as_encoded_bytes())
        .map_err(|_| "libcuda path has a NUL".to_string())?;
    // SAFETY: loading the driver is the point; we are confined as the container is.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a C string or null.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "unknown".into()
        } else {
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("dlopen {}: {msg}", libcuda.display()));
    }
    let sym = |name: &std::ffi::CStr| -> Result<*mut libc::c_void, String> {
        // SAFETY: h is a valid handle.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "{} has no {}",
                libcuda.display(),
                name.to_string_lossy()
            ))
        } else {
            Ok(p)
        }
    };
    // SAFETY: the CUDA driver API's published signatures.
    let (cu_init, cu_version, cu_count, cu_dev, cu_ctx, cu_destroy): (
        CuInit,
        CuIntOut,
        CuIntOut,
        CuDeviceGet,
        CuCtxCreate,
        CuCtxDestroy,
    ) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, CuInit>(sym(c"cuInit")?),
            std::mem::transmute::<*mut libc::c_void, CuIntOut>(sym(c"cuDriverGetVersion")?),
            std::mem::transmute::<*mut libc::c_void, CuIntOut>(sym(c"cuDeviceGetCount")?),
            std::mem::transmute::<*mut libc::c_void, CuDeviceGet>(sym(c"cuDeviceGet")?),
            std::mem::transmute::<*mut libc::c_void, CuCtxCreate>(sym(c"cuCtxCreate_v2")?),
            std::mem::transmute::<*mut libc::c_void, CuCtxDestroy>(sym(c"cuCtxDestroy_v2")?),
        )
    };
    let get_name: Option<CuGetErrorName> = sym(c"cuGetErrorName")
        .ok()
        .map(|p| unsafe { std::mem::transmute::<*mut libc::c_void, CuGetErrorName>(p) });
    let name_of = |code: libc::c_int| -> Option<String> {
        let f = get_name?;
        let mut s: *const libc::c_char = std::ptr::null();
        // SAFETY: the driver returns a static string.
        (unsafe { f(code, &mut s) } == 0 && !s.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(s) }
                .to_string_lossy()
                .into_owned()
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
    if timed("cuInit".into(), &mut || unsafe { cu_init(0) }) != 0 {
        return Ok(());
    }
    let mut v = 0;
    if timed("cuDriverGetVersion".into(), &mut || unsafe {
        cu_version(&mut v)
    }) == 0
    {
        outcome.driver_version = Some(v as i64);
    }
    let mut n = 0;
    if timed("cuDeviceGetCount".into(), &mut || unsafe {
        cu_count(&mut n)
    }) != 0
    {
        return Ok(());
    }
    outcome.device_count = Some(n as i64);
    for i in 0..(n as i64).min(MAX_DEVICES) {
        let mut dev = 0;
        if timed(format!("cuDeviceGet({i})"), &mut || unsafe {
            cu_dev(&mut dev, i as libc::c_int)
        }) != 0
        {
            return Ok(());
        }
        let mut ctx: *mut libc::c_void = std::ptr::null_mut();
        if timed(format!("cuCtxCreate({i})"), &mut || unsafe {
            cu_ctx(&mut ctx, 0, dev)
        }) != 0
        {
            return Ok(());
        }
        timed(format!("cuCtxDestroy({i})"), &mut || unsafe {
            cu_destroy(ctx)
        });
    }
    Ok(())
}

/// The child's whole life: read the spec, become the container, ask the driver, print JSON.
/// Returns the exit code.
pub fn main(stdin: impl Read) -> i32 {
    let mut input = Vec::new();
    if stdin.take(1 << 20).read_to_end(&mut input).is_err() {
        return 2;
    }
    let Ok(spec) = serde_json::from_slice::<ProbeSpec>(&input) else {
        return 2;
    };
    let mut outcome = ProbeOutcome {
        libcuda: spec.libcuda.clone(),
        ..ProbeOutcome::default()
    };
    match become_the_container(&spec) {
        Err(e) => outcome.setup_error = Some(e),
        Ok(proc_self) => {
            outcome.identity = identity(&proc_self);
            if let Err(e) = drive(&mut outcome, &spec.libcuda) {
                outcome.load_error = Some(e);
            }
        }
    }
    finish(&outcome)
}

fn finish(outcome: &ProbeOutcome) -> i32 {
    let json = serde_json::to_vec(outcome).expect("outcome serialises");
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, &json);
    let _ = std::io::Write::flush(&mut out);
    0
}
