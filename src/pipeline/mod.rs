//! The pipeline every judging caller runs, in one direction: gather the facts ([`gather`],
//! [`host`], the [`probe`] step), run every rule the facts support ([`run_rules`]), decide
//! ([`decide`], with `crate::verdict`), build the report ([`report`]). The hook, `check`, the NRI
//! plugin and the runtime shim only adapt their input to it (state and bundle, image, NRI
//! container, runtime argv) and its result to their output (exit code, message, JSON, report
//! file). Nothing here prints, and no finding is made here: findings come from `crate::rules`.

pub mod decide;
pub mod gather;
pub mod host;
pub mod probe;
pub mod report;
pub mod run_rules;

use std::collections::HashMap;

use crate::config::Config;
use crate::facts::host::HostProfile;
use crate::facts::probe::answer::ProbeAnswer;
use crate::finding::Finding;
use crate::input::bundle::Bundle;
use crate::verdict::Verdict;

pub use gather::{ContainerFacts, Input, Where, gather};
pub use run_rules::Scope;

/// What a caller asks of the pipeline once the container's facts are gathered.
pub struct Judge<'a> {
    pub config: &'a Config,
    pub host: &'a HostProfile,
    /// Which rules the facts support.
    pub scope: Scope,
    /// Where the container's `cuda-preflight/mode` annotation is looked for, in order
    /// ([`decide::decide`]).
    pub annotations: &'a [Option<&'a HashMap<String, String>>],
    /// Where and when the caller may run image code (the hook); `None` never probes.
    pub probe: Option<probe::Probe<'a>>,
    /// Findings about the caller's own input that hold whatever the host (an image that did not
    /// load whole: `input::image`).
    pub input_findings: &'a [Finding],
}

/// The pipeline's result.
pub struct Judged {
    pub verdict: Verdict,
    pub probe: ProbeAnswer,
    /// Time of the rules, the probe and the decision, ms (the report's `phases_ms`).
    pub phases: Vec<(&'static str, f64)>,
}

/// Run the rules over `facts` on the host, the probe where asked, and decide.
pub fn judge(bundle: &Bundle, facts: &ContainerFacts, j: Judge) -> Judged {
    let mut phases = crate::output::report::Phases::since(std::time::Instant::now());
    let mut findings = run_rules::run(facts, j.host, j.scope, j.config.enforce_requirements);
    phases.mark("rules");
    let probe = match &j.probe {
        Some(p) => probe::answer(bundle, facts, &findings, p, j.host, j.config),
        None => ProbeAnswer::NotAsked,
    };
    phases.mark("probe");
    findings.extend(crate::rules::probe::answer_findings(
        &probe,
        facts.devices.as_ref().ok(),
    ));
    findings.extend(j.input_findings.iter().cloned());
    let verdict = decide::decide(j.config, j.annotations, findings);
    phases.mark("verdict");
    Judged {
        verdict,
        probe,
        phases: phases.spans,
    }
}
