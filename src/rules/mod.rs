//! Rules: pure functions from facts to findings. No I/O here.

pub mod requirements;
pub mod versions;
