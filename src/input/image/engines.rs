//! Images in an engine's store, reached as the engine's own CLI reaches them: `podman image
//! save` (with the store settings `--root`, `--runroot`, `--storage-driver` when given, else
//! Podman's own `storage.conf`), `docker save` (at `DOCKER_HOST`, as the client reads it). Each
//! writes one archive into our private directory; the engine's store is only read. Every engine
//! command has a deadline and is killed at it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Podman's `--root`, `--runroot`, `--storage-driver`.
    pub storage_root: Option<PathBuf>,
    pub storage_runroot: Option<PathBuf>,
    pub storage_driver: Option<String>,
    /// The longest one save may take.
    pub deadline: Duration,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            storage_root: None,
            storage_runroot: None,
            storage_driver: None,
            deadline: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{engine} is not installed (needed for {name})")]
    NotInstalled { engine: &'static str, name: String },
    #[error("{engine} could not save {name}: {message}")]
    Failed {
        engine: &'static str,
        name: String,
        message: String,
    },
    #[error("{engine} did not save {name} within {secs} s")]
    TimedOut {
        engine: &'static str,
        name: String,
        secs: u64,
    },
    #[error("{name}: in no local store ({})", .errors.join("; "))]
    NowhereFound { name: String, errors: Vec<String> },
}

/// The archive an engine wrote.
pub const ARCHIVE: &str = "image.tar";

/// Run an engine command that writes `dir/image.tar`; its stderr goes to a file (a pipe could
/// fill and stall it), its first line is the error message.
fn run(
    engine: &'static str,
    mut cmd: Command,
    name: &str,
    dir: &Path,
    deadline: Duration,
) -> Result<PathBuf, EngineError> {
    let failed = |message: String| EngineError::Failed {
        engine,
        name: name.to_string(),
        message,
    };
    let err_path = dir.join(format!("{engine}.stderr"));
    let err_file = std::fs::File::create(&err_path).map_err(|e| failed(e.to_string()))?;
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::NotInstalled {
                engine,
                name: name.to_string(),
            });
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::TimedOut {
                    engine,
                    name: name.to_string(),
                    secs: deadline.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    let archive = dir.join(ARCHIVE);
    if !status.success() {
        let text = std::fs::read_to_string(&err_path).unwrap_or_default();
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        let _ = std::fs::remove_file(&archive);
        return Err(failed(if line.is_empty() {
            format!("exit status {status}")
        } else {
            line
        }));
    }
    Ok(archive)
}

/// `podman image save` into `dir`, as a docker-archive: Podman's oci-archive output gzips every
/// layer, which made a 0.9 GB image take 3× as long to check (`BENCHMARKS.md`).
pub fn podman_save(o: &EngineOptions, name: &str, dir: &Path) -> Result<PathBuf, EngineError> {
    let mut cmd = Command::new("podman");
    if let Some(r) = &o.storage_root {
        cmd.arg("--root").arg(r);
    }
    if let Some(r) = &o.storage_runroot {
        cmd.arg("--runroot").arg(r);
    }
    if let Some(d) = &o.storage_driver {
        cmd.arg("--storage-driver").arg(d);
    }
    // No event is worth recording for a read, and the journal may not be there.
    cmd.args([
        "--events-backend",
        "none",
        "image",
        "save",
        "--format",
        "oci-archive",
        "-o",
    ])
    .arg(dir.join(ARCHIVE))
    .arg(name);
    run("podman", cmd, name, dir, o.deadline)
}

/// `docker save` into `dir`; the client finds the daemon as it always does (`DOCKER_HOST`,
/// its context).
pub fn docker_save(o: &EngineOptions, name: &str, dir: &Path) -> Result<PathBuf, EngineError> {
    let mut cmd = Command::new("docker");
    cmd.args(["save", "-o"]).arg(dir.join(ARCHIVE)).arg(name);
    run("docker", cmd, name, dir, o.deadline)
}

/// A bare name: Podman's store first, then Docker's. Returns the archive (Docker's format
/// from both).
pub fn save_from_any(
    o: &EngineOptions,
    name: &str,
    dir: &Path,
) -> Result<(PathBuf, bool), EngineError> {
    let mut errors = Vec::new();
    match podman_save(o, name, dir) {
        Ok(p) => return Ok((p, true)),
        Err(e) => errors.push(e.to_string()),
    }
    match docker_save(o, name, dir) {
        Ok(p) => return Ok((p, true)),
        Err(e) => errors.push(e.to_string()),
    }
    Err(EngineError::NowhereFound {
        name: name.to_string(),
        errors,
    })
}
