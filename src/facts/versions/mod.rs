//! Versions: the image's CUDA versions and requirements, as its environment and rootfs say
//! ([`image_cuda`]). The driver's version is a host fact ([`crate::facts::host`]).

pub mod image_cuda;
