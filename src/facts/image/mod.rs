//! The image as the host knows it: paths resolved inside its rootfs, its identity (the engine's
//! layer directories) and the image facts cache keyed by it.

pub mod cache;
pub mod identity;
pub mod rootfs;
