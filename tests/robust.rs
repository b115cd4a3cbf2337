//! Issue 22: a hostile image or a sick host stalls nothing and flips no verdict. The real hook
//! under the real runc where the defect is about a start.

mod common;

use common::*;
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
        err.contains(&format!("cuda-preflight: blocked container {id}: /dev/nvidia-uvm")),
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
