//! `cuda-preflight webhook`: the admission webhook (`fleet::webhook`) as a server.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;

use crate::fleet::registry::{ProfileCache, Registry};
use crate::fleet::webhook::{self, State};

#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Config file [default: /etc/cuda-preflight/config.toml; absent means defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [config: listen; default 0.0.0.0:8443]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// PEM certificate (chain) [config: tls_cert]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key [config: tls_key]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// A registry (host:port) reached over plain HTTP; repeat [config: plain_http]
    #[arg(long, value_name = "HOST")]
    pub plain_http: Vec<String>,
}

/// The registry lookups of one review must end within this; the API server waits 10 s at most.
const BUDGET: Duration = Duration::from_millis(2500);
/// How often the nodes' facts are listed again.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a profile (or its absence) is trusted per image digest.
const PROFILE_TTL: Duration = Duration::from_secs(300);

pub fn run(args: &WebhookArgs) -> anyhow::Result<i32> {
    let config = crate::config::Config::load(args.config.as_deref())?;
    let listen = args.listen.clone().unwrap_or(config.listen.clone());
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen}: not an address:port"))?;
    let cert = args
        .tls_cert
        .clone()
        .or(config.tls_cert.clone())
        .context("--tls-cert is needed")?;
    let key = args
        .tls_key
        .clone()
        .or(config.tls_key.clone())
        .context("--tls-key is needed")?;
    let tls = webhook::tls_config(&cert, &key)?;
    let mut plain = config.plain_http.clone();
    plain.extend(args.plain_http.iter().cloned());
    // One thread: a review is a few microseconds of work around registry round trips.
    let rt = crate::fleet::runtime()?;
    rt.block_on(async move {
        let client = crate::fleet::kube_api::client().await?;
        let state = Arc::new(State {
            nodes: RwLock::new(None),
            registry: Registry::new(&plain, Some(BUDGET)),
            cache: ProfileCache::new(PROFILE_TTL),
            budget: BUDGET,
        });
        tokio::spawn(webhook::refresh_nodes(state.clone(), client, REFRESH));
        eprintln!("cuda-preflight webhook: listening on https://{addr}");
        webhook::serve(addr, tls, state, None).await
    })?;
    Ok(0)
}
