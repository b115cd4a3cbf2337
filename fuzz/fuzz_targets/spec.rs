//! Fuzz config.json as the hook reads it: the typed spec, then GPU detection and the device view
//! built from it (both walk env, devices, hooks, annotations and cgroup rules of the image).
#![no_main]
use libfuzzer_sys::fuzz_target;
use cuda_preflight::facts::container;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else { return };
    let req = container::detect(&spec, spec.annotations().as_ref());
    let _ = req.wants_gpu();
    let view = container::view_from_spec(&spec);
    let _ = container::spec_cgroup_rules(&spec);
    let _ = format!("{view:?}");
});
