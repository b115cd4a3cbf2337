//! Rules: pure functions from facts to findings. No I/O here.
pub mod kernels;
