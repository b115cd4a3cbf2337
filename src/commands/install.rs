//! `cuda-preflight install|uninstall docker|podman|containerd [--dry-run]`: register the hook with
//! an engine, or take it away again.
//!
//! * docker: merges a `cuda-preflight` runtime (the shim) into `daemon.json` and makes it the
//!   default, keeping every other key; the file as it was before the first install is copied to
//!   `<file>.cuda-preflight.bak` (a later install never overwrites it: the file then already
//!   names our runtime). `uninstall` removes the entry and gives `default-runtime` back its old
//!   value (from the backup) or removes it; where nothing else changed since, the backup's bytes
//!   come back exactly (and a file install created is removed). A symlinked `daemon.json` is
//!   edited where it points; the link stays.
//! * podman: writes the hooks-directory entry (`hooks/oci-hooks.d/cuda-preflight.json`, naming
//!   this installation's binary); `uninstall` removes it.
//! * containerd: prints the snippet to merge; it is not applied, because a TOML round trip would
//!   drop the comments people keep in `/etc/containerd/config.toml`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::shim;

pub const RUNTIME_NAME: &str = "cuda-preflight";
const PODMAN_HOOK: &str = include_str!("../../hooks/oci-hooks.d/cuda-preflight.json");
const CONTAINERD_SNIPPET: &str = include_str!("../../hooks/containerd/config.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Docker,
    Podman,
    Containerd,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The engine to register with
    #[arg(value_enum)]
    pub engine: Engine,
    /// Print what would be written; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Docker's daemon configuration
    #[arg(long, value_name = "FILE", default_value = "/etc/docker/daemon.json")]
    pub daemon_json: PathBuf,
    /// Podman's (and CRI-O's) hooks directory
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/containers/oci/hooks.d"
    )]
    pub hooks_dir: PathBuf,
    /// Where `cuda-preflight` and `cuda-preflight-runtime` are installed [default: this binary's directory]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not JSON: {error}")]
    BadJson {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("daemon.json: {0}")]
    BadDaemonJson(&'static str),
    #[error(transparent)]
    Write(#[from] shim::ShimError),
    #[error("cannot tell where this binary is installed: {0}; give --bin-dir")]
    NoBinDir(std::io::Error),
}

type Result<T> = std::result::Result<T, InstallError>;

/// `daemon.json` with our runtime added and made the default; every other key kept.
pub fn docker_install(mut conf: Value, shim_path: &Path) -> Result<Value> {
    let obj = conf
        .as_object_mut()
        .ok_or(InstallError::BadDaemonJson("not a JSON object"))?;
    let runtimes = obj.entry("runtimes").or_insert_with(|| json!({}));
    let runtimes = runtimes
        .as_object_mut()
        .ok_or(InstallError::BadDaemonJson("`runtimes` is not an object"))?;
    // An entry already there keeps its own keys (runtimeArgs naming another config file).
    let entry = runtimes.entry(RUNTIME_NAME).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry["path"] = json!(shim_path.to_string_lossy());
    obj.insert("default-runtime".into(), json!(RUNTIME_NAME));
    Ok(conf)
}

/// `daemon.json` without our runtime; `default-runtime` as the backup had it (none: removed).
pub fn docker_uninstall(mut conf: Value, backup: Option<&Value>) -> Result<Value> {
    let obj = conf
        .as_object_mut()
        .ok_or(InstallError::BadDaemonJson("not a JSON object"))?;
    if let Some(rt) = obj.get_mut("runtimes").and_then(Value::as_object_mut) {
        rt.remove(RUNTIME_NAME);
        if rt.is_empty() {
            obj.remove("runtimes");
        }
    }
    if obj.get("default-runtime") == Some(&json!(RUNTIME_NAME)) {
        match backup
            .and_then(|b| b.get("default-runtime"))
            .filter(|d| *d != &json!(RUNTIME_NAME))
        {
            Some(old) => obj.insert("default-runtime".into(), old.clone()),
            None => obj.remove("default-runtime"),
        };
    }
    Ok(conf)
}

/// The hooks-directory entry, naming `hook_path`.
pub fn podman_hook(hook_path: &Path) -> Value {
    let mut v: Value = serde_json::from_str(PODMAN_HOOK).expect("hooks/ JSON is checked by tests");
    v["hook"]["path"] = json!(hook_path.to_string_lossy());
    v
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Some(json!({}))),
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| InstallError::BadJson {
                path: path.to_path_buf(),
                error: source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Io {
            path: path.to_path_buf(),
            error: source,
        }),
    }
}

fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".cuda-preflight.bak");
    PathBuf::from(s)
}

/// Marks that `install` created the file (there was none): `uninstall` then removes it.
fn created_marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".cuda-preflight.absent");
    PathBuf::from(s)
}

/// The file to write for `path`: where its links lead (a configuration-management tool's link
/// stays a link), or `path` itself where it does not exist yet.
fn write_target(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether a `daemon.json` already names our runtime (a file `install` wrote).
fn names_ours(v: &Value) -> bool {
    v.get("runtimes")
        .and_then(|r| r.get(RUNTIME_NAME))
        .is_some()
        || v.get("default-runtime") == Some(&json!(RUNTIME_NAME))
}

fn bin_dir(args: &InstallArgs) -> Result<PathBuf> {
    match &args.bin_dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
            .map_err(InstallError::NoBinDir),
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("a Value always serialises");
    b.push(b'\n');
    b
}

/// Write `new` over `path` (through its links) unless it is already so. The old file goes to the
/// backup first where `backup` says so: only an original the engine had before us is worth
/// keeping, and a backup already there is never overwritten by a file that names our runtime.
fn apply(
    path: &Path,
    old: Option<&Value>,
    new: &Value,
    backup: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if old == Some(new) {
        writeln!(
            out,
            "{}: already as wanted, nothing changed",
            path.display()
        )?;
        return Ok(());
    }
    if old.is_some() && backup {
        let bak = backup_path(path);
        std::fs::copy(path, &bak).map_err(|source| InstallError::Io {
            path: bak.clone(),
            error: source,
        })?;
        writeln!(out, "{}: previous version saved", bak.display())?;
    }
    shim::write_atomic(&write_target(path), &pretty(new)).map_err(InstallError::from)?;
    writeln!(out, "{}: written", path.display())?;
    Ok(())
}

pub fn run(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let dir = bin_dir(args)?;
    match args.engine {
        Engine::Docker => {
            let old = read_json(&args.daemon_json)?;
            let new = docker_install(
                old.clone().unwrap_or_else(|| json!({})),
                &dir.join("cuda-preflight-runtime"),
            )?;
            if args.dry_run {
                writeln!(out, "would write {}:", args.daemon_json.display())?;
                out.write_all(&pretty(&new))?;
            } else {
                // The original is kept once: a second install (another --bin-dir) must not
                // replace it with a file that already names our runtime (issue 22).
                let keep = old
                    .as_ref()
                    .is_some_and(|o| !names_ours(o) || !backup_path(&args.daemon_json).exists());
                if old.is_none() {
                    let m = created_marker(&args.daemon_json);
                    std::fs::write(&m, b"").map_err(|source| InstallError::Io {
                        path: m.clone(),
                        error: source,
                    })?;
                }
                apply(&args.daemon_json, old.as_ref(), &new, keep, out)?;
                writeln!(
                    out,
                    "reload dockerd to use it: systemctl reload docker (SIGHUP)"
                )?;
            }
        }
        Engine::Podman => {
            let path = args.hooks_dir.join("cuda-preflight.json");
            let new = podman_hook(&dir.join("cuda-preflight"));
            if args.dry_run {
                writeln!(out, "would write {}:", path.display())?;
                out.write_all(&pretty(&new))?;
            } else {
                std::fs::create_dir_all(&args.hooks_dir).map_err(|source| InstallError::Io {
                    path: args.hooks_dir.clone(),
                    error: source,
                })?;
                let old = read_json(&path)?;
                apply(&path, old.as_ref(), &new, true, out)?;
            }
        }
        Engine::Containerd => {
            let snippet = CONTAINERD_SNIPPET.replace(
                "/usr/bin/cuda-preflight-runtime",
                &dir.join("cuda-preflight-runtime").to_string_lossy(),
            );
            writeln!(
                out,
                "# not applied: merge this into /etc/containerd/config.toml, then restart containerd"
            )?;
            out.write_all(snippet.as_bytes())?;
        }
    }
    Ok(0)
}

pub fn run_uninstall(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    match args.engine {
        Engine::Docker => {
            let Some(old) = read_json(&args.daemon_json)? else {
                writeln!(
                    out,
                    "{}: does not exist, nothing to do",
                    args.daemon_json.display()
                )?;
                return Ok(0);
            };
            let bak = backup_path(&args.daemon_json);
            let marker = created_marker(&args.daemon_json);
            let backup = read_json(&bak).ok().flatten();
            let new = docker_uninstall(old.clone(), backup.as_ref())?;
            if args.dry_run {
                writeln!(out, "would write {}:", args.daemon_json.display())?;
                out.write_all(&pretty(&new))?;
            } else if backup.as_ref() == Some(&new) {
                // Nothing else changed since install: the original's own bytes come back
                // (formatting and key order included), written where the links lead.
                let bytes = std::fs::read(&bak).map_err(|source| InstallError::Io {
                    path: bak.clone(),
                    error: source,
                })?;
                shim::write_atomic(&write_target(&args.daemon_json), &bytes)
                    .map_err(InstallError::from)?;
                std::fs::remove_file(&bak).map_err(|source| InstallError::Io {
                    path: bak.clone(),
                    error: source,
                })?;
                writeln!(
                    out,
                    "{}: restored from {}",
                    args.daemon_json.display(),
                    bak.display()
                )?;
            } else if marker.exists() && new == json!({}) {
                std::fs::remove_file(&args.daemon_json).map_err(|source| InstallError::Io {
                    path: args.daemon_json.clone(),
                    error: source,
                })?;
                let _ = std::fs::remove_file(&marker);
                writeln!(
                    out,
                    "{}: removed (install created it)",
                    args.daemon_json.display()
                )?;
            } else {
                apply(&args.daemon_json, Some(&old), &new, false, out)?;
                // Changed since install: the edit above kept those changes; the backup is
                // spent either way.
                let _ = std::fs::remove_file(&bak);
            }
            let _ = std::fs::remove_file(&marker);
        }
        Engine::Podman => {
            let path = args.hooks_dir.join("cuda-preflight.json");
            if !path.exists() {
                writeln!(out, "{}: does not exist, nothing to do", path.display())?;
            } else if args.dry_run {
                writeln!(out, "would remove {}", path.display())?;
            } else {
                std::fs::remove_file(&path).map_err(|source| InstallError::Io {
                    path: path.clone(),
                    error: source,
                })?;
                writeln!(out, "{}: removed", path.display())?;
            }
        }
        Engine::Containerd => writeln!(
            out,
            "# not applied: remove the [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{RUNTIME_NAME}] tables from /etc/containerd/config.toml, then restart containerd"
        )?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_install_and_uninstall_table() {
        let shim = Path::new("/opt/cp/cuda-preflight-runtime");
        // (name, before, after install, after uninstall with the before as backup)
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            (
                "empty",
                json!({}),
                json!({"runtimes": {"cuda-preflight": {"path": shim}}, "default-runtime": "cuda-preflight"}),
                json!({}),
            ),
            (
                "other keys and runtimes kept; old default restored",
                json!({"log-driver": "journald", "default-runtime": "nvidia",
                       "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}}),
                json!({"log-driver": "journald", "default-runtime": "cuda-preflight",
                       "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []},
                                    "cuda-preflight": {"path": shim}}}),
                json!({"log-driver": "journald", "default-runtime": "nvidia",
                       "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}}),
            ),
            (
                "our entry's runtimeArgs kept, path updated",
                json!({"runtimes": {"cuda-preflight": {"path": "/old", "runtimeArgs": ["--cuda-preflight-config=/c"]}}}),
                json!({"runtimes": {"cuda-preflight": {"path": shim, "runtimeArgs": ["--cuda-preflight-config=/c"]}},
                       "default-runtime": "cuda-preflight"}),
                json!({}),
            ),
        ];
        for (name, before, installed, uninstalled) in cases {
            let got = docker_install(before.clone(), shim).unwrap();
            assert_eq!(got, installed, "{name}");
            assert_eq!(
                docker_install(got.clone(), shim).unwrap(),
                got,
                "{name}: idempotent"
            );
            assert_eq!(
                docker_uninstall(got, Some(&before)).unwrap(),
                uninstalled,
                "{name}"
            );
        }
        assert!(docker_install(json!({"runtimes": []}), shim).is_err());
        assert!(docker_install(json!([]), shim).is_err());
    }

    #[test]
    fn podman_hook_names_the_installed_binary() {
        let v = podman_hook(Path::new("/opt/cp/cuda-preflight"));
        assert_eq!(v["hook"]["path"], "/opt/cp/cuda-preflight");
        assert_eq!(v["stages"], json!(["createContainer"]));
    }
}
