//! Fuzz the dynamic-section reader: every image library's program headers, string table and
//! version chains are the image's to choose, and the hook reads them on every GPU start.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(d)) = cuda_preflight::formats::elf_dynamic::read_bytes(data) {
        // Every name came out of the input: bounded by it.
        assert!(d.needed.len() <= data.len() / 16);
        assert!(d.needed.iter().all(|n| n.len() <= data.len()));
    }
});
