//! Fuzz config.toml parsing: any text gives a config or an error message, never a panic (the
//! location helper slices the text by the TOML error's span).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = cuda_preflight::config::Config::parse(text) {
            assert!(c.deadline_ms >= 1);
        }
    }
});
