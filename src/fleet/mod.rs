//! The fleet: nodes publish their CUDA facts to the cluster (`node`), an image's requirements are
//! computed once and attached to it in its registry (`profile`, `registry`), and an admission
//! webhook matches the two before a pod is scheduled (`webhook`). `kube` talks to the API server.
//! Everything here runs outside the hook's path: the hook never links a network client in.

pub mod kube_api;
pub mod node;
pub mod profile;
pub mod registry;
pub mod webhook;

/// Label and feature namespace. NFD's master accepts `*.feature.node.kubernetes.io/` labels
/// without `-extra-label-ns`; our own prefix keeps clear of GPU feature discovery's `nvidia.com/`.
pub const LABEL_PREFIX: &str = "cuda-preflight.feature.node.kubernetes.io/";

/// One tokio runtime per command: the API and registry clients are async.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// rustls needs one crypto provider per process; ring is the one built in (see Cargo.toml).
/// rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; aws-lc-rs
/// has it but needs cmake and minutes of build. The API server and registries also speak classic
/// key exchange.
#[allow(deprecated)]
pub fn install_crypto() {
    // Err means one is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
