//! Decide: the mode in force and the verdict (`crate::verdict`, the only place that decides).
//! Every caller takes its mode from here.

use std::collections::HashMap;

use crate::config::Config;
use crate::finding::Finding;
use crate::verdict::{self, MODE_ANNOTATION, Verdict};

/// The verdict on `findings` under the mode in force: the config's, or a stricter one from the
/// container's `cuda-preflight/mode` annotation where the config allows it
/// (`verdict::effective_mode`; a refused annotation adds its finding). `annotations`: where the
/// container's annotations are, in order; the first that has the key is read (the hook: the OCI
/// state's, then the spec's).
pub fn decide(
    config: &Config,
    annotations: &[Option<&HashMap<String, String>>],
    mut findings: Vec<Finding>,
) -> Verdict {
    let annotation = annotations
        .iter()
        .flatten()
        .find_map(|a| a.get(MODE_ANNOTATION))
        .map(String::as_str);
    let (mode, note) = verdict::effective_mode(config, annotation);
    findings.extend(note);
    verdict::decide(config, mode, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::finding::Severity;

    #[test]
    fn the_first_map_holding_the_annotation_gives_the_mode() {
        let config = Config {
            allow_container_override: true,
            mode: Mode::Audit,
            ..Config::default()
        };
        let map = |m: &str| HashMap::from([(MODE_ANNOTATION.to_string(), m.to_string())]);
        let (state, spec, none) = (map("enforce"), map("warn"), HashMap::new());
        let block = || {
            vec![Finding::new(
                crate::finding::FindingId::DeviceNodeMissing,
                Severity::Block,
                None,
                "e",
                "f",
            )]
        };
        // (annotation maps, mode in force)
        type Maps<'a> = Vec<Option<&'a HashMap<String, String>>>;
        let cases: Vec<(Maps, Mode)> = vec![
            (vec![Some(&state), Some(&spec)], Mode::Enforce),
            (vec![Some(&none), Some(&spec)], Mode::Warn),
            (vec![None, Some(&spec)], Mode::Warn),
            (vec![None, None], Mode::Audit),
            (vec![], Mode::Audit),
        ];
        for (maps, want) in cases {
            assert_eq!(decide(&config, &maps, block()).mode, want, "{maps:?}");
        }
    }
}
