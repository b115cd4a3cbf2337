//! Fuzz the ld.so.cache reader (the image's own /etc/ld.so.cache decides where its loader finds
//! libcuda.so.1): every offset in it is the image's to choose.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = cuda_preflight::formats::ld_so_cache::parse_ld_so_cache(data) {
        // Every entry came out of the input: no more entries than bytes could hold.
        assert!(entries.len() <= data.len());
    }
});
