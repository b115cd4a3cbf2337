//! `check --image REF --warm`: an image in Podman's store read where the engine keeps it
//! (`podman image mount`), not from a saved copy. The rootfs is then the engine's own overlay
//! of the image's layer directories — the identity its containers will have
//! ([`crate::facts::image::identity`]) — so the check fills the scan cache their first start
//! reads, and costs no copy of the image. Unmounted when dropped.

use std::path::PathBuf;
use std::process::Command;

use super::engines::EngineOptions;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("podman could not {what} {name}: {message}")]
    Podman {
        what: &'static str,
        name: String,
        message: String,
    },
}

/// An image mounted by Podman; unmounted on drop.
pub struct Mounted {
    pub rootfs: PathBuf,
    /// `Config.Env` of the image, as `KEY=VALUE`.
    pub env: Vec<String>,
    name: String,
    opts: EngineOptions,
}

fn podman(o: &EngineOptions) -> Command {
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
    cmd.args(["--events-backend", "none"]);
    cmd
}

fn output(
    o: &EngineOptions,
    args: &[&str],
    name: &str,
    what: &'static str,
) -> Result<String, MountError> {
    let failed = |message: String| MountError::Podman {
        what,
        name: name.to_string(),
        message,
    };
    let out = podman(o)
        .args(args)
        .arg(name)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(failed(if line.is_empty() {
            format!("exit status {}", out.status)
        } else {
            line.trim().to_string()
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Mount `name` from Podman's store (the store settings of `o`, else Podman's own).
pub fn mount(o: &EngineOptions, name: &str) -> Result<Mounted, MountError> {
    let env_json = output(
        o,
        &["image", "inspect", "--format", "{{json .Config.Env}}"],
        name,
        "inspect",
    )?;
    let env: Vec<String> = serde_json::from_str::<Option<Vec<String>>>(&env_json)
        .map_err(|e| MountError::Podman {
            what: "inspect",
            name: name.to_string(),
            message: format!("Config.Env is not a list of strings: {e}"),
        })?
        .unwrap_or_default();
    let path = output(o, &["image", "mount"], name, "mount")?;
    Ok(Mounted {
        rootfs: PathBuf::from(path),
        env,
        name: name.to_string(),
        opts: o.clone(),
    })
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = output(&self.opts, &["image", "umount"], &self.name, "unmount");
    }
}
