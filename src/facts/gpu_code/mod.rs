//! Will the image's GPU code load: the image's CUDA binaries found inside its rootfs, and the
//! cache of their fatbin inventories (the inventories themselves are read by
//! [`crate::formats::fatbin`]).

pub mod binaries;
pub mod scan_cache;
