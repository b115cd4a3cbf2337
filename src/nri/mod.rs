//! The NRI (Node Resource Interface) plugin protocol: the runtime's socket, the multiplexer on it
//! (`mux`), the generated API (`api`, `api_ttrpc`: from containerd/nri v0.12.0
//! `pkg/api/api.proto`, vendored with its licence in `proto/nri/`), and one plugin session:
//! connect, serve the Plugin service on conn 1, register through the Runtime service on conn 2,
//! then answer until the runtime closes the connection. The sequence follows containerd/nri
//! `pkg/stub`: RegisterPlugin, then the runtime calls Configure (we answer with the events we
//! subscribe to) and Synchronize (the containers that exist), then events.
//!
//! What the plugin decides lives in a [`Handler`]; this module only speaks the protocol.

#[allow(clippy::all, unused_qualifications, rust_2018_idioms)]
pub mod api;
#[allow(clippy::all, unused_qualifications, rust_2018_idioms)]
pub mod api_ttrpc;
pub mod mux;

use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `<state_dir>/nri.json`: the plugin's state, rewritten at each change; `doctor` reads it.
pub const STATE_FILE: &str = "nri.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginState {
    pub pid: u32,
    pub socket: std::path::PathBuf,
    /// Where `/healthz` and `/metrics` are served, if anywhere.
    pub listen: Option<String>,
    pub registered: bool,
    /// Seconds since the epoch of the last change.
    pub since: u64,
    /// The runtime's name and version, as it said at Configure.
    pub runtime: String,
}

/// `api.Event` values (the event mask's bit `1 << (event - 1)`).
pub const EVENT_CREATE_CONTAINER: i32 = 4;

pub fn event_mask(events: &[i32]) -> i32 {
    events.iter().fold(0, |m, e| m | 1 << (e - 1))
}

/// What a plugin does with the runtime's calls.
pub trait Handler: Send + Sync + 'static {
    /// The runtime's name and version, at Configure.
    fn configured(&self, runtime: &str, version: &str);
    /// The pods and containers that exist when the plugin registers (all batches joined).
    fn synchronize(&self, pods: &[api::PodSandbox], containers: &[api::Container]);
    /// A container is being created: an adjustment, or `Err(message)` to fail the creation.
    fn create_container(
        &self,
        pod: &api::PodSandbox,
        container: &api::Container,
    ) -> Result<api::ContainerAdjustment, String>;
}

/// The Plugin service the runtime calls on conn 1.
struct PluginService {
    handler: Arc<dyn Handler>,
    /// Synchronize batches sent with `more = true`, delivered with the last one.
    pending_sync: Mutex<(Vec<api::PodSandbox>, Vec<api::Container>)>,
}

impl api_ttrpc::Plugin for PluginService {
    fn configure(
        &self,
        _: &ttrpc::TtrpcContext,
        req: api::ConfigureRequest,
    ) -> ttrpc::Result<api::ConfigureResponse> {
        self.handler
            .configured(&req.runtime_name, &req.runtime_version);
        Ok(api::ConfigureResponse {
            events: event_mask(&[EVENT_CREATE_CONTAINER]),
            ..Default::default()
        })
    }

    fn synchronize(
        &self,
        _: &ttrpc::TtrpcContext,
        req: api::SynchronizeRequest,
    ) -> ttrpc::Result<api::SynchronizeResponse> {
        let mut pending = self.pending_sync.lock().unwrap_or_else(|p| p.into_inner());
        pending.0.extend(req.pods);
        pending.1.extend(req.containers);
        if !req.more {
            let (pods, containers) = std::mem::take(&mut *pending);
            drop(pending);
            self.handler.synchronize(&pods, &containers);
        }
        Ok(api::SynchronizeResponse {
            more: req.more,
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &ttrpc::TtrpcContext, _: api::Empty) -> ttrpc::Result<api::Empty> {
        Ok(api::Empty::new())
    }

    fn create_container(
        &self,
        _: &ttrpc::TtrpcContext,
        req: api::CreateContainerRequest,
    ) -> ttrpc::Result<api::CreateContainerResponse> {
        let pod = req.pod.as_ref().cloned().unwrap_or_default();
        let c = req.container.as_ref().cloned().unwrap_or_default();
        match self.handler.create_container(&pod, &c) {
            Ok(adjust) => Ok(api::CreateContainerResponse {
                adjust: protobuf::MessageField::some(adjust),
                ..Default::default()
            }),
            Err(msg) => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::FAILED_PRECONDITION,
                msg,
            ))),
        }
    }

    fn state_change(
        &self,
        _: &ttrpc::TtrpcContext,
        _: api::StateChangeEvent,
    ) -> ttrpc::Result<api::Empty> {
        Ok(api::Empty::new())
    }
}

/// Who the plugin registers as. Plugins are called in ascending index order.
pub struct Registration {
    pub name: String,
    pub index: String,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{path}: cannot connect to the NRI socket: {error}")]
    Connect { path: String, error: std::io::Error },
    #[error("NRI session setup failed: {0}")]
    Setup(String),
    #[error("the runtime refused the registration: {0}")]
    Register(String),
}

/// One session: connect to `socket`, register, serve until the runtime closes the connection.
/// `on_registered` runs once the runtime has accepted the plugin. Returns `Ok` when the runtime
/// ended a registered session (a restart, or it dropped the plugin), `Err` when none began.
pub fn serve(
    socket: &Path,
    reg: &Registration,
    handler: Arc<dyn Handler>,
    on_registered: &dyn Fn(),
) -> Result<(), SessionError> {
    let setup = |e: &dyn std::fmt::Display| SessionError::Setup(e.to_string());
    let trunk = UnixStream::connect(socket).map_err(|source| SessionError::Connect {
        path: socket.display().to_string(),
        error: source,
    })?;
    // The sync ttrpc server serves what a listener accepts: a private socket in a 0700
    // directory, connected to once and removed, stands in for NRI's one-connection listener.
    let dir = tempfile::Builder::new()
        .prefix("cuda-preflight-nri")
        .tempdir()
        .map_err(|e| setup(&e))?;
    let path = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&path).map_err(|e| setup(&e))?;
    let service = PluginService {
        handler,
        pending_sync: Mutex::new((Vec::new(), Vec::new())),
    };
    let mut server = ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| setup(&e))?
        .register_service(api_ttrpc::create_plugin(Arc::new(service)));
    server.start().map_err(|e| setup(&e))?;
    let plugin_end = UnixStream::connect(&path).map_err(|e| setup(&e))?;
    drop(dir);
    let (runtime_end, client_end) = UnixStream::pair().map_err(|e| setup(&e))?;
    let client = ttrpc::Client::new(client_end.into_raw_fd()).map_err(|e| setup(&e))?;
    let mux = match mux::Mux::start(trunk, plugin_end, runtime_end) {
        Ok(m) => m,
        Err(e) => {
            server.shutdown();
            return Err(setup(&e));
        }
    };
    let runtime = api_ttrpc::RuntimeClient::new(client);
    let req = api::RegisterPluginRequest {
        plugin_name: reg.name.clone(),
        plugin_idx: reg.index.clone(),
        NRI_version: "v0.12.0".into(),
        ..Default::default()
    };
    let registered = runtime.register_plugin(
        ttrpc::context::with_timeout(reg.timeout.as_nanos() as i64),
        &req,
    );
    let result = match registered {
        Ok(_) => {
            on_registered();
            mux.wait();
            Ok(())
        }
        Err(e) => Err(SessionError::Register(e.to_string())),
    };
    drop(runtime);
    mux.close();
    server.shutdown();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_mask_matches_nri() {
        // pkg/api/event.go: bit (event - 1); CreateContainer alone is 0x8.
        assert_eq!(event_mask(&[EVENT_CREATE_CONTAINER]), 0x8);
        assert_eq!(event_mask(&[1, 4]), 0x9);
        assert_eq!(event_mask(&[]), 0);
    }
}
