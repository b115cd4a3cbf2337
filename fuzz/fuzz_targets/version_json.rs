//! Fuzz /usr/local/cuda/version.json parsing (the image's toolkit version).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = cuda_preflight::facts::versions::image_cuda::parse_version_json(data) {
        let _ = v.to_string();
        let _ = v.major_minor();
    }
});
