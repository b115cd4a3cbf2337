//! The report of one judged start (`output::report`), built here the one way for every caller:
//! the hook, the NRI plugin and the runtime shim's early block.

use std::path::Path;
use std::time::Instant;

use crate::config::Mode;
use crate::facts::container::GpuRequest;
use crate::facts::probe::ProbeResult;
use crate::finding::{Finding, Severity};
use crate::output::report::Report;
use crate::pipeline::ContainerFacts;
use crate::verdict::{Decision, Verdict};

/// The start a report is about.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub request: &'a GpuRequest,
    /// When judging began: the report's `duration_ms` runs to the report's making.
    pub started: Instant,
}

/// The report of a verdict: its findings, the probe's answer where it ran, and what the walk
/// of the image found where `facts` has it.
pub fn judged<'a>(
    start: &Start<'a>,
    v: &'a Verdict,
    facts: Option<&'a ContainerFacts>,
    probe: Option<&'a ProbeResult>,
    phases: Option<&'a [(&'static str, f64)]>,
) -> Report<'a> {
    Report {
        container_id: start.id,
        time: now_secs(),
        verdict: v.verdict.as_str(),
        mode: mode_str(v.mode),
        request: start.request,
        bundle: start.bundle,
        findings: &v.findings,
        error: None,
        probe,
        binaries: facts.and_then(|f| f.binaries.as_ref()),
        load: facts.and_then(|f| f.load.as_ref()),
        toolchains: facts.and_then(|f| f.toolchains.as_ref()),
        duration_ms: start.started.elapsed().as_secs_f64() * 1000.0,
        phases_ms: phases,
    }
}

/// The report of the hook's own failure: what `on_error` decided, under the config's mode.
pub fn own_error<'a>(
    start: &Start<'a>,
    decision: Decision,
    mode: Mode,
    finding: &'a Finding,
    err: &'a str,
) -> Report<'a> {
    Report {
        container_id: start.id,
        time: now_secs(),
        verdict: decision.as_str(),
        mode: mode_str(mode),
        request: start.request,
        bundle: start.bundle,
        findings: std::slice::from_ref(finding),
        error: Some(err),
        probe: None,
        binaries: None,
        load: None,
        toolchains: None,
        duration_ms: start.started.elapsed().as_secs_f64() * 1000.0,
        phases_ms: None,
    }
}

/// The log line's `findings=`: the ids of the findings that judge (not information), or `-`.
pub fn judging_ids(findings: &[Finding]) -> String {
    let ids: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .map(|f| f.id.as_str())
        .collect();
    if ids.is_empty() {
        "-".to_string()
    } else {
        ids.join(",")
    }
}

pub fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Audit => "audit",
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
