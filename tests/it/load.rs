//! Load: 100 GPU-looking containers started at once through the real runc with the hook, half of
//! them defective. Every verdict must be right and every report whole; the hook's own latency
//! (from the reports) is printed as p50/p99 (speed is recorded in BENCHMARKS.md, not asserted).

use crate::common::*;
use std::path::PathBuf;

const N: usize = 100;

#[test]
fn hundred_concurrent_gpu_starts_all_judged_right() {
    let top = tempfile::tempdir().unwrap();
    let state = top.path().join("state");
    let rootfs_src = busybox_rootfs(top.path());
    let config = top.path().join("config.toml");
    std::fs::write(&config, "probe = \"never\"\n").unwrap();
    let mut bundles: Vec<(PathBuf, String, bool)> = Vec::new();
    for i in 0..N {
        let dir = top.path().join(format!("b{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spec = base_spec(&dir, &["true"]);
        // One read-only rootfs shared by all, named by absolute path, keeps the test light.
        spec["root"] = serde_json::json!({"path": rootfs_src, "readonly": true});
        let defective = i % 2 == 1;
        let nodes: Vec<_> = ALL_NODES
            .iter()
            .copied()
            .filter(|n| !(defective && n.0 == "/dev/nvidia-uvm"))
            .collect();
        spec["linux"]["devices"] = nvidia_devices(&nodes);
        allow_nvidia_cgroup(&mut spec);
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
        write_spec(&dir, &spec);
        bundles.push((dir, unique_id(&format!("load{i}")), defective));
    }
    let t = std::time::Instant::now();
    let results: Vec<(String, bool, bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = bundles
            .iter()
            .map(|(dir, id, defective)| {
                s.spawn(move || {
                    let out = runc_run(dir, id);
                    (
                        id.clone(),
                        *defective,
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed();
    let mut latencies = Vec::new();
    for (id, defective, started, err) in &results {
        assert_eq!(
            *started, !defective,
            "{id}: defective={defective} but started={started}: {err}"
        );
        let rep = read_report(&state, id).unwrap_or_else(|| panic!("{id}: no report"));
        assert_eq!(rep["container_id"], id.as_str());
        let want = if *defective { "block" } else { "allow" };
        assert_eq!(rep["verdict"], want, "{id}");
        latencies.push(rep["duration_ms"].as_f64().unwrap());
    }
    // No temporary file left behind, nothing but whole reports.
    let leftovers: Vec<_> = std::fs::read_dir(state.join("reports"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            !e.file_name().to_str().unwrap().ends_with(".json")
                || e.file_name().to_str().unwrap().starts_with('.')
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "load: {N} concurrent runc starts in {:.1} s; hook time to verdict p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        wall.as_secs_f64(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
