//! The bundle: `config.json` and the rootfs it names.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// Real specs are 2–30 KB; CDI can add a few hundred entries. 16 MiB is far beyond any.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The value of `key` in a `KEY=VALUE` environment list; the last entry wins, as execve sees it.
pub fn env_var<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// A variable of a spec's process environment.
pub fn spec_env<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    env_var(spec.process().as_ref()?.env().as_ref()?, key)
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not an OCI runtime spec: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{path}: rootfs does not exist (root.path {root:?})")]
    NoRootfs { path: PathBuf, root: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub spec: Spec,
    /// `root.path` resolved against the bundle directory, as runc does.
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let config_path = dir.join("config.json");
        let bytes =
            crate::input::read_capped(&config_path, MAX_CONFIG_BYTES).map_err(|source| {
                BundleError::Read {
                    path: config_path.clone(),
                    error: source,
                }
            })?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse {
            path: config_path.clone(),
            error: source,
        })?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| "rootfs".into());
        let rootfs = if root.is_absolute() {
            root.clone()
        } else {
            dir.join(&root)
        };
        Ok(Bundle {
            dir: dir.to_path_buf(),
            config_path,
            spec,
            rootfs,
        })
    }

    /// The rootfs must exist for anything that reads the image; the GPU detection does not
    /// need it, so this is checked only when a rule needs files.
    pub fn require_rootfs(&self) -> Result<(), BundleError> {
        if self.rootfs.is_dir() {
            Ok(())
        } else {
            let root = self
                .spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default();
            Err(BundleError::NoRootfs {
                path: self.config_path.clone(),
                root,
            })
        }
    }

    /// A variable of the process environment (see [`spec_env`]).
    pub fn env(&self, key: &str) -> Option<&str> {
        spec_env(&self.spec, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bundles_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let e = Bundle::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("config.json: cannot read"), "{e}");
        std::fs::write(d.path().join("config.json"), r#"{"ociVersion": 3}"#).unwrap();
        let e = Bundle::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("config.json: not an OCI runtime spec"), "{e}");
        std::fs::write(
            d.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        let b = Bundle::load(d.path()).unwrap();
        assert_eq!(b.rootfs, d.path().join("rootfs"));
        let e = b.require_rootfs().unwrap_err().to_string();
        assert!(e.contains("rootfs does not exist"), "{e}");
    }

    #[test]
    fn env_last_entry_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["A=1","NVIDIA_VISIBLE_DEVICES=all","NVIDIA_VISIBLE_DEVICES=0"]}}"#,
        )
        .unwrap();
        let b = Bundle::load(d.path()).unwrap();
        assert_eq!(b.env("NVIDIA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(b.env("NVIDIA"), None);
    }
}
