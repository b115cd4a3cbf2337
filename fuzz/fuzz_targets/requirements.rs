//! Fuzz NVIDIA_REQUIRE_* parsing and evaluation: the input is an image environment (one
//! `KEY=VALUE` per line, as in config.json's `process.env`), evaluated against a full host, a
//! host with no facts, and a multi-GPU host.
#![no_main]
use libfuzzer_sys::fuzz_target;
use cuda_preflight::facts::host::{Gpu, HostProfile};
use cuda_preflight::facts::versions::image_cuda as image;
use cuda_preflight::rules::versions::requirements;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines() {
        let v = line.split_once('=').map_or(line, |(_, v)| v);
        let _ = requirements::parse(v);
        let _ = requirements::toolkit_message(v);
    }
    let env: Vec<String> = text.lines().map(String::from).collect();
    let img = image::gather_env(&env);
    let gpu = |cc: &str, brand: &str| Gpu {
        compute_capability: cc.into(),
        brand: brand.into(),
        nvml_brand: brand.into(),
        name: "NVIDIA H100".into(),
        ..Gpu::default()
    };
    let full = HostProfile {
        driver_version: Some("580.159.04".into()),
        cuda_driver_version: Some("13.0".into()),
        gpus: vec![gpu("9.0", "nvidia")],
        ..HostProfile::default()
    };
    let multi = HostProfile {
        driver_version: Some("470".into()),
        cuda_driver_version: Some("11.4".into()),
        gpus: vec![gpu("7.5", "tesla"), gpu("", ""), gpu("x.y", "geforce")],
        ..HostProfile::default()
    };
    for h in [&full, &HostProfile::default(), &multi] {
        for f in requirements::check(&img, h) {
            assert!(!f.id.is_empty());
        }
    }
});
