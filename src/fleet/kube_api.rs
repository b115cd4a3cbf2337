//! The API server through `kube`: server-side apply of our NodeFeature, and the list the webhook
//! matches against. The client is configured as kubectl's is (`KUBECONFIG`, `~/.kube/config`, or
//! the pod's service account).

use anyhow::Context;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use crate::fleet::node::{self, NodeFacts};

pub async fn client() -> anyhow::Result<kube::Client> {
    crate::fleet::install_crypto();
    // kube's error repeats its causes in its own message: one line, not the whole chain.
    kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes API configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
        )
    })
}

fn node_features(client: kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        node::GROUP,
        node::VERSION,
        node::KIND,
    ));
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

/// Where the facts went.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    NodeFeature,
    /// NFD's API is not installed: the labels were put on the Node itself.
    NodeLabels,
}

/// The API server has no such resource type: NFD's CRDs are not installed. An unknown API group
/// answers a bare "404 page not found" (no Status object), an unknown resource of a known group
/// "the server could not find the requested resource"; a missing namespace or object is also a
/// 404, with a Status naming it, and is not this.
fn no_resource(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && (s.message.contains("could not find the requested resource")
            || s.message.trim() == "404 page not found"))
}

/// Creates or updates the object (server-side apply, field manager `cuda-preflight`). Without
/// NFD (no NodeFeature API) the object's labels are merged into the Node's own instead.
pub async fn apply_node_feature(client: kube::Client, obj: &Value) -> anyhow::Result<Published> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let dynobj: DynamicObject = serde_json::from_value(obj.clone())?;
    let r = node_features(client.clone(), Some(ns))
        .patch(
            name,
            &PatchParams::apply(node::MANAGER).force(),
            &Patch::Apply(&dynobj),
        )
        .await;
    match r {
        Ok(_) => Ok(Published::NodeFeature),
        Err(e) if no_resource(&e) => {
            let node = obj["metadata"]["labels"][node::NODE_NAME_LABEL]
                .as_str()
                .unwrap_or_default();
            let patch = serde_json::json!({"metadata": {"labels": obj["spec"]["labels"]}});
            Api::<k8s_openapi::api::core::v1::Node>::all(client)
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| {
                    format!("no NodeFeature API (NFD is not installed); labelling Node {node}")
                })?;
            Ok(Published::NodeLabels)
        }
        Err(e) => Err(e).with_context(|| format!("applying NodeFeature {ns}/{name}")),
    }
}

/// Every NodeFeature we published, in every namespace, as node facts; without NFD's API, the
/// Nodes carrying our labels, their facts read back from the labels.
pub async fn list_node_facts(client: kube::Client) -> anyhow::Result<Vec<NodeFacts>> {
    let lp = ListParams::default().labels(&format!("{}={}", node::MANAGED_BY, node::MANAGER));
    match node_features(client.clone(), None).list(&lp).await {
        Ok(list) => Ok(list
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .filter_map(|v| node::from_node_feature(&v))
            .collect()),
        Err(e) if no_resource(&e) => {
            let lp = ListParams::default().labels(&format!("{}driver", crate::fleet::LABEL_PREFIX));
            let list = Api::<k8s_openapi::api::core::v1::Node>::all(client)
                .list(&lp)
                .await
                .context("listing Nodes")?;
            Ok(list
                .items
                .iter()
                .filter_map(|n| {
                    let name = n.metadata.name.as_deref()?;
                    node::from_labels(name, n.metadata.labels.as_ref()?)
                })
                .collect())
        }
        Err(e) => Err(e).context("listing NodeFeatures"),
    }
}
