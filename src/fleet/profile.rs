//! An image's requirements, computed once from the same rules `check` runs: the image's facts
//! judged on a grid of synthetic hosts — every compute capability of the knowledge table, as a
//! data-center GPU and as any other brand (forward compatibility runs on data-center GPUs only),
//! with the GA driver of every CUDA release since 11.0 — and kept as the driver steps at which
//! the verdict changes. A node is then judged without the image: its GPU kind's step at the
//! node's driver.
//!
//! Between two grid drivers the lower one's verdict holds: a driver newer than the grid's GA
//! driver of a release supports that release and nothing newer (`knowledge::cuda_for_driver`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::config::Mode;
use crate::facts::host::{Gpu, HostProfile};
use crate::finding::{Finding, Severity};
use crate::fleet::LABEL_PREFIX;
use crate::fleet::node::{cc_parts, driver_int};
use crate::knowledge::cuda::{self, Version};
use crate::pipeline::ContainerFacts;
use crate::rules;
use crate::verdict::{self, Decision};

pub const SCHEMA: &str = "cuda-preflight.image-profile/v1";
/// The profile's layer in the referrer artifact, next to NFD's spec layer.
pub const MEDIA_TYPE: &str = "application/vnd.cuda-preflight.image-profile.v1+json";
/// NFD's image-compatibility artifact (docs/usage/image-compatibility.md of NFD).
pub const NFD_ARTIFACT_TYPE: &str = "application/vnd.nfd.image-compatibility.v1alpha1";
pub const NFD_SPEC_MEDIA_TYPE: &str = "application/vnd.nfd.image-compatibility.spec.v1alpha1+yaml";

/// Two brand classes: forward compatibility is the only rule input that tells brands apart
/// besides `NVIDIA_REQUIRE_*` brand conditions, which name NVML brands.
pub const DATACENTER: &str = "datacenter";
pub const OTHER: &str = "other";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageProfile {
    pub schema: String,
    /// The image as named when the profile was computed.
    pub image: String,
    /// The newest driver judged (the GA driver of the newest CUDA release cuda-preflight knows),
    /// and its CUDA version: "no driver runs it" means none up to this one.
    #[serde(default)]
    pub newest_driver: String,
    #[serde(default)]
    pub newest_cuda: String,
    pub kinds: Vec<KindProfile>,
}

/// One GPU kind: a compute capability and a brand class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindProfile {
    /// `major.minor`
    pub compute_capability: String,
    /// `datacenter` or `other`
    pub brand: String,
    /// The oldest grid driver from which on nothing blocks (None: no driver of the grid runs it).
    pub min_driver: Option<String>,
    /// Ascending by driver; each holds until the next. The first also holds below it.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub driver: String,
    /// The CUDA version that driver supports.
    pub cuda: String,
    pub verdict: Decision,
    /// The first judging finding (block, else warn) as one line; None on allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The drivers judged: the GA driver of every CUDA `major.minor` from 11.0 on, ascending.
pub fn driver_grid() -> Vec<(Version, Version)> {
    let mut grid: Vec<(Version, Version)> = Vec::new();
    for r in cuda::toolkit_releases() {
        let mm = r.release.major_minor();
        if mm.major() < 11 || grid.iter().any(|(_, c)| *c == mm) {
            continue;
        }
        if let Some(ga) = cuda::toolkit_min_driver(&mm) {
            grid.push((ga.min_driver.clone(), mm));
        }
    }
    grid.sort_by(|a, b| a.0.cmp(&b.0));
    grid
}

/// The compute capabilities judged: every row of the knowledge table from Maxwell on.
pub fn cc_grid() -> Vec<Version> {
    cuda::compute_capabilities()
        .iter()
        .filter(|r| r.cc.major() >= 5)
        .map(|r| r.cc.clone())
        .collect()
}

/// A synthetic host: one GPU of the kind, the driver, standard device majors.
fn synthetic_host(cc: &Version, brand: &str, driver: &Version, cuda: &Version) -> HostProfile {
    let (brand, nvml_brand) = if brand == DATACENTER {
        (DATACENTER, "nvidia")
    } else {
        ("geforce", "geforce")
    };
    HostProfile {
        parsed: Default::default(),
        driver_version: Some(driver.to_string()),
        cuda_driver_version: Some(cuda.to_string()),
        device_majors: [("nvidia", 195), ("nvidia-uvm", 510), ("nvidia-caps", 511)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        gpus: vec![Gpu {
            index: 0,
            name: format!("sm_{}{}", cc.major(), cc.minor()),
            compute_capability: cc.to_string(),
            brand: brand.to_string(),
            nvml_brand: nvml_brand.to_string(),
            ..Gpu::default()
        }],
    }
}

/// The image's own rules (its CUDA versions, requirements, kernels, toolchains, loading) on a
/// host: what depends on the host's GPUs and driver, not on this machine's devices or state.
pub fn image_rules(c: &ContainerFacts, host: &HostProfile) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(image) = &c.image {
        out.extend(rules::versions::requirements::check(image, host));
        out.extend(rules::versions::driver_compat::check(image, host));
    }
    if let (Some(l), Some(image)) = (&c.load, &c.image) {
        out.extend(rules::library_loading::cuda_libraries::check(l, image));
    }
    if let Some(b) = &c.binaries {
        out.extend(rules::gpu_code::image_findings(
            b,
            &host.gpus,
            rules::gpu_code::DriverCuda::of_host(host),
        ));
    }
    if let Some(t) = &c.toolchains {
        out.extend(rules::toolchains::check(t, &host.gpus, host.cuda_driver()));
    }
    out
}

/// Evidence kept per step: enough for "which library, what it carries"; not a whole list.
const MAX_EVIDENCE: usize = 400;

/// One line for a judging finding: the error the workload meets, and why.
pub fn reason(f: &Finding) -> String {
    let mut ev = f.evidence.trim().replace('\n', " ");
    if ev.len() > MAX_EVIDENCE {
        let mut cut = MAX_EVIDENCE;
        while !ev.is_char_boundary(cut) {
            cut -= 1;
        }
        ev.truncate(cut);
        ev.push('…');
    }
    match &f.predicted {
        Some(p) => format!("{}: {} — {ev}", f.id, p.headline()),
        None => format!("{}: {ev}", f.id),
    }
}

/// The profile of an image whose facts are `c` (`image_findings`: findings about the image
/// itself, such as refused layer entries, which hold on every host).
pub fn compute(
    c: &ContainerFacts,
    image_findings: &[Finding],
    config: &Config,
    image: &str,
) -> ImageProfile {
    let grid = driver_grid();
    let mut kinds = Vec::new();
    for cc in cc_grid() {
        for brand in [DATACENTER, OTHER] {
            let mut steps: Vec<Step> = Vec::new();
            for (driver, cuda) in &grid {
                let host = synthetic_host(&cc, brand, driver, cuda);
                let mut findings = image_rules(c, &host);
                findings.extend(image_findings.iter().cloned());
                let v = verdict::decide(config, Mode::Enforce, findings);
                let judging = v
                    .findings
                    .iter()
                    .find(|f| f.severity == Severity::Block)
                    .or_else(|| v.findings.iter().find(|f| f.severity == Severity::Warn));
                let step = Step {
                    driver: driver.to_string(),
                    cuda: cuda.to_string(),
                    verdict: v.verdict,
                    reason: judging.map(reason),
                };
                // Kept only where the verdict or its reason changes.
                if steps
                    .last()
                    .is_none_or(|l| l.verdict != step.verdict || l.reason != step.reason)
                {
                    steps.push(step);
                }
            }
            let min_driver = match steps.last() {
                Some(l) if l.verdict != Decision::Block => steps
                    .iter()
                    .rposition(|s| s.verdict == Decision::Block)
                    .map_or(Some(steps[0].driver.clone()), |i| {
                        steps.get(i + 1).map(|s| s.driver.clone())
                    }),
                _ => None,
            };
            kinds.push(KindProfile {
                compute_capability: cc.to_string(),
                brand: brand.to_string(),
                min_driver,
                steps,
            });
        }
    }
    let (newest_driver, newest_cuda) = grid
        .last()
        .map(|(d, c)| (d.to_string(), c.to_string()))
        .unwrap_or_default();
    ImageProfile {
        schema: SCHEMA.to_string(),
        image: image.to_string(),
        newest_driver,
        newest_cuda,
        kinds,
    }
}

/// How one GPU kind at one driver fares.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    Runs {
        warning: Option<String>,
    },
    Fails {
        reason: String,
    },
    /// The profile has no row for this GPU or the node's facts are incomplete.
    Unknown {
        why: String,
    },
}

fn brand_class(brand: &str) -> &'static str {
    if brand == DATACENTER {
        DATACENTER
    } else {
        OTHER
    }
}

impl ImageProfile {
    pub fn kind(&self, cc: &str, brand: &str) -> Option<&KindProfile> {
        let cc = Version::parse(cc)?;
        self.kinds.iter().find(|k| {
            Version::parse(&k.compute_capability).is_some_and(|v| v == cc)
                && k.brand == brand_class(brand)
        })
    }

    /// A node: every GPU it has must run the image (the pod may get any of them).
    pub fn judge(&self, node: &HostProfile) -> Fit {
        let Some(driver) = node.driver_version.as_deref().and_then(Version::parse) else {
            return Fit::Unknown {
                why: "the node published no driver version".into(),
            };
        };
        if node.gpus.is_empty() {
            return Fit::Fails {
                reason: "the node published no GPU".into(),
            };
        }
        let mut warning = None;
        for g in &node.gpus {
            let Some(kind) = self.kind(&g.compute_capability, &g.brand) else {
                return Fit::Unknown {
                    why: format!(
                        "the profile has no row for compute capability {:?}",
                        g.compute_capability
                    ),
                };
            };
            let Some(step) = kind
                .steps
                .iter()
                .rev()
                .find(|s| Version::parse(&s.driver).is_some_and(|d| d <= driver))
                .or(kind.steps.first())
            else {
                return Fit::Unknown {
                    why: "the profile's row is empty".into(),
                };
            };
            match step.verdict {
                Decision::Block => {
                    let reason = step.reason.clone().unwrap_or_default();
                    let fix = match &kind.min_driver {
                        Some(m) => format!("driver {m} or newer runs it"),
                        None if self.newest_driver.is_empty() => {
                            "no driver runs it on this GPU".into()
                        }
                        None => format!(
                            "no driver up to {} (CUDA {}, the newest cuda-preflight knows) runs it on this GPU",
                            self.newest_driver, self.newest_cuda
                        ),
                    };
                    return Fit::Fails {
                        reason: format!("{reason}; {fix}"),
                    };
                }
                Decision::Warn => warning = warning.or(step.reason.clone()),
                Decision::Allow => {}
            }
        }
        Fit::Runs { warning }
    }

    /// Node-affinity terms (one per GPU kind and driver range that runs the image), for the
    /// kinds in `present` only: label keys of `node::labels`. Any term matching admits a node.
    pub fn affinity_terms(&self, present: &[(String, String)]) -> Vec<Value> {
        let mut terms = Vec::new();
        for kind in &self.kinds {
            let here = present.iter().any(|(cc, b)| {
                Version::parse(cc)
                    .zip(Version::parse(&kind.compute_capability))
                    .is_some_and(|(a, b)| a == b)
                    && brand_class(b) == kind.brand
            });
            let Some((ma, mi)) = cc_parts(&kind.compute_capability) else {
                continue;
            };
            if !here {
                continue;
            }
            for (lo, hi) in runs(kind) {
                let mut exprs = vec![json!({"key": format!("{LABEL_PREFIX}sm.{ma}{mi}"),
                                            "operator": "In", "values": ["true"]})];
                exprs.push(if kind.brand == DATACENTER {
                    json!({"key": format!("{LABEL_PREFIX}brand"), "operator": "In", "values": [DATACENTER]})
                } else {
                    json!({"key": format!("{LABEL_PREFIX}brand"), "operator": "NotIn", "values": [DATACENTER]})
                });
                if let Some(lo) = lo {
                    exprs.push(
                        json!({"key": format!("{LABEL_PREFIX}driver"), "operator": "Gt",
                                      "values": [(lo - 1).to_string()]}),
                    );
                }
                if let Some(hi) = hi {
                    exprs.push(
                        json!({"key": format!("{LABEL_PREFIX}driver"), "operator": "Lt",
                                      "values": [hi.to_string()]}),
                    );
                }
                terms.push(json!({"matchExpressions": exprs}));
            }
        }
        terms
    }

    /// NFD's image-compatibility spec: one rule per GPU kind and driver range that runs the image,
    /// on the features `facts --publish` puts in the NodeFeature. A node runs the image when any
    /// rule matches.
    pub fn nfd_spec(&self) -> Value {
        let mut rules = Vec::new();
        for kind in &self.kinds {
            for (lo, hi) in runs(kind) {
                let mut host = serde_json::Map::new();
                let mut ops = Vec::new();
                if let Some(lo) = lo {
                    ops.push(json!({"op": "Gt", "value": [(lo - 1).to_string()]}));
                }
                if let Some(hi) = hi {
                    ops.push(json!({"op": "Lt", "value": [hi.to_string()]}));
                }
                // One expression per key: a range becomes two features' worth of rules.
                let mut features = vec![json!({"feature": crate::fleet::node::GPU_FEATURE,
                "matchExpressions": {
                    "compute_capability": {"op": "In", "value": [kind.compute_capability]},
                    "brand": if kind.brand == DATACENTER {
                        json!({"op": "In", "value": [DATACENTER]})
                    } else {
                        json!({"op": "NotIn", "value": [DATACENTER]})
                    },
                }})];
                if let Some(op) = ops.first() {
                    host.insert("driver".into(), op.clone());
                    features.push(json!({"feature": crate::fleet::node::HOST_FEATURE, "matchExpressions": host}));
                }
                if let Some(op) = ops.get(1) {
                    features.push(json!({"feature": crate::fleet::node::HOST_FEATURE,
                                         "matchExpressions": {"driver": op}}));
                }
                rules.push(json!({
                    "name": format!("sm_{} {} driver {}", kind.compute_capability.replace('.', ""),
                                    kind.brand, range_text(lo, hi)),
                    "matchFeatures": features,
                }));
            }
        }
        json!({"version": "v1alpha1", "compatibilities": [{
            "description": format!("GPUs and drivers that run {} (cuda-preflight)", self.image),
            "rules": rules,
        }]})
    }
}

fn range_text(lo: Option<u64>, hi: Option<u64>) -> String {
    match (lo, hi) {
        (Some(l), Some(h)) => format!(">= {l} < {h}"),
        (Some(l), None) => format!(">= {l}"),
        (None, Some(h)) => format!("< {h}"),
        (None, None) => "any".into(),
    }
}

/// The driver ranges (as `node::driver_int`, `[lo, hi)`) in which nothing blocks; None: open.
fn runs(kind: &KindProfile) -> Vec<(Option<u64>, Option<u64>)> {
    let mut out = Vec::new();
    let mut start: Option<Option<u64>> = None;
    for (i, s) in kind.steps.iter().enumerate() {
        let d = driver_int(&s.driver);
        let ok = s.verdict != Decision::Block;
        match (ok, start) {
            // The first step also holds below it: an open lower end.
            (true, None) => start = Some(if i == 0 { None } else { d }),
            (false, Some(lo)) => {
                out.push((lo, d));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(lo) = start {
        out.push((lo, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(driver: &str, verdict: Decision, reason: Option<&str>) -> Step {
        Step {
            driver: driver.into(),
            cuda: String::new(),
            verdict,
            reason: reason.map(str::to_string),
        }
    }

    fn node(driver: &str, cc: &str, brand: &str) -> HostProfile {
        HostProfile {
            driver_version: Some(driver.into()),
            gpus: vec![Gpu {
                compute_capability: cc.into(),
                brand: brand.into(),
                ..Gpu::default()
            }],
            ..HostProfile::default()
        }
    }

    /// sm_90 data-center: blocks below 575.51.03 (the 12.9 GA driver), runs from there on.
    fn profile() -> ImageProfile {
        ImageProfile {
            schema: SCHEMA.into(),
            image: "example".into(),
            newest_driver: "595.45.04".into(),
            newest_cuda: "13.2".into(),
            kinds: vec![
                KindProfile {
                    compute_capability: "9.0".into(),
                    brand: DATACENTER.into(),
                    min_driver: Some("575.51.03".into()),
                    steps: vec![
                        step("450.51.05", Decision::Block, Some("too old")),
                        step("575.51.03", Decision::Allow, None),
                        step("580.65.06", Decision::Warn, Some("careful")),
                    ],
                },
                KindProfile {
                    compute_capability: "12.0".into(),
                    brand: OTHER.into(),
                    min_driver: None,
                    steps: vec![step("450.51.05", Decision::Block, Some("no sm_120 code"))],
                },
            ],
        }
    }

    #[test]
    fn nodes_are_judged_by_their_step() {
        let p = profile();
        let table = [
            ("570.86.10", "9.0", "datacenter", "fails"),
            ("575.51.03", "9.0", "datacenter", "runs"),
            ("575.64.05", "9.0", "datacenter", "runs"),
            ("580.159.04", "9.0", "datacenter", "warns"),
            // Below the grid: the first step holds.
            ("410.48", "9.0", "datacenter", "fails"),
            ("590.44.01", "12.0", "geforce", "fails"),
            // No row for this kind: unknown, never a denial.
            ("580.159.04", "9.0", "geforce", "unknown"),
            ("580.159.04", "8.0", "datacenter", "unknown"),
        ];
        for (driver, cc, brand, want) in table {
            let got = match p.judge(&node(driver, cc, brand)) {
                Fit::Runs { warning: None } => "runs",
                Fit::Runs { warning: Some(_) } => "warns",
                Fit::Fails { .. } => "fails",
                Fit::Unknown { .. } => "unknown",
            };
            assert_eq!(got, want, "{driver} {cc} {brand}");
        }
        let Fit::Fails { reason } = p.judge(&node("570.86.10", "9.0", "datacenter")) else {
            panic!()
        };
        assert_eq!(reason, "too old; driver 575.51.03 or newer runs it");
        let Fit::Fails { reason } = p.judge(&node("590.44.01", "12.0", "geforce")) else {
            panic!()
        };
        assert_eq!(
            reason,
            "no sm_120 code; no driver up to 595.45.04 (CUDA 13.2, the newest cuda-preflight knows) runs it on this GPU"
        );
    }

    #[test]
    fn affinity_follows_the_runs() {
        let p = profile();
        let t = p.affinity_terms(&[("9.0".into(), "datacenter".into())]);
        assert_eq!(t.len(), 1, "{t:#?}");
        let e = t[0]["matchExpressions"].as_array().unwrap();
        assert_eq!(e[0]["key"], format!("{LABEL_PREFIX}sm.90"));
        assert_eq!(e[1]["values"][0], "datacenter");
        assert_eq!(e[2]["operator"], "Gt");
        assert_eq!(e[2]["values"][0], "575051002");
        assert_eq!(e.len(), 3);
        // A kind not in the cluster, or one no driver runs, adds no term.
        assert!(
            p.affinity_terms(&[("12.0".into(), "geforce".into())])
                .is_empty()
        );
        assert!(p.affinity_terms(&[]).is_empty());
        let spec = p.nfd_spec();
        let rules = spec["compatibilities"][0]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["matchFeatures"][1]["matchExpressions"]["driver"]["op"],
            "Gt"
        );
    }

    #[test]
    fn runs_close_and_open() {
        let mut k = profile().kinds[0].clone();
        k.steps
            .push(step("600.0.0", Decision::Block, Some("dropped")));
        assert_eq!(runs(&k), vec![(Some(575_051_003), Some(600_000_000))]);
        k.steps.remove(0);
        assert_eq!(runs(&k), vec![(None, Some(600_000_000))]);
    }

    #[test]
    fn grids_come_from_the_knowledge_tables() {
        let g = driver_grid();
        assert!(g.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(g[0].1.to_string(), "11.0");
        assert!(
            g.iter()
                .any(|(d, c)| d.to_string() == "580.65.06" && c.to_string() == "13.0")
        );
        let cc = cc_grid();
        for want in ["8.0", "9.0", "12.0"] {
            assert!(cc.iter().any(|c| c.to_string() == want), "{want}");
        }
    }
}
