//! Commands: each adapts its input to the pipeline (`crate::pipeline`) and its result to its
//! output. `main.rs` only parses arguments and maps what these return to exit codes.

pub mod check;
pub mod doctor;
pub mod explain;
pub mod facts;
pub mod hook;
pub mod install;
pub mod nri;
pub mod report;
pub mod scan;
pub mod webhook;

use std::path::PathBuf;

use crate::config::Config;

/// Settings every command shares. A flag and its config key share a name; a flag wins.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Config file [default: /etc/cuda-preflight/config.toml; absent means defaults]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Where file-based host facts are read (/proc, /dev) [config: host_root; default /]
    #[arg(long, value_name = "DIR", global = true)]
    pub host_root: Option<PathBuf>,
    /// Where reports are written [config: state_dir; default /run/cuda-preflight]
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

impl SettingsArgs {
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        Ok(self.apply(Config::load(self.config.as_deref())?))
    }

    /// The config, or where the file has errors the defaults; flags apply either way. The hook
    /// records its own errors with this: with plain defaults a broken config file sent the report
    /// to the default state directory instead of the `--state-dir` given (tests/it/faults.rs).
    pub fn load_or_defaults(&self) -> Config {
        self.load()
            .unwrap_or_else(|_| self.apply(Config::default()))
    }

    fn apply(&self, mut c: Config) -> Config {
        if let Some(r) = &self.host_root {
            c.host_root = r.clone();
        }
        if let Some(s) = &self.state_dir {
            c.state_dir = s.clone();
        }
        c
    }
}
