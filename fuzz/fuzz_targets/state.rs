//! Fuzz the OCI state reader (the hook's stdin, written by the runtime but shaped by whatever
//! launched it): any bytes give a state or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = cuda_preflight::input::state::parse(data) {
        // What parse promises the hook.
        assert!(s.bundle.is_absolute());
        assert!(s.pid.is_none_or(|p| p > 0));
    }
});
