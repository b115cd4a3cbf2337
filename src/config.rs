//! `/etc/cuda-preflight/config.toml`: host settings (`docs/design.md`, Configuration).
//! A missing file means the documented defaults; a file with errors is refused with a message
//! that names the file and the key (the hook then follows its `on_error` default, allow).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::finding::{FindingId, Severity};

pub const DEFAULT_PATH: &str = "/etc/cuda-preflight/config.toml";
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Block findings stop the start.
    Enforce,
    /// Block findings are recorded as warnings; the start goes on.
    Warn,
    /// Everything is recorded, nothing is shown to the container's user.
    Audit,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "warn" => Some(Mode::Warn),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Allow,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbePolicy {
    Always,
    Auto,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Finding id → severity override. Keys are checked against the finding catalog when the
    /// file is read: an unknown id is an error that names it and the nearest id.
    pub severity: BTreeMap<FindingId, Severity>,
    pub deadline_ms: u64,
    pub probe: ProbePolicy,
    pub probe_deadline_ms: u64,
    /// How long a probe result is reused for the same inputs (`probe = "auto"`).
    pub probe_cache_ttl_s: u64,
    /// How long the hook reuses the host's NVML facts (same boot, same driver); 0 asks NVML on
    /// every GPU start.
    pub host_facts_ttl_s: u64,
    pub on_timeout: OnFailure,
    pub on_error: OnFailure,
    pub allow_container_override: bool,
    pub host_profile: Option<PathBuf>,
    pub host_root: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_dir: Option<PathBuf>,
    /// The syslog socket the hook's log line is sent to (non-blocking; stderr where it is absent
    /// or full).
    pub log_socket: PathBuf,
    /// The real runtime `cuda-preflight-runtime` execs (an absolute path); none: the first of
    /// `nvidia-container-runtime`, then `runc`, found at fixed paths (`shim.rs`).
    pub runtime: Option<PathBuf>,
    /// The `cuda-preflight` binary the shim names in `config.json`; none: the one next to the shim.
    pub hook_binary: Option<PathBuf>,
    /// Reports kept in the state directory; older ones are pruned.
    pub max_reports: usize,
    /// GPU memory (MiB) a container needs free on its GPUs; the annotation
    /// `cuda-preflight/min-free-memory` overrides it per container. None: not checked.
    pub min_free_memory_mib: Option<u64>,
    /// Free space (MiB) below which a GPU container's rootfs or bind-mounted volume, or a
    /// directory `doctor` checks, is reported as nearly full.
    pub min_free_disk_mib: u64,
    /// Directories whose free space `doctor` reports: where images and models live.
    pub disk_paths: Vec<PathBuf>,
    /// The walk for the image's CUDA binaries (`facts::gpu_code::binaries`) stops after this long, this
    /// many library files opened, or this many bytes read; what it did not reach is reported.
    pub scan_budget_ms: u64,
    pub scan_max_files: usize,
    pub scan_max_bytes: u64,
    /// `<state_dir>/scan-cache` is pruned, oldest first, beyond this many bytes.
    pub scan_cache_max_bytes: u64,
    /// Podman's store for `check --image containers-storage:…` (`podman --root`, `--runroot`,
    /// `--storage-driver`); none: Podman's own `storage.conf`.
    pub storage_root: Option<PathBuf>,
    pub storage_runroot: Option<PathBuf>,
    pub storage_driver: Option<String>,
    /// Block on an unmet `NVIDIA_REQUIRE_*` (or a legacy image's `CUDA_VERSION`) on every start
    /// path. Off: only where NVIDIA's toolkit enforces it (the legacy hook, CSV mode); on CDI
    /// and explicit `--device` starts nothing checks it, and it is information.
    pub enforce_requirements: bool,
    /// `cuda-preflight-runtime` in front of `nvidia-container-runtime` in `cdi`/`jit-cdi` mode
    /// chains itself behind it (a copy of its config with `runtimes` naming the shim), so the hook
    /// goes after NVIDIA's CDI hooks. Off: the hook stays at createRuntime, before them.
    pub chain_nvidia_runtime: bool,
    /// `cuda-preflight nri`: the runtime's NRI socket; none: `/var/run/nri/nri.sock`.
    pub nri_socket: Option<PathBuf>,
    /// `cuda-preflight nri`: where `/healthz` and `/metrics` are served (`off`: nowhere); none:
    /// `127.0.0.1:9466`.
    pub nri_listen: Option<String>,
    /// `cuda-preflight nri`: the config path the added hook is given, as the host sees it (the
    /// plugin may run in a container); none: the plugin's own `--config`.
    pub nri_hook_config: Option<PathBuf>,
    /// The fleet (src/fleet/): `facts --publish`'s node name (default: the host name), the
    /// namespace of the NodeFeature objects, registries reached over plain HTTP (`host:port`),
    /// and the webhook's listen address and TLS files.
    pub node: Option<String>,
    pub nfd_namespace: String,
    pub plain_http: Vec<String>,
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Enforce,
            severity: BTreeMap::new(),
            deadline_ms: 10_000,
            probe: ProbePolicy::Auto,
            probe_deadline_ms: 5_000,
            probe_cache_ttl_s: 600,
            host_facts_ttl_s: 30,
            on_timeout: OnFailure::Allow,
            on_error: OnFailure::Allow,
            allow_container_override: false,
            host_profile: None,
            host_root: PathBuf::from("/"),
            state_dir: PathBuf::from("/run/cuda-preflight"),
            metrics_dir: None,
            log_socket: PathBuf::from("/dev/log"),
            runtime: None,
            hook_binary: None,
            max_reports: 1000,
            min_free_memory_mib: None,
            min_free_disk_mib: 1024,
            disk_paths: crate::facts::host::doctor::DEFAULT_DISK_PATHS
                .iter()
                .map(PathBuf::from)
                .collect(),
            // Well inside the hook's 10 s: a PyTorch image scans cold in well under a second.
            scan_budget_ms: 3000,
            scan_max_files: 20_000,
            scan_max_bytes: 256 << 20,
            scan_cache_max_bytes: 64 << 20,
            storage_root: None,
            storage_runroot: None,
            storage_driver: None,
            enforce_requirements: false,
            chain_nvidia_runtime: true,
            nri_socket: None,
            nri_listen: None,
            nri_hook_config: None,
            node: None,
            nfd_namespace: "node-feature-discovery".into(),
            plain_http: Vec::new(),
            listen: "0.0.0.0:8443".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Load `path`. The default path may be absent (defaults); a path given explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let bytes = match crate::input::read_capped(&path, MAX_CONFIG_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(error) => return Err(ConfigError::Read { path, error }),
        };
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            path: path.clone(),
            message: "not UTF-8 text".into(),
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text)
            .map_err(|e| e.message().to_string() + &location(text, e.span()))?;
        if c.deadline_ms == 0 {
            return Err("deadline_ms must be at least 1".into());
        }
        Ok(c)
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => format!(
            " (line {})",
            text[..r.start.min(text.len())].matches('\n').count() + 1
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("", Ok("enforce")),
            ("mode = \"warn\"", Ok("warn")),
            (
                "mode = \"audit\"\n[severity]\ndevice-node-missing = \"warn\"",
                Ok("audit"),
            ),
            ("mode = \"loud\"", Err("unknown variant `loud`")),
            ("mdoe = \"warn\"", Err("unknown field `mdoe`")),
            ("deadline_ms = 0", Err("deadline_ms must be at least 1")),
            (
                "[severity]\nno-such-id = \"warn\"",
                Err("unknown finding id \"no-such-id\""),
            ),
            (
                "mode = \"warn\"\n[severity]\ndevice-node-mising = \"warn\"",
                Err(
                    "unknown finding id \"device-node-mising\"; did you mean \"device-node-missing\"? Every id is in docs/reference/findings.md (line 3)",
                ),
            ),
            (
                "[severity]\ndevice-node-missing = \"fatal\"",
                Err("unknown variant `fatal`"),
            ),
            ("mode = ", Err("line 1")),
        ];
        for (text, want) in cases {
            match (Config::parse(text), want) {
                (Ok(c), Ok(mode)) => {
                    assert_eq!(serde_json::to_value(c.mode).unwrap(), *mode, "{text}")
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_explicit_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = Config::load(Some(&d.path().join("nope.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml: cannot read config"), "{e}");
    }
}
