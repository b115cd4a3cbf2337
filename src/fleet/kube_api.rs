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
    kube::Client::try_default()
        .await
        .context("no Kubernetes API configuration (KUBECONFIG, ~/.kube/config or in-cluster)")
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

/// Creates or updates the object (server-side apply, field manager `cuda-preflight`).
pub async fn apply_node_feature(client: kube::Client, obj: &Value) -> anyhow::Result<()> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let dynobj: DynamicObject = serde_json::from_value(obj.clone())?;
    node_features(client, Some(ns))
        .patch(
            name,
            &PatchParams::apply(node::MANAGER).force(),
            &Patch::Apply(&dynobj),
        )
        .await
        .with_context(|| format!("applying NodeFeature {ns}/{name}"))?;
    Ok(())
}

/// Every NodeFeature we published, in every namespace, as node facts.
pub async fn list_node_facts(client: kube::Client) -> anyhow::Result<Vec<NodeFacts>> {
    let lp = ListParams::default().labels(&format!("{}={}", node::MANAGED_BY, node::MANAGER));
    let list = node_features(client, None)
        .list(&lp)
        .await
        .context("listing NodeFeatures")?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| node::from_node_feature(&v))
        .collect())
}
