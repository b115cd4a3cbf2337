//! Library loading: which file the container's dynamic loader loads for a name
//! ([`loader`]), and what it will do with the image's CUDA-using libraries
//! ([`cuda_libraries`]: missing libraries, missing symbol versions, the CUDA runtime in use).

pub mod cuda_libraries;
pub mod loader;
