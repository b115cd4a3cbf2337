//! Facts: what is true of the host and the container. This stage may touch the OS; every source
//! has a file-based form (host profile, host root, rootfs directory) so rules run without a GPU.

pub mod fatbin;
pub mod host;
pub mod rootfs;
