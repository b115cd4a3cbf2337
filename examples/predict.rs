//! Judge a rootfs against a host profile with the version rules and print the facts and the
//! findings as JSON: `predict ROOTFS HOST_PROFILE.json [KEY=VALUE…]` (the spec environment).
//! A development aid until the real `check` command lands.

use std::path::Path;

use cuda_preflight::facts::host::HostProfile;
use cuda_preflight::facts::versions::image_cuda as image;
use cuda_preflight::rules::versions::{driver_compat as versions, requirements};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: predict ROOTFS HOST_PROFILE.json [KEY=VALUE...]"
    );
    let host = HostProfile::load(Path::new(&args[1]))?;
    let facts = image::gather_rootfs(Path::new(&args[0]), &args[2..]);
    let mut findings = requirements::check(&facts, &host);
    findings.extend(versions::check(&facts, &host));
    let out = serde_json::json!({"image": facts, "findings": findings});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
