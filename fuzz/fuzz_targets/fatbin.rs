//! Fuzz the CUDA binary reader (ELF section table, fatbin containers and entries, cubin, PTX
//! text): any input must give an inventory or an error, never a panic, hang or huge allocation.
//! Run: `cargo +nightly fuzz run fatbin` (seed corpus: `fuzz/seed.sh` copies small fixtures).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(inv) = cuda_preflight::formats::fatbin::read_bytes(data) {
        // Every entry lies inside the input and inside its container.
        for e in &inv.entries {
            let c = &inv.containers[e.container];
            assert!(e.offset >= c.offset && e.offset + e.header_size + e.payload_size <= c.offset + c.size);
            assert!(e.offset <= data.len() as u64);
        }
    }
});
