//! Verdict: policy applied to findings. Nothing else decides whether a container starts.

use serde::Serialize;

use crate::config::{Config, Mode};
use crate::finding::{Finding, FindingId, Severity};

/// The annotation a container may set to choose its own mode, where the config allows it.
pub const MODE_ANNOTATION: &str = "cuda-preflight/mode";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Warn,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Warn => "warn",
            Decision::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub verdict: Decision,
    pub mode: Mode,
    pub findings: Vec<Finding>,
}

/// How strict a mode is: a container may only move up this order.
fn strictness(m: Mode) -> u8 {
    match m {
        Mode::Audit => 0,
        Mode::Warn => 1,
        Mode::Enforce => 2,
    }
}

/// The mode in force: the config's, or the container's annotation where the config lets
/// containers choose — and then only a stricter one. Annotations are not the operator's: Podman
/// copies an image's annotations into the spec, so an image built with
/// `--annotation cuda-preflight/mode=audit` would audit itself (issue 22). A weaker mode comes
/// only from a config file the operator chose (per runtime entry: docs/design.md). A refused
/// override is itself a finding, so nobody wonders why it was ignored.
pub fn effective_mode(config: &Config, annotation: Option<&str>) -> (Mode, Option<Finding>) {
    let Some(a) = annotation else {
        return (config.mode, None);
    };
    match (config.allow_container_override, Mode::parse(a)) {
        (true, Some(m)) if strictness(m) >= strictness(config.mode) => (m, None),
        (true, Some(_)) => (
            config.mode,
            Some(Finding::new(
                FindingId::ContainerOverrideRefused,
                Severity::Info,
                None,
                format!(
                    "annotation {MODE_ANNOTATION}={a:?} ignored: an annotation may make the mode stricter, never weaker (engines such as Podman copy the image's annotations into the spec)"
                ),
                "To relax checks for some containers, give their runtime entry its own config file (the shim's --cuda-preflight-config, a Kubernetes RuntimeClass handler): see docs/design.md.",
            )),
        ),
        (true, None) => (
            config.mode,
            Some(Finding::new(
                FindingId::ContainerOverrideRefused,
                Severity::Info,
                None,
                format!("annotation {MODE_ANNOTATION}={a:?} is not enforce, warn or audit"),
                "Use one of enforce, warn, audit.",
            )),
        ),
        (false, _) => (
            config.mode,
            Some(Finding::new(
                FindingId::ContainerOverrideRefused,
                Severity::Info,
                None,
                format!(
                    "annotation {MODE_ANNOTATION}={a:?} ignored: the host config does not allow container overrides"
                ),
                "Set allow_container_override = true in the host's config.toml to honour it.",
            )),
        ),
    }
}

/// Apply severity overrides and the mode. `enforce`: any block finding blocks. `warn`: block
/// findings become warnings. `audit`: the start always goes on; findings are kept as they are
/// for the record.
/// A finding's severity after the config's `severity` table: what the verdict will use.
pub fn effective_severity(config: &Config, f: &Finding) -> Severity {
    config.severity.get(&f.id).copied().unwrap_or(f.severity)
}

pub fn decide(config: &Config, mode: Mode, mut findings: Vec<Finding>) -> Verdict {
    for f in &mut findings {
        f.severity = effective_severity(config, f);
    }
    let worst = findings.iter().map(|f| f.severity).max();
    let verdict = match (mode, worst) {
        (Mode::Enforce, Some(Severity::Block)) => Decision::Block,
        (Mode::Enforce | Mode::Warn, Some(Severity::Block | Severity::Warn)) => Decision::Warn,
        _ => Decision::Allow,
    };
    Verdict {
        verdict,
        mode,
        findings,
    }
}

/// The hook's own failure (bad state, unreadable bundle, bad config) as a finding: a warning
/// whatever `on_error` decides, so that alerts on it find broken hooks.
pub fn hook_error(err: &str) -> Finding {
    Finding::new(
        FindingId::HookError,
        Severity::Warn,
        None,
        err,
        "Fix the input named in the evidence; until then this container was not checked.",
    )
}

/// What the hook's own failure decides: `on_error`, allow by default.
pub fn on_own_error(config: &Config) -> Decision {
    match config.on_error {
        crate::config::OnFailure::Allow => Decision::Allow,
        crate::config::OnFailure::Block => Decision::Block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn f(id: FindingId, s: Severity) -> Finding {
        Finding::new(id, s, None, "e", "f")
    }

    #[test]
    fn policy_table() {
        let cases: Vec<(Mode, Vec<Finding>, BTreeMap<FindingId, Severity>, Decision)> = vec![
            (Mode::Enforce, vec![], BTreeMap::new(), Decision::Allow),
            (
                Mode::Enforce,
                vec![f(FindingId::DeviceNodesSkipped, Severity::Info)],
                BTreeMap::new(),
                Decision::Allow,
            ),
            (
                Mode::Enforce,
                vec![f(FindingId::GpuEnvWithoutRuntime, Severity::Warn)],
                BTreeMap::new(),
                Decision::Warn,
            ),
            (
                Mode::Enforce,
                vec![f(FindingId::DeviceNodeMissing, Severity::Block)],
                BTreeMap::new(),
                Decision::Block,
            ),
            (
                Mode::Warn,
                vec![f(FindingId::DeviceNodeMissing, Severity::Block)],
                BTreeMap::new(),
                Decision::Warn,
            ),
            (
                Mode::Audit,
                vec![f(FindingId::DeviceNodeMissing, Severity::Block)],
                BTreeMap::new(),
                Decision::Allow,
            ),
            (
                Mode::Enforce,
                vec![f(FindingId::DeviceNodeMissing, Severity::Block)],
                [(FindingId::DeviceNodeMissing, Severity::Warn)].into(),
                Decision::Warn,
            ),
            (
                Mode::Enforce,
                vec![f(FindingId::GpuEnvWithoutRuntime, Severity::Warn)],
                [(FindingId::GpuEnvWithoutRuntime, Severity::Block)].into(),
                Decision::Block,
            ),
        ];
        for (i, (mode, findings, severity, want)) in cases.into_iter().enumerate() {
            let config = Config {
                severity,
                ..Config::default()
            };
            assert_eq!(decide(&config, mode, findings).verdict, want, "case {i}");
        }
    }

    #[test]
    fn override_only_where_allowed() {
        let strict = Config::default();
        let (m, note) = effective_mode(&strict, Some("audit"));
        assert_eq!(m, Mode::Enforce);
        assert_eq!(note.unwrap().id, "container-override-refused");
        let open = Config {
            allow_container_override: true,
            ..Config::default()
        };
        // Only stricter: what the image may have written cannot relax the host's mode.
        let (m, note) = effective_mode(&open, Some("audit"));
        assert_eq!(m, Mode::Enforce);
        assert!(note.unwrap().evidence.contains("stricter, never weaker"));
        assert_eq!(effective_mode(&open, Some("warn")).0, Mode::Enforce);
        assert_eq!(
            effective_mode(&open, Some("enforce")),
            (Mode::Enforce, None)
        );
        let audit_host = Config {
            mode: Mode::Audit,
            ..open.clone()
        };
        assert_eq!(
            effective_mode(&audit_host, Some("warn")),
            (Mode::Warn, None)
        );
        assert_eq!(
            effective_mode(&audit_host, Some("enforce")),
            (Mode::Enforce, None)
        );
        assert_eq!(effective_mode(&open, Some("nonsense")).0, Mode::Enforce);
        assert_eq!(effective_mode(&open, None), (Mode::Enforce, None));
    }
}
