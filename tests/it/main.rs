//! The integration tests: one test binary (linking the crate once, not once per file), one module
//! per area, the shared helpers in `common`. Run one area with its module path as the filter:
//! `cargo test --test it podman::` (a filter matches anywhere in `module::test_name`).
//!
//! All modules' tests run in this one process, on libtest's threads: a test must not change
//! process-wide state (environment, current directory, umask, signal dispositions), and names it
//! gives containers, daemons and files must be unique per test, not only per process
//! (`common::unique_id`). Each Docker test starts a private dockerd and containerd in its own
//! directory (`common::dockerd`), so those may run side by side as they did across processes.

// A failed unwrap is a failed test; clippy.toml lets `#[test]` functions unwrap, this extends it
// to the helpers they call.
#![allow(clippy::unwrap_used)]

mod common;

mod binaries;
mod cli;
mod deb_install;
mod docker;
mod driver_verdicts;
mod fatbin_vs_cuobjdump;
mod faults;
mod fleet;
mod frameworks;
mod golden;
mod hooks_files;
mod hostile;
mod hoststate;
mod image;
mod image_cache;
mod image_load;
mod install;
mod kubernetes;
mod load;
mod metrics;
mod nri;
mod nvidia_cdi;
mod podman;
mod podman_load;
mod probe;
mod probe_hostile;
mod robust;
mod runc;
mod shim;
mod toolchains;
