//! A node's CUDA facts as an NFD `NodeFeature` (`nfd.k8s-sigs.io/v1alpha1`), and back.
//!
//! The object carries the host profile twice: as features (attributes `cuda-preflight.host`,
//! instances `cuda-preflight.gpu`, one per GPU) from which the webhook rebuilds the profile, and as
//! labels that nfd-master puts on the Node, so pod affinity can select on them. Versions are
//! integers there because node affinity's `Gt`/`Lt` compare integers only.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::facts::host::{Gpu, HostProfile};
use crate::fleet::LABEL_PREFIX;

pub const GROUP: &str = "nfd.k8s-sigs.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "NodeFeature";
/// NFD's label naming the node a NodeFeature is for.
pub const NODE_NAME_LABEL: &str = "nfd.node.kubernetes.io/node-name";
/// Ours, so the webhook lists only the NodeFeatures we publish.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "cuda-preflight";
pub const HOST_FEATURE: &str = "cuda-preflight.host";
pub const GPU_FEATURE: &str = "cuda-preflight.gpu";

/// `580.159.04` → 580159004 (major·10⁶ + minor·10³ + patch): ordered like the version while minor
/// and patch stay below 1000, as every NVIDIA driver's do. None for anything else.
pub fn driver_int(v: &str) -> Option<u64> {
    let mut it = v.trim().split('.');
    let major: u64 = it.next()?.parse().ok()?;
    let minor: u64 = it.next().map_or(Ok(0), str::parse).ok()?;
    let patch: u64 = it.next().map_or(Ok(0), str::parse).ok()?;
    if it.next().is_some() || minor >= 1000 || patch >= 1000 || major == 0 {
        return None;
    }
    Some(major * 1_000_000 + minor * 1_000 + patch)
}

/// `13.0` → 13000, `12.8` → 12080: `cuDriverGetVersion`'s own encoding.
pub fn cuda_int(v: &str) -> Option<u64> {
    let (ma, mi) = v.trim().split_once('.').unwrap_or((v.trim(), "0"));
    let (ma, mi): (u64, u64) = (ma.parse().ok()?, mi.parse().ok()?);
    (mi < 100).then_some(ma * 1000 + mi * 10)
}

/// `9.0` → (9, 0).
pub fn cc_parts(v: &str) -> Option<(u64, u64)> {
    let (ma, mi) = v.trim().split_once('.')?;
    let (ma, mi): (u64, u64) = (ma.parse().ok()?, mi.parse().ok()?);
    (mi < 10).then_some((ma, mi))
}

/// What `facts --publish` says about the node's health: `doctor`'s failed checks, when it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub failed: Vec<String>,
}

/// Labels for a host profile (without the prefix's namespace omitted: full keys).
pub fn labels(p: &HostProfile, health: Option<&Health>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        l.insert(format!("{LABEL_PREFIX}{k}"), v);
    };
    if let Some(d) = p.driver_version.as_deref().and_then(driver_int) {
        put("driver", d.to_string());
        put("driver.major", (d / 1_000_000).to_string());
    }
    if let Some(c) = p.cuda_driver_version.as_deref().and_then(cuda_int) {
        put("cuda", c.to_string());
    }
    put("gpu.count", p.gpus.len().to_string());
    let ccs: Vec<(u64, u64)> = p
        .gpus
        .iter()
        .filter_map(|g| cc_parts(&g.compute_capability))
        .collect();
    if let (Some(max), Some(min)) = (ccs.iter().max(), ccs.iter().min()) {
        put("cc.max", (max.0 * 10 + max.1).to_string());
        put("cc.max.major", max.0.to_string());
        put("cc.max.minor", max.1.to_string());
        put("cc.min", (min.0 * 10 + min.1).to_string());
        put("cc.min.major", min.0.to_string());
        put("cc.min.minor", min.1.to_string());
    }
    for (ma, mi) in &ccs {
        put(&format!("sm.{ma}{mi}"), "true".into());
    }
    let mut brands: Vec<&str> = p.gpus.iter().map(|g| label_value(&g.brand)).collect();
    brands.sort_unstable();
    brands.dedup();
    match brands.as_slice() {
        [] => {}
        [one] => put("brand", (*one).to_string()),
        _ => put("brand", "mixed".into()),
    }
    if !p.gpus.is_empty() {
        put("mig", p.gpus.iter().any(|g| g.mig).to_string());
        // CUDA forward compatibility runs on data-center GPUs only (docs/host-profile.md).
        put(
            "forward-compat",
            p.gpus.iter().all(|g| g.brand == "datacenter").to_string(),
        );
    }
    if let Some(h) = health {
        put("healthy", h.failed.is_empty().to_string());
    }
    l
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, else `other`.
fn label_value(s: &str) -> &str {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { s } else { "other" }
}

/// The NodeFeature object for `node` (name `cuda-preflight-<node>`).
pub fn node_feature(
    node: &str,
    namespace: &str,
    p: &HostProfile,
    health: Option<&Health>,
) -> Value {
    let mut host = BTreeMap::new();
    if let Some(d) = &p.driver_version {
        host.insert("driver_version", d.clone());
        // The integer, for NFD rules (`Gt`/`Lt` compare integers): the image-compatibility spec.
        if let Some(i) = driver_int(d) {
            host.insert("driver", i.to_string());
        }
    }
    if let Some(c) = &p.cuda_driver_version {
        host.insert("cuda_driver_version", c.clone());
    }
    if let Some(h) = health {
        host.insert("healthy", h.failed.is_empty().to_string());
        host.insert("doctor_failed", h.failed.join(","));
    }
    let gpus: Vec<Value> = p
        .gpus
        .iter()
        .map(|g| {
            json!({"attributes": {
                "index": g.index.to_string(), "name": g.name, "compute_capability": g.compute_capability,
                "brand": g.brand, "nvml_brand": g.nvml_brand, "mig": g.mig.to_string(),
            }})
        })
        .collect();
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": format!("cuda-preflight-{node}"),
            "namespace": namespace,
            "labels": {NODE_NAME_LABEL: node, MANAGED_BY: MANAGER},
        },
        "spec": {
            "features": {
                "flags": {},
                "attributes": {HOST_FEATURE: {"elements": host}},
                "instances": {GPU_FEATURE: {"elements": gpus}},
            },
            "labels": labels(p, health),
        }
    })
}

/// This host's health as `doctor` judges it: the ids of its failed checks.
pub fn doctor_health(
    host_root: &std::path::Path,
    p: &HostProfile,
    config: &crate::config::Config,
) -> Health {
    let facts = crate::facts::host::doctor::gather(
        host_root,
        p.clone(),
        crate::facts::host::nvml::FactSource::None,
        Vec::new(),
        &config.disk_paths,
        std::time::Duration::from_millis(config.probe_deadline_ms),
        crate::facts::host::doctor::nri(
            host_root,
            config
                .nri_socket
                .as_deref()
                .unwrap_or(std::path::Path::new(crate::commands::nri::DEFAULT_SOCKET)),
            &config.state_dir,
        ),
    );
    let list = crate::rules::host::doctor::checks(
        &facts,
        crate::rules::host::doctor::Policy {
            min_free_disk_mib: config.min_free_disk_mib,
        },
    );
    Health {
        failed: list
            .iter()
            .filter(|c| c.status == crate::rules::host::doctor::Status::Fail)
            .map(|c| c.id.to_string())
            .collect(),
    }
}

/// The kernel's host name, as the kubelet names a Node by default.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// A node as the webhook sees it: its name, its profile rebuilt from a NodeFeature, its health.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub node: String,
    pub profile: HostProfile,
    /// None: not published (the node's publisher ran from a profile, or without doctor).
    pub healthy: Option<bool>,
    pub doctor_failed: String,
}

/// Back from a NodeFeature object (ours: anything else, or one without a node name, is None).
pub fn from_node_feature(obj: &Value) -> Option<NodeFacts> {
    let node = obj["metadata"]["labels"][NODE_NAME_LABEL].as_str()?;
    let feats = &obj["spec"]["features"];
    let host = feats["attributes"][HOST_FEATURE]["elements"].as_object()?;
    let s = |k: &str| host.get(k).and_then(Value::as_str).map(str::to_string);
    let gpus = feats["instances"][GPU_FEATURE]["elements"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let a = &e["attributes"];
                    let g = |k: &str| a[k].as_str().unwrap_or("").to_string();
                    Gpu {
                        index: g("index").parse().unwrap_or(0),
                        name: g("name"),
                        compute_capability: g("compute_capability"),
                        brand: g("brand"),
                        nvml_brand: g("nvml_brand"),
                        mig: g("mig") == "true",
                        ..Gpu::default()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(NodeFacts {
        node: node.to_string(),
        profile: HostProfile {
            parsed: Default::default(),
            driver_version: s("driver_version"),
            cuda_driver_version: s("cuda_driver_version"),
            device_majors: BTreeMap::new(),
            gpus,
        },
        healthy: s("healthy").map(|h| h == "true"),
        doctor_failed: s("doctor_failed").unwrap_or_default(),
    })
}

/// Back from the labels alone (clusters without NFD, where `facts --publish` labels the Node):
/// the driver from its integer, one GPU per `sm.*` label, the brand where the GPUs share one.
/// Coarser than a NodeFeature: no GPU names, counts per kind or NVML brands.
pub fn from_labels(node: &str, labels: &BTreeMap<String, String>) -> Option<NodeFacts> {
    let get = |k: &str| {
        labels
            .get(&format!("{LABEL_PREFIX}{k}"))
            .map(String::as_str)
    };
    let d: u64 = get("driver")?.parse().ok()?;
    let driver = format!("{}.{}.{:02}", d / 1_000_000, d / 1_000 % 1_000, d % 1_000);
    let cuda = get("cuda")
        .and_then(|c| c.parse::<u64>().ok())
        .map(|c| format!("{}.{}", c / 1000, c % 1000 / 10));
    let brand = get("brand").filter(|b| *b != "mixed").unwrap_or("");
    let gpus = labels
        .iter()
        .filter(|(_, v)| v.as_str() == "true")
        .filter_map(|(k, _)| k.strip_prefix(LABEL_PREFIX)?.strip_prefix("sm."))
        .filter_map(|cc| {
            // `90` → 9.0, `120` → 12.0: the minor is one digit (cc_parts).
            let (ma, mi) = cc.split_at(cc.len().checked_sub(1)?);
            Some(format!("{}.{mi}", ma.parse::<u64>().ok()?))
        })
        .enumerate()
        .map(|(i, cc)| Gpu {
            index: i as u32,
            compute_capability: cc,
            brand: brand.to_string(),
            mig: get("mig") == Some("true"),
            ..Gpu::default()
        })
        .collect();
    Some(NodeFacts {
        node: node.to_string(),
        profile: HostProfile {
            parsed: Default::default(),
            driver_version: Some(driver),
            cuda_driver_version: cuda,
            device_majors: BTreeMap::new(),
            gpus,
        },
        healthy: get("healthy").map(|h| h == "true"),
        doctor_failed: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(driver: &str, cuda: &str, ccs: &[(&str, &str)]) -> HostProfile {
        HostProfile {
            parsed: Default::default(),
            driver_version: Some(driver.into()),
            cuda_driver_version: Some(cuda.into()),
            device_majors: BTreeMap::new(),
            gpus: ccs
                .iter()
                .enumerate()
                .map(|(i, (cc, brand))| Gpu {
                    index: i as u32,
                    name: "NVIDIA Test GPU".into(),
                    compute_capability: (*cc).into(),
                    brand: (*brand).into(),
                    nvml_brand: "nvidia".into(),
                    ..Gpu::default()
                })
                .collect(),
        }
    }

    #[test]
    fn versions_as_integers_keep_their_order() {
        for (v, want) in [
            ("580.159.04", Some(580_159_004)),
            ("535.104.05", Some(535_104_005)),
            ("570.86", Some(570_086_000)),
            ("575", Some(575_000_000)),
            ("1.2.3.4", None),
            ("580.1000.1", None),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(driver_int(v), want, "{v}");
        }
        assert!(driver_int("535.104.05") > driver_int("535.54.03"));
        assert!(driver_int("580.65.06") < driver_int("580.159.04"));
        for (v, want) in [
            ("13.0", Some(13000)),
            ("12.8", Some(12080)),
            ("12.10", Some(12100)),
            ("12", Some(12000)),
            ("a.b", None),
        ] {
            assert_eq!(cuda_int(v), want, "{v}");
        }
    }

    #[test]
    fn labels_for_one_and_mixed_gpus() {
        let l = labels(
            &profile("580.159.04", "13.0", &[("9.0", "datacenter")]),
            Some(&Health { failed: vec![] }),
        );
        let get = |k: &str| l.get(&format!("{LABEL_PREFIX}{k}")).cloned();
        assert_eq!(get("driver").as_deref(), Some("580159004"));
        assert_eq!(get("driver.major").as_deref(), Some("580"));
        assert_eq!(get("cuda").as_deref(), Some("13000"));
        assert_eq!(get("cc.max").as_deref(), Some("90"));
        assert_eq!(get("cc.min.major").as_deref(), Some("9"));
        assert_eq!(get("sm.90").as_deref(), Some("true"));
        assert_eq!(get("brand").as_deref(), Some("datacenter"));
        assert_eq!(get("forward-compat").as_deref(), Some("true"));
        assert_eq!(get("mig").as_deref(), Some("false"));
        assert_eq!(get("healthy").as_deref(), Some("true"));

        let l = labels(
            &profile(
                "570.86.10",
                "12.8",
                &[("12.0", "geforce"), ("8.6", "workstation")],
            ),
            None,
        );
        let get = |k: &str| l.get(&format!("{LABEL_PREFIX}{k}")).cloned();
        assert_eq!(get("cc.max").as_deref(), Some("120"));
        assert_eq!(get("cc.min").as_deref(), Some("86"));
        assert_eq!(get("cc.max.major").as_deref(), Some("12"));
        assert_eq!(get("brand").as_deref(), Some("mixed"));
        assert_eq!(get("forward-compat").as_deref(), Some("false"));
        assert_eq!(get("healthy"), None);
        // Every label is valid for the API server: name ≤ 63, value ≤ 63 of [A-Za-z0-9._-].
        for (k, v) in &l {
            let name = k.rsplit('/').next().unwrap();
            assert!(name.len() <= 63 && v.len() <= 63, "{k}={v}");
            assert!(
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            );
        }
    }

    #[test]
    fn labels_round_trip_where_they_can() {
        let p = profile("570.172.08", "12.8", &[("12.0", "geforce")]);
        let back = from_labels("n", &labels(&p, Some(&Health { failed: vec![] }))).unwrap();
        assert_eq!(back.profile.driver_version.as_deref(), Some("570.172.08"));
        assert_eq!(back.profile.cuda_driver_version.as_deref(), Some("12.8"));
        assert_eq!(back.profile.gpus.len(), 1);
        assert_eq!(back.profile.gpus[0].compute_capability, "12.0");
        assert_eq!(back.profile.gpus[0].brand, "geforce");
        assert_eq!(back.healthy, Some(true));
        let p = profile(
            "535.104.05",
            "12.2",
            &[("8.0", "datacenter"), ("9.0", "datacenter")],
        );
        let back = from_labels("n", &labels(&p, None)).unwrap();
        let ccs: Vec<&str> = back
            .profile
            .gpus
            .iter()
            .map(|g| g.compute_capability.as_str())
            .collect();
        assert_eq!(ccs, ["8.0", "9.0"]);
        assert_eq!(back.profile.driver_version.as_deref(), Some("535.104.05"));
        assert_eq!(back.healthy, None);
        assert!(from_labels("n", &BTreeMap::new()).is_none());
    }

    #[test]
    fn node_feature_round_trips() {
        let p = profile(
            "535.104.05",
            "12.2",
            &[("8.0", "datacenter"), ("8.0", "datacenter")],
        );
        let h = Health {
            failed: vec!["kernel-modules".into()],
        };
        let obj = node_feature("gpu-a100-1", "node-feature-discovery", &p, Some(&h));
        assert_eq!(obj["metadata"]["name"], "cuda-preflight-gpu-a100-1");
        assert_eq!(
            obj["spec"]["features"]["attributes"][HOST_FEATURE]["elements"]["driver"],
            "535104005"
        );
        assert_eq!(
            obj["spec"]["labels"][format!("{LABEL_PREFIX}healthy")],
            "false"
        );
        let back = from_node_feature(&obj).unwrap();
        assert_eq!(back.node, "gpu-a100-1");
        assert_eq!(back.healthy, Some(false));
        assert_eq!(back.doctor_failed, "kernel-modules");
        let mut want = p.clone();
        for g in &mut want.gpus {
            g.uuid.clear();
        }
        assert_eq!(back.profile, want);
        // Not ours: no node name.
        assert!(from_node_feature(&json!({"metadata": {}})).is_none());
    }
}
