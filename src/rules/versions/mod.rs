//! Version rules: the image's CUDA against the host's driver ([`driver_compat`]) and the
//! image's `NVIDIA_REQUIRE_*` constraints ([`requirements`]).

pub mod driver_compat;
pub mod requirements;
