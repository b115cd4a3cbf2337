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

/// Columns the message is wrapped to: an 80-column terminal shows it unbroken.
pub const WIDTH: usize = 80;

/// Word-wrap `text` to `width` columns: the first line after `first`, the rest after `rest`.
/// A word longer than a line (a path) stays whole on a line of its own. Every line ends in `\n`.
pub fn wrap(first: &str, text: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut len = first.chars().count();
    let mut empty = true;
    let rest_len = rest.chars().count();
    for word in text.split_whitespace() {
        let w = word.chars().count();
        if !empty && len + 1 + w > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_string();
            len = rest_len;
            empty = true;
        }
        if !empty {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += w;
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// The id people type: a runtime's 64-hex id shortened as `docker ps` and `podman ps` show it
/// (`report` accepts any unique prefix); other ids (runc names) in full.
pub fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// The full message printed on stderr when the hook blocks or warns; `report_hint` adds the
/// command that shows the recorded report (the hook records one; `check` does not). Wrapped to
/// [`WIDTH`] columns below the first line, which says what happened in one line; the last says
/// how to see it all.
pub fn render(container: &str, v: &Verdict, report_hint: bool) -> String {
    let mut s = String::new();
    let word = match v.verdict {
        Decision::Block => "blocked",
        Decision::Warn => "warning",
        Decision::Allow => "allowed",
    };
    // Every piece but our own words may come from the image: shown escaped.
    let id = super::printable(short_id(container));
    let head = headline(&v.findings).unwrap_or_else(|| "no problems found".into());
    let head = super::printable(&head);
    // The headline is never wrapped: runc folds the hook's stderr into one line of its error,
    // and this line must read as a sentence there.
    let _ = writeln!(s, "cuda-preflight: {word} container {id}: {head}");
    for f in &v.findings {
        if f.severity == Severity::Info && v.verdict != Decision::Allow {
            continue;
        }
        s.push_str(&wrap(
            &format!("  {} {}: ", mark(f.severity), f.id.as_str()),
            &super::printable(&f.evidence),
            "      ",
            WIDTH,
        ));
        if let Some(p) = &f.predicted {
            s.push_str(&wrap(
                "    predicted: ",
                &super::printable(&p.headline()),
                "      ",
                WIDTH,
            ));
        }
        if !f.fix.is_empty() {
            s.push_str(&wrap(
                "    fix: ",
                &super::printable(&f.fix),
                "      ",
                WIDTH,
            ));
        }
    }
    if v.verdict != Decision::Allow && report_hint {
        let _ = writeln!(s, "  full report: cuda-preflight report {id}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("ab: ", "one two three four five six", "    ", 14);
        assert_eq!(w, "ab: one two\n    three four\n    five six\n");
        // A path longer than the width is not cut.
        let w = wrap("x ", "/a/very/long/path/name here", "  ", 10);
        assert_eq!(w, "x /a/very/long/path/name\n  here\n");
        assert_eq!(wrap("x: ", "", "  ", 10), "x:\n");
    }

    #[test]
    fn short_ids_as_engines_show_them() {
        let long = "3f2a1b4c5d6e".repeat(5) + "abcd";
        assert_eq!(short_id(&long), "3f2a1b4c5d6e");
        assert_eq!(short_id("gpu-1"), "gpu-1");
    }
}
