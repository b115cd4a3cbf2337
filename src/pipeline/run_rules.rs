//! Run the rules: every rule over one container's facts on one host. Rules are pure
//! (`crate::rules`); this step only says which rules the caller's facts support ([`Scope`]).

use crate::facts::gpu_code::binaries::BinaryFacts;
use crate::facts::host::HostProfile;
use crate::facts::image::cache as image_cache;
use crate::finding::Finding;
use crate::pipeline::ContainerFacts;
use crate::rules;

/// Which rules a caller's facts support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every rule; `NVIDIA_REQUIRE_*` as the start path enforces it (the hook, `check`).
    All,
    /// At container creation (the NRI plugin): no rootfs yet, so the image's CUDA version is left
    /// to the hook ([`rules::versions::driver_compat::not_mounted`]); `NVIDIA_REQUIRE_*` as the start path
    /// enforces it, as the hook judges it (an unmet requirement on a CDI path is not a block).
    AtCreation,
    /// Before the real runtime ran (the runtime shim): only `NVIDIA_REQUIRE_*` (and the legacy
    /// `CUDA_VERSION` rule), which needs nothing the NVIDIA runtime or hook will inject, as the
    /// start path enforces it.
    Requirements,
}

/// The findings of every rule `scope` allows over `c` on `host`. `enforce_requirements`: the
/// config's, an unmet `NVIDIA_REQUIRE_*` blocks on every start path.
pub fn run(
    c: &ContainerFacts,
    host: &HostProfile,
    scope: Scope,
    enforce_requirements: bool,
) -> Vec<Finding> {
    let mut out = match scope {
        Scope::All | Scope::AtCreation => all(c, host),
        Scope::Requirements => c
            .image
            .as_ref()
            .map(|image| rules::versions::requirements::check(image, host))
            .unwrap_or_default(),
    };
    rules::versions::requirements::on_path(&mut out, &c.start_path, enforce_requirements);
    if scope == Scope::AtCreation {
        rules::versions::driver_compat::not_mounted(&mut out);
    }
    out
}

/// All rules over the facts.
fn all(c: &ContainerFacts, host: &HostProfile) -> Vec<Finding> {
    let devices = c.devices.as_ref().map_err(String::as_str);
    let mut out =
        rules::container::devices::device_findings(&c.request, devices, &host.device_majors);
    if let Some(image) = &c.image {
        out.extend(rules::versions::requirements::check(image, host));
        out.extend(rules::versions::driver_compat::check(image, host));
    }
    if let Some(hs) = &c.hoststate {
        out.extend(rules::host::check(&c.request, hs, host));
    }
    if let Some(h) = &c.headroom {
        out.extend(rules::host::headroom::check(h, &c.request, host));
    }
    if let (Some(l), Some(image)) = (&c.load, &c.image) {
        out.extend(rules::library_loading::cuda_libraries::check(l, image));
    }
    let judged = c
        .binaries
        .as_ref()
        .map(|b| judge_binaries(b, &c.env, &container_gpus(c, host), host));
    if let Some(j) = &judged {
        out.extend(j.kernels.iter().cloned());
    }
    if let Some(d) = &c.cuda_compat {
        out.push(rules::start_path::compat_decision(d));
    }
    // The container's CUDA_* variables (rules::cuda_env): a module of their own next to the
    // kernel rules, from the same facts.
    out.extend(rules::container::cuda_env::check(
        &c.env,
        devices,
        &c.request,
        host,
        None,
        &container_gpus(c, host),
    ));
    if let Some(j) = judged {
        out.extend(j.ptx_jit);
    }
    if let Some(t) = &c.toolchains {
        out.extend(rules::toolchains::check(
            t,
            &container_gpus(c, host),
            host.cuda_driver(),
        ));
    }
    out
}

/// The rules over the image's fatbin inventories. On an image facts cache hit they are judged
/// once per host ([`image_cache::host_key`]: GPUs, driver, CUDA variables) and the judgement kept
/// beside the entry: a later hit reads it rather than unpacking and judging every entry (21,000
/// in a torch image, most of a hit's time). The judgement is these same functions' result.
fn judge_binaries(
    b: &BinaryFacts,
    env: &[String],
    gpus: &[crate::facts::host::Gpu],
    host: &HostProfile,
) -> image_cache::Judged {
    let driver = host.cuda_driver_version.as_deref().unwrap_or("");
    let judge = |b: &BinaryFacts| image_cache::Judged {
        kernels: rules::gpu_code::image_findings(
            b,
            gpus,
            rules::gpu_code::DriverCuda::of_host(host),
        ),
        ptx_jit: rules::container::cuda_env::ptx_jit(
            env,
            &b.files,
            gpus,
            host.cuda_driver_release(),
        ),
    };
    let Some(packed) = &b.packed else {
        return judge(b);
    };
    let key = image_cache::host_key(gpus, driver, env);
    if let Some(j) = packed.judged(&key) {
        return j;
    }
    let mut full = BinaryFacts {
        packed: None,
        ..b.clone()
    };
    match packed.unpack() {
        Some(files) => full.files = files,
        // Damaged after it was stored: said, never judged as no GPU code (rules::kernels).
        None => {
            return image_cache::Judged {
                kernels: vec![rules::gpu_code::not_unpacked()],
                ptx_jit: Vec::new(),
            };
        }
    }
    let j = judge(&full);
    packed.store_judged(&key, &j);
    j
}

/// The GPUs the container gets where that is known; else every GPU of the host (hosts are
/// nearly always of one kind, and a mixed one is judged on each).
fn container_gpus(c: &ContainerFacts, host: &HostProfile) -> Vec<crate::facts::host::Gpu> {
    rules::host::compute_mode::container_gpus(&c.request, host)
        .filter(|g| !g.is_empty())
        .map(|g| g.into_iter().cloned().collect())
        .unwrap_or_else(|| host.gpus.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::facts::container;
    use crate::finding::{FindingId, Severity};
    use crate::input::bundle::Bundle;
    use crate::pipeline::{Input, gather};
    use std::path::Path;

    /// An unmet `NVIDIA_REQUIRE_CUDA` on a CDI start: nothing on that path enforces it, so no
    /// caller blocks on it — the NRI plugin at creation (it did before) no more than the hook —
    /// unless the host's policy says so.
    #[test]
    fn an_unmet_requirement_on_a_cdi_path_blocks_for_no_caller_unless_the_host_enforces() {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bundles/cdi-gpu");
        let spec = std::fs::read_to_string(example.join("config.json"))
            .unwrap()
            .replace("cuda>=12.4 brand=tesla", "cuda>=99.0 brand=tesla");
        std::fs::write(dir.path().join("config.json"), spec).unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let bundle = Bundle::load(dir.path()).unwrap();
        let request = container::detect(&bundle.spec, None);
        let config = Config::default();
        let facts = gather(Input::new(&bundle, request, &config));
        let host = HostProfile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hosts/h100-580.json"),
        )
        .unwrap();
        for (scope, enforce, want) in [
            (
                Scope::All,
                false,
                (FindingId::RequireNotEnforced, Severity::Info),
            ),
            (
                Scope::AtCreation,
                false,
                (FindingId::RequireNotEnforced, Severity::Info),
            ),
            (
                Scope::Requirements,
                false,
                (FindingId::RequireNotEnforced, Severity::Info),
            ),
            (
                Scope::AtCreation,
                true,
                (FindingId::RequireUnsatisfied, Severity::Block),
            ),
        ] {
            let got: Vec<_> = run(&facts, &host, scope, enforce)
                .into_iter()
                .filter(|f| f.id.area() == crate::finding::catalog::Area::Requirements)
                .map(|f| (f.id, f.severity))
                .collect();
            assert_eq!(got, vec![want], "{scope:?}, enforce {enforce}");
        }
    }
}
