//! Container rules: the NVIDIA device nodes and device cgroup rules the container will really
//! have ([`devices`]), and its CUDA environment variables ([`cuda_env`]).

pub mod cuda_env;
pub mod devices;
