//! Issue 22: a hostile image or a sick host stalls nothing and flips no verdict. The real hook
//! under the real runc where the defect is about a start.

use crate::common::*;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// A bundle whose spec lacks /dev/nvidia-uvm: the rules block it (`device-node-missing`).
fn blocked_bundle(dir: &Path, config_toml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    busybox_rootfs(dir);
    let mut spec = base_spec(dir, &["true"]);
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    spec["linux"]["devices"] = nvidia_devices(&nodes);
    allow_nvidia_cgroup(&mut spec);
    let state = dir.join("state");
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("probe = \"never\"\n{config_toml}")).unwrap();
    add_our_hook(
        &mut spec,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--host-profile",
            h100_profile().to_str().unwrap(),
        ],
    );
    write_spec(dir, &spec);
    (state, config)
}

#[test]
#[allow(unsafe_code)]
fn held_metrics_lock_does_not_turn_a_block_into_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("textfile");
    // on_timeout = allow (the default) is what the stuck lock used to turn the block into.
    let (state, _) = blocked_bundle(
        dir.path(),
        &format!(
            "deadline_ms = 6000\non_timeout = \"allow\"\nmetrics_dir = \"{}\"\n",
            metrics.display()
        ),
    );
    std::fs::create_dir_all(&state).unwrap();
    // A stuck writer: another process holds the metrics lock for the whole start.
    let lock = std::fs::File::create(state.join("metrics.lock")).unwrap();
    assert_eq!(
        // SAFETY: flock on a descriptor the File owns for this whole call.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
        0,
        "test takes the lock"
    );
    let id = unique_id("robust-flock");
    let t = Instant::now();
    let out = runc_run(dir.path(), &id);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a blocked container started: {err}");
    assert!(
        err.contains(&format!(
            "cuda-preflight: blocked container {id}: /dev/nvidia-uvm"
        )),
        "{err}"
    );
    // The lock is waited for 1 s, recording may take 2 s: well before the 6 s deadline.
    assert!(took < Duration::from_millis(5000), "took {took:?}");
    let rep = read_report(&state, &id).expect("the report is still written");
    assert_eq!(rep["verdict"], "block");
    assert_eq!(
        std::fs::read(state.join("metrics.skipped")).unwrap(),
        b"s",
        "the start that could not count itself says so"
    );
    drop(lock);
}

#[test]
fn stalled_log_daemon_does_not_turn_a_block_into_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log.sock");
    let daemon = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    // A log daemon that stopped reading: its queue is full, a blocking send would wait forever.
    let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    filler.connect(&sock).unwrap();
    while filler.send(&[b'x'; 512]).is_ok() {}
    let (state, _) = blocked_bundle(
        dir.path(),
        &format!(
            "deadline_ms = 6000\non_timeout = \"allow\"\nlog_socket = \"{}\"\n",
            sock.display()
        ),
    );
    let id = unique_id("robust-syslog");
    let t = Instant::now();
    let out = runc_run(dir.path(), &id);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a blocked container started: {err}");
    assert!(
        err.contains(&format!("cuda-preflight: blocked container {id}")),
        "{err}"
    );
    assert!(took < Duration::from_millis(5000), "took {took:?}");
    // The line the daemon could not take went to stderr.
    assert!(
        err.contains(&format!("container={id} verdict=block")),
        "{err}"
    );
    assert_eq!(read_report(&state, &id).unwrap()["verdict"], "block");
    drop(daemon);
}

// ---------------------------------------------------------------------------------------------
// Hostile images: memory and time bounded by what is kept.

/// The hook run directly on a bundle (state without a pid: facts from the bundle's rootfs), its
/// address space capped at 1 GiB so a regression fails here instead of taking the machine's
/// memory; peak RSS from wait4.
struct HookRun {
    code: i32,
    stderr: String,
    elapsed: Duration,
    max_rss_kb: i64,
}

const AS_LIMIT: u64 = 1 << 30;
/// Peak RSS allowed: the hook alone is ~10 MB; each budget keeps at most tens of MB.
const MAX_RSS_KB: i64 = 200 * 1024;

// The child is reaped by wait4 (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
#[allow(unsafe_code)]
fn hook_direct(bundle: &Path, work: &Path) -> HookRun {
    use std::io::Write;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let config = work.join("direct.toml");
    std::fs::write(
        &config,
        "probe = \"never\"\ndeadline_ms = 10000\non_timeout = \"block\"\n",
    )
    .unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"{}","status":"creating","bundle":"{}"}}"#,
        unique_id("direct"),
        bundle.display()
    );
    let t = Instant::now();
    // CUDA_PREFLIGHT_HOOK_BIN measures another build (RELIABILITY.md uses the release one).
    let bin = std::env::var("CUDA_PREFLIGHT_HOOK_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["hook", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(work.join("direct-state"))
        .arg("--host-profile")
        .arg(h100_profile())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_AS, &l);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let mut se = child.stderr.take().unwrap();
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).unwrap();
        v
    });
    let pid = child.id() as i32;
    // SAFETY: an all-zero value is a valid instance of this plain C struct.
    let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: the status and rusage out-parameters live on this stack frame.
        if unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) } == pid {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the hook did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    let st = std::process::ExitStatus::from_raw(status);
    assert!(
        st.signal().is_none(),
        "the hook was killed by signal {:?} (address space capped at {} MiB): {stderr}",
        st.signal(),
        AS_LIMIT >> 20
    );
    let r = HookRun {
        code: st.code().unwrap(),
        stderr,
        elapsed,
        max_rss_kb: ru.ru_maxrss,
    };
    eprintln!(
        "hook {bin} on {}: exit {}, {:?}, peak RSS {} KB",
        bundle.display(),
        r.code,
        r.elapsed,
        r.max_rss_kb
    );
    r
}

/// A GPU bundle (the cuda13-image spec) with an empty rootfs, for direct hook runs.
fn gpu_bundle(top: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = top.join("b");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(
        repo().join("examples/bundles/cuda13-image/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    (dir, root)
}

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const X86_64_LIBC6: i32 = 0x0303;

/// A glibc new-format cache: header, the entry table (`(flags, key offset, value offset)`), then
/// `strings` placed right after the table; offsets are relative to the header's start.
fn cache_file(entries: &[(i32, u32, u32)], strings: &[u8]) -> Vec<u8> {
    let mut d = NEW_MAGIC.to_vec();
    d.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    d.extend_from_slice(&[2, 0, 0, 0]);
    d.extend_from_slice(&[0u8; 16]);
    for (flags, k, v) in entries {
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&k.to_le_bytes());
        d.extend_from_slice(&v.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0u64.to_le_bytes());
    }
    d.extend_from_slice(strings);
    d
}

/// The issue's first input: a 16 MiB cache whose entries all point at one 9 MB string.
fn cache_one_big_string() -> Vec<u8> {
    let total = (16 << 20) - 1;
    let big = 9_000_000usize;
    let n = (total - 48 - big - 1) / 24;
    let at = (48 + n * 24) as u32;
    let mut s = vec![b'a'; big];
    s.push(0);
    let d = cache_file(&vec![(X86_64_LIBC6, at, at); n], &s);
    assert!(d.len() <= 16 << 20);
    d
}

/// 25,000 libraries each in a directory of its own (820 KB): `search_dirs` was quadratic.
fn cache_many_dirs(n: usize) -> Vec<u8> {
    let start = 48 + n * 24;
    let mut strings = Vec::new();
    let mut entries = Vec::new();
    for i in 0..n {
        let k = (start + strings.len()) as u32;
        strings.extend_from_slice(format!("libq{i}.so\0").as_bytes());
        let v = (start + strings.len()) as u32;
        strings.extend_from_slice(format!("/q/d{i}/libq{i}.so\0").as_bytes());
        entries.push((X86_64_LIBC6, k, v));
    }
    cache_file(&entries, &strings)
}

/// A 64-bit shared object with only program headers and a dynamic section: `needed` string
/// offsets into `strtab` as its DT_NEEDED entries.
fn elf_with_needed(strtab: &[u8], needed: &[u32]) -> Vec<u8> {
    let dyn_off = 64 + 2 * 56;
    let dyn_len = (needed.len() + 3) * 16;
    let str_off = dyn_off + dyn_len;
    let total = str_off + strtab.len();
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    f[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
    let ph = |kind: u32, off: usize, len: usize| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&4u32.to_le_bytes());
        p[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        p[16..24].copy_from_slice(&(off as u64).to_le_bytes());
        p[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        p[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        p[40..48].copy_from_slice(&(len as u64).to_le_bytes());
        p
    };
    f.extend(ph(1, 0, total));
    f.extend(ph(2, dyn_off, dyn_len));
    let mut dyn_entry = |tag: u64, val: u64| {
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&val.to_le_bytes());
    };
    for n in needed {
        dyn_entry(1, *n as u64);
    }
    dyn_entry(5, str_off as u64);
    dyn_entry(10, strtab.len() as u64);
    dyn_entry(0, 0);
    f.extend_from_slice(strtab);
    assert_eq!(f.len(), total);
    f
}

/// The issue's second input: 301 libraries of 68 KB, each needing libcudart (so the walk keeps
/// it for the load checks) and naming one 4 KB string in 3,999 more DT_NEEDED entries.
fn many_needed_libs(root: &Path) {
    let dir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&dir).unwrap();
    let mut strtab = b"\0libcudart.so.12\0".to_vec();
    let big = strtab.len() as u32;
    strtab.extend(vec![b'n'; 4095]);
    strtab.push(0);
    let mut needed = vec![1u32];
    needed.extend(std::iter::repeat_n(big, 3999));
    let elf = elf_with_needed(&strtab, &needed);
    for i in 0..301 {
        std::fs::write(dir.join(format!("libhostile{i}.so")), &elf).unwrap();
    }
}

#[test]
fn sixteen_mib_cache_pointing_at_one_big_string_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, root) = gpu_bundle(dir.path());
    std::fs::write(root.join("etc/ld.so.cache"), cache_one_big_string()).unwrap();
    let r = hook_direct(&bundle, dir.path());
    assert!(
        !r.stderr.contains("deadline"),
        "the hook ran out of time: {}",
        r.stderr
    );
    assert!(r.max_rss_kb < MAX_RSS_KB, "peak RSS {} KB", r.max_rss_kb);
    assert!(r.elapsed < Duration::from_secs(8), "took {:?}", r.elapsed);
    // What was skipped is said: the report's image-read-partial names the cache.
    let rep = std::fs::read_dir(dir.path().join("direct-state/reports"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(rep).unwrap();
    assert!(
        text.contains("image-read-partial") && text.contains("longer than 4096 bytes"),
        "{text}"
    );
}

#[test]
fn three_hundred_libraries_of_4000_needed_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, root) = gpu_bundle(dir.path());
    many_needed_libs(&root);
    let r = hook_direct(&bundle, dir.path());
    assert!(!r.stderr.contains("deadline"), "{}", r.stderr);
    assert!(r.max_rss_kb < MAX_RSS_KB, "peak RSS {} KB", r.max_rss_kb);
    assert!(r.elapsed < Duration::from_secs(8), "took {:?}", r.elapsed);
}

#[test]
fn cache_of_25000_directories_is_judged_well_inside_the_deadline_under_runc() {
    // Under the real runc: the hook on createRuntime with on_timeout = block and a 5 s deadline;
    // the quadratic search took 12.5 s, so the start was decided by the deadline.
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(dir.path());
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/ld.so.cache"), cache_many_dirs(25_000)).unwrap();
    let mut spec = base_spec(dir.path(), &["true"]);
    spec["linux"]["devices"] = nvidia_devices(ALL_NODES);
    allow_nvidia_cgroup(&mut spec);
    let state = dir.path().join("state");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "probe = \"never\"\ndeadline_ms = 5000\non_timeout = \"block\"\n",
    )
    .unwrap();
    add_our_hook(
        &mut spec,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--host-profile",
            h100_profile().to_str().unwrap(),
        ],
    );
    write_spec(dir.path(), &spec);
    let id = unique_id("robust-dirs");
    let t = Instant::now();
    let out = runc_run(dir.path(), &id);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "blocked: {err}");
    let rep = read_report(&state, &id).expect("a report: the hook decided, not its deadline");
    assert_eq!(rep["verdict"], "allow", "{rep}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Also directly, for its memory and time.
    let (bundle, root) = gpu_bundle(dir.path());
    std::fs::write(root.join("etc/ld.so.cache"), cache_many_dirs(25_000)).unwrap();
    let r = hook_direct(&bundle, dir.path());
    assert!(r.max_rss_kb < MAX_RSS_KB, "peak RSS {} KB", r.max_rss_kb);
    assert!(!r.stderr.contains("deadline"), "{}", r.stderr);
}

#[test]
fn check_has_a_deadline() {
    // 100,000 cache directories took `check` 195 s. Now linear; and `check` stops at
    // deadline_ms whatever the input, saying so (exit 2), instead of running on.
    let dir = tempfile::tempdir().unwrap();
    let (bundle, root) = gpu_bundle(dir.path());
    std::fs::write(root.join("etc/ld.so.cache"), cache_many_dirs(100_000)).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "deadline_ms = 60000\n").unwrap();
    let t = Instant::now();
    // Killed at 60 s so a regression fails instead of running for minutes.
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "60"])
        .arg(BIN)
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--host-profile")
        .arg(h100_profile())
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(15), "check took {took:?}");
    // The deadline itself: 1 ms cannot judge anything; check says so and exits 2.
    std::fs::write(&cfg, "deadline_ms = 1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--host-profile")
        .arg(h100_profile())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("did not finish within deadline_ms = 1 ms"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The runtime shim: a deadline before exec, and nothing passed through unsaid.

const SHIM: &str = env!("CARGO_BIN_EXE_cuda-preflight-runtime");

/// A busybox GPU bundle for the shim (the shim adds the hook itself); `nodes` in linux.devices.
fn shim_bundle(dir: &Path, nodes: &[(&str, u32, u32)]) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    busybox_rootfs(&bundle);
    let mut spec = base_spec(&bundle, &["true"]);
    spec["linux"]["devices"] = nvidia_devices(nodes);
    allow_nvidia_cgroup(&mut spec);
    write_spec(&bundle, &spec);
    bundle
}

/// The shim with a config naming the real runc and the hook, killed after 30 s.
fn run_shim(dir: &Path, config_extra: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let config = dir.join("shim.toml");
    std::fs::write(
        &config,
        format!(
            "runtime = \"{}\"\nhook_binary = \"{BIN}\"\nprobe = \"never\"\nstate_dir = \"{}\"\n{config_extra}",
            require_tool("runc").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    // Files, not pipes: a created container's init keeps the runtime's stdio open until it
    // is started or deleted.
    let (o, e) = (dir.join("shim.out"), dir.join("shim.err"));
    let t = Instant::now();
    let status = std::process::Command::new("timeout")
        .args(["-k", "5", "30", SHIM])
        .arg(format!("--cuda-preflight-config={}", config.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    let out = std::process::Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    };
    (out, t.elapsed())
}

fn runc_delete(root: &Path, id: &str) {
    let _ = std::process::Command::new(require_tool("runc"))
        .arg("--root")
        .arg(root)
        .args(["delete", "-f", id])
        .output();
}

#[test]
#[allow(unsafe_code)]
fn shim_early_check_has_a_deadline_and_follows_on_timeout() {
    for (on_timeout, should_create) in [("block", false), ("allow", true)] {
        let dir = tempfile::tempdir().unwrap();
        let bundle = shim_bundle(dir.path(), ALL_NODES);
        // A host profile nobody writes: opening it never returns, as NVML stuck in nvmlInit or
        // a profile on a dead mount.
        let fifo = dir.path().join("profile.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that mkfifo only reads.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let root = dir.path().join("runc-root");
        let id = unique_id("robust-shim-deadline");
        let (out, took) = run_shim(
            dir.path(),
            &format!(
                // Requirements enforced on every path: the early check needs the host's facts
                // (otherwise it reads none on a spec-devices start).
                "host_profile = \"{}\"\ndeadline_ms = 700\non_timeout = \"{on_timeout}\"\nenforce_requirements = true\n",
                fifo.display()
            ),
            &[
                "--root",
                root.to_str().unwrap(),
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                &id,
            ],
        );
        runc_delete(&root, &id);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(124),
            "{on_timeout}: the shim hung: {err}"
        );
        assert_eq!(out.status.success(), should_create, "{on_timeout}: {err}");
        assert!(
            took < Duration::from_secs(10),
            "{on_timeout}: took {took:?}"
        );
        if should_create {
            assert!(
                err.contains("skipped, the hook still judges the start (on_timeout = allow)"),
                "{err}"
            );
        } else {
            assert!(
                err.contains(&format!(
                    "blocked container {id}: the early check did not finish within 700 ms (on_timeout = block)"
                )),
                "{err}"
            );
        }
    }
}

#[test]
fn shim_run_gets_the_hook_and_blocks_under_real_runc() {
    // `runc run` is create and start in one; the shim used to pass it on with no hook.
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let bundle = shim_bundle(dir.path(), &nodes);
    let root = dir.path().join("runc-root");
    let id = unique_id("robust-shim-run");
    let (out, _) = run_shim(
        dir.path(),
        &format!("host_profile = \"{}\"\n", h100_profile().display()),
        &[
            "--root",
            root.to_str().unwrap(),
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ],
    );
    runc_delete(&root, &id);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "run started a blocked container: {err}"
    );
    assert!(
        err.contains(&format!(
            "cuda-preflight: blocked container {id}: /dev/nvidia-uvm"
        )),
        "{err}"
    );
}

#[test]
fn shim_create_after_crun_global_flags_gets_the_hook_and_unknown_ones_are_said() {
    // crun's --cgroup-manager and --log-level (runc has neither, and crun is not installed
    // here): a stand-in runtime records argv; what matters is the bundle the shim edits.
    let dir = tempfile::tempdir().unwrap();
    let bundle = shim_bundle(dir.path(), ALL_NODES);
    let rt = dir.path().join("fake-crun");
    std::fs::write(&rt, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&rt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("c.toml");
    let log = dir.path().join("runtime.log");
    let shim = |extra: &str, args: &[&str]| {
        std::fs::write(
            &config,
            format!(
                "runtime = \"{}\"\nhook_binary = \"{BIN}\"\nhost_profile = \"{}\"\n{extra}",
                rt.display(),
                h100_profile().display()
            ),
        )
        .unwrap();
        std::process::Command::new(SHIM)
            .arg(format!("--cuda-preflight-config={}", config.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let b = bundle.to_str().unwrap();
    let out = shim(
        "",
        &[
            "--cgroup-manager",
            "systemd",
            "--log-level",
            "debug",
            "create",
            "-b",
            b,
            "c1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["hooks"]["createRuntime"][0]["args"][1], "hook",
        "the hook was added: {spec}"
    );
    // A flag neither runtime has: said on stderr and in the runtime's log; on_error decides.
    let l = log.to_str().unwrap();
    let out = shim(
        "",
        &[
            "--log",
            l,
            "--log-format",
            "json",
            "--frobnicate",
            "create",
            "-b",
            b,
            "c2",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not understood: global flag --frobnicate"),
        "{err}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("\"level\":\"warning\"") && logged.contains("--frobnicate"),
        "{logged}"
    );
    let out = shim(
        "on_error = \"block\"\n",
        &["--frobnicate", "create", "-b", b, "c3"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused: global flag --frobnicate not understood"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Policy from the image.

#[test]
fn an_image_annotation_cannot_audit_its_own_container() {
    // Podman copies an image's annotations into the spec: this is what an image built with
    // `--annotation cuda-preflight/mode=audit` gives runc. The host allows container overrides.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = blocked_bundle(dir.path(), "allow_container_override = true\n");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    spec["annotations"] = serde_json::json!({"cuda-preflight/mode": "audit"});
    write_spec(dir.path(), &spec);
    let id = unique_id("robust-annot");
    let out = runc_run(dir.path(), &id);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the image audited itself: {err}");
    assert!(err.contains(&format!("blocked container {id}")), "{err}");
    let rep = read_report(&state, &id).unwrap();
    assert_eq!(rep["mode"], "enforce");
    assert!(
        all_finding_ids(&rep).contains(&"container-override-refused".to_string()),
        "{rep}"
    );
    // Stricter is honoured: the same annotation asking for enforce on a warn host blocks.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = blocked_bundle(
        dir.path(),
        "allow_container_override = true\nmode = \"warn\"\n",
    );
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    spec["annotations"] = serde_json::json!({"cuda-preflight/mode": "enforce"});
    write_spec(dir.path(), &spec);
    let id = unique_id("robust-annot2");
    let out = runc_run(dir.path(), &id);
    assert!(!out.status.success());
    assert_eq!(read_report(&state, &id).unwrap()["mode"], "enforce");
}

// ---------------------------------------------------------------------------------------------
// install / uninstall round trip.

fn install_cli(verb: &str, daemon_json: &Path, bin_dir: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args([verb, "docker", "--bin-dir", bin_dir, "--daemon-json"])
        .arg(daemon_json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_install_twice_then_uninstall_gives_the_original_back_byte_for_byte_through_a_link() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("managed/daemon.json");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    // Formatting and key order as a person (or a tool) left them.
    let original = b"{\n  \"default-runtime\":   \"nvidia\",\n\t\"runtimes\": {\"nvidia\": {\"path\": \"nvidia-container-runtime\"}}\n}\n";
    std::fs::write(&real, original).unwrap();
    let link = d.path().join("daemon.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    install_cli("install", &link, "/opt/cp");
    // A second install from another directory (an upgrade moved the binaries).
    install_cli("install", &link, "/opt/cp2");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "install replaced the link with a file"
    );
    let installed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(
        installed["runtimes"]["cuda-preflight"]["path"],
        "/opt/cp2/cuda-preflight-runtime"
    );
    assert_eq!(installed["default-runtime"], "cuda-preflight");

    let said = install_cli("uninstall", &link, "/opt/cp2");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "uninstall replaced the link with a file"
    );
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&real).unwrap()),
        String::from_utf8_lossy(original),
        "{said}"
    );
    assert!(!d.path().join("daemon.json.cuda-preflight.bak").exists());
}

#[test]
fn docker_install_into_no_daemon_json_then_uninstall_leaves_none() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("daemon.json");
    install_cli("install", &p, "/opt/cp");
    assert!(p.exists());
    install_cli("uninstall", &p, "/opt/cp");
    assert!(!p.exists(), "{:?}", std::fs::read_to_string(&p));
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// Untrusted strings in human output.

/// No raw control character and no line the image forged.
fn assert_escaped(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{202e}'),
        "{what}: raw control characters reached the output:\n{text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(" x forged")),
        "{what}: the image forged a line:\n{text}"
    );
    assert!(
        text.contains("\\x1b[2J"),
        "{what}: the name is shown escaped:\n{text}"
    );
}

#[test]
fn image_file_names_are_escaped_in_check_the_block_message_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, root) = gpu_bundle(dir.path());
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    // sm_80-only GPU code (kernel-image-missing on an H100) under a name that clears the screen,
    // forges a finding line and reverses text.
    let name = "libk80\x1b[2J\r\n x forged: all good\u{202e}os.so";
    std::fs::copy(sm80_only(), libdir.join(name)).unwrap();

    let out = std::process::Command::new(BIN)
        .args(["check", "--bundle"])
        .arg(&bundle)
        .arg("--host-profile")
        .arg(h100_profile())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("kernel-image-missing"), "{text}");
    assert_escaped("check", &text);

    let r = hook_direct(&bundle, dir.path());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_escaped("block message", &r.stderr);

    let reports = dir.path().join("direct-state/reports");
    let id = std::fs::read_dir(&reports)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".json") && !n.starts_with('.'))
        .unwrap()
        .trim_end_matches(".json")
        .to_string();
    let out = std::process::Command::new(BIN)
        .args(["report", &id, "--state-dir"])
        .arg(dir.path().join("direct-state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_escaped("report", &text);
}

#[test]
#[allow(unsafe_code)]
fn shim_never_waits_on_a_spec_that_does_not_open() {
    // config.json a FIFO nobody writes (a bundle on a dead mount): the early check and then the
    // edit both wait on it. With on_timeout = allow the shim must still hand `create` to the
    // runtime at its deadline, saying the container is not checked. (A stand-in runtime: runc
    // would itself wait on the FIFO.)
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let c = std::ffi::CString::new(bundle.join("config.json").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that mkfifo only reads.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let rt = dir.path().join("fake-runc");
    std::fs::write(
        &rt,
        format!(
            "#!/bin/sh\necho ran > {}/ran\nexit 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "runtime = \"{}\"\nhook_binary = \"{BIN}\"\nhost_profile = \"{}\"\ndeadline_ms = 500\non_timeout = \"allow\"\n",
            rt.display(),
            h100_profile().display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "30", SHIM])
        .arg(format!("--cuda-preflight-config={}", config.display()))
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg("fifo1")
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(124), "the shim hung: {err}");
    assert!(out.status.success(), "{err}");
    assert!(
        dir.path().join("ran").exists(),
        "the runtime was not run: {err}"
    );
    assert!(
        err.contains("not edited within deadline_ms = 500 ms: container not checked"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn podman_image_built_with_an_audit_annotation_is_still_blocked() {
    // The real path: `podman build --annotation cuda-preflight/mode=audit`, then `podman run` of
    // that image through the hooks directory. Podman copies the image's annotation into the
    // spec; the host allows container overrides; the container lacks /dev/nvidia-uvm.
    let podman = require_tool("podman");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hooks = d.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let (state, config) = (d.join("state"), d.join("config.toml"));
    std::fs::write(
        &config,
        "probe = \"never\"\nallow_container_override = true\n",
    )
    .unwrap();
    let mut ours: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("hooks/oci-hooks.d/cuda-preflight.json")).unwrap(),
    )
    .unwrap();
    ours["hook"]["path"] = BIN.into();
    ours["hook"]["args"] = serde_json::json!([
        "cuda-preflight",
        "hook",
        "--config",
        config,
        "--state-dir",
        state,
        "--host-profile",
        h100_profile()
    ]);
    std::fs::write(hooks.join("cuda-preflight.json"), ours.to_string()).unwrap();
    let nodes: Vec<_> = ALL_NODES
        .iter()
        .copied()
        .filter(|n| n.0 != "/dev/nvidia-uvm")
        .collect();
    let standin = standin_nvidia_hook(d, &nodes, true);
    let nvidia = serde_json::json!({
        "version": "1.0.0",
        "hook": {"path": standin, "args": ["nvidia-container-runtime-hook", "prestart"]},
        "when": {"always": true},
        "stages": ["prestart"]
    });
    std::fs::write(hooks.join("oci-nvidia-hook.json"), nvidia.to_string()).unwrap();
    let ctx = d.join("ctx");
    busybox_rootfs(&ctx);
    std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    let base = |c: &mut std::process::Command| {
        c.args(["-k", "5", "120"])
            .arg(&podman)
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--runtime",
                "runc",
            ]);
    };
    let image = format!("localhost/{}:1", unique_id("robust-annotated"));
    let mut build = std::process::Command::new("timeout");
    base(&mut build);
    let out = build
        .args([
            "build",
            "--annotation",
            "cuda-preflight/mode=audit",
            "-t",
            &image,
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = std::process::Command::new("timeout");
    base(&mut run);
    let out = run
        .arg("--hooks-dir")
        .arg(&hooks)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "-e",
            "NVIDIA_VISIBLE_DEVICES=all",
            &image,
            "true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the image audited itself: {err}");
    assert!(err.contains("cuda-preflight: blocked container "), "{err}");
    let rep: serde_json::Value = std::fs::read_dir(state.join("reports"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .expect("a report");
    assert_eq!(rep["mode"], "enforce", "{rep}");
    let refused = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "container-override-refused")
        .unwrap_or_else(|| panic!("{rep}"));
    assert!(
        refused["evidence"].as_str().unwrap().contains("\"audit\""),
        "the annotation came from the image: {refused}"
    );
}

#[test]
#[allow(unsafe_code)]
fn shim_config_that_never_opens_stops_the_command_at_the_default_deadline() {
    // The shim's own config on a dead mount (a FIFO nobody writes): every command of the engine
    // would hang in the shim. It gives up at the default deadline (10 s), runs nothing, says why.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that mkfifo only reads.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let t = Instant::now();
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "40", SHIM])
        .arg(format!("--cuda-preflight-config={}", fifo.display()))
        .args(["state", "x"])
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not read within 10000 ms"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
