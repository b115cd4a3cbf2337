//! The metrics file as a Prometheus server reads it: 20 hooks at once must lose no increment, and
//! the file must parse with a real text-format parser. Also the headroom findings end to end.

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn spawn_hook(state: String, args: Vec<String>) -> std::thread::JoinHandle<i32> {
    std::thread::spawn(move || {
        let mut child = Command::new(BIN)
            .arg("hook")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(state.as_bytes());
        child.wait().unwrap().code().unwrap()
    })
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn twenty_concurrent_hooks_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let metrics_dir = dir.path().join("textfile");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("metrics_dir = \"{}\"\n", metrics_dir.display()),
    )
    .unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("dev")).unwrap();
    let args: Vec<String> = [
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--host-root",
        host.path().to_str().unwrap(),
        "--host-profile",
        h100_profile().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // 12 starts that block (no /dev/nvidia-uvm), 8 that are allowed.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let bundle = if i < 12 { "cdi-no-uvm" } else { "cdi-gpu" };
            let state = format!(
                r#"{{"ociVersion":"1.0.2","id":"m{i}","status":"creating","bundle":"{}"}}"#,
                repo().join("examples/bundles").join(bundle).display()
            );
            spawn_hook(state, args.clone())
        })
        .collect();
    let codes: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 1).count(), 12, "{codes:?}");
    let text = std::fs::read_to_string(metrics_dir.join("cuda_preflight.prom")).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        value(&scrape, "cuda_preflight_starts_total", None),
        20.0,
        "{text}"
    );
    assert_eq!(
        value(
            &scrape,
            "cuda_preflight_verdicts_total",
            Some(("verdict", "block"))
        ),
        12.0
    );
    assert_eq!(
        value(
            &scrape,
            "cuda_preflight_verdicts_total",
            Some(("verdict", "allow"))
        ),
        8.0
    );
    assert_eq!(
        value(
            &scrape,
            "cuda_preflight_blocks_total",
            Some(("finding", "device-node-missing"))
        ),
        12.0
    );
    // No probe ran (no container process): nothing attempted, the ratio is 1.
    assert_eq!(
        value(&scrape, "cuda_preflight_context_attempts_total", None),
        0.0
    );
    assert_eq!(
        value(&scrape, "cuda_preflight_context_success_ratio", None),
        1.0
    );
    let hist = scrape
        .samples
        .iter()
        .find(|s| s.metric == "cuda_preflight_hook_duration_seconds")
        .expect("histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, 20.0, "{text}");
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "{text}"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let count = scrape
        .samples
        .iter()
        .find(|s| s.metric == "cuda_preflight_hook_duration_seconds_count")
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            _ => -1.0,
        });
    if let Some(c) = count {
        assert_eq!(c, 20.0);
    }
    // A hook that fails on its own input counts too, as the warning hook-error.
    let missing =
        r#"{"ociVersion":"1.0.2","id":"bad","status":"creating","bundle":"/nonexistent/bundle"}"#;
    assert_eq!(
        spawn_hook(missing.to_string(), args.clone())
            .join()
            .unwrap(),
        0
    );
    let text = std::fs::read_to_string(metrics_dir.join("cuda_preflight.prom")).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        value(&scrape, "cuda_preflight_starts_total", None),
        21.0,
        "{text}"
    );
    assert_eq!(
        value(
            &scrape,
            "cuda_preflight_warnings_total",
            Some(("finding", "hook-error"))
        ),
        1.0
    );
    // Nothing half-written left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&metrics_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "cuda_preflight.prom")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn headroom_warns_on_gpu_memory_and_a_full_volume() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let volume = dir.path().join("models");
    std::fs::create_dir_all(&volume).unwrap();
    let mut spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/bundles/cdi-gpu/config.json")).unwrap(),
    )
    .unwrap();
    // The H100 profile has 81079 MiB free; this container asks for 90000.
    spec["annotations"]["cuda-preflight/min-free-memory"] = "90000".into();
    spec["mounts"] = serde_json::json!([
        {"destination": "/models", "type": "bind", "source": volume, "options": ["rbind", "rw"]},
        {"destination": "/weights", "type": "bind", "source": volume, "options": ["rbind", "ro"]},
    ]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    // No filesystem has 2^40 MiB free.
    std::fs::write(&cfg, "min_free_disk_mib = 1099511627776\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--host-profile")
        .arg(h100_profile())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "warnings allow the start");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "warn", "{v}");
    let warns: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "warn")
        .collect();
    let ids: Vec<&str> = warns.iter().map(|f| f["id"].as_str().unwrap()).collect();
    // The rootfs and the writable volume; the read-only one cannot fill up.
    assert_eq!(
        ids,
        ["gpu-memory-low", "disk-space-low", "disk-space-low"],
        "{v}"
    );
    assert_eq!(warns[0]["predicted"]["name"], "CUDA_ERROR_OUT_OF_MEMORY");
    assert!(
        warns[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("gpu 0 has 81079 of 81559 MiB free; the container asks for 90000 MiB"),
        "{v}"
    );
    assert_eq!(warns[2]["predicted"]["message"], "No space left on device");
    assert!(
        warns[2]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("/models (")
    );
    // With the defaults (1024 MiB) and no memory asked, nothing warns.
    let out = Command::new(BIN)
        .args(["check", "--json", "--bundle"])
        .arg(repo().join("examples/bundles/cdi-gpu"))
        .arg("--host-profile")
        .arg(h100_profile())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "allow", "{v}");
}
