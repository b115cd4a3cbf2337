//! Fuzz CDI spec parsing (/etc/cdi, /var/run/cdi; YAML or JSON, written by nvidia-ctk or by
//! anyone with write access there). First byte picks the format; the host paths the spec names
//! are checked under an empty directory so nothing outside it is looked at.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let root = ROOT.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let _ = cuda_preflight::facts::host::state::parse_cdi_spec(rest, sel & 1 == 1, "f".into(), root);
});
