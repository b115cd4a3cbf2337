//! Fuzz the /proc/driver/nvidia/version reader (read under --host-root, which may be a fixture).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(v) = cuda_preflight::facts::host::nvml::parse_nvrm_version(&text) {
        assert!(v.to_string().contains('.'));
    }
});
