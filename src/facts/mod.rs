//! Facts: what is true of the host and the container. This stage may touch the OS; every source
//! has a file-based form (host profile, host root, rootfs directory) so rules run without a GPU.
//! One folder per domain, the same names as `rules/` (`docs/design.md`, "Where things are");
//! the file formats they read are parsed in `crate::formats`.

pub mod container;
pub mod gpu_code;
pub mod host;
pub mod image;
pub mod library_loading;
pub mod probe;
pub mod start_path;
pub mod toolchains;
pub mod versions;
