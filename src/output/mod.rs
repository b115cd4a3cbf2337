//! Outputs: the block message, the JSON report, the log line, the metrics file. Outputs never decide anything.

pub mod log;
pub mod message;
pub mod metrics;
pub mod report;

use std::borrow::Cow;

/// `s` as it may reach a terminal or a log: image file names, probe error names, container ids
/// and environment values are the image's choice, and a newline, an ANSI escape or a bidi
/// override in them would forge lines or repaint the screen (issue 22). Control characters
/// (C0, DEL, C1) and Unicode format characters that reorder or hide text become visible escapes
/// (`\n`, `\x1b`, `\u{202e}`); everything else, backslashes included, is left as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && hidden(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_and_format_characters_become_visible() {
        let cases = [
            ("/usr/lib/libcuda.so.1", "/usr/lib/libcuda.so.1"),
            (
                "a\nx device-node-missing: forged",
                "a\\nx device-node-missing: forged",
            ),
            ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
            ("cr\rtab\tdel\x7f", "cr\\rtab\\tdel\\x7f"),
            ("c1\u{9b}31m", "c1\\x9b31m"),
            ("evil\u{202e}txt.so", "evil\\u{202e}txt.so"),
            ("café ü 名前", "café ü 名前"),
            ("back\\slash", "back\\slash"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input), want, "{input:?}");
        }
    }
}

/// Standard output for a command whose exit code is its answer (`check`'s block is 1): a reader
/// that goes away early (`… | head`) must not change that code, nor make the command fail. A
/// write to a closed pipe (EPIPE: Rust ignores SIGPIPE) is taken as written and everything after
/// it is dropped, so the command finishes and returns its own code; any other error is returned.
pub struct ClosedPipeOk<W> {
    inner: W,
    closed: bool,
}

impl<W: std::io::Write> ClosedPipeOk<W> {
    pub fn new(inner: W) -> ClosedPipeOk<W> {
        ClosedPipeOk {
            inner,
            closed: false,
        }
    }
}

impl<W: std::io::Write> std::io::Write for ClosedPipeOk<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}
