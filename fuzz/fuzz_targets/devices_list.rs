//! Fuzz the cgroup v1 devices.list reader and the allow decision made from its rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use cuda_preflight::facts::container;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rules = container::parse_devices_list(&text);
    for (maj, min) in [(195, 0), (195, 255), (0, 0), (u32::MAX, u32::MAX)] {
        let _ = container::cgroup_allows(&rules, maj, min);
    }
});
