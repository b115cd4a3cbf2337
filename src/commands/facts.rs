//! `cuda-preflight facts [--json]`: the host profile (`docs/host-profile.md`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::facts::host::HostProfile;
use crate::facts::host::nvml::{self, FactSource, HostFacts};

#[derive(Debug, Clone, clap::Args)]
pub struct FactsArgs {
    /// Print the host profile as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read file-based facts (/proc, /dev) under DIR; anything but `/` also turns NVML off.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Use this host profile instead of asking the host.
    #[arg(long, value_name = "FILE")]
    pub host_profile: Option<PathBuf>,
    /// Create or update this node's NFD NodeFeature in the cluster (KUBECONFIG or in-cluster);
    /// nfd-master makes its labels Node labels (docs/fleet.md)
    #[arg(long)]
    pub publish: bool,
    /// The Node's name for --publish [config: node; default: NODE_NAME, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Namespace of the NodeFeature [config: nfd_namespace; default node-feature-discovery]
    #[arg(long, value_name = "NS")]
    pub nfd_namespace: Option<String>,
    /// Config file for --publish [default: /etc/cuda-preflight/config.toml; absent means defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The host facts the arguments ask for: a profile file, or the host (NVML only when the host
/// root is `/`, as NVML describes this machine).
pub fn host_facts(args: &FactsArgs) -> anyhow::Result<HostFacts> {
    if let Some(p) = &args.host_profile {
        let profile = HostProfile::load(p).context("--host-profile")?;
        return Ok(HostFacts {
            profile,
            source: FactSource::None,
            notes: Vec::new(),
        });
    }
    Ok(nvml::gather(
        &args.host_root,
        args.host_root == std::path::Path::new("/"),
    ))
}

/// Exit 0 when a driver is known, 1 when neither NVML nor /proc (nor the profile) names one.
pub fn run(args: &FactsArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let f = host_facts(args)?;
    let p = &f.profile;
    if args.publish {
        let config = crate::config::Config::load(args.config.as_deref())?;
        let node = args
            .node
            .clone()
            .or(config.node.clone())
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(crate::fleet::node::host_name)
            .context("no node name: give --node")?;
        let ns = args
            .nfd_namespace
            .clone()
            .unwrap_or(config.nfd_namespace.clone());
        // A profile file describes another host: this one's doctor would say nothing about it.
        let health = if args.host_profile.is_none() {
            Some(crate::fleet::node::doctor_health(
                &args.host_root,
                p,
                &config,
            ))
        } else {
            None
        };
        let obj = crate::fleet::node::node_feature(&node, &ns, p, health.as_ref());
        let published = crate::fleet::runtime()?.block_on(async {
            let client = crate::fleet::kube_api::client().await?;
            crate::fleet::kube_api::apply_node_feature(client, &obj).await
        })?;
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &obj)?;
            writeln!(out)?;
        } else if published == crate::fleet::kube_api::Published::NodeFeature {
            writeln!(out, "published NodeFeature {ns}/cuda-preflight-{node}")?;
        } else {
            writeln!(
                out,
                "NFD is not installed (no NodeFeature API): labelled Node {node} directly (labels only, no features)"
            )?;
        }
        return Ok(0);
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, p)?;
        writeln!(out)?;
    } else {
        let source = match (&args.host_profile, f.source) {
            (Some(path), _) => format!("profile {}", path.display()),
            (None, FactSource::Nvml) => "NVML".to_string(),
            (None, FactSource::Proc) => {
                format!("{}", args.host_root.join("proc/driver/nvidia").display())
            }
            (None, FactSource::None) => "none".to_string(),
        };
        let driver = match (&p.driver_version, &p.cuda_driver_version) {
            (Some(d), Some(c)) => format!("{d} (CUDA {c})"),
            (Some(d), None) => d.clone(),
            (None, _) => "not found".to_string(),
        };
        writeln!(out, "{:<9} {driver}", "driver")?;
        writeln!(out, "{:<9} {source}", "source")?;
        if !p.device_majors.is_empty() {
            let m: Vec<String> = p
                .device_majors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(out, "{:<9} {}", "majors", m.join(", "))?;
        }
        let rows: Vec<[String; 6]> = p
            .gpus
            .iter()
            .map(|g| {
                [
                    format!("gpu {}", g.index),
                    g.name.clone(),
                    if g.compute_capability.is_empty() {
                        "cc ?".into()
                    } else {
                        format!("cc {}", g.compute_capability)
                    },
                    if g.nvml_brand.is_empty() {
                        g.brand.clone()
                    } else {
                        format!("{} ({})", g.brand, g.nvml_brand)
                    },
                    g.memory_total_mib
                        .map(|m| format!("{m} MiB"))
                        .unwrap_or_default(),
                    if g.mig {
                        "mig on".into()
                    } else {
                        "mig off".into()
                    },
                ]
            })
            .collect();
        let w: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r.iter().zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
            writeln!(out, "{:<9} {}", line[0], line[1..].join("  ").trim_end())?;
        }
        if p.gpus.is_empty() {
            writeln!(out, "{:<9} none found", "gpus")?;
        }
        for n in &f.notes {
            writeln!(out, "{:<9} {n}", "note")?;
        }
        if p.driver_version.is_none() {
            writeln!(
                out,
                "no NVIDIA driver found: is the driver loaded (lsmod | grep nvidia)?"
            )?;
        }
    }
    Ok(if p.driver_version.is_some() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_host_profile_shape() {
        let args = FactsArgs {
            json: true,
            host_root: "/".into(),
            host_profile: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hosts/h100-580.json").into(),
            ),
            publish: false,
            node: None,
            nfd_namespace: None,
            config: None,
        };
        let mut out = Vec::new();
        assert_eq!(run(&args, &mut out).unwrap(), 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cuda_driver_version",
                "device_majors",
                "driver_version",
                "gpus"
            ]
        );
        assert_eq!(v["gpus"][0]["nvml_brand"], "nvidia");
        assert_eq!(v["gpus"][0]["brand"], "datacenter");
        assert_eq!(v["device_majors"]["nvidia-caps"], 241);
    }

    #[test]
    fn human_output_from_a_fixture_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/driver/nvidia")).unwrap();
        std::fs::write(
            d.path().join("proc/driver/nvidia/version"),
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n",
        )
        .unwrap();
        let args = FactsArgs {
            json: false,
            host_root: d.path().into(),
            host_profile: None,
            publish: false,
            node: None,
            nfd_namespace: None,
            config: None,
        };
        let mut out = Vec::new();
        assert_eq!(run(&args, &mut out).unwrap(), 0);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("driver    535.104.05 (CUDA 12.2)\n"), "{s}");
        assert!(s.contains("gpus      none found"), "{s}");

        let empty = tempfile::tempdir().unwrap();
        let args = FactsArgs {
            json: false,
            host_root: empty.path().into(),
            host_profile: None,
            publish: false,
            node: None,
            nfd_namespace: None,
            config: None,
        };
        let mut out = Vec::new();
        assert_eq!(run(&args, &mut out).unwrap(), 1);
    }
}
