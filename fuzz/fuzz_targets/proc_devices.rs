//! Fuzz the /proc/devices reader (character-device majors of the NVIDIA drivers).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cuda_preflight::facts::host::parse_proc_devices(&text);
});
