//! Messages for people. runc folds a failing hook's stderr into one line with literal `\n`s, so
//! the first line must stand alone: what happened, to which container, what to do.

use std::fmt::Write;

use crate::finding::{Finding, Severity};
use crate::verdict::{Decision, Verdict};

fn mark(s: Severity) -> &'static str {
    match s {
        Severity::Block => "x",
        Severity::Warn => "!",
        Severity::Info => "-",
    }
}

/// The headline: the first blocking finding (or the first warning), as one sentence.
pub fn headline(findings: &[Finding]) -> Option<String> {
    let f = findings
        .iter()
        .find(|f| f.severity == Severity::Block)
        .or_else(|| findings.iter().find(|f| f.severity == Severity::Warn))?;
    let first = f.evidence.split(';').next().unwrap_or(&f.evidence).trim();
    Some(match &f.predicted {
        Some(p) => match (&p.code, &p.name) {
            (Some(c), Some(n)) => format!("{first}: CUDA would fail with {c} {n}"),
            _ => format!("{first}: would fail with \"{}\"", p.message),
        },
        None => first.to_string(),
    })
}

/// The full message printed on stderr when the hook blocks or warns; `report_hint` adds the
/// command that shows the recorded report (the hook records one; `check` does not).
pub fn render(container: &str, v: &Verdict, report_hint: bool) -> String {
    let mut s = String::new();
    let word = match v.verdict {
        Decision::Block => "blocked",
        Decision::Warn => "warning",
        Decision::Allow => "allowed",
    };
    let head = headline(&v.findings).unwrap_or_else(|| "no problems found".into());
    let _ = writeln!(s, "cuda-preflight: {word} container {container}: {head}");
    for f in &v.findings {
        if f.severity == Severity::Info && v.verdict != Decision::Allow {
            continue;
        }
        let _ = writeln!(s, "  {} {}: {}", mark(f.severity), f.id, f.evidence);
        if let Some(p) = &f.predicted {
            let _ = writeln!(s, "    predicted: {}", p.headline());
        }
        if !f.fix.is_empty() {
            let _ = writeln!(s, "    fix: {}", f.fix);
        }
    }
    if v.verdict != Decision::Allow && report_hint {
        let _ = writeln!(s, "  full report: cuda-preflight report {container}");
    }
    s
}
