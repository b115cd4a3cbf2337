//! Commands the CLI runs; each returns its exit code.

pub mod scan;
