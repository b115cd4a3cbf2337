//! Image load checks (issue 14) against the real loader. Each test builds a container rootfs
//! from real Debian packages and NVIDIA's runtime wheels (`scripts/load-fixtures.sh`, cached),
//! asks the image's own glibc loader what happens (`ld.so --list` and `dlopen` inside a chroot
//! of the rootfs), asserts that, and then asserts that `check --json` agrees with it.
//!
//! The cases:
//! * clean: Debian 13's libstdgpu_cuda (C++, DT_NEEDED libcudart.so.12) with Debian 13's
//!   libcudart12, libc6 and libstdc++6 — loads;
//! * runtime removed: the same without libcudart12 — `libcudart.so.12: cannot open shared
//!   object file`;
//! * old image: the same consumers on Debian 12's libc6 2.36 and libstdc++6 (GCC 12) —
//!   `GLIBCXX_3.4.32` and `GLIBC_2.38` not found;
//! * two runtimes: CUDA 11.8's libcudart.so.11.0 in /usr/local/cuda-11.8/lib64 (the ld.so.cache)
//!   and `CUDA_VERSION=11.8.0`, while a framework library finds the cu12 wheel's libcudart
//!   12.9 through its RPATH `$ORIGIN/nvidia/cuda_runtime/lib` (an extension module at the top
//!   of site-packages, flash-attn's layout);
//! * CUDA consumers where the binary walk does not look (a plugin directory, an unlisted
//!   package): the loader fails them all the same;
//! * hostile: links out of the rootfs, a directory symlink loop on the RPATH, a DT_NEEDED cycle.
//!
//! Needs root (chroot, `ldconfig -r`), a C compiler, and the downloads; it runs
//! `scripts/load-fixtures.sh` itself when the cache lacks them. Without them every test here
//! fails, naming what is missing and how to get it: a test that cannot get its input does not
//! pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::common::{BIN, cache, repo};

const SITE: &str = "usr/local/lib/python3.13/dist-packages";
const MULTIARCH: &str = "usr/lib/x86_64-linux-gnu";
const STDGPU: &str = "/usr/lib/x86_64-linux-gnu/libstdgpu_cuda.so.0d";
const HWLOC_CUDA: &str = "/usr/lib/x86_64-linux-gnu/hwloc/hwloc_cuda.so";
const NOT_FOUND_12: &str =
    "libcudart.so.12: cannot open shared object file: No such file or directory";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn base() -> PathBuf {
    cache().join("load-fixtures/v1")
}

/// The cache, filled by scripts/load-fixtures.sh when needed. Without it the test fails, saying
/// what is missing and how to get it (the script runs once per process; each test reports).
fn fixtures() -> &'static Path {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let complete = |rel: &str| base().join(rel).join(".complete").is_file();
        let all = [
            "deb/trixie/libc6",
            "deb/trixie/libstdc++6",
            "deb/trixie/libgcc-s1",
            "deb/trixie/libcudart12",
            "deb/trixie/libstdgpu-cuda0d",
            "deb/trixie/libhwloc-contrib-plugins",
            "deb/bookworm/libc6",
            "deb/bookworm/libstdc++6",
            "deb/bookworm/libgcc-s1",
            "wheel/cuda-runtime-cu12-12.9.79",
            "wheel/cuda-runtime-cu11-11.8.89",
        ];
        if all.iter().all(|r| complete(r)) {
            return Ok(base());
        }
        let o = Command::new(repo().join("scripts/load-fixtures.sh")).output();
        if all.iter().all(|r| complete(r)) {
            return Ok(base());
        }
        let missing: Vec<&str> = all.iter().copied().filter(|r| !complete(r)).collect();
        let how = match &o {
            Ok(o) => format!(
                "scripts/load-fixtures.sh exited {:?}:\n{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("scripts/load-fixtures.sh could not run: {e}"),
        };
        Err(format!(
            "tests/it/image_load.rs needs the Debian packages and CUDA runtime wheels that \
             scripts/load-fixtures.sh downloads (11 MB, from deb.debian.org and pypi.org) into {}; \
             missing: {}. Run scripts/load-fixtures.sh where those hosts are reachable, or copy \
             that directory from a machine that has it. {how}",
            base().display(),
            missing.join(", ")
        ))
    });
    match ready {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn require_root() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "tests/it/image_load.rs runs the image's loader in a chroot and `ldconfig -r`: run as root \
         (as scripts/test.sh does for the runc tests)"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

#[derive(Clone, Copy, PartialEq)]
enum Suite {
    /// Debian 13: glibc 2.41, libstdc++ of GCC 14 (GLIBCXX_3.4.33), merged /usr.
    Trixie,
    /// Debian 12: glibc 2.36, libstdc++ of GCC 12 (GLIBCXX_3.4.30).
    Bookworm,
}

/// A GPU bundle: config.json asking for the H100's device nodes, and a rootfs holding `suite`'s
/// libc6, libstdc++6 and libgcc-s1 plus the trixie packages named.
struct Image {
    dir: tempfile::TempDir,
    env: Vec<String>,
    /// The spec's `process.args`.
    args: Vec<String>,
}

impl Image {
    fn new(fx: &Path, suite: Suite, trixie_pkgs: &[&str]) -> Image {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for d in ["usr/lib", "usr/lib64", "usr/bin", "usr/sbin", "etc", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let suite_name = match suite {
            Suite::Trixie => {
                // Debian 13's libc6 ships its files under /usr only; /lib, /lib64 and /bin are
                // base-files' symlinks.
                for d in ["lib", "lib64", "bin", "sbin"] {
                    std::os::unix::fs::symlink(format!("usr/{d}"), root.join(d)).unwrap();
                }
                "trixie"
            }
            Suite::Bookworm => "bookworm",
        };
        for p in ["libc6", "libstdc++6", "libgcc-s1"] {
            copy_tree(&fx.join(format!("deb/{suite_name}/{p}/root")), &root);
        }
        for p in trixie_pkgs {
            copy_tree(&fx.join(format!("deb/trixie/{p}/root")), &root);
        }
        // libc-bin's ld.so.conf.
        std::fs::write(
            root.join("etc/ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("host")).unwrap();
        Image {
            dir,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            args: vec!["true".into()],
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel.trim_start_matches('/'))
    }

    fn place(&self, rel: &str, from: &Path) {
        let to = self.path(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let st = Command::new("cp")
            .arg("-p")
            .arg(from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// A wheel as `pip install` leaves it in `site`: its tree and its `.dist-info`.
    fn pip(&self, site: &str, wheel: &Path) {
        let to = self.path(site);
        std::fs::create_dir_all(&to).unwrap();
        copy_tree(wheel, &to);
        std::fs::remove_file(to.join(".complete")).unwrap();
    }

    /// A real library file and its soname link beside it (`libcudart.so.12 ->
    /// libcudart.so.12.4.127`), as packages and NVIDIA's images lay them out.
    fn place_with_link(&self, dir: &str, file: &str, link: &str, from: &Path) {
        self.place(&format!("{dir}/{file}"), from);
        std::os::unix::fs::symlink(file, self.path(&format!("{dir}/{link}"))).unwrap();
    }

    /// The image's /etc/ld.so.cache, as `ldconfig` in a `RUN` step of its build writes it.
    fn ldconfig(&self) {
        let o = Command::new("ldconfig")
            .arg("-r")
            .arg(self.root())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ldconfig -r: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `ld.so --list FILE` with the image's loader, inside the rootfs: (exit code, output).
    fn loader_list(&self, file: &str) -> (i32, String) {
        let o = Command::new("chroot")
            .arg(self.root())
            .args(["/lib64/ld-linux-x86-64.so.2", "--list", file])
            .env_clear()
            .envs(self.env.iter().filter_map(|kv| kv.split_once('=')))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("ld.so --list {file}: rc={:?}\n{text}", o.status.code());
        (o.status.code().unwrap_or(-1), text)
    }

    /// `dlopen(FILE, RTLD_LAZY)` by a small probe run by the image's loader inside the rootfs,
    /// with the spec's environment, in one process and in order: per file `ok FILE` or
    /// `error <dlerror()>` (the message a framework's import shows); for the frameworks built
    /// here, `ok FILE cudart=N`: the `cudaRuntimeGetVersion` of the libcudart it really called.
    fn dlopen(&self, files: &[&str]) -> Vec<String> {
        self.dlopen_as("/.dlopen-probe", &[], files)
    }

    /// As `dlopen`, by a probe installed at `exe` in the image, linked with `ldflags`
    /// (`-Wl,-rpath,...`: an executable's DT_RPATH also serves every library it loads).
    fn dlopen_as(&self, exe: &str, ldflags: &[&str], files: &[&str]) -> Vec<String> {
        let probe = self.dir.path().join("dlopen-probe");
        let mut args = vec!["-O2"];
        args.extend(ldflags);
        args.push("-o");
        cc(
            &args,
            &probe,
            "#include <dlfcn.h>\n#include <stdio.h>\n\
             int main(int c, char **v) { for (int i = 1; i < c; i++) {\n\
               void *h = dlopen(v[i], RTLD_LAZY | RTLD_LOCAL);\n\
               if (!h) { printf(\"error %s\\n\", dlerror()); continue; }\n\
               int (*f)(void) = (int (*)(void))dlsym(h, \"fw_runtime_version\");\n\
               if (f) printf(\"ok %s cudart=%d\\n\", v[i], f()); else printf(\"ok %s\\n\", v[i]); }\n\
               return 0; }\n",
        );
        self.place(exe, &probe);
        let o = Command::new("chroot")
            .arg(self.root())
            .args(["/lib64/ld-linux-x86-64.so.2", exe])
            .args(files)
            .env_clear()
            .envs(self.env.iter().filter_map(|kv| kv.split_once('=')))
            .output()
            .unwrap();
        if exe == "/.dlopen-probe" {
            std::fs::remove_file(self.path(exe)).unwrap();
        }
        assert!(
            o.status.success(),
            "dlopen probe: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        eprintln!("dlopen: {lines:#?}");
        lines
    }

    /// `check --json --bundle` against one host profile (examples/hosts/NAME.json or a path).
    fn check(&self, profile: &str) -> (i32, Value) {
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": self.args, "cwd": "/",
                        "env": self.env},
            "root": {"path": "rootfs"},
            "linux": {
                "devices": [
                    {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                    {"path": "/dev/nvidia-uvm", "type": "c", "major": 238, "minor": 0},
                    {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}
                ],
                "resources": {"devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 195, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 238, "access": "rwm"}
                ]}
            }
        });
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        let cfg = self.dir.path().join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let profile_path = if profile.contains('/') {
            PathBuf::from(profile)
        } else {
            repo().join(format!("examples/hosts/{profile}.json"))
        };
        let o = Command::new("timeout")
            .args(["-k", "5", "120", BIN, "check", "--json", "--bundle"])
            .arg(self.dir.path())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--host-root")
            .arg(self.dir.path().join("host"))
            .arg("--host-profile")
            .arg(&profile_path)
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "check --json did not print JSON ({e}), exit {:?}: {}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        // Shown with --nocapture (and on failure): what check said, in short.
        eprintln!("check --host-profile {profile}: exit {:?}", o.status.code());
        for f in doc["findings"].as_array().into_iter().flatten() {
            eprintln!(
                "  {} {}: {} | {}",
                f["severity"].as_str().unwrap_or(""),
                f["id"].as_str().unwrap_or(""),
                f["evidence"].as_str().unwrap_or(""),
                f["predicted"]["message"].as_str().unwrap_or("")
            );
        }
        (o.status.code().unwrap_or(-1), doc)
    }
}

/// Compile C `source` with the host's compiler into `out` (`args` before `out`, e.g. `-shared`).
fn cc(args: &[&str], out: &Path, source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.c");
    std::fs::write(&src, source).unwrap();
    let o = Command::new("cc")
        .args(args)
        .arg(out)
        .arg(&src)
        .output()
        .expect("no C compiler (cc) on PATH: scripts/test.sh expects one for nvcc already");
    assert!(
        o.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A framework library as pip lays one out (torch's `libc10_cuda.so` is the model): DT_NEEDED
/// `libcudart.so.12`, linked against the wheel's real runtime, found through DT_RPATH `rpath`
/// (searched before LD_LIBRARY_PATH).
fn framework_lib(out: &Path, cudart_dir: &Path, rpath: &str, extra: &[&str]) {
    framework_lib_tags(out, cudart_dir, rpath, extra, false)
}

/// As `framework_lib`, needing `cudart` (`libcudart.so.11.0`, …) found in `cudart_dir`.
fn framework_lib_for(out: &Path, cudart_dir: &Path, cudart: &str, rpath: &str) {
    build_framework(out, cudart_dir, cudart, rpath, &[], false)
}

/// As `framework_lib`; with `runpath`, DT_RUNPATH (searched after LD_LIBRARY_PATH) instead.
fn framework_lib_tags(out: &Path, cudart_dir: &Path, rpath: &str, extra: &[&str], runpath: bool) {
    build_framework(out, cudart_dir, "libcudart.so.12", rpath, extra, runpath)
}

fn build_framework(
    out: &Path,
    cudart_dir: &Path,
    cudart: &str,
    rpath: &str,
    extra: &[&str],
    runpath: bool,
) {
    let mut args: Vec<String> = vec!["-shared".into(), "-fPIC".into()];
    args.push(format!("-L{}", cudart_dir.display()));
    args.push(
        if runpath {
            "-Wl,--enable-new-dtags"
        } else {
            "-Wl,--disable-new-dtags"
        }
        .into(),
    );
    if !rpath.is_empty() {
        args.push(format!("-Wl,-rpath,{rpath}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("-o".into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    // The libraries go after the source on the command line.
    let src = "int cudaRuntimeGetVersion(int *);\n\
               int fw_runtime_version(void) { int v = 0; int e = cudaRuntimeGetVersion(&v); return e ? -e : v; }\n";
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("fw.c");
    std::fs::write(&c, src).unwrap();
    let o = Command::new("cc")
        .args(&args_ref)
        .arg(out)
        .arg(&c)
        .arg(format!("-l:{cudart}"))
        .output()
        .expect("no C compiler (cc) on PATH");
    assert!(
        o.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the report

fn findings(doc: &Value) -> &Vec<Value> {
    doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {doc:#}"))
}

fn with_id<'a>(doc: &'a Value, id: &str) -> Vec<&'a Value> {
    findings(doc).iter().filter(|f| f["id"] == id).collect()
}

fn text(f: &Value) -> String {
    format!(
        "{} {} {}",
        f["evidence"].as_str().unwrap_or(""),
        f["fix"].as_str().unwrap_or(""),
        f["predicted"]["message"].as_str().unwrap_or("")
    )
}

fn image_load_ids(doc: &Value) -> Vec<String> {
    findings(doc)
        .iter()
        .filter_map(|f| f["id"].as_str())
        .filter(|i| {
            i.starts_with("image-library")
                || i.starts_with("image-symbol")
                || i.starts_with("image-runtime")
                || i.starts_with("image-cuda-runtimes")
        })
        .map(str::to_string)
        .collect()
}

fn blocking_cuda(doc: &Value) -> Vec<&Value> {
    findings(doc)
        .iter()
        .filter(|f| {
            f["id"].as_str().is_some_and(|i| i.starts_with("cuda-")) && f["severity"] == "block"
        })
        .collect()
}

fn runtimes_in_use(doc: &Value) -> &Vec<Value> {
    doc["load"]["runtimes_in_use"]
        .as_array()
        .unwrap_or_else(|| panic!("no load.runtimes_in_use: {doc:#}"))
}

// ---------------------------------------------------------------------------------------------
// The cases

/// Debian 13: libstdgpu_cuda and hwloc_cuda.so find Debian's libcudart.so.12 (12.4) through the
/// image's ld.so.cache, and their symbol versions are all defined.
#[test]
fn clean_debian_image_loads_and_check_agrees() {
    let fx = fixtures();
    let img = Image::new(
        fx,
        Suite::Trixie,
        &[
            "libcudart12",
            "libstdgpu-cuda0d",
            "libhwloc-contrib-plugins",
        ],
    );
    img.ldconfig();

    // The real loader.
    let (rc, out) = img.loader_list(STDGPU);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("libcudart.so.12 => /lib/x86_64-linux-gnu/libcudart.so.12")
            || out.contains("libcudart.so.12 => /usr/lib/x86_64-linux-gnu/libcudart.so.12"),
        "{out}"
    );
    assert!(!out.contains("not found"), "{out}");
    let (rc, out) = img.loader_list(HWLOC_CUDA);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(img.dlopen(&[STDGPU]), vec![format!("ok {STDGPU}")]);

    // The tool.
    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    assert_eq!(image_load_ids(&doc), Vec::<String>::new(), "{doc:#}");
    assert!(blocking_cuda(&doc).is_empty(), "{doc:#}");
    let rt = runtimes_in_use(&doc);
    assert!(
        rt.iter().any(|r| {
            r.to_string().contains("libstdgpu_cuda")
                && r.to_string().contains("libcudart.so.12")
                && r.to_string().contains("12.4")
        }),
        "runtimes_in_use should say libstdgpu_cuda loads libcudart.so.12 (12.4): {doc:#}"
    );
    assert_eq!(doc["verdict"], "allow", "{doc:#}");
}

/// The same image without its CUDA runtime: the loader cannot open libcudart.so.12, and check
/// says so with the loader's own words.
#[test]
fn runtime_removed_is_image_library_missing_like_the_loader() {
    let fx = fixtures();
    let img = Image::new(
        fx,
        Suite::Trixie,
        &["libstdgpu-cuda0d", "libhwloc-contrib-plugins"],
    );
    img.ldconfig();

    let (rc, out) = img.loader_list(STDGPU);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains(NOT_FOUND_12), "{out}");
    assert_eq!(
        img.dlopen(&[STDGPU, HWLOC_CUDA]),
        vec![
            format!("error {NOT_FOUND_12}"),
            format!("error {NOT_FOUND_12}")
        ]
    );

    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let missing = with_id(&doc, "image-library-missing");
    assert!(!missing.is_empty(), "{doc:#}");
    {
        let consumer = "libstdgpu_cuda.so";
        let f = missing
            .iter()
            .find(|f| text(f).contains(consumer) && text(f).contains("libcudart.so.12"))
            .unwrap_or_else(|| {
                panic!("no image-library-missing naming libcudart.so.12 and {consumer}: {doc:#}")
            });
        assert_eq!(f["predicted"]["api"], "loader", "{f:#}");
        assert_eq!(
            f["predicted"]["message"], NOT_FOUND_12,
            "the loader's dlerror() is the message: {f:#}"
        );
        // Where it looked, and what provides it.
        let t = text(f);
        assert!(
            t.contains("ld.so.cache") || t.contains("/usr/lib/x86_64-linux-gnu"),
            "{f:#}"
        );
        assert!(
            t.contains("nvidia-cuda-runtime-cu12") || t.contains("libcudart12"),
            "evidence or fix names the wheel or package with libcudart.so.12: {f:#}"
        );
    }
}

/// The GCC 14-built consumers on Debian 12's libc and libstdc++: the loader names
/// GLIBCXX_3.4.32 (libstdgpu_cuda) and GLIBC_2.38 (hwloc_cuda.so); so must check.
#[test]
fn old_libstdcxx_and_libc_are_symbol_version_missing_like_the_loader() {
    let fx = fixtures();
    let img = Image::new(
        fx,
        Suite::Bookworm,
        &[
            "libcudart12",
            "libstdgpu-cuda0d",
            "libhwloc-contrib-plugins",
        ],
    );
    img.ldconfig();

    let glibcxx = format!(
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by {STDGPU})"
    );
    let glibc = format!(
        "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by {HWLOC_CUDA})"
    );
    let (_, out) = img.loader_list(STDGPU);
    assert!(out.contains(&glibcxx), "{out}");
    let (_, out) = img.loader_list(HWLOC_CUDA);
    assert!(out.contains(&glibc), "{out}");
    assert_eq!(
        img.dlopen(&[STDGPU, HWLOC_CUDA]),
        vec![format!("error {glibcxx}"), format!("error {glibc}")]
    );

    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let sv = with_id(&doc, "image-symbol-version-missing");
    for (consumer, version, lib) in [
        ("libstdgpu_cuda.so", "GLIBCXX_3.4.32", "libstdc++.so.6"),
        ("hwloc_cuda.so", "GLIBC_2.38", "libc.so.6"),
    ] {
        let f = sv
            .iter()
            .find(|f| {
                let m = f["predicted"]["message"].as_str().unwrap_or("");
                m.contains(&format!("version `{version}' not found")) && m.contains(consumer)
            })
            .unwrap_or_else(|| {
                panic!("no image-symbol-version-missing with `{version}' for {consumer}: {doc:#}")
            });
        assert_eq!(f["predicted"]["api"], "loader", "{f:#}");
        let m = f["predicted"]["message"].as_str().unwrap();
        assert!(m.contains(lib), "{f:#}");
    }
    // libcudart itself resolved (the loader found it): not "missing".
    assert!(with_id(&doc, "image-library-missing").is_empty(), "{doc:#}");
}

/// The same message, byte for byte, where the tool names the consumer as the loader was given
/// it. Kept apart from the test above so a path-spelling difference shows on its own.
#[test]
fn symbol_version_message_is_the_loaders_verbatim() {
    let fx = fixtures();
    let img = Image::new(fx, Suite::Bookworm, &["libcudart12", "libstdgpu-cuda0d"]);
    img.ldconfig();
    let real = "/usr/lib/x86_64-linux-gnu/libstdgpu_cuda.so.1.3.0.20220507";
    let lines = img.dlopen(&[real]);
    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let want = lines[0].strip_prefix("error ").unwrap().to_string();
    let got: Vec<&str> = with_id(&doc, "image-symbol-version-missing")
        .iter()
        .filter_map(|f| f["predicted"]["message"].as_str())
        .collect();
    assert!(
        got.contains(&want.as_str()),
        "loader: {want:?}\ntool:   {got:#?}"
    );
}

/// Two runtimes: CUDA_VERSION and the ld.so.cache say 11.8; the framework's RPATH finds the
/// cu12 wheel's libcudart 12.9 first — the loader loads 12.9 for it, so the versions rule must
/// judge 12.9: on a 470 driver (CUDA 11.4) that is `cuda-driver-insufficient` for 12.9, where
/// 11.8 alone would run through minor-version compatibility.
#[test]
fn framework_rpath_runtime_wins_and_versions_judge_it() {
    let fx = fixtures();
    let mut img = Image::new(fx, Suite::Trixie, &[]);
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");
    let cu11 = fx.join("wheel/cuda-runtime-cu11-11.8.89/nvidia/cuda_runtime/lib");
    img.pip(SITE, &fx.join("wheel/cuda-runtime-cu12-12.9.79"));
    // As nvidia/cuda:11.8 images lay it out (the same file as the cu11 wheel's, 11.8.89).
    img.place_with_link(
        "usr/local/cuda-11.8/targets/x86_64-linux/lib",
        "libcudart.so.11.8.89",
        "libcudart.so.11.0",
        &cu11.join("libcudart.so.11.0"),
    );
    std::os::unix::fs::symlink(
        "targets/x86_64-linux/lib",
        img.path("usr/local/cuda-11.8/lib64"),
    )
    .unwrap();
    std::os::unix::fs::symlink("cuda-11.8", img.path("usr/local/cuda")).unwrap();
    std::fs::write(
        img.path("etc/ld.so.conf.d/000_cuda.conf"),
        "/usr/local/cuda/lib64\n",
    )
    .unwrap();
    img.env.push("CUDA_VERSION=11.8.0".into());
    let fw = format!("{SITE}/fw_cuda.cpython-313-x86_64-linux-gnu.so");
    let built = img.dir.path().join("fw_cuda.so");
    framework_lib(&built, &cu12, "$ORIGIN/nvidia/cuda_runtime/lib", &[]);
    img.place(&fw, &built);
    img.ldconfig();

    let (rc, out) = img.loader_list(&format!("/{fw}"));
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!(
            "libcudart.so.12 => /{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12"
        )),
        "{out}"
    );
    assert_eq!(
        img.dlopen(&[&format!("/{fw}")]),
        vec![format!("ok /{fw} cudart=12090")]
    );
    // The 11.8 runtime is in the cache, side by side.
    assert_eq!(
        img.dlopen(&["libcudart.so.11.0"]),
        vec!["ok libcudart.so.11.0".to_string()]
    );

    // CUDA 11.4 driver: 12.9 is too new; 11.8 alone would only be minor-version compat.
    let (_, doc) = img.check("t4-470");
    let rt = runtimes_in_use(&doc);
    assert!(
        rt.iter().any(|r| r.to_string().contains("fw_cuda.cpython")
            && r.to_string()
                .contains("nvidia/cuda_runtime/lib/libcudart.so.12")
            && r.to_string().contains("12.9")),
        "{doc:#}"
    );
    let insufficient = with_id(&doc, "cuda-driver-insufficient");
    assert!(
        insufficient.iter().any(|f| text(f).contains("12.9")),
        "the runtime the framework loads (12.9) is judged: {doc:#}"
    );
    assert!(
        !insufficient.iter().any(|f| text(f).contains("CUDA 11.8")),
        "CUDA 11.8 runs on a 470 driver through minor-version compat: {doc:#}"
    );
    // CUDA_VERSION and the 11.8 runtime on disk are named beside the 12.9 that loads. (No
    // torch/version.py here, so image-runtime-mismatch has nothing to compare; it is not
    // asserted.)
    let several = with_id(&doc, "image-cuda-runtimes");
    assert!(
        several.iter().any(|f| f["severity"] == "info"
            && text(f).contains("fw_cuda")
            && text(f).contains("12.9")
            && text(f).contains("CUDA_VERSION=11.8")
            && text(f).contains("11.8.89")),
        "{doc:#}"
    );

    // On the H100's driver (CUDA 13.0) both run: no version block.
    let (_, doc) = img.check("h100-580");
    assert!(blocking_cuda(&doc).is_empty(), "{doc:#}");
}

/// Hostile: libcudart.so.12 exists only outside the rootfs, reached by a relative and an
/// absolute symlink; the framework's RPATH goes through a directory symlink loop and out with
/// `..`; two libraries need each other. The loader in the chroot finds nothing; check must end,
/// say missing, and never name the outside copy.
#[test]
fn hostile_links_and_loops_end_inside_the_rootfs() {
    let fx = fixtures();
    let mut img = Image::new(fx, Suite::Trixie, &["libstdgpu-cuda0d"]);
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");
    let outside = img.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(
        cu12.join("libcudart.so.12"),
        outside.join("libcudart.so.12"),
    )
    .unwrap();
    use std::os::unix::fs::symlink;
    // rootfs/usr/lib/x86_64-linux-gnu/../../../.. is the bundle directory on the host.
    symlink(
        "../../../../outside/libcudart.so.12",
        img.path(&format!("{MULTIARCH}/libcudart.so.12")),
    )
    .unwrap();
    std::fs::create_dir_all(img.path("usr/local/cuda/lib64")).unwrap();
    symlink(
        outside.join("libcudart.so.12"),
        img.path("usr/local/cuda/lib64/libcudart.so.12"),
    )
    .unwrap();
    symlink("loop", img.path("usr/local/loop")).unwrap();
    symlink("b", img.path("usr/local/a")).unwrap();
    symlink("a", img.path("usr/local/b")).unwrap();
    img.env
        .push("LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/loop/loop:/usr/local/a".into());

    // Two libraries that need each other; one also needs libcudart.so.12 through an RPATH
    // that loops and climbs.
    let d = img.dir.path().join("cyc");
    std::fs::create_dir_all(&d).unwrap();
    let dirs = format!("-L{}", d.display());
    cc(
        &["-shared", "-fPIC", "-Wl,-soname,libcyc_b.so", "-o"],
        &d.join("libcyc_b.so"),
        "int b(void){return 1;}\n",
    );
    let rpath =
        "$ORIGIN:$ORIGIN/../../../../../../../outside:/usr/local/loop/loop/loop:/usr/local/a";
    framework_lib(
        &d.join("libcyc_a.so"),
        &cu12,
        rpath,
        &[
            "-Wl,-soname,libcyc_a.so",
            &dirs,
            "-Wl,--no-as-needed",
            "-lcyc_b",
        ],
    );
    cc(
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libcyc_b.so",
            &dirs,
            "-Wl,--no-as-needed",
            "-Wl,-rpath,$ORIGIN",
            "-lcyc_a",
            "-o",
        ],
        &d.join("libcyc_b.so.new"),
        "int b(void){return 1;}\n",
    );
    img.place(
        &format!("{SITE}/cyc_a.cpython-313-x86_64-linux-gnu.so"),
        &d.join("libcyc_a.so"),
    );
    img.place(&format!("{SITE}/libcyc_b.so"), &d.join("libcyc_b.so.new"));
    img.ldconfig();

    // The loader, chrooted: nothing outside is reachable.
    let (rc, out) = img.loader_list(STDGPU);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains(NOT_FOUND_12), "{out}");
    let cyc = format!("/{SITE}/cyc_a.cpython-313-x86_64-linux-gnu.so");
    assert_eq!(
        img.dlopen(&[STDGPU, &cyc]),
        vec![
            format!("error {NOT_FOUND_12}"),
            format!("error {NOT_FOUND_12}")
        ]
    );

    let started = std::time::Instant::now();
    let (code, doc) = img.check("h100-580");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "check took {:?}",
        started.elapsed()
    );
    assert!(code == 0 || code == 1, "exit {code}: {doc:#}");
    let all = doc.to_string();
    assert!(
        !all.contains(&outside.display().to_string()),
        "a path outside the rootfs is reported: {doc:#}"
    );
    let missing = with_id(&doc, "image-library-missing");
    for consumer in ["libstdgpu_cuda.so", "cyc_a.cpython"] {
        assert!(
            missing
                .iter()
                .any(|f| text(f).contains(consumer) && text(f).contains("libcudart.so.12")),
            "the loader finds no libcudart.so.12 for {consumer}; neither may check: {doc:#}"
        );
    }
}

/// Which copy of the same soname loads: Debian's libcudart 12.4 in /opt/cuda-12.4/lib on the
/// spec's LD_LIBRARY_PATH, the cu12 wheel's 12.9 under site-packages. A framework with DT_RPATH
/// to the wheel gets 12.9 (RPATH is searched before LD_LIBRARY_PATH); the same library with
/// DT_RUNPATH gets 12.4 (RUNPATH after). In one process the first one loaded wins for both:
/// the second framework's libcudart.so.12 is matched by soname to the one already there.
#[test]
fn rpath_runpath_and_ld_library_path_decide_which_runtime_loads() {
    let fx = fixtures();
    let mut img = Image::new(fx, Suite::Trixie, &[]);
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");
    img.pip(SITE, &fx.join("wheel/cuda-runtime-cu12-12.9.79"));
    img.place_with_link(
        "opt/cuda-12.4/lib",
        "libcudart.so.12.4.127",
        "libcudart.so.12",
        &fx.join("deb/trixie/libcudart12/root/usr/lib/x86_64-linux-gnu/libcudart.so.12.4.127"),
    );
    img.env.push("LD_LIBRARY_PATH=/opt/cuda-12.4/lib".into());
    let rp = format!("{SITE}/fw_rpath.cpython-313-x86_64-linux-gnu.so");
    let rn = format!("{SITE}/fw_runpath.cpython-313-x86_64-linux-gnu.so");
    for (rel, runpath) in [(&rp, false), (&rn, true)] {
        let built = img
            .dir
            .path()
            .join(Path::new(rel.as_str()).file_name().unwrap());
        framework_lib_tags(
            &built,
            &cu12,
            "$ORIGIN/nvidia/cuda_runtime/lib",
            &[],
            runpath,
        );
        img.place(rel, &built);
    }
    img.ldconfig();

    let (rc, out) = img.loader_list(&format!("/{rp}"));
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!(
            "libcudart.so.12 => /{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12"
        )),
        "{out}"
    );
    let (rc, out) = img.loader_list(&format!("/{rn}"));
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("libcudart.so.12 => /opt/cuda-12.4/lib/libcudart.so.12"),
        "{out}"
    );
    let (rp_abs, rn_abs) = (format!("/{rp}"), format!("/{rn}"));
    assert_eq!(
        img.dlopen(&[&rp_abs]),
        vec![format!("ok {rp_abs} cudart=12090")]
    );
    assert_eq!(
        img.dlopen(&[&rn_abs]),
        vec![format!("ok {rn_abs} cudart=12040")]
    );
    assert_eq!(
        img.dlopen(&[&rp_abs, &rn_abs]),
        vec![
            format!("ok {rp_abs} cudart=12090"),
            format!("ok {rn_abs} cudart=12090")
        ]
    );
    assert_eq!(
        img.dlopen(&[&rn_abs, &rp_abs]),
        vec![
            format!("ok {rn_abs} cudart=12040"),
            format!("ok {rp_abs} cudart=12040")
        ]
    );

    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let rt = runtimes_in_use(&doc);
    let uses = |consumer: &str, lib: &str, version: &str| {
        rt.iter().any(|r| {
            let s = r.to_string();
            s.contains(consumer) && s.contains(lib) && s.contains(version)
        })
    };
    assert!(
        uses(
            "fw_rpath.cpython",
            "nvidia/cuda_runtime/lib/libcudart.so.12",
            "12.9"
        ),
        "DT_RPATH beats LD_LIBRARY_PATH: {doc:#}"
    );
    assert!(
        uses(
            "fw_runpath.cpython",
            "/opt/cuda-12.4/lib/libcudart.so.12",
            "12.4"
        ),
        "LD_LIBRARY_PATH beats DT_RUNPATH: {doc:#}"
    );
    assert!(with_id(&doc, "image-library-missing").is_empty(), "{doc:#}");
    let several = with_id(&doc, "image-cuda-runtimes");
    assert!(
        several.iter().any(|f| f["severity"] == "info"
            && text(f).contains("12.4")
            && text(f).contains("12.9")),
        "two libcudart.so.12 copies load, one per framework: {doc:#}"
    );
}

/// "Every ELF in the rootfs that uses CUDA": Debian's hwloc CUDA plugin lives in
/// /usr/lib/x86_64-linux-gnu/hwloc/ (dlopened by path by libhwloc, not a loader search
/// directory), and a company's own package in site-packages is not one of the walk's known GPU
/// packages. The loader fails both the same way as the cases above: without libcudart.so.12
/// (trixie), and with GLIBC_2.38 missing on Debian 12's libc.
#[test]
fn cuda_consumers_outside_the_walked_dirs_are_judged() {
    let fx = fixtures();
    let mine = format!("{SITE}/acme_models/_cuda/libacme_cuda.so");
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");

    // No libcudart anywhere.
    let img = Image::new(fx, Suite::Trixie, &["libhwloc-contrib-plugins"]);
    let built = img.dir.path().join("libacme_cuda.so");
    framework_lib(&built, &cu12, "$ORIGIN/../../nvidia/cuda_runtime/lib", &[]);
    img.place(&mine, &built);
    img.ldconfig();
    assert_eq!(
        img.dlopen(&[HWLOC_CUDA, &format!("/{mine}")]),
        vec![
            format!("error {NOT_FOUND_12}"),
            format!("error {NOT_FOUND_12}")
        ]
    );
    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let missing = with_id(&doc, "image-library-missing");
    let named: Vec<&str> = ["hwloc_cuda.so", "libacme_cuda.so"]
        .into_iter()
        .filter(|c| !missing.iter().any(|f| text(f).contains(c)))
        .collect();
    assert!(
        named.is_empty(),
        "the loader cannot load {named:?} (libcudart.so.12 not found); check does not say so: {doc:#}"
    );

    // Debian 12's libc under the trixie-built plugin.
    let img = Image::new(
        fx,
        Suite::Bookworm,
        &["libcudart12", "libhwloc-contrib-plugins"],
    );
    img.ldconfig();
    let glibc = format!(
        "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by {HWLOC_CUDA})"
    );
    let (_, out) = img.loader_list(HWLOC_CUDA);
    assert!(out.contains(&glibc), "{out}");
    assert_eq!(img.dlopen(&[HWLOC_CUDA]), vec![format!("error {glibc}")]);
    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    assert!(
        with_id(&doc, "image-symbol-version-missing")
            .iter()
            .any(|f| {
                let m = f["predicted"]["message"].as_str().unwrap_or("");
                m.contains("version `GLIBC_2.38' not found") && m.contains("hwloc_cuda.so")
            }),
        "the loader fails hwloc_cuda.so on GLIBC_2.38; check does not say so: {doc:#}"
    );
}

/// NVIDIA's cu11 runtime wheel ships only `libcudart.so.11.0` — the soname every CUDA 11.x
/// runtime has — and says 11.8.89 in its `.dist-info`. The runtime really is 11.8
/// (`cudaRuntimeGetVersion` = 11080), not 11.0: CUDA 11.0 predates compute capability 8.6–9.0,
/// so judging "11.0" would warn about an H100 that 11.8 supports.
#[test]
fn cuda11_wheel_runtime_is_11_8_not_11_0() {
    let fx = fixtures();
    let img = Image::new(fx, Suite::Trixie, &[]);
    let wheel = fx.join("wheel/cuda-runtime-cu11-11.8.89");
    img.pip(SITE, &wheel);
    let fw = format!("{SITE}/fw11_cuda.cpython-313-x86_64-linux-gnu.so");
    let built = img.dir.path().join("fw11.so");
    framework_lib_for(
        &built,
        &wheel.join("nvidia/cuda_runtime/lib"),
        "libcudart.so.11.0",
        "$ORIGIN/nvidia/cuda_runtime/lib",
    );
    img.place(&fw, &built);
    img.ldconfig();
    let (rc, out) = img.loader_list(&format!("/{fw}"));
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!(
            "libcudart.so.11.0 => /{SITE}/nvidia/cuda_runtime/lib/libcudart.so.11.0"
        )),
        "{out}"
    );
    // CUDA 11's cudaRuntimeGetVersion needs a driver: with none it returns
    // cudaErrorInsufficientDriver (35) and no version. The library the loader picked says it
    // by its exports instead: cudaOccupancyMaxActiveClusters and cudaLaunchKernelExC are new
    // in CUDA 11.8 (thread-block clusters).
    assert_eq!(
        img.dlopen(&[&format!("/{fw}")]),
        vec![format!("ok /{fw} cudart=-35")]
    );
    let syms = Command::new("readelf")
        .args(["--dyn-syms", "-W"])
        .arg(img.path(&format!("{SITE}/nvidia/cuda_runtime/lib/libcudart.so.11.0")))
        .output()
        .unwrap();
    let syms = String::from_utf8_lossy(&syms.stdout);
    for api in ["cudaOccupancyMaxActiveClusters", "cudaLaunchKernelExC"] {
        assert!(
            syms.lines()
                .any(|l| l.contains(" FUNC ") && !l.contains(" UND ") && l.contains(api)),
            "{api} not exported"
        );
    }

    let (_, doc) = img.check("h100-580");
    let rt = runtimes_in_use(&doc);
    assert!(
        rt.iter().any(|r| r.to_string().contains("fw11_cuda")
            && r["version"].as_str().is_some_and(|v| v.starts_with("11.8"))),
        "the loaded runtime is 11.8.89: {:#}",
        doc["load"]
    );
    assert!(
        with_id(&doc, "compute-capability-newer-than-cuda").is_empty(),
        "CUDA 11.8 supports compute capability 9.0: {doc:#}"
    );
}

/// glibc also searches the DT_RPATH of the executable for every library the process loads
/// (where the needing object has no DT_RUNPATH). Conda's python carries `$ORIGIN/../lib`, so an
/// extension module with no RPATH of its own that needs libcudart.so.12 finds the one conda put
/// in /opt/conda/lib, although no ld.so.cache or default directory has it. `ld.so --list` on
/// the module alone says "not found"; run by that python it loads.
#[test]
fn executable_rpath_serves_the_libraries_it_loads() {
    let fx = fixtures();
    let mut img = Image::new(fx, Suite::Trixie, &[]);
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");
    img.place_with_link(
        "opt/conda/lib",
        "libcudart.so.12.9.79",
        "libcudart.so.12",
        &cu12.join("libcudart.so.12"),
    );
    let ext = "/opt/conda/lib/python3.12/site-packages/ext_cuda.cpython-312-x86_64-linux-gnu.so";
    let built = img.dir.path().join("ext_cuda.so");
    build_framework(&built, &cu12, "libcudart.so.12", "", &[], false);
    img.place(ext, &built);
    img.ldconfig();
    let python = "/opt/conda/bin/python3.12";
    img.args = vec![python.into(), "-c".into(), "import ext_cuda".into()];

    let (rc, out) = img.loader_list(ext);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains(NOT_FOUND_12), "{out}");
    assert_eq!(
        img.dlopen_as(
            python,
            &["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"],
            &[ext]
        ),
        vec![format!("ok {ext} cudart=12090")]
    );

    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    assert!(
        !with_id(&doc, "image-library-missing")
            .iter()
            .any(|f| f["severity"] == "block"),
        "a library the workload's python does load must not block: {doc:#}"
    );
    assert!(
        with_id(&doc, "image-library-missing").is_empty(),
        "the process args[0] ({python}) has DT_RPATH $ORIGIN/../lib: libcudart.so.12 loads from \
         /opt/conda/lib (docs/image-load.md lists the executable's RPATH as not modelled): {doc:#}"
    );
}

/// The usual cure for a `GLIBCXX_…' not found`: a newer libstdc++ elsewhere in the image
/// (conda's /opt/conda/lib, as `libstdc++.so.6.0.33` with the `libstdc++.so.6` link) put first
/// on LD_LIBRARY_PATH. Without it on the path the loader fails and check should point at that
/// copy. Here the copy is Debian 13's, built against glibc 2.41: on the path, the loader gets
/// past GLIBCXX_3.4.32 and fails on the copy's own GLIBC_2.38 — check must not call that a cure.
#[test]
fn newer_libstdcxx_elsewhere_is_named_and_its_own_needs_are_judged() {
    let fx = fixtures();
    let mut img = Image::new(fx, Suite::Bookworm, &["libcudart12", "libstdgpu-cuda0d"]);
    img.place_with_link(
        "opt/conda/lib",
        "libstdc++.so.6.0.33",
        "libstdc++.so.6",
        &fx.join("deb/trixie/libstdc++6/root/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.33"),
    );
    img.ldconfig();

    let glibcxx = format!(
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by {STDGPU})"
    );
    assert_eq!(img.dlopen(&[STDGPU]), vec![format!("error {glibcxx}")]);
    let (_, doc) = img.check("h100-580");
    let sv = with_id(&doc, "image-symbol-version-missing");
    let f = sv
        .iter()
        .find(|f| text(f).contains("GLIBCXX_3.4.32"))
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        text(f).contains("/opt/conda/lib/libstdc++.so.6"),
        "/opt/conda/lib/libstdc++.so.6.0.33 defines GLIBCXX_3.4.32: the finding should name it: {f:#}"
    );

    img.env.push("LD_LIBRARY_PATH=/opt/conda/lib".into());
    let glibc = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /opt/conda/lib/libstdc++.so.6)";
    assert_eq!(img.dlopen(&[STDGPU]), vec![format!("error {glibc}")]);
    let (_, out) = img.loader_list(STDGPU);
    assert!(out.contains(glibc), "{out}");
    assert!(
        out.contains("libstdc++.so.6 => /opt/conda/lib/libstdc++.so.6"),
        "{out}"
    );
    let (_, doc) = img.check("h100-580");
    assert!(
        !with_id(&doc, "image-symbol-version-missing")
            .iter()
            .any(|f| text(f).contains("GLIBCXX_3.4.32")),
        "on LD_LIBRARY_PATH the copy defines GLIBCXX_3.4.32: {doc:#}"
    );
    assert!(
        with_id(&doc, "image-symbol-version-missing")
            .iter()
            .any(|f| f["predicted"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("GLIBC_2.38")),
        "the loader fails {STDGPU} on /opt/conda/lib/libstdc++.so.6's own GLIBC_2.38; check \
         does not look at the needs of the C++ runtime it resolves: {doc:#}"
    );
}

/// The same outcomes inside a real runc container of the bundle (its own mount namespace,
/// pivot_root, the spec's environment), not just a chroot: the framework's import fails on the
/// missing runtime, and on the old libstdc++, with the loader's words.
#[test]
fn real_container_sees_what_the_chroot_sees() {
    let fx = fixtures();
    for (suite, pkgs, want) in [
        (
            Suite::Trixie,
            &["libstdgpu-cuda0d"][..],
            format!("error {NOT_FOUND_12}"),
        ),
        (
            Suite::Bookworm,
            &["libcudart12", "libstdgpu-cuda0d"][..],
            format!(
                "error /usr/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by {STDGPU})"
            ),
        ),
        (
            Suite::Trixie,
            &["libcudart12", "libstdgpu-cuda0d"][..],
            format!("ok {STDGPU}"),
        ),
    ] {
        let img = Image::new(fx, suite, pkgs);
        img.ldconfig();
        // The probe stays in the image for the container to run.
        let probe = img.dir.path().join("probe");
        cc(
            &["-O2", "-o"],
            &probe,
            "#include <dlfcn.h>\n#include <stdio.h>\n\
             int main(int c, char **v) { void *h = dlopen(v[1], RTLD_LAZY);\n\
               if (h) printf(\"ok %s\\n\", v[1]); else printf(\"error %s\\n\", dlerror());\n\
               return 0; }\n",
        );
        img.place("/usr/local/bin/import-probe", &probe);
        let mut spec =
            crate::common::base_spec(img.dir.path(), &["/usr/local/bin/import-probe", STDGPU]);
        spec["process"]["env"] = json!(img.env);
        spec["root"]["readonly"] = json!(false);
        crate::common::write_spec(img.dir.path(), &spec);
        let out = crate::common::runc_run(img.dir.path(), &crate::common::unique_id("imgload"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == want,
            "runc: {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Git LFS pointer (or a truncated download) under the library's name where the loader looks
/// first: glibc stops there with an error of its own instead of searching on, although a good
/// copy sits in the cache. check must say what the loader says, not that all is well.
#[test]
fn a_file_that_is_not_a_library_stops_the_loader() {
    let fx = fixtures();
    let img = Image::new(fx, Suite::Trixie, &["libcudart12"]);
    let cu12 = fx.join("wheel/cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/lib");
    let mine = format!("{SITE}/acme_models/_cuda/libacme_cuda.so");
    let built = img.dir.path().join("libacme_cuda.so");
    framework_lib(&built, &cu12, "$ORIGIN", &[]);
    img.place(&mine, &built);
    let pointer = img.dir.path().join("pointer");
    std::fs::write(
        &pointer,
        "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 712616\n",
    )
    .unwrap();
    let lfs = format!("{SITE}/acme_models/_cuda/libcudart.so.12");
    img.place(&lfs, &pointer);
    img.ldconfig();
    let got = img.dlopen(&[&format!("/{mine}")]);
    let want = format!("error /{lfs}: invalid ELF header");
    assert_eq!(got, vec![want.clone()], "the real loader");
    let (code, doc) = img.check("h100-580");
    assert!(code == 0 || code == 1, "{doc:#}");
    let f = with_id(&doc, "image-library-missing");
    assert!(
        f.iter()
            .any(|f| f["predicted"]["message"] == format!("/{lfs}: invalid ELF header")),
        "check must predict the loader's own words ({want}): {doc:#}"
    );
}
