//! Fuzz the host profile JSON (`--host-profile`, `--fleet`): parse, then let the rules that read
//! it most (requirements, brand classes) run on it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use cuda_preflight::facts::host;
use cuda_preflight::facts::versions::image_cuda as image;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<host::HostProfile>(data) else { return };
    for g in &p.gpus {
        let _ = host::brand_class(&g.nvml_brand, &g.name);
    }
    let img = image::gather_env(&[
        "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471 arch>=8.0".into(),
        "CUDA_VERSION=12.4.1".into(),
    ]);
    let _ = cuda_preflight::rules::versions::requirements::check(&img, &p);
    // A profile we accept must serialise back (reports embed it).
    serde_json::to_vec(&p).unwrap();
});
