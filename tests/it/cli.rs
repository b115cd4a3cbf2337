//! The binary's contract outside a runtime: `check`'s output and exit codes, and the hook's
//! behaviour on bad input (its own errors follow `on_error`).

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("check").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn example(name: &str) -> String {
    repo()
        .join("examples/bundles")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_exit_codes_and_json() {
    let profile = h100_profile().display().to_string();
    let (code, out, _) = check(&[
        "--bundle",
        &example("cdi-gpu"),
        "--host-profile",
        &profile,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "allow");
    // Info findings say what was not checked (this machine has no NVIDIA driver to compare the
    // bundle's libraries with); nothing judges.
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "info"),
        "{out}"
    );

    let (code, out, _) = check(&[
        "--bundle",
        &example("cdi-no-uvm"),
        "--host-profile",
        &profile,
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "block");
    let f = &v["findings"][0];
    assert_eq!(f["id"], "device-node-missing");
    assert_eq!(f["severity"], "block");
    assert_eq!(f["predicted"]["api"], "driver");
    assert!(
        f["predicted"]["name"]
            .as_str()
            .unwrap()
            .starts_with("CUDA_ERROR_")
    );
    assert!(f["evidence"].as_str().unwrap().contains("/dev/nvidia-uvm"));
    assert!(!f["fix"].as_str().unwrap().is_empty());

    let (code, out, _) = check(&[
        "--bundle",
        &example("cdi-no-uvm"),
        "--host-profile",
        &profile,
    ]);
    assert_eq!(code, 1);
    assert!(out.starts_with("cuda-preflight: blocked bundle "), "{out}");
}

/// The config's `[severity]` keys are finding ids from the catalog: a known one changes the
/// verdict, a misspelt one is bad input (exit 2) naming the key, the nearest id and the line.
#[test]
fn severity_keys_are_checked_against_the_finding_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let profile = h100_profile().display().to_string();
    let run = |toml: &str| {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, toml).unwrap();
        check(&[
            "--bundle",
            &example("cdi-no-uvm"),
            "--host-profile",
            &profile,
            "--config",
            cfg.to_str().unwrap(),
            "--json",
        ])
    };
    let (code, out, err) = run("[severity]\ndevice-node-missing = \"warn\"\n");
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "warn");
    assert_eq!(v["findings"][0]["id"], "device-node-missing");
    assert_eq!(v["findings"][0]["severity"], "warn");

    let (code, out, err) = run("mode = \"enforce\"\n[severity]\ndevice-node-mising = \"warn\"\n");
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("c.toml")
            && err.contains("unknown finding id \"device-node-mising\"")
            && err.contains("did you mean \"device-node-missing\"")
            && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn check_several_hosts_gives_one_verdict_per_host() {
    let profile = h100_profile().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    // A host whose nvidia-uvm major differs (the driver was reloaded and got another major).
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        r#"{"device_majors":{"nvidia":195,"nvidia-uvm":511},"gpus":[]}"#,
    )
    .unwrap();
    let (code, out, _) = check(&[
        "--bundle",
        &example("cdi-gpu"),
        "--host-profile",
        &profile,
        "--host-profile",
        other.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "block");
    assert_eq!(v["hosts"][0]["verdict"], "allow");
    assert_eq!(v["hosts"][1]["verdict"], "block");
    assert_eq!(
        v["hosts"][1]["findings"][0]["id"],
        "device-node-wrong-major"
    );
    let (_, table, _) = check(&[
        "--bundle",
        &example("cdi-gpu"),
        "--host-profile",
        &profile,
        "--host-profile",
        other.to_str().unwrap(),
    ]);
    assert_eq!(table.lines().count(), 2, "{table}");
}

#[test]
fn check_bad_input_is_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, _, err) = check(&["--bundle", &d]);
    assert_eq!(code, 2);
    assert!(err.contains("config.json: cannot read"), "{err}");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let (code, _, err) = check(&["--bundle", &d]);
    assert_eq!(code, 2);
    assert!(
        err.contains("config.json: not an OCI runtime spec"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A GPU bundle whose rootfs is missing.
    let spec =
        std::fs::read_to_string(repo().join("examples/bundles/cdi-gpu/config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), spec).unwrap();
    let (code, _, err) = check(&["--bundle", &d]);
    assert_eq!(code, 2);
    assert!(err.contains("rootfs does not exist"), "{err}");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "mode = \"sometimes\"\n").unwrap();
    let (code, _, err) = check(&[
        "--bundle",
        &example("cdi-gpu"),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("c.toml") && err.contains("sometimes"), "{err}");
}

fn hook(stdin: &[u8], extra: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .arg("hook")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn hook_bad_input_follows_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let allow = dir.path().join("allow.toml");
    std::fs::write(&allow, "").unwrap();
    let block = dir.path().join("block.toml");
    std::fs::write(&block, "on_error = \"block\"\n").unwrap();
    let missing_bundle = br#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":1,"bundle":"/nonexistent/bundle"}"#;
    let cases: Vec<(&str, &[u8], &std::path::Path, i32, &str)> = vec![
        (
            "garbage state, allow",
            b"not json",
            &allow,
            0,
            "OCI state on stdin is not JSON",
        ),
        (
            "garbage state, block",
            b"not json",
            &block,
            1,
            "cuda-preflight: blocked container ?: the hook failed",
        ),
        (
            "missing bundle, allow",
            missing_bundle,
            &allow,
            0,
            "/nonexistent/bundle/config.json: cannot read",
        ),
        (
            "missing bundle, block",
            missing_bundle,
            &block,
            1,
            "/nonexistent/bundle/config.json: cannot read",
        ),
    ];
    for (name, stdin, cfg, want, msg) in cases {
        let (code, err) = hook(
            stdin,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--state-dir",
                state_dir.to_str().unwrap(),
            ],
        );
        assert_eq!(code, want, "{name}: {err}");
        assert!(err.contains(msg), "{name}: {err}");
    }
    // The error is recorded in the report of the container it concerns.
    let rep = read_report(&state_dir, "c1").expect("report for c1");
    assert!(
        rep["error"]
            .as_str()
            .unwrap()
            .contains("config.json: cannot read"),
        "{rep}"
    );
    assert_eq!(finding_ids(&rep), vec!["hook-error"]);
}

#[test]
fn hook_with_a_broken_config_allows_by_documented_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "mode = [\n").unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"c2","status":"creating","pid":1,"bundle":"{}"}}"#,
        repo().join("examples/bundles/cdi-no-uvm").display()
    );
    let (code, err) = hook(
        state.as_bytes(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--state-dir",
            dir.path().join("s").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn oversized_state_is_refused_without_reading_it_all() {
    let big = vec![b' '; 2 << 20];
    let (code, err) = hook(&big, &["--state-dir", "/nonexistent-state"]);
    assert_eq!(code, 0);
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn report_shows_what_the_hook_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let sd = state_dir.to_str().unwrap();
    let profile = h100_profile().display().to_string();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"gpu-1","status":"creating","bundle":"{}"}}"#,
        repo().join("examples/bundles/cdi-no-uvm").display()
    );
    let (code, err) = hook(
        state.as_bytes(),
        &["--state-dir", sd, "--host-profile", &profile],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("full report: cuda-preflight report gpu-1"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["report", "gpu-1", "--state-dir", sd])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("container gpu-1: block"), "{text}");
    assert!(
        text.contains("device-node-missing: /dev/nvidia-uvm is missing"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["report", "--json", "--state-dir", sd])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reports"][0]["container_id"], "gpu-1");
    let out = Command::new(BIN)
        .args(["report", "nope", "--state-dir", sd])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no report for container nope"));
}

#[test]
fn explain_corrects_the_folklore_on_304() {
    let out = Command::new(BIN)
        .args(["explain", "304", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "CUDA_ERROR_OPERATING_SYSTEM");
    assert_eq!(
        v["message"],
        "OS call failed or operation not supported on this OS"
    );
    for code in [
        "3", "34", "35", "100", "101", "201", "209", "218", "221", "222", "304", "803", "804",
        "999",
    ] {
        let out = Command::new(BIN).args(["explain", code]).output().unwrap();
        assert!(out.status.success(), "{code}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("no container-specific notes"),
            "{code}"
        );
    }
    assert_eq!(
        Command::new(BIN)
            .args(["explain", "4242"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

/// The README's first command (the main job) works as written: `cargo run` can pick the binary
/// (two binaries need `default-run`), and the example it runs blocks with the headline.
#[test]
fn readme_main_job_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```")
        .nth(1)
        .expect("a fenced block opens the README");
    let main = block.lines().nth(1).expect("its first command");
    let args = main
        .strip_prefix("cargo run --release -- ")
        .expect("the main job is a cargo run");
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("default-run = \"cuda-preflight\""),
        "cargo run must know which binary"
    );
    let out = Command::new(BIN)
        .current_dir(repo())
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("cuda-preflight: blocked bundle examples/bundles/cdi-no-uvm: "),
        "{text}"
    );
}

/// A missing file's error names its cause once (an error type that formatted its cause and also
/// returned it as `source()` printed "…(os error 2): …(os error 2)" under `{:#}`).
#[test]
fn a_missing_file_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    let cause = "No such file or directory";
    let once = |what: &str, text: &str| {
        assert_eq!(text.matches(cause).count(), 1, "{what}: {text}");
    };

    let (code, _, err) = check(&["--bundle", m]);
    assert_eq!(code, 2, "{err}");
    once("check --bundle", &err);
    let (code, _, err) = check(&["--bundle", &example("cdi-gpu"), "--config", m]);
    assert_eq!(code, 2, "{err}");
    once("check --config", &err);
    let (code, _, err) = check(&["--bundle", &example("cdi-gpu"), "--host-profile", m]);
    assert_eq!(code, 2, "{err}");
    once("check --host-profile", &err);

    let out = Command::new(BIN).args(["scan", m]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    once("scan", &String::from_utf8_lossy(&out.stdout));
    let out = Command::new(BIN)
        .args(["scan", "--json", m])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    once("scan --json", &String::from_utf8_lossy(&out.stdout));

    let state_dir = dir.path().join("state");
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"c-once","status":"creating","pid":1,"bundle":"{m}"}}"#
    );
    for extra in [&["--config", m][..], &[]] {
        let mut args = vec!["--state-dir", state_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, err) = hook(state.as_bytes(), &args);
        assert_eq!(code, 0, "{err}");
        // Each line (the message, the log line) names the cause once.
        for line in err.lines() {
            once("hook", line);
        }
    }
    let rep = read_report(&state_dir, "c-once").expect("report for c-once");
    once("hook report", rep["error"].as_str().unwrap());
}

/// A reader that closes our stdout early (`… | head`) ends the output quietly and leaves the
/// command's own exit code: 0 for a loadable scan, 1 for a check that blocks (a closed pipe must
/// never turn a block into a pass in a CI gate with `pipefail`).
#[test]
fn a_pipe_closed_early_is_quiet_and_keeps_the_exit_code() {
    let ptx = repo().join("tests/data/h100-driver-13.0/r80-8.5.ptx");
    // Far more than a pipe holds (64 KiB): some write must meet the closed pipe.
    let paths = vec![ptx.as_os_str(); 4000];
    let t4 = repo().join("examples/hosts/t4-470.json");
    let mut check: Vec<std::ffi::OsString> = ["check", "--bundle"].iter().map(Into::into).collect();
    check.push(repo().join("examples/bundles/cuda13-image").into());
    for _ in 0..400 {
        check.push("--host-profile".into());
        check.push(t4.clone().into());
    }
    let scan: Vec<std::ffi::OsString> = std::iter::once("scan".into())
        .chain(paths.iter().map(|p| p.into()))
        .collect();
    for (args, want) in [(&scan, 0), (&check, 1)] {
        for json in [false, true] {
            let mut cmd = Command::new(BIN);
            cmd.args(args.iter().take(1))
                .args(json.then_some("--json"))
                .args(args.iter().skip(1));
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Read one line, then close the read end, as `head -1` does.
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
            assert!(!first.is_empty());
            drop(stdout);
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(want),
                "{:?} json={json}: {err}",
                args[0]
            );
            assert!(err.is_empty(), "json={json}: {err}");
        }
    }
    // The same through a shell pipeline and the real `head`.
    for (args, want) in [(&scan, "0"), (&check, "1")] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{BIN} \"$@\" | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"
            ))
            .arg("bash")
            .args(args.iter())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{:?}",
            args[0]
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A hook whose stderr is a pipe nobody reads still exits with its verdict and records it: a
/// panicking `eprint!` there turned a block into `on_error` (allow by default).
#[test]
fn a_closed_stderr_does_not_change_the_hooks_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"c-nostderr","status":"creating","pid":1,"bundle":"{}"}}"#,
        repo().join("examples/bundles/cdi-no-uvm").display()
    );
    let mut child = Command::new(BIN)
        .args(["hook", "--state-dir", state_dir.to_str().unwrap()])
        .arg("--host-profile")
        .arg(h100_profile())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let rep = read_report(&state_dir, "c-nostderr").expect("report");
    assert_eq!(rep["verdict"], "block", "{rep}");
    assert!(rep["error"].is_null(), "{rep}");
}
