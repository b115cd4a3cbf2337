//! Whole-process cost of `cuda-preflight hook` as a runtime pays it: fork+exec, read the state
//! on stdin, parse config.json, decide. Compared with a bare process start (`/bin/true` fed the
//! same stdin) in the same run, interleaved so machine noise hits both alike.
//!
//! `cargo bench --bench hook_process` (release build). Prints medians and p99 in ms.

// A measurement tool: a step that fails ends the run.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const RUNS: usize = 300;

fn time_once(bin: &Path, args: &[&str], stdin: &[u8]) -> f64 {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // /bin/true may exit before reading; a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let status = child.wait().unwrap();
    let dt = t.elapsed().as_secs_f64() * 1000.0;
    assert!(status.code().is_some());
    dt
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_cuda-preflight"));
    let dir = std::env::temp_dir().join(format!("cpf-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    // A Docker-sized spec of a container that asks for no GPU: 40 env entries, 30 mounts.
    let mut env: Vec<String> = (0..40)
        .map(|i| format!("VAR_{i}=value-{i}-{}", "x".repeat(40)))
        .collect();
    env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mounts: Vec<serde_json::Value> = (0..30)
        .map(|i| serde_json::json!({"destination": format!("/mnt/m{i}"), "type": "bind", "source": format!("/var/lib/data/{i}"), "options": ["rbind", "ro"]}))
        .collect();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["python3", "-m", "http.server"], "env": env, "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": mounts,
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                  "resources": {"devices": [{"allow": false, "access": "rwm"}]}}
    });
    let spec_bytes = serde_json::to_vec_pretty(&spec).unwrap();
    std::fs::write(dir.join("config.json"), &spec_bytes).unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2-dev","id":"bench","status":"creating","pid":1,"bundle":"{}"}}"#,
        dir.display()
    );
    let truebin = Path::new("/bin/true");
    let (mut hook, mut bare) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..20 {
        time_once(bin, &["hook"], state.as_bytes());
    }
    for _ in 0..RUNS {
        bare.push(time_once(truebin, &[], state.as_bytes()));
        hook.push(time_once(bin, &["hook"], state.as_bytes()));
    }
    let size = std::fs::metadata(bin).unwrap().len();
    println!(
        "config.json: {} bytes; binary: {} KiB; {RUNS} runs each, interleaved",
        spec_bytes.len(),
        size / 1024
    );
    println!("{:<32} {:>10} {:>10}", "process", "median ms", "p99 ms");
    let (hm, h99) = (pct(&mut hook, 0.5), pct(&mut hook, 0.99));
    let (bm, b99) = (pct(&mut bare, 0.5), pct(&mut bare, 0.99));
    println!("{:<32} {:>10.3} {:>10.3}", "/bin/true", bm, b99);
    println!(
        "{:<32} {:>10.3} {:>10.3}",
        "cuda-preflight hook (no GPU)", hm, h99
    );
    println!("{:<32} {:>10.3}", "difference of medians", hm - bm);
    let _ = std::fs::remove_dir_all(&dir);
}
