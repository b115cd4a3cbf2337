//! Rules: pure functions from facts to findings. No I/O here.

pub mod container;
pub mod gpu_code;
pub mod host;
pub mod library_loading;
pub mod probe;
pub mod start_path;
pub mod toolchains;
pub mod versions;

/// Test helper: the ids of `findings`, as the strings `--json` carries. Every id is the
/// finding catalog's (`crate::finding::catalog`), by type.
#[cfg(test)]
pub(crate) fn ids(findings: &[crate::finding::Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}
