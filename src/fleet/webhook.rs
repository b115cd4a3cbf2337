//! `cuda-preflight webhook`: a mutating admission webhook for Pod CREATE. For a pod whose
//! containers ask for `nvidia.com/gpu`, it finds each such image's profile in its registry
//! (`registry`, cached by digest; the image itself is never pulled), judges every node that
//! published CUDA facts (`node`, a list refreshed in the background, never on the request path),
//! and then
//!
//! * no node runs the pod → denies, with the reason per kind of node;
//! * some do → adds required node affinity selecting them, and a warning;
//! * all do → allows (warnings from the profile's warn steps);
//! * a profile is unknown, the facts are not loaded, anything fails or runs out of time → allows
//!   with a warning saying so (the configuration's failure policy is Ignore as well).
//!
//! `review` is the decision, pure; `serve` is the HTTPS server (hyper + rustls).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};

use crate::fleet::node::{self, NodeFacts};
use crate::fleet::profile::{Fit, ImageProfile};
use crate::fleet::registry::{ProfileCache, Registry, parse_ref};

pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The deny message is cut here: the API server shows it whole to the user.
const MAX_MESSAGE: usize = 4000;
/// Node names listed per kind in a message.
const NAMES_SHOWN: usize = 3;

/// The images of the pod's containers (init containers too) that ask for NVIDIA GPUs.
pub fn gpu_images(pod: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let asks = ["limits", "requests"].iter().any(|k| {
                c["resources"][k][GPU_RESOURCE]
                    .as_str()
                    .map(|v| v.trim() != "0")
                    .or_else(|| c["resources"][k][GPU_RESOURCE].as_u64().map(|v| v > 0))
                    .unwrap_or(false)
            });
            if let (true, Some(img)) = (asks, c["image"].as_str())
                && !out.iter().any(|i| i == img)
            {
                out.push(img.to_string());
            }
        }
    }
    out
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Allow { warnings: Vec<String> },
    Deny { message: String },
    Patch { patch: Value, warnings: Vec<String> },
}

/// Nodes alike for the rules: GPU kinds (compute capability, brand class) and driver.
fn kind_key(n: &NodeFacts) -> String {
    let mut gpus: Vec<String> = n
        .profile
        .gpus
        .iter()
        .map(|g| {
            let class = if g.brand == crate::fleet::profile::DATACENTER {
                "datacenter"
            } else {
                g.brand.as_str()
            };
            format!("sm_{} {class}", g.compute_capability.replace('.', ""))
        })
        .collect();
    gpus.sort();
    gpus.dedup();
    let gpus = if gpus.is_empty() {
        "no-GPU".to_string()
    } else {
        gpus.join("+")
    };
    format!(
        "{gpus} nodes with driver {}",
        n.profile.driver_version.as_deref().unwrap_or("unknown")
    )
}

/// How one node fares with every profile: Ok(warnings) or Err(reason).
fn judge_node(n: &NodeFacts, profiles: &[(String, ImageProfile)]) -> Result<Vec<String>, String> {
    if n.healthy == Some(false) {
        return Err(format!(
            "the node's GPU stack fails `cuda-preflight doctor` ({})",
            n.doctor_failed
        ));
    }
    let mut warnings = Vec::new();
    for (image, p) in profiles {
        match p.judge(&n.profile) {
            Fit::Runs { warning } => warnings.extend(warning.map(|w| format!("{image}: {w}"))),
            Fit::Fails { reason } => return Err(format!("{image}: {reason}")),
            Fit::Unknown { why } => warnings.push(format!("{image}: not judged: {why}")),
        }
    }
    Ok(warnings)
}

struct Group<'a> {
    nodes: Vec<&'a NodeFacts>,
    verdict: Result<Vec<String>, String>,
}

fn names(g: &Group) -> String {
    let mut s: Vec<&str> = g
        .nodes
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| n.node.as_str())
        .collect();
    if g.nodes.len() > NAMES_SHOWN {
        s.push("…");
    }
    format!("{}: {}", g.nodes.len(), s.join(", "))
}

/// The decision for a pod given its GPU images' profiles (None: unknown) and the nodes' facts
/// (None: not loaded).
pub fn review(
    pod: &Value,
    profiles: &[(String, Option<ImageProfile>)],
    nodes: Option<&[NodeFacts]>,
) -> Outcome {
    let mut warnings: Vec<String> = profiles
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| format!("cuda-preflight: no profile attached to {i} in its registry: admitted without a CUDA check (attach one with `cuda-preflight check --image … --attach`)"))
        .collect();
    let known: Vec<(String, ImageProfile)> = profiles
        .iter()
        .filter_map(|(i, p)| p.clone().map(|p| (i.clone(), p)))
        .collect();
    if known.is_empty() {
        return Outcome::Allow { warnings };
    }
    let Some(nodes) = nodes.filter(|n| !n.is_empty()) else {
        warnings.push(
            "cuda-preflight: no node has published CUDA facts (`cuda-preflight facts --publish`): admitted without a CUDA check".into(),
        );
        return Outcome::Allow { warnings };
    };
    // One judgement per kind of node: 1,000 nodes are a handful of kinds.
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for n in nodes {
        let key = kind_key(n);
        let health = n.healthy == Some(false);
        let key = if health {
            format!("{key} (unhealthy)")
        } else {
            key
        };
        groups
            .entry(key)
            .or_insert_with(|| Group {
                nodes: Vec::new(),
                verdict: judge_node(n, &known),
            })
            .nodes
            .push(n);
    }
    let fitting: Vec<&Group> = groups.values().filter(|g| g.verdict.is_ok()).collect();
    if fitting.is_empty() {
        let mut message = String::from("cuda-preflight: no GPU node can run this pod: ");
        let parts: Vec<String> = groups
            .iter()
            .map(|(k, g)| {
                format!(
                    "{k} ({}): {}",
                    names(g),
                    g.verdict.as_ref().err().map_or("", String::as_str)
                )
            })
            .collect();
        message.push_str(&parts.join(" | "));
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        return Outcome::Deny { message };
    }
    for g in &fitting {
        for w in g.verdict.as_ref().map(Vec::as_slice).unwrap_or_default() {
            // The same warning from several kinds of node is said once.
            let w = format!("cuda-preflight: {w}");
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    if fitting.len() == groups.len() {
        return Outcome::Allow { warnings };
    }
    let fit_nodes: Vec<&NodeFacts> = fitting
        .iter()
        .flat_map(|g| g.nodes.iter().copied())
        .collect();
    let terms = affinity(&known, &groups);
    let excluded: Vec<String> = groups
        .iter()
        .filter_map(|(k, g)| {
            g.verdict
                .as_ref()
                .err()
                .map(|e| format!("{k} ({}): {e}", names(g)))
        })
        .collect();
    warnings.push(format!(
        "cuda-preflight: {} of {} GPU nodes can run this pod; node affinity added for them. Excluded: {}",
        fit_nodes.len(),
        nodes.len(),
        excluded.join(" | ")
    ));
    Outcome::Patch {
        patch: affinity_patch(pod, &terms),
        warnings,
    }
}

/// Node-selector terms that admit exactly the fitting nodes: the profiles' label terms where they
/// select exactly those (checked against the labels each kind of node publishes: every node of a
/// group has the same GPU kinds, brand, driver and health, all a term looks at), else node names.
fn affinity(known: &[(String, ImageProfile)], groups: &BTreeMap<String, Group>) -> Vec<Value> {
    let fitting = || groups.values().filter(|g| g.verdict.is_ok());
    let mut present: Vec<(String, String)> = fitting()
        .filter_map(|g| g.nodes.first())
        .flat_map(|n| n.profile.gpus.iter())
        .map(|g| (g.compute_capability.clone(), g.brand.clone()))
        .collect();
    present.sort();
    present.dedup();
    if let [(_, p)] = known {
        let mut terms = p.affinity_terms(&present);
        for t in &mut terms {
            if let Some(e) = t["matchExpressions"].as_array_mut() {
                e.push(
                    json!({"key": format!("{}healthy", crate::fleet::LABEL_PREFIX),
                              "operator": "NotIn", "values": ["false"]}),
                );
            }
        }
        let selects = |n: &NodeFacts| {
            let health = n.healthy.map(|h| node::Health {
                failed: if h {
                    vec![]
                } else {
                    vec![n.doctor_failed.clone()]
                },
            });
            let labels = node::labels(&n.profile, health.as_ref());
            terms.iter().any(|t| term_matches(t, &labels))
        };
        let exact = groups.values().all(|g| {
            g.nodes
                .first()
                .is_none_or(|n| selects(n) == g.verdict.is_ok())
        });
        if exact && !terms.is_empty() {
            return terms;
        }
    }
    let names: Vec<&str> = fitting()
        .flat_map(|g| g.nodes.iter().map(|n| n.node.as_str()))
        .collect();
    vec![json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": names}]})]
}

/// The scheduler's reading of one node-selector term's expressions on a node's labels.
pub fn term_matches(term: &Value, labels: &BTreeMap<String, String>) -> bool {
    term["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let vals: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).map(String::as_str);
            let int = |s: &str| s.parse::<i64>().ok();
            match e["operator"].as_str().unwrap_or("") {
                "In" => have.is_some_and(|h| vals.contains(&h)),
                "NotIn" => have.is_none_or(|h| !vals.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                "Gt" => matches!((have.and_then(int), vals.first().and_then(|v| int(v))), (Some(h), Some(v)) if h > v),
                "Lt" => matches!((have.and_then(int), vals.first().and_then(|v| int(v))), (Some(h), Some(v)) if h < v),
                _ => false,
            }
        })
}

/// A JSONPatch that requires `terms` on top of the pod's own required node affinity: each of the
/// pod's terms ANDed with each of ours (terms are ORed, expressions within a term ANDed).
pub fn affinity_patch(pod: &Value, terms: &[Value]) -> Value {
    let spec = &pod["spec"];
    let na = &spec["affinity"]["nodeAffinity"];
    let req = &na["requiredDuringSchedulingIgnoredDuringExecution"];
    let existing = req["nodeSelectorTerms"]
        .as_array()
        .filter(|t| !t.is_empty());
    let merged: Vec<Value> = match existing {
        None => terms.to_vec(),
        Some(theirs) => theirs
            .iter()
            .flat_map(|a| {
                terms.iter().map(move |b| {
                    let cat = |k: &str| {
                        let mut v: Vec<Value> = a[k].as_array().cloned().unwrap_or_default();
                        v.extend(b[k].as_array().cloned().unwrap_or_default());
                        v
                    };
                    let mut t = serde_json::Map::new();
                    for k in ["matchExpressions", "matchFields"] {
                        let v = cat(k);
                        if !v.is_empty() {
                            t.insert(k.into(), Value::Array(v));
                        }
                    }
                    Value::Object(t)
                })
            })
            .collect(),
    };
    let required = json!({"nodeSelectorTerms": merged});
    let op = if spec["affinity"].is_null() {
        json!({"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}})
    } else if na.is_null() {
        json!({"op": "add", "path": "/spec/affinity/nodeAffinity", "value": {"requiredDuringSchedulingIgnoredDuringExecution": required}})
    } else if req.is_null() {
        json!({"op": "add", "path": "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution", "value": required})
    } else {
        json!({"op": "replace", "path": "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", "value": merged})
    };
    json!([op])
}

/// The AdmissionReview response for an outcome.
pub fn response(uid: &str, outcome: &Outcome) -> Value {
    let mut r = json!({"uid": uid, "allowed": true});
    match outcome {
        Outcome::Allow { warnings } => {
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings);
            }
        }
        Outcome::Deny { message } => {
            r["allowed"] = json!(false);
            r["status"] = json!({"code": 403, "reason": "Forbidden", "message": message});
        }
        Outcome::Patch { patch, warnings } => {
            r["patchType"] = json!("JSONPatch");
            r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
            r["warnings"] = json!(warnings);
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
}

/// The webhook's state: the nodes' facts (refreshed in the background), the registry client and
/// the profile cache.
pub struct State {
    pub nodes: RwLock<Option<(Instant, Arc<Vec<NodeFacts>>)>>,
    pub registry: Registry,
    pub cache: ProfileCache,
    /// Time for all registry lookups of one review.
    pub budget: Duration,
}

impl State {
    /// One image's profile: its digest (HEAD), then the cache, then the referrers.
    async fn profile(&self, image: &str) -> anyhow::Result<Option<ImageProfile>> {
        let r = parse_ref(image)?;
        let digest = self.registry.resolve(&r).await?;
        if let Some(p) = self.cache.get(&digest) {
            return Ok(p);
        }
        let p = self.registry.fetch_profile(&r, &digest).await?;
        self.cache.put(&digest, p.clone());
        Ok(p)
    }

    /// A whole AdmissionReview request → response body. Never fails: errors allow with a warning.
    pub async fn handle(&self, body: &[u8]) -> Value {
        let req: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return response(
                    "",
                    &Outcome::Allow {
                        warnings: vec![format!("cuda-preflight: unreadable AdmissionReview: {e}")],
                    },
                );
            }
        };
        let request = &req["request"];
        let uid = request["uid"].as_str().unwrap_or("");
        let pod = &request["object"];
        let is_pod_create = request["operation"] == "CREATE"
            && request["kind"]["kind"] == "Pod"
            && request["subResource"].is_null();
        let images = if is_pod_create {
            gpu_images(pod)
        } else {
            Vec::new()
        };
        if images.is_empty() {
            return response(uid, &Outcome::Allow { warnings: vec![] });
        }
        let lookups = async {
            let mut out = Vec::new();
            for i in &images {
                out.push((i.clone(), self.profile(i).await));
            }
            out
        };
        let found = match tokio::time::timeout(self.budget, lookups).await {
            Ok(f) => f,
            Err(_) => {
                return response(
                    uid,
                    &Outcome::Allow {
                        warnings: vec![format!(
                            "cuda-preflight: the registry did not answer within {} ms: admitted without a CUDA check",
                            self.budget.as_millis()
                        )],
                    },
                );
            }
        };
        let mut profiles = Vec::new();
        let mut errors = Vec::new();
        for (image, r) in found {
            match r {
                Ok(p) => profiles.push((image, p)),
                Err(e) => errors.push(format!(
                    "cuda-preflight: {image}: profile lookup failed ({e:#}): admitted without a CUDA check"
                )),
            }
        }
        let nodes = self
            .nodes
            .read()
            .ok()
            .and_then(|n| n.as_ref().map(|(_, v)| v.clone()));
        let mut outcome = if errors.is_empty() {
            review(pod, &profiles, nodes.as_deref().map(Vec::as_slice))
        } else {
            Outcome::Allow { warnings: vec![] }
        };
        if let Outcome::Allow { warnings } | Outcome::Patch { warnings, .. } = &mut outcome {
            warnings.extend(errors);
        }
        response(uid, &outcome)
    }
}

/// Refresh the node list every `every` (a failed list keeps the last one).
pub async fn refresh_nodes(state: Arc<State>, client: kube::Client, every: Duration) {
    loop {
        match crate::fleet::kube_api::list_node_facts(client.clone()).await {
            Ok(list) => {
                if let Ok(mut n) = state.nodes.write() {
                    *n = Some((Instant::now(), Arc::new(list)));
                }
            }
            Err(e) => eprintln!("cuda-preflight webhook: {e:#}"),
        }
        tokio::time::sleep(every).await;
    }
}

pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::fleet::install_crypto();
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}: cannot read the certificate", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let mut c = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not go together")?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// Serve HTTPS on `addr`: POST any path = an AdmissionReview; GET /healthz = ok.
pub async fn serve(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    state: Arc<State>,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::service::service_fn;
    use hyper::{Method, Request, Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    if let Some(r) = ready {
        let _ = r.send(listener.local_addr()?);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cuda-preflight webhook: accept: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let reply = |code: StatusCode, body: Vec<u8>| {
                        Response::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(Full::new(bytes::Bytes::from(body)))
                    };
                    match (req.method(), req.uri().path()) {
                        (&Method::GET, "/healthz") => reply(StatusCode::OK, b"ok".to_vec()),
                        (&Method::POST, _) => {
                            // AdmissionReviews of pods are well under the API server's 3 MiB.
                            match Limited::new(req.into_body(), 8 << 20).collect().await {
                                Ok(b) => {
                                    let v = state.handle(&b.to_bytes()).await;
                                    reply(StatusCode::OK, v.to_string().into_bytes())
                                }
                                Err(_) => reply(StatusCode::PAYLOAD_TOO_LARGE, Vec::new()),
                            }
                        }
                        _ => reply(StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::{Gpu, HostProfile};
    use crate::fleet::profile::{DATACENTER, KindProfile, OTHER, SCHEMA, Step};
    use crate::verdict::Decision;

    fn n(name: &str, driver: &str, cc: &str, brand: &str) -> NodeFacts {
        NodeFacts {
            node: name.into(),
            profile: HostProfile {
                driver_version: Some(driver.into()),
                gpus: vec![Gpu {
                    compute_capability: cc.into(),
                    brand: brand.into(),
                    ..Gpu::default()
                }],
                ..HostProfile::default()
            },
            healthy: None,
            doctor_failed: String::new(),
        }
    }

    fn kind(cc: &str, brand: &str, min: Option<&str>, steps: &[(&str, Decision)]) -> KindProfile {
        KindProfile {
            compute_capability: cc.into(),
            brand: brand.into(),
            min_driver: min.map(str::to_string),
            steps: steps
                .iter()
                .map(|(d, v)| Step {
                    driver: (*d).into(),
                    cuda: String::new(),
                    verdict: *v,
                    reason: (*v != Decision::Allow).then(|| format!("reason at {d}")),
                })
                .collect(),
        }
    }

    /// Needs driver 580 on sm_90 and sm_80; never runs on sm_120.
    fn profile() -> ImageProfile {
        let steps = [
            ("450.51.05", Decision::Block),
            ("580.65.06", Decision::Allow),
        ];
        ImageProfile {
            schema: SCHEMA.into(),
            image: "img".into(),
            newest_driver: String::new(),
            newest_cuda: String::new(),
            kinds: vec![
                kind("9.0", DATACENTER, Some("580.65.06"), &steps),
                kind("8.0", DATACENTER, Some("580.65.06"), &steps),
                kind("12.0", OTHER, None, &[("450.51.05", Decision::Block)]),
            ],
        }
    }

    fn pod(gpu: bool) -> Value {
        let res = if gpu {
            json!({"limits": {GPU_RESOURCE: "1"}})
        } else {
            json!({})
        };
        json!({"spec": {"containers": [{"name": "c", "image": "reg/img:1", "resources": res},
                                        {"name": "side", "image": "reg/side:1"}]}})
    }

    fn cluster() -> Vec<NodeFacts> {
        vec![
            n("h100", "580.159.04", "9.0", "datacenter"),
            n("a100", "535.104.05", "8.0", "datacenter"),
            n("rtx5090", "570.86.10", "12.0", "geforce"),
        ]
    }

    #[test]
    fn gpu_containers_only() {
        assert_eq!(gpu_images(&pod(true)), ["reg/img:1"]);
        assert!(gpu_images(&pod(false)).is_empty());
        let zero = json!({"spec": {"containers": [{"image": "x", "resources": {"limits": {GPU_RESOURCE: "0"}}}]}});
        assert!(gpu_images(&zero).is_empty());
    }

    #[test]
    fn deny_patch_allow() {
        let p = profile();
        let nodes = cluster();
        // Some fit: affinity to the H100 only, a warning naming the excluded kinds.
        let out = review(
            &pod(true),
            &[("reg/img:1".into(), Some(p.clone()))],
            Some(&nodes),
        );
        let Outcome::Patch { patch, warnings } = &out else {
            panic!("{out:?}")
        };
        assert_eq!(patch[0]["op"], "add");
        assert_eq!(patch[0]["path"], "/spec/affinity");
        let terms = &patch[0]["value"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        // The label terms select exactly the H100 among the three.
        for node in &nodes {
            let labels = node::labels(&node.profile, None);
            let hit = terms
                .as_array()
                .unwrap()
                .iter()
                .any(|t| term_matches(t, &labels));
            assert_eq!(hit, node.node == "h100", "{}: {terms:#}", node.node);
        }
        let w = warnings.join("\n");
        assert!(w.contains("1 of 3 GPU nodes"), "{w}");
        assert!(w.contains("sm_80 datacenter nodes with driver 535.104.05 (1: a100): reg/img:1: reason at 450.51.05; driver 580.65.06 or newer runs it"), "{w}");
        assert!(
            w.contains("sm_120 geforce nodes with driver 570.86.10 (1: rtx5090)"),
            "{w}"
        );

        // None fits: deny, one reason per kind of node.
        let out = review(
            &pod(true),
            &[("reg/img:1".into(), Some(p.clone()))],
            Some(&nodes[1..]),
        );
        let Outcome::Deny { message } = &out else {
            panic!("{out:?}")
        };
        assert!(
            message.starts_with("cuda-preflight: no GPU node can run this pod: "),
            "{message}"
        );
        assert!(message.contains("sm_120 geforce nodes with driver 570.86.10 (1: rtx5090): reg/img:1: reason at 450.51.05; no driver runs it on this GPU"), "{message}");
        assert!(message.contains("sm_80 datacenter"), "{message}");

        // Two kinds of node that both run it with the same warning: said once.
        let mut warned = p.clone();
        for k in &mut warned.kinds {
            if let Some(s) = k.steps.last_mut().filter(|s| s.verdict == Decision::Allow) {
                s.verdict = Decision::Warn;
                s.reason = Some("JIT at first start".into());
            }
        }
        let both = [
            n("h1", "580.159.04", "9.0", "datacenter"),
            n("h2", "580.95.05", "9.0", "datacenter"),
        ];
        let out = review(
            &pod(true),
            &[("reg/img:1".into(), Some(warned))],
            Some(&both),
        );
        assert_eq!(
            out,
            Outcome::Allow {
                warnings: vec!["cuda-preflight: reg/img:1: JIT at first start".into()]
            }
        );

        // All fit: allow, nothing to add.
        let out = review(
            &pod(true),
            &[("reg/img:1".into(), Some(p.clone()))],
            Some(&nodes[..1]),
        );
        assert_eq!(out, Outcome::Allow { warnings: vec![] });

        // Unknown profile, or no facts: allow with a warning.
        for (profiles, facts) in [
            (vec![("reg/img:1".to_string(), None)], Some(&nodes[..])),
            (vec![("reg/img:1".to_string(), Some(p.clone()))], None),
            (
                vec![("reg/img:1".to_string(), Some(p.clone()))],
                Some(&[][..]),
            ),
        ] {
            let out = review(&pod(true), &profiles, facts);
            let Outcome::Allow { warnings } = &out else {
                panic!("{out:?}")
            };
            assert!(
                warnings[0].contains("admitted without a CUDA check"),
                "{warnings:?}"
            );
        }

        // An unhealthy H100 is excluded too: nothing left.
        let mut sick = nodes.clone();
        sick[0].healthy = Some(false);
        sick[0].doctor_failed = "kernel-modules".into();
        let out = review(&pod(true), &[("reg/img:1".into(), Some(p))], Some(&sick));
        let Outcome::Deny { message } = &out else {
            panic!("{out:?}")
        };
        assert!(message.contains("(unhealthy) (1: h100): the node's GPU stack fails `cuda-preflight doctor` (kernel-modules)"), "{message}");
    }

    #[test]
    fn names_when_labels_cannot_say_it() {
        // Two profiles: the label terms of one cannot express both; node names can.
        let p = profile();
        let nodes = cluster();
        let out = review(
            &pod(true),
            &[("a".into(), Some(p.clone())), ("b".into(), Some(p))],
            Some(&nodes),
        );
        let Outcome::Patch { patch, .. } = &out else {
            panic!("{out:?}")
        };
        let t = &patch[0]["value"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(t["matchFields"][0]["values"], json!(["h100"]));
    }

    #[test]
    fn the_pods_own_affinity_is_kept() {
        let mut p = pod(true);
        p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                                  {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}});
        let ours = [
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
        ];
        let patch = affinity_patch(&p, &ours);
        assert_eq!(patch[0]["op"], "replace");
        let terms = patch[0]["value"].as_array().unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[1]["matchExpressions"][0]["values"][0], "b");
        assert_eq!(terms[1]["matchFields"][0]["values"][0], "n1");
    }

    #[test]
    fn responses() {
        let r = response(
            "u1",
            &Outcome::Deny {
                message: "no".into(),
            },
        );
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(r["response"]["status"]["message"], "no");
        let r = response(
            "u2",
            &Outcome::Patch {
                patch: json!([]),
                warnings: vec!["w".into()],
            },
        );
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        assert_eq!(r["response"]["patch"], "W10=");
        assert_eq!(r["response"]["uid"], "u2");
    }
}
