//! Facts: what is true of the host and the container. This stage may touch the OS; every source
//! has a file-based form (host profile, host root, rootfs directory) so rules run without a GPU.

pub mod binaries;
pub mod compat_note;
pub mod container;
pub mod disk;
pub mod doctor;
pub mod elf_dynamic;
pub mod fatbin;
pub mod headroom;
pub mod host;
pub mod hoststate;
pub mod image;
pub mod image_cache;
pub mod image_identity;
pub mod linkage;
pub mod loader;
pub mod nvml;
pub mod probe;
pub mod probe_answer;
pub mod probe_cache;
pub mod probe_child;
pub mod rootfs;
pub mod scan_cache;
pub mod seccomp;
pub mod start_path;
pub mod toolchains;
