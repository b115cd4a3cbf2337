//! cuda-preflight: will CUDA work in this container on this host? Pipeline stages as modules:
//! input → facts → rules → verdict → output (`docs/design.md`).
//!
//! Errors: an error type's text carries its cause and its `source()` is not set (no `#[from]`,
//! `#[source]` or field named `source`), because errors are shown both with `{:#}` (which walks
//! `source()`) and with `to_string()` in reports, log lines and findings: an error that did both
//! printed its cause twice. An error that wraps another with `#[error(transparent)]` stays whole.

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
pub mod pipeline;
pub mod rules;
pub mod shim;
pub mod verdict;
