//! Faults the hook must survive, each ending in a decision: no NVML, a state directory that is
//! read-only or full, hooks killed mid-write, a config file with errors, hooks racing on one
//! container id. The hook is fed the OCI state on stdin as a runtime would (no pid: the spec-only
//! path), with the example CDI bundles: `cdi-gpu` must be allowed and `cdi-no-uvm` blocked.

use crate::common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default whole-hook deadline (config.rs) plus the 100 ms issue 8 allows.
const DECISION_BOUND: Duration = Duration::from_millis(10_100);

fn bundle(name: &str) -> PathBuf {
    repo().join("examples/bundles").join(name)
}

fn state_json(id: &str, bundle: &Path) -> String {
    format!(
        r#"{{"ociVersion":"1.0.2","id":"{id}","status":"creating","bundle":"{}"}}"#,
        bundle.display()
    )
}

fn spawn_hook(id: &str, bundle: &Path, args: &[&str]) -> Child {
    let mut c = Command::new(BIN)
        .arg("hook")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hook killed before reading its stdin closes the pipe: ignore the broken pipe.
    let _ = c
        .stdin
        .take()
        .unwrap()
        .write_all(state_json(id, bundle).as_bytes());
    c
}

/// Run the hook to the end: exit code, stderr, time to decision.
fn hook(id: &str, bundle: &Path, args: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = spawn_hook(id, bundle, args).wait_with_output().unwrap();
    let took = t.elapsed();
    (
        out.status.code().expect("hook exited by a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

fn profile_args(state: &Path) -> Vec<String> {
    vec![
        "--state-dir".into(),
        state.display().to_string(),
        "--host-profile".into(),
        h100_profile().display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn nvml_missing_facts_and_hook_still_decide() {
    // This machine has no NVIDIA driver, so no libnvidia-ml.so.1: NVML init fails for real.
    let out = Command::new(BIN)
        .args(["facts", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("facts --json is JSON without NVML");
    assert!(v["gpus"].as_array().unwrap().is_empty());
    let out = Command::new(BIN).arg("facts").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NVML unavailable"), "{text}");
    // facts answers "no driver" with exit 1 and says what to check; never a crash.
    assert_eq!(out.status.code(), Some(1), "{text}");

    // The hook with no host profile asks NVML, falls back to /proc, and still judges the spec.
    let top = tempfile::tempdir().unwrap();
    let st = top.path().join("state");
    let s = st.to_str().unwrap();
    let (code, err, took) = hook("nonvml-ok", &bundle("cdi-gpu"), &["--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    assert!(took < DECISION_BOUND);
    assert_eq!(read_report(&st, "nonvml-ok").unwrap()["verdict"], "allow");
    let (code, err, _) = hook("nonvml-bad", &bundle("cdi-no-uvm"), &["--state-dir", s]);
    assert_eq!(code, 1, "{err}");
    let r = read_report(&st, "nonvml-bad").unwrap();
    assert!(finding_ids(&r).contains(&"device-node-missing".to_string()));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn state_dir_full_or_read_only_still_decides_and_says_no_report() {
    let top = tempfile::tempdir().unwrap();
    // Full: a one-page tmpfs filled to the last byte before the hook runs.
    let full = top.path().join("full");
    let _m1 = Tmpfs::mount(&full, "size=4k");
    std::fs::create_dir(full.join("reports")).unwrap();
    let mut f = std::fs::File::create(full.join("filler")).unwrap();
    while f.write_all(&[0u8; 512]).is_ok() {}
    drop(f);
    // Read-only: an empty tmpfs remounted read-only.
    let ro = top.path().join("ro");
    let _m2 = Tmpfs::mount(&ro, "size=64k");
    assert!(
        Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&ro)
            .status()
            .unwrap()
            .success()
    );
    for st in [&full, &ro] {
        for (name, want) in [("cdi-gpu", 0), ("cdi-no-uvm", 1)] {
            let id = format!("nospace-{name}");
            let (code, err, took) = hook(&id, &bundle(name), &strs(&profile_args(st)));
            assert_eq!(code, want, "{st:?} {name}: {err}");
            assert!(took < DECISION_BOUND);
            // The log line says the report was not written, and where.
            assert!(
                err.contains("report-error=") && err.contains(st.to_str().unwrap()),
                "{st:?} {name}: {err}"
            );
            assert!(read_report(st, &id).is_none());
        }
        // Nothing half-written left either.
        if let Ok(rd) = std::fs::read_dir(st.join("reports")) {
            let left: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

#[test]
fn hooks_killed_mid_write_never_leave_a_partial_report() {
    let top = tempfile::tempdir().unwrap();
    let st = top.path().join("state");
    let args = profile_args(&st);
    let id = "killed";
    let report = st.join("reports/killed.json");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (seen, kills) = std::thread::scope(|s| {
        // The reader: every report visible under its name must be whole JSON for this id.
        let reader = s.spawn(|| {
            let mut seen = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(b) = std::fs::read(&report) {
                    let v: Value = serde_json::from_slice(&b).unwrap_or_else(|e| {
                        panic!(
                            "partial report visible ({e}): {}",
                            String::from_utf8_lossy(&b)
                        )
                    });
                    assert_eq!(v["container_id"], id);
                    assert_eq!(v["verdict"], "block");
                    seen += 1;
                }
            }
            seen
        });
        // Kill hooks at spread-out moments of their ~2–10 ms life (a fixed pseudo-random
        // sequence, so a failure can be replayed).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut kills = 0;
        for _ in 0..150 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut c = spawn_hook(id, &bundle("cdi-no-uvm"), &strs(&args));
            std::thread::sleep(Duration::from_micros(x % 8_000));
            if c.try_wait().unwrap().is_none() {
                c.kill().unwrap();
                kills += 1;
            }
            c.wait().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (reader.join().unwrap(), kills)
    });
    // After all that, a hook run to the end still writes its report (a stale temporary file of a
    // killed hook cannot stop it).
    let (code, err, _) = hook(id, &bundle("cdi-no-uvm"), &strs(&args));
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("report-error"), "{err}");
    assert_eq!(read_report(&st, id).unwrap()["verdict"], "block");
    let stale = std::fs::read_dir(st.join("reports"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".tmp")
        })
        .count();
    eprintln!(
        "killed {kills} of 150 hooks; reader saw {seen} whole reports; {stale} stale temporary files"
    );
    assert!(kills > 0);
}

#[test]
fn stale_temporary_file_of_a_killed_hook_does_not_block_the_report() {
    // Regression: a hook killed after creating `.ID.json.PID.tmp` left it behind, and a later
    // hook with the same pid failed its create_new with EEXIST: no report.
    use cuda_preflight::facts::container::GpuRequest;
    use cuda_preflight::output::report;
    let d = tempfile::tempdir().unwrap();
    let dir = report::reports_dir(d.path());
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(format!(
        ".{}.{}.tmp",
        report::file_name("c1"),
        std::process::id()
    ));
    std::fs::write(&stale, b"{\"half").unwrap();
    let r = report::Report {
        container_id: "c1",
        time: 0,
        verdict: "allow",
        mode: "enforce",
        request: &GpuRequest::None,
        bundle: Path::new("/b"),
        findings: &[],
        error: None,
        probe: None,
        binaries: None,
        load: None,
        toolchains: None,
        duration_ms: 0.0,
        phases_ms: None,
    };
    // Another hook's temporary file: one a minute old is a killed hook's and is pruned, a fresh
    // one may be a live writer's and stays.
    let old = dir.join(".c2.json.1.tmp");
    let fresh = dir.join(".c3.json.2.tmp");
    std::fs::write(&old, b"{").unwrap();
    std::fs::write(&fresh, b"{").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    let p = report::write(d.path(), &r, 10).expect("stale tmp must not block the write");
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    assert_eq!(v["container_id"], "c1");
    assert!(!stale.exists());
    assert!(!old.exists(), "a minute-old temporary file is pruned");
    assert!(
        fresh.exists(),
        "a live writer's temporary file is left alone"
    );
}

#[test]
fn config_with_errors_hook_uses_defaults_check_refuses() {
    let top = tempfile::tempdir().unwrap();
    let st = top.path().join("state");
    let cfg = top.path().join("config.toml");
    let profile = h100_profile().display().to_string();
    for (text, want) in [
        ("mode = \"loud\"\n", "unknown variant `loud`"),
        ("deadline_ms = 0\n", "deadline_ms must be at least 1"),
        ("[severity]\nno-such-id = \"warn\"\n", "unknown finding id"),
        ("mode = \n", "line 1"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let c = cfg.to_str().unwrap();
        // Hook: documented policy is on_error's default, allow, with the error recorded in the
        // report in the --state-dir given (not the default one) and said on stderr.
        let (code, err, took) = hook(
            "badcfg",
            &bundle("cdi-no-uvm"),
            &[
                "--config",
                c,
                "--state-dir",
                st.to_str().unwrap(),
                "--host-profile",
                &profile,
            ],
        );
        assert_eq!(code, 0, "{text}: {err}");
        assert!(took < DECISION_BOUND);
        assert!(
            err.contains("on_error = allow") && err.contains(want),
            "{text}: {err}"
        );
        let r = read_report(&st, "badcfg").expect("report in the --state-dir given");
        assert!(r["error"].as_str().unwrap().contains(want), "{r}");
        assert_eq!(all_finding_ids(&r), ["hook-error"]);
        // check: a refusal, exit 2, naming the file and the problem.
        let out = Command::new(BIN)
            .args(["check", "--config", c, "--bundle"])
            .arg(bundle("cdi-gpu"))
            .args(["--host-profile", &profile])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {e}");
        assert!(e.contains(c) && e.contains(want), "{text}: {e}");
    }
    // A container that asks for no GPU never reads the config: a broken file costs it nothing.
    let plain = top.path().join("plain");
    std::fs::create_dir_all(plain.join("rootfs")).unwrap();
    std::fs::write(
        plain.join("config.json"),
        r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/","env":[]},"root":{"path":"rootfs"}}"#,
    )
    .unwrap();
    let (code, err, _) = hook("plain", &plain, &["--config", cfg.to_str().unwrap()]);
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn hooks_racing_on_one_container_id() {
    let top = tempfile::tempdir().unwrap();
    let st = top.path().join("state");
    let args = profile_args(&st);
    // Half judge a healthy bundle, half a defective one, all for the same id at once.
    let children: Vec<(Child, i32)> = (0..40)
        .map(|i| {
            let (b, want) = if i % 2 == 0 {
                ("cdi-gpu", 0)
            } else {
                ("cdi-no-uvm", 1)
            };
            (spawn_hook("race", &bundle(b), &strs(&args)), want)
        })
        .collect();
    for (c, want) in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(want),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = read_report(&st, "race").expect("a whole report");
    assert_eq!(r["container_id"], "race");
    assert!(r["verdict"] == "allow" || r["verdict"] == "block", "{r}");
    let names: Vec<String> = std::fs::read_dir(st.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["race.json"]);
}
