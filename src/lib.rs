//! cuda-preflight: will CUDA work in this container on this host? Pipeline stages as modules:
//! input → facts → rules → verdict → output (`docs/design.md`).

pub mod atomic;
pub mod commands;
pub mod config;
pub mod facts;
pub mod finding;
pub mod fleet;
pub mod formats;
pub mod input;
pub mod knowledge;
pub mod nri;
pub mod output;
pub mod rules;
pub mod shim;
pub mod verdict;
