//! Hostile rootfs: images built to make the hook read the host, hang, or blow up. Each case runs
//! `check --bundle` on a GPU bundle (the spec of examples/bundles/cuda13-image, which asks for a
//! GPU, so the image-facing code runs) with the hostile rootfs, and the facts functions directly.
//! Shown: no file outside the rootfs is read (a canary outside would change the verdict, and the
//! control case proves it does), a decision within a generous deadline and bounded memory, no
//! crash (exit 0/1 with whole JSON, never a signal or exit 2).

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cuda_preflight::facts::host::state as hoststate;
use cuda_preflight::facts::image::rootfs;
use cuda_preflight::facts::library_loading::loader::Loader;
use cuda_preflight::facts::versions::image_cuda as image;

/// Far above what any case takes on an idle machine (< 1 s); the CI machine is shared.
const DEADLINE: Duration = Duration::from_secs(60);
/// Peak RSS allowed to the checking process: the binary alone is ~10 MB; reading a 100 GB file
/// whole, or listing 200,000 names into memory many times over, would show.
const MAX_RSS_KB: i64 = 200 * 1024;

/// A bundle with the cuda13-image spec and an empty rootfs under `top/b/rootfs`.
fn gpu_bundle(top: &Path) -> (PathBuf, PathBuf) {
    let dir = top.join("b");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(
        repo().join("examples/bundles/cuda13-image/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    (dir, root)
}

struct Run {
    code: i32,
    json: Value,
    elapsed: Duration,
    max_rss_kb: i64,
}

/// Run the binary with `args`, killed at DEADLINE; exit code, stdout JSON, time and peak RSS.
#[allow(unsafe_code)]
fn run_bin(args: &[&str]) -> Run {
    use std::os::unix::process::ExitStatusExt;
    let t = Instant::now();
    let child = std::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Read the pipes on threads so a large output cannot block the child.
    let mut child = child;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).unwrap();
        v
    });
    let mut status = 0;
    // SAFETY: an all-zero value is a valid instance of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // wait4 gives the child's own peak RSS.
        // SAFETY: the status and rusage out-parameters live on this stack frame.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if t.elapsed() > DEADLINE {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{args:?}: no decision within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t.elapsed();
    let stdout = out_t.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    let st = std::process::ExitStatus::from_raw(status);
    assert!(
        st.signal().is_none(),
        "{args:?}: killed by a signal: {stderr}"
    );
    let code = st.code().unwrap();
    let json: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: exit {code}, output not JSON ({e}): {stderr}"));
    Run {
        code,
        json,
        elapsed,
        max_rss_kb: ru.ru_maxrss,
    }
}

fn check(bundle: &Path) -> Run {
    let r = run_bin(&[
        "check",
        "--bundle",
        bundle.to_str().unwrap(),
        "--host-profile",
        h100_profile().to_str().unwrap(),
        "--json",
    ]);
    assert!(r.code == 0 || r.code == 1, "exit {}: {}", r.code, r.json);
    assert!(r.elapsed < DEADLINE);
    assert!(r.max_rss_kb < MAX_RSS_KB, "peak RSS {} KB", r.max_rss_kb);
    r
}

fn env_of(bundle: &Path) -> Vec<String> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    v["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn ids(r: &Run) -> Vec<String> {
    let mut v: Vec<String> = all_finding_ids(&r.json);
    v.sort();
    v
}

/// A 64-bit little-endian ELF header (shared object, x86-64) with the section table it claims.
fn elf_header(shoff: u64, shentsize: u16, shnum: u16, shstrndx: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&shentsize.to_le_bytes());
    h[60..62].copy_from_slice(&shnum.to_le_bytes());
    h[62..64].copy_from_slice(&shstrndx.to_le_bytes());
    h
}

#[allow(unsafe_code)]
fn mkfifo(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that mkfifo only reads.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "{p:?}");
}

#[allow(unsafe_code)]
fn mknod_char(p: &Path, major: u32, minor: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let dev = libc::makedev(major, minor);
    assert_eq!(
        // SAFETY: a NUL-terminated path that mknod only reads.
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, dev) },
        0,
        "{p:?}: mknod needs root"
    );
}

/// The canary: a CUDA 13.1 runtime (needs driver >= 590; the H100 profile has 580) and a
/// version.json, a libcuda.so.1 and an ld.so.cache, all outside the rootfs.
fn canary_tree(dir: &Path) {
    let cuda = dir.join("usr/local/cuda-13.1");
    std::fs::create_dir_all(cuda.join("lib64")).unwrap();
    std::fs::write(cuda.join("lib64/libcudart.so.13.1.80"), b"canary").unwrap();
    std::fs::write(
        cuda.join("version.json"),
        br#"{"cuda":{"name":"CUDA SDK","version":"13.1.0"}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/libcuda.so.1"), elf_header(0, 64, 0, 0)).unwrap();
}

#[test]
fn canary_inside_the_rootfs_changes_the_verdict() {
    // Control for the escape test: the same files *inside* the image do change what check says,
    // so their absence from the escape case's output means they were not read.
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let clean = check(&b);
    canary_tree(&root);
    symlink("cuda-13.1", root.join("usr/local/cuda")).unwrap();
    let inside = check(&b);
    assert_ne!(ids(&clean), ids(&inside), "{}", inside.json);
    let f = image::gather_rootfs(&root, &env_of(&b));
    assert_eq!(f.toolkit_version.unwrap().to_string(), "13.1.0");
    assert_eq!(f.runtimes.len(), 1);
}

#[test]
fn symlinks_out_of_the_rootfs_stay_inside() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let clean = check(&b);
    let host = top.path().join("host");
    canary_tree(&host);
    let host_cuda = host.join("usr/local/cuda-13.1");
    let local = root.join("usr/local");
    std::fs::create_dir_all(&local).unwrap();
    // Absolute host path, `..` chain (exactly as deep as needed to reach `top` from the host's
    // point of view), /proc/self/root, and a loop.
    symlink(&host_cuda, local.join("cuda")).unwrap();
    symlink("../../../../host/usr/local/cuda-13.1", local.join("cuda-a")).unwrap();
    symlink(
        format!("/proc/self/root{}", host_cuda.display()),
        local.join("cuda-b"),
    )
    .unwrap();
    symlink("cuda-loop2", local.join("cuda-loop1")).unwrap();
    symlink("cuda-loop1", local.join("cuda-loop2")).unwrap();
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    symlink(host.join("lib/libcuda.so.1"), libdir.join("libcuda.so.1")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // The host's real cache: if followed, the loader would have a cache (and its notes none).
    symlink(
        "/proc/self/root/etc/ld.so.cache",
        root.join("etc/ld.so.cache"),
    )
    .unwrap();
    // A directory link out: the lib dir hoststate lists.
    symlink(host.join("lib"), root.join("usr/lib64")).unwrap();

    // Every path the image could name resolves inside the rootfs or not at all.
    for p in [
        "/usr/local/cuda/version.json",
        "/usr/local/cuda-a/version.json",
        "/usr/local/cuda-b/version.json",
        "/usr/local/cuda-loop1",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/etc/ld.so.cache",
        "/usr/lib64/libcuda.so.1",
    ] {
        if let Ok(r) = rootfs::resolve(&root, Path::new(p)) {
            assert!(r.starts_with(&root), "{p} resolved to {r:?}");
        }
    }
    let f = image::gather_rootfs(&root, &env_of(&b));
    assert!(f.toolkit_version.is_none(), "{:?}", f.toolkit_version);
    assert!(f.runtimes.is_empty(), "{:?}", f.runtimes);
    assert!(f.libcuda.is_none(), "{:?}", f.libcuda);
    assert!(!Loader::from_image(&root, None).has_cache());
    assert!(hoststate::image_driver_libs(&root).unwrap().is_empty());

    let hostile = check(&b);
    assert_eq!(hostile.json["verdict"], clean.json["verdict"]);
    // The same findings as the clean image, plus the walk saying which links it could not follow.
    let mut got = ids(&hostile);
    let skipped = got
        .iter()
        .position(|i| i == "kernels-scan-incomplete")
        .expect("the loops are reported");
    got.remove(skipped);
    assert_eq!(got, ids(&clean), "{}", hostile.json);
    assert!(
        hostile
            .json
            .to_string()
            .contains("Too many levels of symbolic links"),
        "{}",
        hostile.json
    );
}

#[test]
fn fifos_and_device_nodes_named_like_cuda_files_are_not_opened() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let clean = check(&b);
    // Opening a FIFO with no writer blocks forever; /dev/zero never ends; both would show as a
    // missed deadline or a memory blow-up.
    mkfifo(&root.join("usr/lib/x86_64-linux-gnu/libcuda.so.1"));
    mkfifo(&root.join("usr/local/cuda/version.json"));
    mknod_char(&root.join("etc/ld.so.cache"), 1, 5);
    mknod_char(
        &root.join("usr/local/cuda/lib64/libcudart.so.13.1.80"),
        1,
        5,
    );
    mkfifo(&root.join("usr/local/cuda/compat/libcuda.so.590.1.1"));
    mknod_char(
        &root.join("usr/lib/x86_64-linux-gnu/libnvidia-ml.so.590.1.1"),
        1,
        5,
    );
    mknod_char(&root.join("etc/ld.so.conf"), 1, 5);

    let f = image::gather_rootfs(&root, &env_of(&b));
    assert!(f.libcuda.is_none());
    assert!(f.toolkit_version.is_none());
    // What could not be used is said, not silently passed over.
    assert!(
        f.toolkit_version_error
            .as_deref()
            .is_some_and(|e| e.contains("not a regular file")),
        "{:?}",
        f.toolkit_version_error
    );
    assert!(
        f.notes.iter().any(|n| n.contains("/etc/ld.so.cache")),
        "{:?}",
        f.notes
    );
    assert!(f.runtimes.is_empty() && f.compat_libs.is_empty());
    assert!(hoststate::image_driver_libs(&root).unwrap().is_empty());
    let r = check(&b);
    assert_eq!(r.json["verdict"], clean.json["verdict"], "{}", r.json);
    // And check says what it skipped.
    assert!(
        ids(&r).contains(&"image-read-partial".to_string()),
        "{}",
        r.json
    );
    assert!(
        ids(&r).contains(&"cuda-version-json-unreadable".to_string()),
        "{}",
        r.json
    );
}

#[test]
fn sparse_100_gb_files_with_elf_and_fatbin_headers() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    const SIZE: u64 = 100 << 30;
    // An ELF whose section table sits at the very end of 100 GB of holes.
    let elf = lib.join("libcuda.so.1");
    std::fs::write(&elf, elf_header(SIZE - 64 * 100, 64, 100, 1)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&elf)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    // A fatbin container that claims all 100 GB.
    let fb = lib.join("kernels.fatbin");
    let mut h = 0xBA55_ED50u32.to_le_bytes().to_vec();
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(&(SIZE - 16).to_le_bytes());
    std::fs::write(&fb, &h).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fb)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    std::fs::create_dir_all(root.join("usr/local/cuda")).unwrap();
    let vj = root.join("usr/local/cuda/version.json");
    std::fs::write(&vj, br#"{"cuda":{"version":"13.0.0"}}"#).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vj)
        .unwrap()
        .set_len(SIZE)
        .unwrap();

    let f = image::gather_rootfs(&root, &env_of(&b));
    // version.json is read capped: a 100 GB one is refused with a reason, not read.
    assert!(
        f.toolkit_version_error
            .as_deref()
            .is_some_and(|e| e.contains("larger than")),
        "{:?}",
        f.toolkit_version_error
    );
    check(&b);
    // scan reads headers by pieces, never the file: bounded time and memory on both.
    for p in [&elf, &fb] {
        let r = run_bin(&["scan", "--json", p.to_str().unwrap()]);
        assert!(
            r.max_rss_kb < MAX_RSS_KB,
            "{p:?}: peak RSS {} KB",
            r.max_rss_kb
        );
        assert!(r.elapsed < DEADLINE);
        assert!(r.code <= 2, "{p:?}: {}", r.json);
    }
    let r = run_bin(&["scan", "--json", lib.to_str().unwrap()]);
    assert!(r.max_rss_kb < MAX_RSS_KB);
}

#[test]
fn two_hundred_thousand_files_in_library_dirs() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let clean = check(&b);
    // Names that every listing filter lets through, so nothing is skipped by name alone.
    let cuda_lib = root.join("usr/local/cuda/lib64");
    let sys_lib = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&cuda_lib).unwrap();
    std::fs::create_dir_all(&sys_lib).unwrap();
    let compat = root.join("usr/local/cuda/compat");
    std::fs::create_dir_all(&compat).unwrap();
    for i in 0..80_000 {
        std::fs::File::create(cuda_lib.join(format!("libcudart.so.12.{i}"))).unwrap();
        std::fs::File::create(sys_lib.join(format!("libnvidia-x{i}.so.1"))).unwrap();
        if i < 40_000 {
            std::fs::File::create(compat.join(format!("libcuda.so.590.{i}"))).unwrap();
        }
    }
    let t = Instant::now();
    let f = image::gather_rootfs(&root, &env_of(&b));
    let took = t.elapsed();
    // The listing stops at its bound and says so.
    assert!(
        f.notes.iter().any(|n| n.contains("rest not read")),
        "{:?}",
        f.notes
    );
    // Under the hook's default deadline (10 s) with room to spare, even in a debug build on a
    // shared machine: before the fix (linear de-duplication) this took 8.8 s here.
    assert!(took < Duration::from_secs(4), "{took:?}");
    hoststate::image_driver_libs(&root).unwrap();
    let r = check(&b);
    assert_eq!(r.json["verdict"], clean.json["verdict"]);
    assert!(
        r.json.to_string().contains("rest not read"),
        "check must say what it skipped: {}",
        r.json
    );
    eprintln!(
        "200,000 files: facts {:.2} s, check {:.2} s, peak RSS {} KB",
        took.as_secs_f64(),
        r.elapsed.as_secs_f64(),
        r.max_rss_kb
    );
}

#[test]
fn unreadable_directories_do_not_stop_the_check() {
    // Tests run as root, and root's CAP_DAC_OVERRIDE reads a mode-000 directory anyway: what this
    // shows is that such a tree neither crashes nor changes the decision (a non-root caller of
    // `check` gets the directory skipped by the same code path: read_dir's error is ignored).
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let clean = check(&b);
    for d in ["usr/local/cuda/lib64", "usr/lib/x86_64-linux-gnu", "etc"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    }
    let r = check(&b);
    assert_eq!(ids(&r), ids(&clean));
    for d in ["usr/local/cuda/lib64", "usr/lib/x86_64-linux-gnu", "etc"] {
        std::fs::set_permissions(
            root.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
}

#[test]
fn elf_whose_section_table_lies() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    let cases: &[(&str, Vec<u8>)] = &[
        // Section table past the end of the file.
        ("past-end.so", elf_header(1 << 40, 64, 10, 1)),
        // 65535 sections of a wrong entry size.
        ("bad-entsize.so", elf_header(64, 7, 0xffff, 0)),
        // Table overlapping the header, string table index out of range.
        ("overlap.so", {
            let mut v = elf_header(0, 64, 3, 0xfffe);
            v.resize(64 * 3, 0xff);
            v
        }),
        // Offset + size overflows u64.
        ("overflow.so", elf_header(u64::MAX - 10, 64, 2, 1)),
    ];
    for (name, bytes) in cases {
        std::fs::write(lib.join(name), bytes).unwrap();
        let r = run_bin(&["scan", "--json", lib.join(name).to_str().unwrap()]);
        assert!(r.code <= 2, "{name}: {}", r.json);
        assert!(r.max_rss_kb < MAX_RSS_KB, "{name}: {} KB", r.max_rss_kb);
    }
    // As the image's libcuda.so.1, a lying ELF is still judged by name and class only.
    std::fs::copy(lib.join("past-end.so"), lib.join("libcuda.so.1")).unwrap();
    check(&b);
}

/// Build a shared object with `gcc`: `soname`, the libraries it needs (built alongside as empty
/// objects), and its RUNPATH.
fn gcc_lib(dir: &Path, file: &str, soname: &str, needs: &[&str], runpath: &str) -> PathBuf {
    // Built outside the rootfs: the stubs linked against must not be part of the image.
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path();
    let src = build.join("x.c");
    std::fs::write(&src, "int preflight_marker(void) { return 1; }\n").unwrap();
    for n in needs {
        let st = std::process::Command::new(require_tool("gcc"))
            .args(["-shared", "-fPIC", "-o"])
            .arg(build.join(n))
            .arg(&src)
            .arg(format!("-Wl,-soname,{n}"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = dir.join(file);
    let mut cmd = std::process::Command::new(require_tool("gcc"));
    cmd.args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-Wl,--no-as-needed")
        .arg(format!("-L{}", build.display()));
    for n in needs {
        cmd.arg(format!("-l:{n}"));
    }
    if !runpath.is_empty() {
        cmd.arg(format!("-Wl,--enable-new-dtags,-rpath,{runpath}"));
    }
    assert!(cmd.status().unwrap().success());
    out
}

#[test]
fn load_resolution_never_leaves_the_rootfs_and_ends_on_loops() {
    let top = tempfile::tempdir().unwrap();
    let (b, root) = gpu_bundle(top.path());
    // A real ELF libcudart outside the rootfs: found, it would be a runtime in use.
    let host_lib = top.path().join("host/lib");
    std::fs::create_dir_all(&host_lib).unwrap();
    gcc_lib(&host_lib, "libcudart.so.12", "libcudart.so.12", &[], "");
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("opt")).unwrap();
    symlink("loop-b", root.join("opt/loop-a")).unwrap();
    symlink("loop-a", root.join("opt/loop-b")).unwrap();
    // Every way out: an absolute host path, a `..` chain from $ORIGIN, /proc/self/root, a loop.
    let runpath = format!(
        "{host}:$ORIGIN/../../../../host/lib:/proc/self/root{host}:/opt/loop-a",
        host = host_lib.display()
    );
    gcc_lib(
        &libdir,
        "libconsumer.so",
        "libconsumer.so",
        &["libcudart.so.12"],
        &runpath,
    );
    // Two CUDA libraries that need each other: the closure ends.
    let cyc = root.join("opt/cyc");
    std::fs::create_dir_all(&cyc).unwrap();
    gcc_lib(
        &cyc,
        "libcublas.so.12",
        "libcublas.so.12",
        &["libcublasLt.so.12"],
        "$ORIGIN",
    );
    gcc_lib(
        &cyc,
        "libcublasLt.so.12",
        "libcublasLt.so.12",
        &["libcublas.so.12"],
        "$ORIGIN",
    );
    gcc_lib(
        &libdir,
        "libcycuser.so",
        "libcycuser.so",
        &["libcublas.so.12"],
        "/opt/cyc",
    );

    let r = check(&b);
    let load = &r.json["load"];
    assert_eq!(load["runtimes_in_use"], serde_json::json!([]), "{load}");
    let missing: Vec<&str> = load["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["library"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["libcudart.so.12"], "{load}");
    assert!(ids(&r).contains(&"image-library-missing".to_string()));
    // consumer, cycuser, libcublas, libcublasLt: each linked once.
    assert_eq!(load["objects"], 4, "{load}");
    // The image's RUNPATH strings are quoted as written (searched inside the rootfs); nothing
    // was found through them.
    assert_eq!(
        load["missing"][0]["elsewhere"],
        serde_json::json!([]),
        "{load}"
    );

    // Control: the same libcudart inside the rootfs on the RUNPATH is found and in use.
    std::fs::remove_file(root.join("opt/loop-a")).unwrap();
    std::fs::create_dir_all(root.join("opt/loop-a")).unwrap();
    std::fs::copy(
        host_lib.join("libcudart.so.12"),
        root.join("opt/loop-a/libcudart.so.12"),
    )
    .unwrap();
    let inside = check(&b);
    let rt = &inside.json["load"]["runtimes_in_use"];
    assert_eq!(
        rt[0]["path"], "/opt/loop-a/libcudart.so.12",
        "{}",
        inside.json["load"]
    );
    assert_eq!(rt[0]["via"], "runpath");
    assert!(!ids(&inside).contains(&"image-library-missing".to_string()));
}
