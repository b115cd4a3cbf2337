//! Library loading rules: the image's CUDA libraries resolve, with the symbol versions they
//! need, and which CUDA runtime each framework really loads.

pub mod cuda_libraries;
