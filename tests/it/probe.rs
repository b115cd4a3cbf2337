//! The probe for real, without a GPU: a test-double `libcuda.so.1` (tests/double/libcuda.c, built
//! here with gcc) inside a real runc container's rootfs, answering as its file
//! `/etc/cuda-double.conf` in that rootfs says. Shows the probe loads the container's library,
//! from inside the container's mount namespace and cgroup, as the container's user with no
//! capabilities; that a hang is cut at the deadline and a crash is a finding.

use crate::common::*;
use std::path::PathBuf;
use std::sync::OnceLock;

fn double() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libcuda-double.so");
        let st = std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(repo().join("tests/double/libcuda.c"))
            .status()
            .expect("gcc (scripts/test.sh installs build tools)");
        assert!(st.success());
        out
    })
}

struct Probed {
    ok: bool,
    stdout: String,
    stderr: String,
    report: serde_json::Value,
    wall: std::time::Duration,
}

/// A GPU container (devices in the spec) running as uid 1000, gid 1000, extra group 44, whose
/// process prints its mount namespace and cgroup; `conf` is the double's answer file, `None`
/// leaves libcuda out of the image.
fn probe(conf: Option<&str>, extra_config: &str) -> Probed {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    probe_in(
        &dir,
        conf,
        &format!("probe = \"always\"\n{extra_config}"),
        &state,
        None,
    )
}

/// One container start; `config` is the whole config.toml; `log` a host directory mounted at
/// /probe-log, where the double counts its cuInit calls.
fn probe_in(
    dir: &tempfile::TempDir,
    conf: Option<&str>,
    config_toml: &str,
    state: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Probed {
    probe_in_env(dir, conf, config_toml, state, log, &[])
}

/// As `probe_in`, with `env` (`KEY=VALUE`) added to the container's environment.
fn probe_in_env(
    dir: &tempfile::TempDir,
    conf: Option<&str>,
    config_toml: &str,
    state: &std::path::Path,
    log: Option<&std::path::Path>,
    env: &[&str],
) -> Probed {
    let root = busybox_rootfs(dir.path());
    if let Some(conf) = conf {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/cuda-double.conf"), conf).unwrap();
    }
    let mut spec = base_spec(
        dir.path(),
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; cat /proc/self/cgroup",
        ],
    );
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [44]});
    for kv in env {
        set_env(&mut spec, kv);
    }
    spec["linux"]["devices"] = nvidia_devices(ALL_NODES);
    allow_nvidia_cgroup(&mut spec);
    if conf.is_some() {
        // Mounted as the NVIDIA runtime or a CDI spec mounts the host's driver library: in the
        // container's mount namespace, not in the image.
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/usr/lib/libcuda.so.1", "type": "bind", "source": double(), "options": ["bind", "ro"]
        }));
    }
    if let Some(log) = log {
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/probe-log", "type": "bind", "source": log, "options": ["rbind", "rw"]
        }));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("probe_deadline_ms = 1500\n{config_toml}")).unwrap();
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
    let id = unique_id("probe");
    let t = std::time::Instant::now();
    let out = runc_run(dir.path(), &id);
    let wall = t.elapsed();
    Probed {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        report: read_report(state, &id).expect("report"),
        wall,
    }
}

#[test]
fn probe_runs_inside_the_container_as_its_user_without_capabilities() {
    let p = probe(Some("version=12345\n"), "");
    assert!(p.ok, "{}", p.stderr);
    let outcome = &p.report["probe"]["outcome"];
    assert_eq!(p.report["probe"]["result"], "finished", "{}", p.report);
    // The library loaded is the image's: only its conf file (inside the rootfs) says 12345.
    assert_eq!(outcome["driver_version"], 12345, "{}", p.report);
    assert_eq!(outcome["libcuda"], "/usr/lib/libcuda.so.1");
    let id = &outcome["identity"];
    assert_eq!(id["uid"], 1000);
    assert_eq!(id["gid"], 1000);
    assert_eq!(id["groups"], serde_json::json!([44]));
    assert_eq!(id["cap_eff"], "0000000000000000");
    assert_eq!(id["cap_bnd"], "0000000000000000");
    assert_eq!(id["no_new_privs"], true);
    // The container's own process printed its mount namespace and cgroup; the probe's match.
    let mut lines = p.stdout.lines();
    let mnt = lines.next().expect("container printed its mnt ns");
    assert_eq!(
        id["mnt_ns"], mnt,
        "probe in another mount namespace than the container"
    );
    let pid_ns = lines.next().expect("container printed its pid ns");
    assert_eq!(
        id["pid_ns"], pid_ns,
        "probe in another pid namespace than the container"
    );
    let container_cgroup: String = lines.map(|l| format!("{l}\n")).collect();
    assert_eq!(
        id["cgroup"].as_str().unwrap(),
        container_cgroup,
        "probe outside the container's cgroups"
    );
    assert_eq!(finding_ids(&p.report), Vec::<String>::new());
    assert!(all_finding_ids(&p.report).contains(&"probe-ok".to_string()));
    // The hook says first how it started the child (its own measurement), and the child was
    // started inside the container's cgroup v2 directory where the host has one.
    let setup = outcome["setup_ms"].as_array().expect("setup_ms");
    eprintln!("probe {} ms, setup {:?}", p.report["probe"]["ms"], setup);
    let first = setup[0][0].as_str().unwrap();
    assert!(first.starts_with("spawn: "), "{setup:?}");
    if std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("0::"))
        && std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        assert_eq!(first, "spawn: clone3 CLONE_INTO_CGROUP", "{setup:?}");
    }
}

#[test]
fn driver_error_blocks_with_its_true_name() {
    let p = probe(Some("init=304\n"), "");
    assert!(!p.ok);
    assert!(
        p.stderr
            .contains("cuInit failed with 304 CUDA_ERROR_OPERATING_SYSTEM inside the container"),
        "{}",
        p.stderr
    );
    assert_eq!(finding_ids(&p.report), vec!["probe-init-failed"]);
}

#[test]
fn a_hung_driver_is_killed_at_the_probe_deadline() {
    let p = probe(Some("init=hang\n"), "");
    // Policy: a timeout is a warning by default; the start goes on, well inside the deadline.
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(p.report["probe"]["result"], "timed-out");
    assert_eq!(finding_ids(&p.report), vec!["probe-timeout"]);
    assert!(
        p.wall < std::time::Duration::from_secs(8),
        "start took {:?}",
        p.wall
    );
    // And policy can make it block.
    let p = probe(
        Some("init=hang\n"),
        "[severity]\nprobe-timeout = \"block\"\n",
    );
    assert!(!p.ok);
    assert!(
        p.stderr
            .contains("the driver did not answer within 1500 ms"),
        "{}",
        p.stderr
    );
}

#[test]
fn a_crashing_driver_is_a_finding_not_a_crash() {
    let p = probe(Some("init=crash\n"), "");
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(p.report["probe"]["result"], "crashed");
    assert_eq!(p.report["probe"]["signal"], 11);
    assert_eq!(finding_ids(&p.report), vec!["probe-crashed"]);
}

#[test]
fn no_libcuda_in_the_container_is_blocked_with_the_loaders_message() {
    let p = probe(None, "");
    assert!(!p.ok);
    assert!(
        p.stderr
            .contains("libcuda.so.1: cannot open shared object file"),
        "{}",
        p.stderr
    );
    assert_eq!(finding_ids(&p.report), vec!["probe-libcuda-missing"]);
}

/// A host directory the double can log its cuInit calls into, as the container's uid 1000.
fn call_log() -> tempfile::TempDir {
    let log = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        log.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    log
}

fn calls(log: &tempfile::TempDir) -> usize {
    std::fs::read_to_string(log.path().join("calls"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn the_second_container_of_an_image_is_answered_from_the_cache() {
    let state = tempfile::tempdir().unwrap();
    let log = call_log();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = probe_in(
        &a,
        Some("version=12345\n"),
        "probe = \"auto\"\n",
        state.path(),
        Some(log.path()),
    );
    assert!(first.ok, "{}", first.stderr);
    assert_eq!(first.report["probe"]["cached"], false);
    assert_eq!(calls(&log), 1);
    // Another bundle directory, another container id, the same image and host: a hit.
    let second = probe_in(
        &b,
        Some("version=12345\n"),
        "probe = \"auto\"\n",
        state.path(),
        Some(log.path()),
    );
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(second.report["probe"]["cached"], true, "{}", second.report);
    assert_eq!(second.report["probe"]["outcome"]["driver_version"], 12345);
    assert_eq!(calls(&log), 1, "the second start ran the driver again");
    // `always` bypasses the cache.
    let c = tempfile::tempdir().unwrap();
    let third = probe_in(
        &c,
        Some("version=12345\n"),
        "probe = \"always\"\n",
        state.path(),
        Some(log.path()),
    );
    assert_eq!(third.report["probe"]["cached"], false);
    assert_eq!(calls(&log), 2);
}

#[test]
fn concurrent_starts_of_one_image_share_one_probe() {
    let state = tempfile::tempdir().unwrap();
    let log = call_log();
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let results: Vec<Probed> = std::thread::scope(|s| {
        let hs: Vec<_> = dirs
            .iter()
            .map(|d| {
                s.spawn(|| {
                    probe_in(
                        d,
                        Some("version=777\n"),
                        "probe = \"auto\"\n",
                        state.path(),
                        Some(log.path()),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert!(r.ok, "{}", r.stderr);
        assert_eq!(r.report["probe"]["outcome"]["driver_version"], 777);
    }
    assert_eq!(calls(&log), 1, "six starts, one probe");
    assert_eq!(
        results
            .iter()
            .filter(|r| r.report["probe"]["cached"] == false)
            .count(),
        1
    );
}

#[test]
fn a_missing_jit_compiler_is_a_warning_next_to_a_working_context() {
    let p = probe(Some("jit=221\n"), "");
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(finding_ids(&p.report), vec!["probe-jit-failed"]);
    let f = &p.report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "probe-jit-failed")
        .unwrap()
        .clone();
    assert_eq!(f["predicted"]["name"], "CUDA_ERROR_JIT_COMPILER_NOT_FOUND");
}

#[test]
fn the_probe_is_skipped_for_a_static_block_as_the_severity_table_judges_it() {
    // NVIDIA_REQUIRE_CUDA beyond the H100 profile's driver: `require-unsatisfied`, a block
    // (on this --device start only by the host's policy: nothing in NVIDIA's toolkit checks it).
    let env = ["NVIDIA_REQUIRE_CUDA=cuda>=99.0"];
    let run = |severity: &str| {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = format!("probe = \"always\"\nenforce_requirements = true\n{severity}");
        probe_in_env(&dir, Some("version=12345\n"), &config, &state, None, &env)
    };
    let blocked = run("");
    assert!(!blocked.ok);
    assert!(all_finding_ids(&blocked.report).contains(&"require-unsatisfied".to_string()));
    assert!(
        blocked.report.get("probe").is_none(),
        "a static block needs no probe: {}",
        blocked.report
    );
    // The host downgraded that finding: the container may start, so the probe must run.
    let downgraded = run("[severity]\n\"require-unsatisfied\" = \"warn\"\n");
    assert!(downgraded.ok, "{}", downgraded.stderr);
    assert_eq!(
        downgraded.report["probe"]["result"], "finished",
        "{}",
        downgraded.report
    );
    assert_eq!(
        downgraded.report["probe"]["outcome"]["driver_version"],
        12345
    );
}
