//! Fuzz the "Cuda compilation tools, release X.Y, VX.Y.Z" banner reader (ptxas, NVRTC versions).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(v) = cuda_preflight::formats::cuda_banner::find_release(data) {
        assert!(v.major() > 0);
        let _ = v.to_string();
    }
    let _ = cuda_preflight::formats::cuda_banner::parse_banner_tail(data);
});
